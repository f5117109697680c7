"""DHVAE model: weights round trip, the release's checkpoint layout, unsafe and broken files."""

import os

import pytest
import torch

from motionfleet.common.modules import items_of
from motionfleet.core.errors import UnsafeCheckpoint
from motionfleet.dhvae import model as dhvae


def outputs(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    d = model.config.latent_dim
    x, text = torch.randn(4, 3, d, generator=gen), torch.randn(4, 768, generator=gen)
    with torch.inference_mode():
        eps = model.denoiser(x, torch.tensor([500]), text)
        return eps, model.decoder(eps, 7)


def test_dummy_weights_depend_only_on_seed():
    a, b, c = (dhvae.build_dummy(dhvae.PRESETS["tiny"], s) for s in (3, 3, 4))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(outputs(a)[0], outputs(c)[0])


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_shapes_and_every_input_matters(preset):
    model = dhvae.build_dummy(dhvae.PRESETS[preset], 0)
    d = model.config.latent_dim
    x, text = torch.randn(2, 3, d), torch.randn(2, 768)
    with torch.inference_mode():
        eps = model.denoiser(x, torch.tensor([10]), text)
        assert eps.shape == (2, 3, d)
        assert not torch.allclose(eps, model.denoiser(x, torch.tensor([900]), text))
        assert not torch.allclose(eps, model.denoiser(x, torch.tensor([10]), text.flip(0)))
        assert model.decoder(eps, 30).shape == (2, 2, 30, 262)


def test_guided_pair_equals_two_plain_calls():
    model = dhvae.build_dummy(dhvae.PRESETS["tiny"], 1)
    x, text, null = torch.randn(4, 3, 64), torch.randn(4, 768), torch.randn(1, 768)
    with torch.inference_mode():
        uncond, cond = dhvae.guided_pair(model.denoiser, x, 321, text, null)
        torch.testing.assert_close(cond, model.denoiser(x, 321, text))
        torch.testing.assert_close(uncond, model.denoiser(x, 321, null.expand(4, -1)))


def test_decoder_takes_every_length_up_to_max_frames():
    model = dhvae.build_dummy(dhvae.PRESETS["tiny"], 2)
    with torch.inference_mode():
        for frames in (1, 17, 300):
            motion = model.decoder(torch.randn(1, 3, 64), frames)
            assert motion.shape == (1, 2, frames, 262) and torch.isfinite(motion).all()
    with pytest.raises(ValueError):
        model.decoder(torch.randn(1, 3, 64), 301)


def test_safetensors_round_trip(tmp_path):
    model = dhvae.build_dummy(dhvae.PRESETS["tiny"], 5)
    dhvae.save(model, tmp_path / "ckpt")
    loaded, weights = dhvae.load(str(tmp_path / "ckpt"))
    assert weights.startswith("sha256:") and len(weights) == len("sha256:") + 64
    for got, want in zip(outputs(loaded), outputs(model)):
        assert torch.equal(got, want)


def release_layout(c: dhvae.DHVAEConfig, gen: torch.Generator) -> dict:
    """Key names and shapes of the DHVAE release's CHMLD Lightning state_dict, written from its
    source (models/hmld/adaln.py, hdn.py, chmld/chvae.py, hmld/net.py), not from our modules."""
    d, c_dim, f = c.latent_dim, c.cond_dim, c.ffn_dim
    shapes = {}
    den = "denoiser.denoiser.denoiser."
    for i in range(c.layers):
        p = f"{den}layers.{i}."
        shapes.update({p + "attn.mat_qkv.weight": (3 * d, d), p + "attn.q_bias": (d,), p + "attn.v_bias": (d,),
                       p + "attn.zero_k_bias": (d,), p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
                       p + "ffn.fc1.weight": (f, d), p + "ffn.fc1.bias": (f,), p + "ffn.fc2.weight": (d, f),
                       p + "ffn.fc2.bias": (d,), p + "ada_lin.1.weight": (6 * d, c_dim), p + "ada_lin.1.bias": (6 * d,)})
    shapes.update({den + "head_nm.ada_lin.1.weight": (2 * d, c_dim), den + "head_nm.ada_lin.1.bias": (2 * d,),
                   "denoiser.text_proj.weight": (d, c_dim), "denoiser.text_proj.bias": (d,),
                   "denoiser.time_embedding.linear_1.weight": (c_dim, c_dim), "denoiser.time_embedding.linear_1.bias": (c_dim,),
                   "denoiser.time_embedding.linear_2.weight": (c_dim, c_dim), "denoiser.time_embedding.linear_2.bias": (c_dim,),
                   "denoiser.pe.pe": (1, 1000, d), "vae.decoder.pe.pe": (1, 5000, d),
                   "vae.encoder.u1": (2, d), "text_encoder.token_embedding.weight": (10, c_dim)})
    fd = c.decoder_ffn_dim

    def mha(p):
        return {p + "in_proj_weight": (3 * d, d), p + "in_proj_bias": (3 * d,), p + "out_proj.weight": (d, d), p + "out_proj.bias": (d,)}

    def norm(p):
        return {p + "weight": (d,), p + "bias": (d,)}

    def co_layer(p):
        out = {}
        for side in ("Left", "Right"):
            half = f"{p}{side}CoTRMLayer."
            out.update(mha(half + "mha."))
            out.update({half + "ffn.0.weight": (fd, d), half + "ffn.0.bias": (fd,), half + "ffn.2.weight": (d, fd), half + "ffn.2.bias": (d,)})
            out.update(norm(half + "normlayer1."))
            out.update(norm(half + "normlayer2."))
            enc = f"{p}{side}TRMLayer."
            out.update(mha(enc + "self_attn."))
            out.update({enc + "linear1.weight": (fd, d), enc + "linear1.bias": (fd,), enc + "linear2.weight": (d, fd), enc + "linear2.bias": (d,)})
            out.update(norm(enc + "norm1."))
            out.update(norm(enc + "norm2."))
        return out

    top = "vae.decoder.top_decoder."
    half = c.interaction_layers // 2
    shapes.update(co_layer(top + "co_transformer_layer."))
    for i in range(half):
        shapes.update(co_layer(f"{top}in_blocks.{i}."))
        shapes.update(co_layer(f"{top}out_blocks.{i}."))
        for side in ("left", "right"):
            shapes.update({f"{top}{side}_concat_layers.{i}.weight": (d, 2 * d), f"{top}{side}_concat_layers.{i}.bias": (d,)})
    shapes.update(co_layer(top + "mid_blocks.0."))
    for side, out in (("left", "1"), ("right", "2")):
        for i in range(c.decoder_layers):
            p = f"vae.decoder.decoder_{side}.layers.{i}."
            shapes.update(mha(p + "self_attn."))
            shapes.update(mha(p + "multihead_attn."))
            shapes.update({p + "linear1.weight": (fd, d), p + "linear1.bias": (fd,), p + "linear2.weight": (d, fd), p + "linear2.bias": (d,)})
            for n in (1, 2, 3):
                shapes.update(norm(f"{p}norm{n}."))
        shapes.update({f"vae.decoder.output_proj{out}.weight": (c.motion_dim, d), f"vae.decoder.output_proj{out}.bias": (c.motion_dim,)})
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def test_release_lightning_checkpoint_loads(tmp_path):
    config = dhvae.PRESETS["official"]
    state = release_layout(config, torch.Generator().manual_seed(0))
    hyper = {"mld": {"latent_dim": 256, "nhead": 4, "nlayer": 9, "dim_feedforward": 1024, "z3_scale": 5.0,
                     "is_skip": False, "text_encoder": {"d_cond": 768}},
             "vae": {"nlayer_ind": 4, "nlayer_top": 3, "nhead": 4, "dim_feedforward": 1024, "max_len": 300, "d_input": 262}}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": hyper, "epoch": 1600}, path)
    model, weights = dhvae.load(str(path))  # strict: every parameter of ours came from the file
    assert weights.startswith("sha256:")
    ours = model.state_dict()
    den = "denoiser.denoiser.denoiser."
    assert torch.equal(ours["denoiser.blocks.3.ada_lin.weight"], state[den + "layers.3.ada_lin.1.weight"])
    assert torch.equal(ours["denoiser.blocks.8.attn.mat_qkv.weight"], state[den + "layers.8.attn.mat_qkv.weight"])
    assert torch.equal(ours["denoiser.head.ada_lin.bias"], state[den + "head_nm.ada_lin.1.bias"])
    assert torch.equal(ours["decoder.positions"], state["vae.decoder.pe.pe"][:, :301])
    assert torch.equal(ours["decoder.interaction.mid_block.right_cross.norm2.weight"],
                      state["vae.decoder.top_decoder.mid_blocks.0.RightCoTRMLayer.normlayer2.weight"])
    assert torch.equal(ours["decoder.decoder_b.layers.2.multihead_attn.in_proj_weight"],
                      state["vae.decoder.decoder_right.layers.2.multihead_attn.in_proj_weight"])
    assert torch.equal(ours["decoder.output_a.weight"], state["vae.decoder.output_proj1.weight"])


def test_release_skip_checkpoint_maps_in_mid_out_layers():
    config = dhvae.DHVAEConfig(layers=5, skip=True)
    release = {
        "denoiser.denoiser.denoiser.in_layers.1.ffn.fc1.bias": torch.tensor([1.0]),
        "denoiser.denoiser.denoiser.mid_layer.ffn.fc1.bias": torch.tensor([2.0]),
        "denoiser.denoiser.denoiser.out_layers.0.ffn.fc1.bias": torch.tensor([3.0]),
        "denoiser.denoiser.denoiser.linear_layers.1.weight": torch.tensor([4.0]),
    }
    mapped = dhvae.map_release_keys(release, config)
    assert set(mapped) == {"denoiser.blocks.1.ffn.fc1.bias", "denoiser.blocks.2.ffn.fc1.bias",
                           "denoiser.blocks.3.ffn.fc1.bias", "denoiser.skip_linears.1.weight"}


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('MF_MARKER', '/nonexistent/marker')}",))


def test_unsafe_pickle_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MF_MARKER", str(marker))
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload()}, path)
    with pytest.raises(UnsafeCheckpoint, match="weights_only"):
        dhvae.load(str(path))
    assert not marker.exists()


def test_truncated_checkpoints_give_clear_errors(tmp_path):
    model = dhvae.build_dummy(dhvae.PRESETS["tiny"], 0)
    dhvae.save(model, tmp_path / "ours")
    weights = tmp_path / "ours" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="unreadable safetensors"):
        dhvae.load(str(tmp_path / "ours"))
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        dhvae.load(str(ckpt))


def test_a_weights_file_is_what_loads_and_what_provenance_names(tmp_path):
    """Issue 10, case 6: ``folder/other.safetensors`` loads that file (not ``model.safetensors``)
    and records its hash; a file that is not a checkpoint is refused."""
    from safetensors.torch import save_file

    from motionfleet.core.io.digests import file_sha256

    tiny = dhvae.PRESETS["tiny"]
    dhvae.save(dhvae.build_dummy(tiny, seed=0), str(tmp_path))
    other = dhvae.build_dummy(tiny, seed=1).state_dict()
    save_file({k: v.contiguous() for k, v in other.items()}, tmp_path / "other.safetensors")
    model, weights = dhvae.load(str(tmp_path / "other.safetensors"))
    assert all(torch.equal(value, other[key]) for key, value in model.state_dict().items())
    assert weights == f"sha256:{file_sha256(tmp_path / 'other.safetensors')}"
    (tmp_path / "notes.safetensors").write_text("these are not the weights you want")
    with pytest.raises(ValueError, match="unreadable safetensors file"):
        dhvae.load(str(tmp_path / "notes.safetensors"))


@pytest.mark.parametrize("hyper, reason", [
    ({"vae": {"max_len": 60000}}, "does not match the dhvae layout"),  # a 1 KB file claiming 60k frames
    ({"mld": {"nlayer": 10 ** 9}}, r"layers=.*in \[0, 256\]"),
    ({"mld": {"nlayer": "9"}}, "not a valid int"),
    ({"mld": ["not", "a", "mapping"]}, "'mld' is not a mapping"),
])
def test_hyper_parameters_cannot_claim_memory_or_smuggle_types(tmp_path, hyper, reason):
    """Issue 10, case 11: the model is built only once its layout (on the meta device) matches the
    tensors the file holds, and every header value is type-checked and bounded."""
    path = tmp_path / "small.ckpt"
    torch.save({"state_dict": {"vae.decoder.pe.pe": torch.zeros(1, 8, 4)}, "hyper_parameters": hyper}, path)
    assert path.stat().st_size < 2048
    with pytest.raises(ValueError, match=reason):
        dhvae.load(str(path))


def test_a_models_blocks_are_read_as_their_class_and_a_stray_module_is_refused():
    model = dhvae.build_dummy(dhvae.PRESETS["tiny"], seed=0)
    blocks = items_of(model.denoiser.blocks, dhvae.AdaLNBlock)
    assert blocks == list(model.denoiser.blocks) and len(blocks) == model.denoiser.num_blocks
    with pytest.raises(TypeError, match="AdaLNBlock, it holds a Linear"):
        items_of(torch.nn.ModuleList([*blocks, torch.nn.Linear(2, 2)]), dhvae.AdaLNBlock)
