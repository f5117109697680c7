"""The DHVAE release as its code computes it: CLIP tokenizer and tower from OpenAI's file layout,
the trained clipTrans / clipln head, the null condition, the release's flags, the VAE's hparams,
the output's feature space, and the command a user of the release runs. A tiny random CLIP and a
tiny CHMLD checkpoint are written by the tests in the released layouts."""

import math

import numpy as np
import pytest
import torch
import yaml
from test_dhvae_model import release_layout

from motionfleet.cli import main
from motionfleet.common.clip import CONTEXT_LENGTH, read_openai_clip, tokenizer
from motionfleet.core.errors import MissingFile, RejectedInput, UnsafeCheckpoint
from motionfleet.core.jobfolder.sink import read_results
from motionfleet.dhvae import model as dhvae
from motionfleet.dhvae.release import load_model
from motionfleet.dhvae.runner import DHVAEGenerator, GenerateSettings, ModelSpec
from motionfleet.dhvae.text import TextHead, build_release_text_encoder

WIDTH, CLIP_LAYERS, VOCAB = 64, 2, 49408
CONFIG = dhvae.DHVAEConfig(latent_dim=64, heads=2, layers=2, ffn_dim=128, cond_dim=WIDTH, decoder_layers=1,
                           interaction_layers=1, decoder_heads=2, decoder_ffn_dim=128)
VAE = {"name": "chvae_tiny", "latent_size": 1, "latent_dim": 64, "nlayer_ind": 1, "nlayer_top": 1, "nhead": 2,
       "dim_feedforward": 128, "max_len": 300, "d_input": 262, "d_joint": 66, "is_learn_pe": True,
       "is_decode_cat": False, "is_skip": False}
PROMPTS = ["two people shake hands", "one person pushes the other away", "two people dance together"]


# --- files in the released layouts --------------------------------------------------------


def openai_clip_state(seed: int = 0) -> dict:
    """OpenAI's CLIP state dict layout (clip/model.py), tiny: fp16 weights as ``convert_weights``
    leaves them (linear and attention weights), fp32 LayerNorms and embeddings, 0-dim metadata."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, dtype=torch.float16: (0.05 * torch.randn(*shape, generator=g)).to(dtype)  # noqa: E731
    ones = lambda n: (1 + 0.1 * torch.randn(n, generator=g))  # noqa: E731
    state = {"token_embedding.weight": rand(VOCAB, WIDTH), "positional_embedding": rand(CONTEXT_LENGTH, WIDTH),
             "ln_final.weight": ones(WIDTH), "ln_final.bias": rand(WIDTH, dtype=torch.float32),
             "text_projection": rand(WIDTH, 32), "logit_scale": torch.tensor(4.6),
             "visual.proj": rand(16, 32), "visual.conv1.weight": rand(16, 3, 4, 4),
             "input_resolution": torch.tensor(224), "context_length": torch.tensor(77), "vocab_size": torch.tensor(VOCAB)}
    for i in range(CLIP_LAYERS):
        p = f"transformer.resblocks.{i}."
        state.update({p + "attn.in_proj_weight": rand(3 * WIDTH, WIDTH), p + "attn.in_proj_bias": rand(3 * WIDTH),
                      p + "attn.out_proj.weight": rand(WIDTH, WIDTH), p + "attn.out_proj.bias": rand(WIDTH),
                      p + "ln_1.weight": ones(WIDTH), p + "ln_1.bias": rand(WIDTH, dtype=torch.float32),
                      p + "mlp.c_fc.weight": rand(4 * WIDTH, WIDTH), p + "mlp.c_fc.bias": rand(4 * WIDTH),
                      p + "mlp.c_proj.weight": rand(WIDTH, 4 * WIDTH), p + "mlp.c_proj.bias": rand(WIDTH),
                      p + "ln_2.weight": ones(WIDTH), p + "ln_2.bias": rand(WIDTH, dtype=torch.float32)})
    return state


def text_head_state(seed: int = 1) -> dict:
    """``text_encoder.clipTrans`` (2 nn.TransformerEncoderLayer, FF 2048) and ``clipln`` keys."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: 0.05 * torch.randn(*shape, generator=g)  # noqa: E731
    state = {"text_encoder.clipln.weight": 1 + r(WIDTH), "text_encoder.clipln.bias": r(WIDTH)}
    for i in range(2):
        p = f"text_encoder.clipTrans.layers.{i}."
        state.update({p + "self_attn.in_proj_weight": r(3 * WIDTH, WIDTH), p + "self_attn.in_proj_bias": r(3 * WIDTH),
                      p + "self_attn.out_proj.weight": r(WIDTH, WIDTH), p + "self_attn.out_proj.bias": r(WIDTH),
                      p + "linear1.weight": r(2048, WIDTH), p + "linear1.bias": r(2048),
                      p + "linear2.weight": r(WIDTH, 2048), p + "linear2.bias": r(WIDTH),
                      p + "norm1.weight": 1 + r(WIDTH), p + "norm1.bias": r(WIDTH),
                      p + "norm2.weight": 1 + r(WIDTH), p + "norm2.bias": r(WIDTH)})
    return state


def frozen_clip_in_checkpoint(clip: dict) -> dict:
    """The frozen CLIP tensors as CHMLD saves them in 'intergen' mode (textenc.py attribute names)."""
    names = {"token_embedding.": "clip_token_embedding.", "positional_embedding": "clip_positional_embedding",
             "transformer.": "clip_transformer.", "ln_final.": "clip_ln_final."}
    out = {}
    for key, value in clip.items():
        for ours, theirs in names.items():
            if key.startswith(ours):
                out["text_encoder." + theirs + key[len(ours):]] = value.float()
    return out


def hyper(mld: dict | None = None, scheduler: dict | None = None, vae: dict | None = None) -> dict:
    return {"mld": {"latent_size": 1, "latent_dim": 64, "nhead": 2, "nlayer": 2, "dim_feedforward": 128, "z3_scale": 5.0,
                    "arch": "adaln", "is_skip": False, "is_ar": False, "is_lpe": False, "is_vp": False,
                    "is_sample": False, "is_dpm": False,
                    "text_encoder": {"d_cond": WIDTH, "is_intergen_clip": "intergen"}, **(mld or {})},
            "vae": {**VAE, **(vae or {})},
            "NoiseScheduler": {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                               "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
                               "steps_offset": 1, "eta": 0.0, "prediction_type": "v_prediction", **(scheduler or {})}}


def write_chmld(folder, hyper_parameters: dict, with_clip: bool = False, seed: int = 0, extra: dict | None = None,
                vae_hparams: dict | None = None):
    """``ckpt/chmld/last.ckpt`` and, as the release lays them out, ``ckpt/<vae>/lightning_logs/version_0/hparams.yaml``."""
    state = release_layout(CONFIG, torch.Generator().manual_seed(seed))
    del state["text_encoder.token_embedding.weight"]
    state.update(text_head_state())
    if with_clip:
        state.update(frozen_clip_in_checkpoint(openai_clip_state()))
    state.update(extra or {})
    path = folder / "ckpt" / "chmld" / "last.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "hyper_parameters": hyper_parameters, "epoch": 3}, path)
    vae_dir = folder / "ckpt" / hyper_parameters["vae"]["name"] / "lightning_logs" / "version_0"
    vae_dir.mkdir(parents=True, exist_ok=True)
    (vae_dir / "hparams.yaml").write_text(yaml.safe_dump({"vae": vae_hparams or hyper_parameters["vae"]}))
    return path


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "ViT-L-14-336px.pt"
    torch.save(openai_clip_state(), path)
    return path


# --- tokenizer ------------------------------------------------------------------------------


def test_tokenize_gives_openai_ids_sot_and_eot_in_77():
    """Ids of OpenAI's vocabulary (clip.tokenize of these strings)."""
    tok = tokenizer()
    assert tok.tokenize("a photo of a cat")[:8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]
    assert tok.tokenize("")[:3].tolist() == [49406, 49407, 0]
    assert tok.tokenize("Two people HUG   each\tother!!")[:8].tolist() == [49406, 1237, 1047, 10359, 2416, 1010, 748, 49407]
    assert tok.tokenize("caf\u00e9 &amp; more")[:6].tolist() == tok.tokenize("café & more")[:6].tolist()
    assert tok.tokenize("x").shape == (CONTEXT_LENGTH,) and tok.tokenize("x").dtype == torch.long


def test_long_prompts_keep_their_first_75_tokens_and_the_eot():
    ids = tokenizer().tokenize(" ".join(["hug"] * 100))
    assert ids[0] == 49406 and (ids[1:76] == 10359).all() and ids[76] == 49407


# --- tower and head --------------------------------------------------------------------------


def reference_tower(state: dict, tokens: torch.Tensor) -> torch.Tensor:
    """OpenAI's text transformer written out: pre-norm blocks, causal mask, QuickGELU, ln_final."""
    s = {k: v.float() for k, v in state.items()}
    heads, n = WIDTH // 64, tokens.shape[1]
    x = s["token_embedding.weight"][tokens] + s["positional_embedding"]
    mask = torch.full((n, n), float("-inf")).triu(1)
    ln = lambda x, p: torch.nn.functional.layer_norm(x, (WIDTH,), s[p + "weight"], s[p + "bias"])  # noqa: E731
    for i in range(CLIP_LAYERS):
        p = f"transformer.resblocks.{i}."
        h = ln(x, p + "ln_1.")
        q, k, v = (h @ s[p + "attn.in_proj_weight"].T + s[p + "attn.in_proj_bias"]).chunk(3, -1)
        split = lambda t: t.reshape(*t.shape[:2], heads, -1).transpose(1, 2)  # noqa: E731
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(WIDTH // heads) + mask, -1) @ split(v)
        x = x + att.transpose(1, 2).reshape(x.shape) @ s[p + "attn.out_proj.weight"].T + s[p + "attn.out_proj.bias"]
        h = ln(x, p + "ln_2.") @ s[p + "mlp.c_fc.weight"].T + s[p + "mlp.c_fc.bias"]
        x = x + (h * torch.sigmoid(1.702 * h)) @ s[p + "mlp.c_proj.weight"].T + s[p + "mlp.c_proj.bias"]
    return ln(x, "ln_final.")


def test_tower_reads_openai_layout_and_computes_in_float32(clip_file):
    tower = read_openai_clip(clip_file)
    tokens = torch.stack([tokenizer().tokenize(p) for p in PROMPTS])
    with torch.no_grad():
        states = tower(tokens)
    assert states.dtype == torch.float32 and states.shape == (3, CONTEXT_LENGTH, WIDTH)
    torch.testing.assert_close(states, reference_tower(openai_clip_state(), tokens), rtol=1e-4, atol=1e-5)


def test_openai_torchscript_archive_is_refused_with_how_to_convert(clip_file, tmp_path):
    module = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "ViT-L-14-336px.pt"
    torch.jit.save(module, str(path))
    with pytest.raises(UnsafeCheckpoint, match=r"TorchScript.*torch\.jit\.load.*state_dict"):
        read_openai_clip(path)


def test_release_text_feature_is_clipln_of_cliptrans_at_the_eot(clip_file):
    head_state = {k[len("text_encoder."):]: v for k, v in text_head_state().items()}
    encoder = build_release_text_encoder(head_state, "intergen", clip_file, 0, "release.ckpt")
    head = TextHead(WIDTH)
    head.load_state_dict(head_state)
    layer = head.clipTrans.layers[0]
    tokens = tokenizer().tokenize(PROMPTS[0])[None]
    with torch.no_grad():
        x = reference_tower(openai_clip_state(), tokens)
        for layer in head.clipTrans.layers:  # post-norm, GELU, no mask (nn.TransformerEncoderLayer, eval)
            attn = layer.self_attn(x, x, x, need_weights=False)[0]
            x = layer.norm1(x + attn)
            x = layer.norm2(x + layer.linear2(torch.nn.functional.gelu(layer.linear1(x))))
        expected = head.clipln(x)[0, int(tokens.argmax())]
    torch.testing.assert_close(encoder.encode([PROMPTS[0]])[0], expected, rtol=1e-4, atol=1e-5)


def test_a_prompts_feature_does_not_depend_on_its_batch(clip_file):
    head_state = {k[len("text_encoder."):]: v for k, v in text_head_state().items()}
    encoder = build_release_text_encoder(head_state, "intergen", clip_file, 0, "release.ckpt")
    batched = encoder.encode(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        assert torch.equal(encoder.encode([prompt])[0], batched[i])
        assert torch.equal(encoder.encode([PROMPTS[2 - i], prompt, "x"])[1], batched[i])


# --- the checkpoint ---------------------------------------------------------------------------


def test_null_condition_is_the_encoder_on_the_empty_prompt(tmp_path, clip_file):
    path = write_chmld(tmp_path, hyper())
    generator = DHVAEGenerator(ModelSpec(checkpoint=str(path), text_encoder="clip", text_encoder_weights=str(clip_file)),
                               GenerateSettings(steps=2))
    expected = generator.text_encoder.encode([""])
    assert torch.equal(generator.null_text, expected) and expected.abs().sum() > 0


def test_checkpoint_carrying_the_frozen_clip_needs_no_weights_file(tmp_path, clip_file):
    carried = DHVAEGenerator(ModelSpec(checkpoint=str(write_chmld(tmp_path / "a", hyper(), with_clip=True)),
                                       text_encoder="clip"), GenerateSettings(steps=2))
    given = DHVAEGenerator(ModelSpec(checkpoint=str(write_chmld(tmp_path / "b", hyper())), text_encoder="clip",
                                     text_encoder_weights=str(clip_file)), GenerateSettings(steps=2))
    torch.testing.assert_close(carried.text_encoder.encode(PROMPTS), given.text_encoder.encode(PROMPTS))


def trained_clip_tensors() -> dict:
    """What a release Lightning checkpoint can carry of CLIP: ln_final and the positional embedding,
    which textenc.py leaves trainable (it freezes the transformer, token embedding and ln_final),
    here with values of their own so the test sees where each tensor came from."""
    g = torch.Generator().manual_seed(7)
    return {"positional_embedding": 0.05 * torch.randn(CONTEXT_LENGTH, WIDTH, generator=g),
            "ln_final.weight": 1 + 0.1 * torch.randn(WIDTH, generator=g), "ln_final.bias": 0.1 * torch.randn(WIDTH, generator=g)}


def test_a_checkpoint_carrying_part_of_clip_takes_the_rest_from_the_weights_file(tmp_path, clip_file):
    """textenc.py builds the tower from clip.load (the OpenAI file), then the checkpoint's tensors
    are loaded over it: the carried positional embedding and ln_final win, the rest is the file's."""
    partial = write_chmld(tmp_path / "partial", hyper(), extra=frozen_clip_in_checkpoint(trained_clip_tensors()))
    whole = write_chmld(tmp_path / "whole", hyper(),
                        extra=frozen_clip_in_checkpoint({**openai_clip_state(), **trained_clip_tensors()}))
    from_partial = DHVAEGenerator(ModelSpec(checkpoint=str(partial), text_encoder="clip",
                                            text_encoder_weights=str(clip_file)), GenerateSettings(steps=2))
    from_whole = DHVAEGenerator(ModelSpec(checkpoint=str(whole), text_encoder="clip"), GenerateSettings(steps=2))
    from_file = DHVAEGenerator(ModelSpec(checkpoint=str(write_chmld(tmp_path / "none", hyper())), text_encoder="clip",
                                         text_encoder_weights=str(clip_file)), GenerateSettings(steps=2))
    features = from_partial.text_encoder.encode(PROMPTS)
    torch.testing.assert_close(features, from_whole.text_encoder.encode(PROMPTS))
    assert not torch.allclose(features, from_file.text_encoder.encode(PROMPTS))  # the carried tensors are used
    tokens = tokenizer().tokenize(PROMPTS[0])[None]
    expected = reference_tower({**openai_clip_state(), **trained_clip_tensors()}, tokens)
    torch.testing.assert_close(from_partial.text_encoder.tower(tokens), expected, rtol=1e-4, atol=1e-5)


def test_a_checkpoint_carrying_part_of_clip_without_the_file_names_what_is_missing(tmp_path, capsys):
    checkpoint = write_chmld(tmp_path, hyper(), extra=frozen_clip_in_checkpoint(trained_clip_tensors()))
    assert main(["generate", "--checkpoint", str(checkpoint), "--text-encoder", "clip", "--out", str(tmp_path / "a"),
                 "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "--text-encoder-weights ViT-L-14-336px.pt" in err and "token_embedding, transformer.resblocks" in err


def test_carried_clip_tensors_that_do_not_fit_the_weights_file_are_refused(tmp_path, clip_file):
    wide = {"ln_final.weight": torch.ones(2 * WIDTH), "ln_final.bias": torch.zeros(2 * WIDTH)}
    checkpoint = write_chmld(tmp_path, hyper(), extra=frozen_clip_in_checkpoint(wide))
    with pytest.raises(RejectedInput, match=r"ln_final.weight \(128,\) does not fit the CLIP in .*of shape \(64,\)"):
        build_release_text_encoder(load_model(str(checkpoint)).text_state, "intergen", clip_file, 0, "release.ckpt")


def denoise(model, x, t, text):
    with torch.no_grad():
        return model.denoiser(x, torch.tensor([t]), text)


def test_learned_positions_of_is_lpe_replace_the_sinusoids(tmp_path):
    """The release adds ``denoiser.pe.pe[:, :3]`` to the latent tokens: the is_lpe model on x equals
    the sinusoidal model on x - sinusoids + learned positions."""
    learned = torch.randn(1, 5000, 64, generator=torch.Generator().manual_seed(9))
    extra = {"denoiser.pe.pe": learned}
    lpe, _ = dhvae.load(str(write_chmld(tmp_path / "a", hyper({"is_lpe": True}), extra=extra)))
    plain, _ = dhvae.load(str(write_chmld(tmp_path / "b", hyper())))
    x, text = torch.randn(2, 3, 64), torch.randn(2, WIDTH)
    sines = dhvae.sinusoidal_positions(3, 64)
    # (x - s + l) + s rounds differently from x + l; the release layout's N(0, 1) weights amplify it
    torch.testing.assert_close(denoise(lpe, x, 500, text), denoise(plain, x - sines + learned[0, :3], 500, text),
                               rtol=1e-3, atol=1e-3)
    assert not torch.allclose(denoise(lpe, x, 500, text), denoise(plain, x, 500, text), atol=0.1)


def test_is_ar_projects_the_text_and_drops_the_positions(tmp_path):
    ar, _ = dhvae.load(str(write_chmld(tmp_path / "a", hyper({"is_ar": True}))))
    plain, _ = dhvae.load(str(write_chmld(tmp_path / "b", hyper())))
    state = torch.load(tmp_path / "a" / "ckpt" / "chmld" / "last.ckpt", weights_only=True)["state_dict"]
    x, text = torch.randn(2, 3, 64), torch.randn(2, WIDTH)
    projected = text @ state["denoiser.text_proj.weight"].T + state["denoiser.text_proj.bias"]
    sines = dhvae.sinusoidal_positions(3, 64)
    torch.testing.assert_close(denoise(ar, x, 300, text), denoise(plain, x - sines, 300, projected), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("mld", "scheduler", "expected"), [
    ({}, {}, {"prediction_type": "epsilon", "steps_offset": 1}),
    ({"is_vp": True}, {}, {"prediction_type": "v_prediction"}),
    ({"is_vp": True, "is_sample": True}, {}, {"prediction_type": "sample"}),
    ({}, {"beta_schedule": "linear", "beta_end": 0.02, "steps_offset": 0, "set_alpha_to_one": True},
     {"steps_offset": 0, "set_alpha_to_one": True}),
])
def test_release_sampler_settings_reach_the_ddim_plan(tmp_path, clip_file, mld, scheduler, expected):
    from motionfleet.sampling import ddim
    from motionfleet.sampling.schedules import NoiseSchedule

    loaded = load_model(str(write_chmld(tmp_path, hyper(mld, scheduler))))
    for name, value in expected.items():
        assert getattr(loaded.release, name) == value
    generator = DHVAEGenerator(ModelSpec(checkpoint=str(write_chmld(tmp_path, hyper(mld, scheduler))), text_encoder="clip",
                                         text_encoder_weights=str(clip_file)), GenerateSettings(steps=10))
    want = ddim.plan(ddim.DDIMConfig(
        schedule=NoiseSchedule(beta_schedule=scheduler.get("beta_schedule", "scaled_linear"),
                               beta_end=scheduler.get("beta_end", 0.012)),
        steps=10, prediction_type=loaded.release.prediction_type, steps_offset=scheduler.get("steps_offset", 1),
        set_alpha_to_one=scheduler.get("set_alpha_to_one", False)))
    assert generator.steps == want


@pytest.mark.parametrize(("mld", "scheduler", "vae", "named"), [
    ({"arch": "parallel"}, {}, {}, "mld.arch"),
    ({"is_dpm": True}, {}, {}, "mld.is_dpm"),
    ({}, {"clip_sample": True}, {}, "NoiseScheduler.clip_sample"),
    ({"text_encoder": {"d_cond": WIDTH, "is_intergen_clip": "transformers"}}, {}, {}, "is_intergen_clip"),
    ({}, {}, {"is_decode_cat": True}, "vae.is_decode_cat"),
    ({}, {}, {"is_two_pe": True}, "vae.is_two_pe"),
])
def test_settings_the_release_supports_but_we_do_not_are_refused_by_name(tmp_path, mld, scheduler, vae, named):
    path = write_chmld(tmp_path, hyper(mld, scheduler, vae))
    with pytest.raises(RejectedInput, match=named.replace(".", r"\.")):
        load_model(str(path))


def test_decoder_hyperparameters_come_from_the_vaes_own_hparams(tmp_path):
    """The CHMLD yaml's vae section leaves nhead out (our preset says 4); the VAE's hparams.yaml,
    which the release builds the decoder from, says 2."""
    chmld = hyper()
    del chmld["vae"]["nhead"]
    loaded = load_model(str(write_chmld(tmp_path, chmld, vae_hparams=VAE)))
    assert loaded.model.config.decoder_heads == 2
    assert loaded.release.decoder_hparams.endswith("version_0/hparams.yaml")


def test_a_vae_hparams_that_disagrees_with_the_checkpoint_is_refused(tmp_path):
    path = write_chmld(tmp_path, hyper(), vae_hparams={**VAE, "nlayer_ind": 3})
    with pytest.raises(RejectedInput, match=r"vae\.nlayer_ind disagrees: 3 .* 1 in"):
        load_model(str(path))


def test_the_vaes_last_ckpt_alone_says_which_file_is_expected(tmp_path):
    state = {k[len("vae."):]: v for k, v in release_layout(CONFIG, torch.Generator()).items() if k.startswith("vae.")}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"vae": VAE}}, path)
    with pytest.raises(RejectedInput, match="VAE's checkpoint.*CHMLD checkpoint"):
        load_model(str(path))
    assert main(["generate", "--out", str(tmp_path / "job"), "--checkpoint", str(path), "--workers", "0"]) == 1


# --- the command a user of the release runs --------------------------------------------------


def write_stats(folder):
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    np.save(folder / "global_mean.npy", g.normal(size=262).astype(np.float32))
    np.save(folder / "global_std.npy", g.uniform(0.5, 2.0, size=262).astype(np.float32))
    return folder


def test_generate_from_the_command_line_with_the_release_checkpoint_and_openai_clip(tmp_path, clip_file, capsys):
    checkpoint = write_chmld(tmp_path, hyper())
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))
    stats = write_stats(tmp_path / "stats")
    out = tmp_path / "job"
    code = main(["generate", "--checkpoint", str(checkpoint), "--text-encoder", "clip", "--text-encoder-weights",
                 str(clip_file), "--prompts", str(prompts), "--out", str(out), "--steps", "2", "--num-frames", "8",
                 "--workers", "0", "--motion-stats", str(stats), "--motion-space", "both"])
    assert code == 0, capsys.readouterr().err
    rows = read_results(out).to_pylist()
    assert len(rows) == 3 and {r["text_encoder"] for r in rows} == {"clip"}
    mean, std = np.load(stats / "global_mean.npy"), np.load(stats / "global_std.npy")
    for row in rows:
        assert row["motion_space"] == "both" and row["motion_stats"].startswith("sha256:")
        normalized = np.asarray(row["motion"], np.float32).reshape(2, 8, 262)
        raw = np.asarray(row["motion_denormalized"], np.float32).reshape(2, 8, 262)
        np.testing.assert_allclose(raw, normalized * std + mean, rtol=1e-5, atol=1e-5)
    assert "motion space both" in capsys.readouterr().out


def test_without_statistics_the_output_stays_normalized_and_says_so(tmp_path, capsys):
    out = tmp_path / "job"
    assert main(["generate", "--preset", "tiny", "--out", str(out), "--steps", "2", "--num-frames", "4",
                 "--workers", "0", "--prompts", str(write_prompts(tmp_path))]) == 0
    assert {r["motion_space"] for r in read_results(out).to_pylist()} == {"normalized"}
    assert "no --motion-stats" in capsys.readouterr().out
    code = main(["generate", "--preset", "tiny", "--out", str(tmp_path / "b"), "--workers", "0",
                 "--motion-space", "denormalized"])
    assert code == 2 and "--motion-stats" in capsys.readouterr().err


def write_prompts(folder):
    path = folder / "p.txt"
    path.write_text(PROMPTS[0])
    return path


def test_precomputed_features_with_a_checkpoint_need_the_null_feature(tmp_path, capsys):
    checkpoint = write_chmld(tmp_path, hyper())
    assert main(["generate", "--checkpoint", str(checkpoint), "--text-encoder", "precomputed", "--out",
                 str(tmp_path / "a"), "--workers", "0"]) == 2
    assert "--null-text-feature" in capsys.readouterr().err
    null = tmp_path / "null.npy"
    feature = np.linspace(-1, 1, WIDTH, dtype=np.float32)
    np.save(null, feature)
    generator = DHVAEGenerator(ModelSpec(checkpoint=str(checkpoint), text_encoder="precomputed",
                                         null_text_feature=str(null)), GenerateSettings(steps=2))
    assert torch.equal(generator.null_text[0], torch.from_numpy(feature))


def test_clip_without_weights_names_the_file(tmp_path, capsys):
    checkpoint = write_chmld(tmp_path, hyper())
    assert main(["generate", "--checkpoint", str(checkpoint), "--text-encoder", "clip", "--out", str(tmp_path / "a"),
                 "--workers", "0"]) == 2
    assert "ViT-L-14-336px.pt" in capsys.readouterr().err
    with pytest.raises(MissingFile):
        read_openai_clip(tmp_path / "absent.pt")
