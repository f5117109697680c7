"""InterCLIP evaluator: released layout, Lightning checkpoint loading, row invariance, inputs,
and CLIP's tokenizer."""

import gzip
import pickle

import numpy as np
import pytest
import torch
from layout import Layout

from motionfleet.common.clip import CONTEXT_LENGTH as CONTEXT
from motionfleet.common.clip import byte_alphabet
from motionfleet.common.weights import meta_layout
from motionfleet.core.errors import RejectedInput, UnsafeCheckpoint
from motionfleet.dhvae import interclip
from motionfleet.dhvae.clip_tokens import ClipTokens


def encoder_layers(table: Layout, prefix: str, dim: int, ff: int, layers: int) -> None:
    for i in range(layers):
        name = f"{prefix}.layers.{i}"
        table[f"{name}.self_attn.in_proj_weight"] = (3 * dim, dim)
        table[f"{name}.self_attn.in_proj_bias"] = (3 * dim,)
        table.linear(f"{name}.self_attn.out_proj", dim, dim)
        table.linear(f"{name}.linear1", dim, ff)
        table.linear(f"{name}.linear2", ff, dim)
        table.layer_norm(f"{name}.norm1", dim)
        table.layer_norm(f"{name}.norm2", dim)


def released_layout() -> Layout:
    """interclip.ckpt's state dict (without Lightning's ``model.``), written out from
    eval/interhuman/models.py and cfg/eval_interhuman.yaml of the public code."""
    t = Layout()
    t["motion_encoder.query_token"] = (1, 1024)
    t.linear("motion_encoder.embed_motion", 258 * 2, 1024)
    t["motion_encoder.sequence_pos_encoder.pe"] = (2000, 1024)  # PositionalEncoding(max_len=2000) buffer
    encoder_layers(t, "motion_encoder.transformer", 1024, 2048, 8)
    t.layer_norm("motion_encoder.out_ln", 1024)
    t.linear("motion_encoder.out", 1024, 512)
    t["token_embedding.weight"] = (49408, 768)  # CLIP ViT-L/14@336px's
    t["positional_embedding"] = (77, 768)
    t["latent_scale"] = (1,)
    encoder_layers(t, "textTransEncoder", 768, 2048, 8)
    t.layer_norm("text_ln", 768)
    t.linear("out", 768, 512)
    return t


def test_official_architecture_has_the_released_layout():
    assert meta_layout(lambda: interclip.InterCLIP(interclip.PRESETS["official"])) == dict(released_layout())


def lightning_file(path, model: torch.nn.Module, drop: str = "", half: str = "token_embedding.weight"):
    state = {f"model.{k}": (v.half() if k == half else v) for k, v in model.state_dict().items() if k != drop}
    torch.save({"state_dict": state, "epoch": 3, "global_step": 10}, path)
    return str(path)


def test_lightning_checkpoint_loads_and_embeds_like_the_saved_model(tmp_path):
    original = interclip.build_dummy(interclip.PRESETS["tiny"], seed=5)
    with torch.no_grad():
        original.token_embedding.weight.copy_(original.token_embedding.weight.half().float())
    loaded, weights = interclip.load(lightning_file(tmp_path / "interclip.ckpt", original), preset="tiny")
    assert weights.startswith("sha256:")
    motion, lengths = torch.randn(4, 20, 516), torch.tensor([20, 7, 15, 1])
    tokens = ClipTokens().tokenize(["two people hug", "a wave", "", "one pushes the other"])
    assert torch.equal(interclip.embed_motions(loaded, motion, lengths), interclip.embed_motions(original, motion, lengths))
    assert torch.equal(interclip.embed_texts(loaded, tokens), interclip.embed_texts(original, tokens))


def test_checkpoint_with_a_missing_key_or_pickled_code_is_refused(tmp_path):
    model = interclip.build_dummy(interclip.PRESETS["tiny"], seed=0)
    with pytest.raises(RejectedInput, match="missing .*latent_scale"):
        interclip.load(lightning_file(tmp_path / "short.ckpt", model, drop="latent_scale"), preset="tiny")
    with pytest.raises(ValueError, match="no 'state_dict'"):
        torch.save({"model": model.state_dict()}, tmp_path / "plain.ckpt")
        interclip.load(str(tmp_path / "plain.ckpt"), preset="tiny")
    (tmp_path / "code.ckpt").write_bytes(pickle.dumps({"state_dict": {"x": np.dtype}}))
    with pytest.raises(UnsafeCheckpoint):
        interclip.load(str(tmp_path / "code.ckpt"), preset="tiny")


def test_a_motions_embedding_does_not_depend_on_its_batch():
    model = interclip.build_dummy(interclip.PRESETS["tiny"], seed=1)
    gen = torch.Generator().manual_seed(0)
    motion = torch.randn(9, 30, 516, generator=gen)
    lengths = torch.tensor([30, 5, 17, 30, 1, 22, 9, 30, 12])
    motion[torch.arange(30)[None, :] >= lengths[:, None]] = 0  # zeros after each end, as loaders pad
    whole = interclip.embed_motions(model, motion, lengths)
    for size in (1, 2, 3, 5):
        parts = torch.cat([interclip.embed_motions(model, motion[i : i + size], lengths[i : i + size])
                           for i in range(0, 9, size)])
        assert torch.equal(parts, whole), size
    # padding beyond a motion's end is masked: more zero frames, same embedding up to rounding
    longer = torch.cat([motion, torch.zeros(9, 10, 516)], dim=1)
    torch.testing.assert_close(interclip.embed_motions(model, longer, lengths), whole, rtol=1e-5, atol=1e-6)
    assert torch.allclose(whole.norm(dim=-1), torch.ones(9))  # latent_scale 1


def test_evaluator_input_denormalises_and_drops_foot_contacts():
    mean, std = torch.arange(262.0), torch.full((262,), 2.0)
    motion = torch.randn(2, 6, 262)
    features = interclip.evaluator_input(motion, mean, std)
    assert features.shape == (6, 516)
    raw = motion * std + mean
    assert torch.equal(features[:, :258], raw[0, :, :258])
    assert torch.equal(features[:, 258:], raw[1, :, :258])


def test_clip_bpe_on_a_small_vocabulary(tmp_path):
    merges = ["h u", "hu g</w>", "w a", "wa v", "wav e</w>"]
    path = tmp_path / "vocab.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokens = ClipTokens(path)
    byte_ids = {b: i for i, b in enumerate(byte_alphabet())}
    hug, wave = 512 + 1, 512 + 4  # merged tokens follow the 2 x 256 byte tokens, in merge order
    start, end = 512 + len(merges), 512 + len(merges) + 1
    row = tokens.tokenize(["  HUG wave, hug"])[0].tolist()
    comma = 256 + byte_ids[ord(",")]  # a word-final byte: its '</w>' form
    assert row[:6] == [start, hug, wave, comma, hug, end]
    assert row[6:] == [0] * (CONTEXT - 6)


def test_truncation_keeps_the_end_token_last():
    row = ClipTokens().tokenize(["x " * 500])[0]
    assert row[0] == 49406 and row[-1] == 49407 and len(row) == CONTEXT
