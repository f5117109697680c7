"""SocialMirror denoiser: shapes, shared-weight symmetry, ControlNet zero-init, CloseInt's layout."""

import pytest
import torch
from layout import Layout

from motionfleet.core.errors import RejectedInput
from motionfleet.socialmirror import model as socialmirror
from motionfleet.socialmirror.model import (
    MOTION_DIM,
    PRESETS,
    build_model,
    example_inputs,
    load_released_checkpoint,
)

RELEASED = PRESETS["released"]
SMALL = PRESETS["small"]


def public_closeint_layout(latent=256, layers=4, ff=512, image=1024, max_len=5000):
    """Key -> shape of CloseInt's interhuman_diffusion_phys without ``smpl.*`` and ``out.*``,
    written out from its source (boycehbz/HumanInteraction demo_module/CloseInt/model/*.py)."""
    shapes = Layout({
        "sequence_pos_encoder.pe": (max_len, latent),
        "embed_timestep.sequence_pos_encoder.pe": (max_len, latent),
    })
    linear, layer_norm = shapes.linear, shapes.layer_norm

    def attention(name):
        shapes[f"{name}.in_proj_weight"] = (3 * latent, latent)
        shapes[f"{name}.in_proj_bias"] = (3 * latent,)
        linear(f"{name}.out_proj", latent, latent)

    linear("embed_timestep.time_embed.0", latent, latent)
    linear("embed_timestep.time_embed.2", latent, latent)
    linear("motion_embed", 157, latent)
    linear("feature_embed", 256, latent)
    for index in range(layers):
        block = f"blocks.{index}"
        for norm in ("sa_block.norm", "ca_block.norm", "ca_block.xf_norm", "ffn.norm"):
            linear(f"{block}.{norm}.emb_layers.1", latent, 2 * latent)
        attention(f"{block}.sa_block.attention")
        attention(f"{block}.ca_block.attention")
        linear(f"{block}.ffn.linear1", latent, ff)
        linear(f"{block}.ffn.linear2", ff, latent)
    layer_norm("project.0", image + 3)
    linear("project.1", image + 3, 256)
    for head, out_dim in (("head", 144), ("shape_head", 10), ("cam_head", 3)):
        layer_norm(f"{head}.0", latent + 3)
        linear(f"{head}.1", latent + 3, out_dim)
    return shapes


def randomise_zero_linears(model, seed):
    """Trained-looking ControlNet zero layers, so the text path has an effect."""
    generator = torch.Generator().manual_seed(seed)
    control = model.control_net
    with torch.no_grad():
        for layer in (control.text_project, *control.mid_zero_linear):
            layer.weight.copy_(0.1 * torch.randn(layer.weight.shape, generator=generator))
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=generator))


@pytest.fixture(scope="module")
def model():
    return build_model(RELEASED, seed=11)


def test_base_branch_has_closeint_keys_and_shapes():
    assert socialmirror.expected_layout(RELEASED) == public_closeint_layout()


def test_parameter_counts(model):
    assert sum(p.numel() for p in model.net.parameters()) == 5_807_756
    assert sum(p.numel() for p in model.parameters()) == 11_530_124


def test_forward_shape(model):
    with torch.no_grad():
        x0 = model(*example_inputs(RELEASED, batch_size=3))
    assert x0.shape == (3, 2, 16, MOTION_DIM)
    assert torch.isfinite(x0).all()


def test_dummy_weights_are_deterministic_per_seed(model):
    same = build_model(RELEASED, seed=11).state_dict()
    other = build_model(RELEASED, seed=12).state_dict()
    reference = model.state_dict()
    assert all(torch.equal(reference[key], same[key]) for key in reference)
    assert not torch.equal(reference["net.motion_embed.weight"], other["net.motion_embed.weight"])


def test_swapping_the_people_swaps_the_outputs():
    model = build_model(SMALL, seed=1).double()
    randomise_zero_linears(model, seed=2)
    inputs = example_inputs(SMALL, batch_size=2, dtype=torch.float64)
    x_t, t, image, bbox, text = inputs
    with torch.no_grad():
        reference = model(*inputs)
        swapped = model(x_t.flip(1), t, image.flip(1), bbox.flip(1), text.flip(1))
    assert torch.allclose(swapped, reference.flip(1), rtol=0, atol=1e-12)
    assert not torch.allclose(reference[:, 0], reference[:, 1])


def test_zero_initialised_controlnet_leaves_the_base_output_unchanged(model):
    x_t, t, image, bbox, text = example_inputs(RELEASED, batch_size=2)
    with torch.no_grad():
        base = model.net(x_t, t, image, bbox)
        assert torch.equal(model(x_t, t, image, bbox), base)
        assert torch.equal(model(x_t, t, image, bbox, text), base)


def test_absent_text_is_the_zero_feature():
    model = build_model(SMALL, seed=4)
    randomise_zero_linears(model, seed=5)
    x_t, t, image, bbox, text = example_inputs(SMALL, batch_size=2)
    with torch.no_grad():
        without = model(x_t, t, image, bbox)
        assert torch.equal(without, model(x_t, t, image, bbox, torch.zeros_like(text)))
        assert not torch.allclose(without, model(x_t, t, image, bbox, text))


def test_image_features_and_timestep_condition_the_output(model):
    x_t, t, image, bbox, _ = example_inputs(RELEASED, batch_size=2)
    with torch.no_grad():
        reference = model(x_t, t, image, bbox)
        assert not torch.allclose(reference, model(x_t, t, torch.randn_like(image), bbox))
        assert not torch.allclose(reference, model(x_t, (t + 50) % 100, image, bbox))


def released_state_dict(net):
    """The base branch's weights plus the keys the public module carries beside the denoiser."""
    state_dict = dict(net.state_dict())
    state_dict.update(
        {
            "smpl.pose": torch.zeros(72),
            "smpl.shape": torch.zeros(10),
            "smpl.name": torch.zeros(6890, 3, 10),
            "out.linear.weight": torch.zeros(MOTION_DIM, RELEASED.latent_dim),
            "out.linear.bias": torch.zeros(MOTION_DIM),
        }
    )
    return state_dict


def test_released_layout_file_loads_into_the_base_branch(model, tmp_path):
    path = tmp_path / "checkpoint_non_phys.pkl"
    torch.save({"model": released_state_dict(model.net), "epoch": 30}, path)
    loaded, config = load_released_checkpoint(path)
    inputs = example_inputs(RELEASED, batch_size=2)
    with torch.no_grad():
        assert torch.equal(loaded.net(*inputs[:4]), model.net(*inputs[:4]))
        assert torch.equal(loaded(*inputs), model.net(*inputs[:4]))
    assert config == RELEASED


def test_checkpoint_missing_a_layer_names_it(model, tmp_path):
    state_dict = released_state_dict(model.net)
    del state_dict["blocks.3.ca_block.xf_norm.emb_layers.1.bias"]
    path = tmp_path / "checkpoint_non_phys.pkl"
    torch.save({"model": state_dict}, path)
    with pytest.raises(RejectedInput, match=r"missing \(1\): blocks\.3\.ca_block\.xf_norm\.emb_layers\.1\.bias"):
        load_released_checkpoint(path)


def test_checkpoint_with_a_foreign_key_is_rejected(model, tmp_path):
    state_dict = released_state_dict(model.net)
    state_dict["clip_ln.weight"] = torch.zeros(512)
    path = tmp_path / "checkpoint_non_phys.pkl"
    torch.save({"model": state_dict}, path)
    with pytest.raises(RejectedInput, match=r"unexpected \(1\): clip_ln\.weight"):
        load_released_checkpoint(path)


def test_truncated_checkpoint_is_a_clear_error(model, tmp_path):
    path = tmp_path / "checkpoint_non_phys.pkl"
    torch.save({"model": released_state_dict(model.net)}, path)
    path.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        load_released_checkpoint(path)


def test_our_model_folder_loads_and_its_config_cannot_claim_memory(tmp_path):
    """Issue 10, case 11: ``config.json`` is untrusted: bounded, typed, and checked against the
    tensors on the meta device before anything is allocated."""
    from dataclasses import asdict

    from motionfleet.common.weights import save_model
    from motionfleet.socialmirror.model import load_model

    config = socialmirror.PRESETS["small"]
    model = socialmirror.build_model(config, seed=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # two keys share the positions
    save_model(tmp_path / "ok", state, asdict(config))
    loaded, _ = load_model(str(tmp_path / "ok"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    save_model(tmp_path / "long", state, {**asdict(config), "max_positions": 60000})
    with pytest.raises(RejectedInput, match="does not match the socialmirror layout"):
        load_model(str(tmp_path / "long"))
    save_model(tmp_path / "typed", state, {**asdict(config), "num_layers": "2"})
    with pytest.raises(ValueError, match="num_layers='2' is not a valid int"):
        load_model(str(tmp_path / "typed"))
