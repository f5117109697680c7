"""ScoreHOI denoiser: dummy weights, shapes, the released layout, exact folding and the stored fold."""

from dataclasses import replace

import pytest
import torch
from layout import Layout
from safetensors.torch import save_file

from motionfleet.core.errors import RejectedInput
from motionfleet.scorehoi import fold_cache
from motionfleet.scorehoi import model as scorehoi
from motionfleet.scorehoi.fold_cache import fold_path, folded_denoiser
from motionfleet.scorehoi.model import (
    PRESETS,
    STATE_DIM,
    build_model,
    example_inputs,
    fold_scorehoi,
    load_released_checkpoint,
    parameter_and_flop_count,
)

SMALL = PRESETS["small"]
RELEASED = PRESETS["released"]


def public_ipfc_obj_layout(hidden=2048, condition=2048, geometry_in=64 * 3 + 1024, pose_blocks=3, shape_blocks=2):
    """Key -> shape of the public IPFC_Obj with use_betas, written out from its source
    (RammusLeo/ScoreHOI lib/models/denoising_model_attcond.py, lib/models/model_blocks.py)."""
    shapes = Layout()
    linear, layer_norm = shapes.linear, shapes.layer_norm

    def batch_norm(name, dim):
        layer_norm(name, dim)
        shapes.update({f"{name}.running_mean": (dim,), f"{name}.running_var": (dim,)})
        shapes[f"{name}.num_batches_tracked"] = ()

    def attention_cond_emb(name, dim):
        linear(f"{name}.query_proj", condition, dim)
        linear(f"{name}.key_proj", dim, dim)
        linear(f"{name}.value_proj", dim, dim)
        shapes[f"{name}.attn.in_proj_weight"] = (3 * dim, dim)
        shapes[f"{name}.attn.in_proj_bias"] = (3 * dim,)
        linear(f"{name}.attn.out_proj", dim, dim)

    def attn_res_mlp_block(name, dim):
        linear(f"{name}.mlp.1", 4 * dim, 2 * dim)
        layer_norm(f"{name}.block.layer_norm1", dim)
        linear(f"{name}.block.linear_layer1", dim, hidden)
        attention_cond_emb(f"{name}.block.attn_cond_emb", hidden)
        attention_cond_emb(f"{name}.block.ip_attn_cond_emb", hidden)
        linear(f"{name}.block.after_ip_attn", hidden, hidden)
        layer_norm(f"{name}.block.layer_norm2", hidden)
        linear(f"{name}.block.linear_layer2", hidden, dim)
        linear(f"{name}.align_ip_cond", condition, condition)

    def branch(suffix, dim, blocks):
        linear(f"time_mlp{suffix}.1", dim, 4 * dim)
        linear(f"time_mlp{suffix}.3", 4 * dim, 4 * dim)
        linear(f"init_mlp{suffix}", dim, dim)
        for index in range(blocks):
            attn_res_mlp_block(f"blocks{suffix}.{index}", dim)
        linear(f"final_mlp{suffix}", dim, dim)

    branch("", 52 * 6 + 6 + 3, pose_blocks)
    branch("_betas", 10, shape_blocks)
    linear("geo_cond_embedding_feat.fc1", geometry_in, 4096)
    batch_norm("geo_cond_embedding_feat.bn1", 4096)
    linear("geo_cond_embedding_feat.fc2", 4096, 2048)
    batch_norm("geo_cond_embedding_feat.bn2", 2048)
    linear("geo_cond_embedding_feat.fc3", 2048, 2048)
    return shapes


@pytest.fixture(scope="module")
def small_model():
    return build_model(SMALL, seed=3)


def test_released_preset_has_the_public_keys_and_shapes():
    assert scorehoi.expected_layout(RELEASED) == public_ipfc_obj_layout()


def test_released_preset_parameter_count_is_362m():
    with torch.device("meta"):
        model = scorehoi.ScoreHOIDenoiser(RELEASED)
    assert sum(p.numel() for p in model.parameters()) == 362_101_287


def test_dummy_weights_are_deterministic_per_seed(small_model):
    same = build_model(SMALL, seed=3).state_dict()
    other = build_model(SMALL, seed=4).state_dict()
    reference = small_model.state_dict()
    assert all(torch.equal(reference[key], same[key]) for key in reference)
    key = "blocks.0.block.linear_layer1.weight"
    assert not torch.equal(reference[key], other[key])


def test_forward_predicts_noise_of_the_state_shape(small_model):
    with torch.no_grad():
        epsilon = small_model(*example_inputs(SMALL, batch_size=5))
    assert epsilon.shape == (5, STATE_DIM)
    assert torch.isfinite(epsilon).all()


def test_geometry_features_of_any_trailing_shape_are_flattened(small_model):
    x_t, t, image, geometry = example_inputs(SMALL, batch_size=2)
    with torch.no_grad():
        flat = small_model(x_t, t, image, geometry)
        points = small_model(x_t, t, image, geometry.reshape(2, -1, 3))
    assert torch.equal(flat, points)


def test_output_does_not_depend_on_the_conditions(small_model):
    """The public model's fault, reproduced: length-1 attention ignores its query."""
    x_t, t, image, geometry = example_inputs(SMALL, batch_size=3)
    with torch.no_grad():
        reference = small_model(x_t, t, image, geometry)
        changed = small_model(x_t, t, torch.randn_like(image), torch.randn_like(geometry))
    assert torch.equal(reference, changed)


def save_released_layout(path, model):
    torch.save({"model_state_dict": model.state_dict(), "epoch": 7}, path)


def test_released_layout_file_loads_strictly_and_reproduces_outputs(small_model, tmp_path):
    path = tmp_path / "diffusion.pth.tar"
    save_released_layout(path, small_model)
    loaded, config = load_released_checkpoint(path, SMALL)
    inputs = example_inputs(SMALL, batch_size=4)
    with torch.no_grad():
        assert torch.equal(loaded(*inputs), small_model(*inputs))
    assert config == SMALL


def test_released_file_with_numpy_scalars_in_its_training_log_loads(small_model, tmp_path):
    import numpy as np

    path = tmp_path / "diffusion.pth.tar"
    log = {"loss": [np.float64(0.31), np.float32(0.2)], "epoch": np.int64(7), "best": np.bool_(True)}
    torch.save({"model_state_dict": small_model.state_dict(), "train_log": log}, path)
    loaded, _ = load_released_checkpoint(path, SMALL)
    inputs = example_inputs(SMALL, batch_size=4)
    with torch.no_grad():
        assert torch.equal(loaded(*inputs), small_model(*inputs))


def test_numpy_arrays_and_other_classes_stay_refused(small_model, tmp_path):
    from argparse import Namespace

    import numpy as np

    from motionfleet.core.errors import UnsafeCheckpoint

    for extra in (np.zeros(3), Namespace(lr=1e-4)):
        path = tmp_path / "diffusion.pth.tar"
        torch.save({"model_state_dict": small_model.state_dict(), "train_log": extra}, path)
        with pytest.raises(UnsafeCheckpoint, match="refused"):
            load_released_checkpoint(path, SMALL)


def test_truncated_checkpoint_is_a_clear_error(small_model, tmp_path):
    path = tmp_path / "diffusion.pth.tar"
    save_released_layout(path, small_model)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        load_released_checkpoint(path, SMALL)


def test_checkpoint_missing_a_layer_names_it(small_model, tmp_path):
    state_dict = small_model.state_dict()
    del state_dict["blocks_betas.1.align_ip_cond.weight"]
    path = tmp_path / "diffusion.pth.tar"
    torch.save({"model_state_dict": state_dict}, path)
    with pytest.raises(RejectedInput, match=r"missing \(1\): blocks_betas\.1\.align_ip_cond\.weight"):
        load_released_checkpoint(path, SMALL)


def test_checkpoint_of_other_sizes_names_the_mismatch(small_model, tmp_path):
    path = tmp_path / "diffusion.pth.tar"
    save_released_layout(path, small_model)
    with pytest.raises(RejectedInput, match="wrong shape"):
        load_released_checkpoint(path, replace(SMALL, hidden_dim=96))


def test_file_without_model_state_dict_is_rejected(small_model, tmp_path):
    path = tmp_path / "diffusion.pth.tar"
    torch.save(small_model.state_dict(), path)
    with pytest.raises(RejectedInput, match="model_state_dict"):
        load_released_checkpoint(path, SMALL)


def test_folded_model_equals_unfolded_in_float64():
    model = build_model(SMALL, seed=5).double()
    folded = fold_scorehoi(model)
    x_t, t, image, geometry = example_inputs(SMALL, batch_size=6, dtype=torch.float64)
    with torch.no_grad():
        reference = model(x_t, t, image, geometry)
        assert torch.allclose(folded(x_t, t, image, geometry), reference, rtol=0, atol=1e-12)
        assert torch.allclose(folded(x_t, t), reference, rtol=0, atol=1e-12)


def test_folded_model_keeps_the_released_model_unchanged(small_model):
    before = {key: value.clone() for key, value in small_model.state_dict().items()}
    fold_scorehoi(small_model)
    assert all(torch.equal(before[key], value) for key, value in small_model.state_dict().items())


def test_folding_the_released_sizes_cuts_parameters_and_flops_twelvefold():
    with torch.device("meta"):
        model = scorehoi.ScoreHOIDenoiser(RELEASED).eval()
    params, flops = parameter_and_flop_count(model, RELEASED)
    folded_params, folded_flops = parameter_and_flop_count(fold_scorehoi(model), RELEASED)
    assert (params, flops) == (362_101_287, 723_837_964)
    assert (folded_params, folded_flops) == (29_790_759, 59_483_148)


def test_the_folded_model_shares_the_layers_the_fold_leaves_as_they_are(small_model):
    folded = fold_scorehoi(small_model)
    assert folded.time_mlp is small_model.time_mlp and folded.final_mlp_betas is small_model.final_mlp_betas
    assert folded.blocks[0].linear_layer1 is small_model.blocks[0].block.linear_layer1
    unshared = {id(p) for p in folded.parameters()} - {id(p) for p in small_model.parameters()}
    assert len(unshared) == 2 * (len(small_model.blocks) + len(small_model.blocks_betas))  # each block's affine weight and bias


# --- the fold kept in the cache (scorehoi.fold_cache): a stored fold is the fold this process
# would compute, bit for bit, and anything else in its place is folded again

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "scorehoi-folded"


def denoised(model: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(5, scorehoi.STATE_DIM, generator=generator)
    with torch.no_grad():
        return model(x_t, torch.tensor([1, 50, 200, 500, 999]))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_stored_fold_is_the_fold_this_process_computes(cache, monkeypatch):
    made, weights = folded_denoiser(None, "small", 3, CPU)
    assert weights == "dummy, seed 3" and len(list(cache.iterdir())) == 1
    reference = fold_scorehoi(build_model(SMALL, seed=3))
    monkeypatch.setattr(scorehoi, "fold_scorehoi", lambda model: pytest.fail("folded again"))
    stored, stored_weights = folded_denoiser(None, "small", 3, CPU)
    assert stored_weights == weights
    assert same_weights(stored, reference) and same_weights(made, reference)
    assert torch.equal(denoised(stored), denoised(reference))


def test_other_weights_a_released_file_and_other_threads_are_other_folds(cache, tmp_path):
    checkpoint = tmp_path / "diffusion.pth.tar"
    save_released_layout(checkpoint, build_model(SMALL, seed=7))
    from_file, weights = folded_denoiser(str(checkpoint), "small", 0, CPU)
    assert weights.startswith("sha256:")
    assert same_weights(from_file, fold_scorehoi(build_model(SMALL, seed=7)))
    folded_denoiser(None, "small", 7, CPU)  # the same numbers, but named as dummy weights
    threads, with_these_threads = torch.get_num_threads(), fold_path("dummy, seed 7", "small", CPU)
    try:
        torch.set_num_threads(threads + 1)
        assert fold_path("dummy, seed 7", "small", CPU) != with_these_threads
        folded_denoiser(None, "small", 7, CPU)
    finally:
        torch.set_num_threads(threads)
    assert len(list(cache.iterdir())) == 3


@pytest.mark.parametrize("damage", ["truncated", "another layout", "half precision", "not safetensors"])
def test_a_damaged_or_foreign_file_in_the_fold_s_place_is_folded_again(cache, damage):
    path = fold_path("dummy, seed 0", "small", CPU)
    path.parent.mkdir(parents=True)
    good = fold_scorehoi(build_model(SMALL, seed=0))
    if damage == "truncated":
        save_file({k: v.contiguous() for k, v in good.state_dict().items()}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "another layout":
        save_file({"blocks.0.attention_affine.weight": torch.zeros(3, 3)}, path)
    elif damage == "half precision":
        save_file({k: v.half().contiguous() for k, v in good.state_dict().items()}, path)
    else:
        path.write_bytes(b"\x80\x04not a safetensors file")
    model, _ = folded_denoiser(None, "small", 0, CPU)
    assert same_weights(model, good)
    assert fold_cache.read_fold(path, SMALL, CPU) is not None  # replaced by the good fold


def test_a_cache_that_cannot_be_written_keeps_nothing_and_the_fold_still_runs(cache):
    cache.parent.mkdir(parents=True)
    cache.write_text("a file where the cache's folder would be")
    model, _ = folded_denoiser(None, "small", 0, CPU)
    assert same_weights(model, fold_scorehoi(build_model(SMALL, seed=0)))
    assert cache.read_text().startswith("a file")
