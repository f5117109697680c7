"""The Inter-X evaluator: its released layout, its forward against a transcription of the public
code on the same seeded weights, its checkpoint, and the Inter-X dataset reader."""

import pickle
from argparse import Namespace
from collections import OrderedDict

import h5py
import numpy as np
import public_interx_t2m as public
import pytest
import torch

from motionfleet.cli import main
from motionfleet.common.weights import meta_layout
from motionfleet.core.errors import DataError
from motionfleet.dhvae import interx, interx_evaluator
from motionfleet.dhvae.interx_evaluator import PARTS, PRESETS, InterXEvaluator


def public_wrapper(config, state: dict) -> public.EvaluatorModelWrapper:
    opt = Namespace(dim_pose=config.dim_pose, dim_movement_enc_hidden=config.movement_hidden,
                    dim_movement_latent=config.movement_latent, dim_word=config.word_dim, dim_pos_ohot=config.pos_dim,
                    dim_text_hidden=config.text_hidden, dim_coemb_hidden=config.embed_dim,
                    dim_motion_hidden=config.motion_hidden, device="cpu", unit_length=4)
    return public.EvaluatorModelWrapper(opt, state)


def released_parts(model: InterXEvaluator) -> dict:
    """finest.tar's body as Inter-X's TextMotionMatchTrainer.save writes it."""
    state = model.state_dict()
    parts = {part: OrderedDict((k.removeprefix(part + "."), v) for k, v in state.items() if k.startswith(part + "."))
             for part in PARTS}
    return {**parts, "opt_text_encoder": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 7, "iter": 70}


def test_official_architecture_has_the_released_layout():
    wrapper_layout = {}
    with torch.device("meta"):
        opt = Namespace(dim_pose=672, dim_movement_enc_hidden=512, dim_movement_latent=512, dim_word=300, dim_pos_ohot=15,
                        dim_text_hidden=512, dim_coemb_hidden=512, dim_motion_hidden=1024, device="cpu")
        for part, module in (("movement_encoder", public.MovementConvEncoder(672, 512, 512)),
                             ("text_encoder", public.TextEncoderBiGRUCo(300, 15, 512, 512, "cpu")),
                             ("motion_encoder", public.MotionEncoderBiGRUCo(512, 1024, 512, "cpu"))):
            wrapper_layout.update({f"{part}.{k}": tuple(v.shape) for k, v in module.state_dict().items()})
    assert opt.dim_pose == interx.EVALUATOR_FEATURES
    assert meta_layout(lambda: InterXEvaluator(PRESETS["official"])) == wrapper_layout
    assert wrapper_layout["movement_encoder.main.0.weight"] == (512, 672, 4)
    assert wrapper_layout["motion_encoder.hidden"] == (2, 1, 1024)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return interx.write_synthetic(tmp_path_factory.mktemp("interx"), count=6, frames=(26, 60))


def test_forward_matches_the_public_code_on_the_same_weights(dataset):
    """Dataset motions (to_rot_6d), generated ones (DHVAE's split, concat and prepare_motion) and
    their texts (WordVectorizer, sos/eos/unk padding, the collate sort) through both evaluators."""
    config = PRESETS["tiny"]
    model = interx_evaluator.build_dummy(config, seed=3)
    reference = public_wrapper(config, released_parts(model))
    split = interx.read_split(dataset)
    words = interx.WordVectorizer(dataset / "glove")
    names = [m.name for m in split.motions]
    lengths = [m.frames for m in split.motions]
    texts = [m.texts[i % 2] for i, m in enumerate(split.motions)]
    assert len(set(lengths)) > 2 and all(length % 4 == 0 for length in lengths)

    raw = [split.motion(name) for name in names]
    ours = [interx.dataset_features(motion) for motion in raw]
    for motion, features in zip(raw, ours):
        assert torch.equal(features, public.to_rot_6d(motion))

    generated = [torch.randn(2, length, interx.FEATURES_PER_PERSON, generator=torch.Generator().manual_seed(i))
                 for i, length in enumerate(lengths)]
    for motion in generated:  # the model's (T, 56, 12): the two people split on the last axis and joined again
        joined = torch.cat([motion[p].reshape(-1, 56, 6) for p in range(2)], dim=-1)
        assert torch.equal(interx.generated_features(motion), reference.prepare_motion(joined[None].clone())[0])

    reference_words = public.WordVectorizer(words.word2vec)
    encoded = [public.encode_tokens(reference_words, split.tokens[text]) for text in texts]
    for text, (word_embs, pos, sent_len) in zip(texts, encoded):
        ours_words, ours_pos, ours_len = words.encode(split.tokens[text])
        assert np.array_equal(ours_words, word_embs) and np.array_equal(ours_pos, pos) and ours_len == sent_len

    for features in (ours, [interx.generated_features(m) for m in generated]):
        padded = torch.zeros(len(features), interx.MAX_FRAMES, interx.EVALUATOR_FEATURES)
        for i, f in enumerate(features):
            padded[i, : len(f)] = f
        order = public.collate_order([e[2] for e in encoded])
        text_ref, motion_ref = reference.get_co_embeddings(
            torch.from_numpy(np.stack([encoded[i][0] for i in order])), torch.from_numpy(np.stack([encoded[i][1] for i in order])),
            torch.tensor([encoded[i][2] for i in order]), padded[order], torch.tensor(lengths)[order])
        align = np.argsort(torch.tensor(lengths)[order].tolist())[::-1].copy()
        motion_ours = interx_evaluator.embed_motions(model, padded, torch.tensor(lengths))
        mine = [words.encode(split.tokens[text]) for text in texts]
        text_ours = interx_evaluator.embed_texts(model, torch.from_numpy(np.stack([e[0] for e in mine])),
                                                 torch.from_numpy(np.stack([e[1] for e in mine])),
                                                 torch.tensor([e[2] for e in mine]))
        back = np.asarray(order)[align]  # the public rows are inputs order[align]
        torch.testing.assert_close(motion_ours[back], motion_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(text_ours[back], text_ref, rtol=1e-5, atol=1e-6)


def test_a_released_checkpoint_loads_and_embeds_like_the_saved_model(tmp_path):
    model = interx_evaluator.build_dummy(PRESETS["tiny"], seed=5)
    path = tmp_path / "finest.tar"
    torch.save(released_parts(model), path)
    loaded, weights = interx_evaluator.load(str(path), "tiny")
    assert weights.startswith("sha256:")
    motion = torch.randn(3, interx.MAX_FRAMES, interx.EVALUATOR_FEATURES)
    lengths = torch.tensor([24, 40, 32])
    assert torch.equal(interx_evaluator.embed_motions(loaded, motion, lengths),
                       interx_evaluator.embed_motions(model, motion, lengths))


def test_a_checkpoint_in_another_layout_is_refused_naming_the_file(tmp_path):
    parts = released_parts(interx_evaluator.build_dummy(PRESETS["tiny"], seed=5))
    del parts["motion_encoder"]["hidden"]
    path = tmp_path / "finest.tar"
    torch.save(parts, path)
    with pytest.raises(DataError, match=r"finest\.tar.*motion_encoder\.hidden"):
        interx_evaluator.load(str(path), "tiny")
    with pytest.raises(DataError, match=r"official\) layout: .*wrong shape"):
        interx_evaluator.load(str(path), "official")  # every part mis-shaped, and no hidden
    torch.save({"state_dict": {}}, path)  # an InterCLIP-style Lightning file
    with pytest.raises(DataError, match="not Inter-X's text_mot_match finest.tar"):
        interx_evaluator.load(str(path), "tiny")


def test_wrong_layout_evaluator_checkpoint_is_one_line_exit_1_before_generating(tmp_path, dataset, capsys):
    path = tmp_path / "finest.tar"
    torch.save(released_parts(interx_evaluator.build_dummy(PRESETS["tiny"], seed=5)), path)
    out = tmp_path / "out"
    code = main(["evaluate", "--family", "dhvae", "--protocol", "interx", "--dataset", str(dataset), "--out", str(out),
                 "--preset", "tiny-interx", "--evaluator-checkpoint", str(path), "--evaluator-preset", "official",
                 "--workers", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and str(path) in err[0] and "finest.tar" in err[0], err
    assert not (out / "generate").exists()


def test_a_generator_in_interhuman_layout_is_refused_for_interx(tmp_path, dataset, capsys):
    code = main(["evaluate", "--family", "dhvae", "--protocol", "interx", "--dataset", str(dataset), "--out",
                 str(tmp_path / "out"), "--preset", "tiny"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--preset tiny writes 262" in err[0] and "tiny-interx" in err[0], err
    code = main(["evaluate", "--family", "dhvae", "--dataset", str(dataset), "--out", str(tmp_path / "out2"),
                 "--preset", "tiny-interx"])  # and the other way round
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "writes 336" in err[0], err


def test_the_reader_keeps_the_public_loaders_rules(tmp_path):
    root = interx.write_synthetic(tmp_path / "ix", count=3, frames=(30, 30))
    names = (root / "splits" / "test.txt").read_text().split()
    with h5py.File(root / "motions" / "test.h5", "a") as file:
        file.create_dataset("short", data=np.zeros((23, 56, 6), np.float32))
        file.create_dataset("long", data=np.zeros((170, 56, 6), np.float32))
    for name in ("short", "long"):
        (root / "texts_processed" / f"{name}.txt").write_text("a man waves#man/NOUN wave/VERB#0.0#0.0\n")
    (root / "texts_processed" / f"{names[0]}.txt").write_text("a span#span/NOUN#1.0#2.0\n")
    (root / "splits" / "test.txt").write_text("\n".join([*names, "short", "long", "absent"]) + "\n")
    split = interx.read_split(root)
    reasons = dict(split.left_out)
    assert set(reasons) == {names[0], "short", "absent"}
    assert "sub-span" in reasons[names[0]] and "23 frames" in reasons["short"] and "not in" in reasons["absent"]
    frames = {m.name: m.frames for m in split.motions}
    assert frames["long"] == 150 and frames[names[1]] == 28  # cut to 150, and to a multiple of 4
    assert split.tokens["a man waves"] == ("man/NOUN", "wave/VERB")
    assert split.motion(names[1]).shape == (28, 56, 6)


def test_word_vectors_follow_the_public_vectorizer_and_refuse_pickled_code(tmp_path):
    root = interx.write_synthetic(tmp_path / "ix", count=2)
    words = interx.WordVectorizer(root / "glove")
    unknown = words["zzz/NOUN"]  # not in the vocabulary: unk, OTHER
    assert np.array_equal(unknown[0], words.word2vec["unk"]) and unknown[1][interx.POS_CLASSES.index("OTHER")] == 1
    words.word2vec["thigh"] = np.ones(300, np.float32)
    assert words["thigh/NOUN"][1][interx.POS_CLASSES.index("Body_VIP")] == 1  # a VIP word's class wins over its POS
    assert words["a/b/c"][1][interx.POS_CLASSES.index("OTHER")] == 1  # not word/POS: unk/OTHER (DHVAE's fallback)
    vectors, count = words.encode(tuple(f"w{i}/NOUN" for i in range(40)))[0], words.encode(("x/NOUN",))[2]
    assert vectors.shape == (37, 300) and count == 3
    (root / "glove" / "hhi_vab_idx.pkl").write_bytes(pickle.dumps(OrderedDict(sos=0)))
    with pytest.raises(ValueError, match="collections.OrderedDict"):
        interx.WordVectorizer(root / "glove")
