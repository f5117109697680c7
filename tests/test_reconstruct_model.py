"""socialmirror's pieces: crop geometry, the initial estimate, DDIM around it, joint guidance, prefetch."""

import math
import threading
import time

import pytest
import torch

from motionfleet.common.bodies import load_body_model
from motionfleet.core.io.prefetch import Prefetch
from motionfleet.demo.body_models import write_synthetic_body_model
from motionfleet.sampling import ddim
from motionfleet.sampling.initial_ddim import closeint_config, sample_around
from motionfleet.socialmirror.initial_estimate import (
    bbox_info,
    build_initial_estimator,
    cam_crop_to_full,
    focal_length,
    mean_estimate,
    split_estimate,
)
from motionfleet.socialmirror.pair_guidance import (
    CropGeometry,
    GuidanceWeights,
    PairJointGuidance,
    SMPLJoints,
    estimate_joints,
    pair_loss_and_grad,
)

WIDTH, HEIGHT = 320, 240


@pytest.fixture(scope="module")
def body(tmp_path_factory):
    folder = tmp_path_factory.mktemp("body")
    write_synthetic_body_model(folder, "smpl")
    return load_body_model("smpl", folder)


def test_crop_camera_puts_the_body_at_the_crop_centre():
    squares = torch.tensor([[40.0, 30.0, 140.0, 130.0], [200.0, 10.0, 300.0, 110.0]])
    camera = torch.tensor([[0.9, 0.0, 0.0], [1.3, 0.0, 0.0]])
    t = cam_crop_to_full(camera, squares, WIDTH, HEIGHT)
    f = focal_length(WIDTH, HEIGHT)
    projected = torch.stack([f * t[:, 0] / t[:, 2] + WIDTH / 2, f * t[:, 1] / t[:, 2] + HEIGHT / 2], dim=1)
    assert torch.allclose(projected, (squares[:, :2] + squares[:, 2:]) / 2, atol=1e-3)
    assert t[1, 2] < t[0, 2]  # a larger crop scale s is a nearer body
    info = bbox_info(squares, WIDTH, HEIGHT)
    assert info.shape == (2, 3) and info[0, 0] < 0 < info[1, 0]


def test_initial_estimate_is_near_the_mean_and_depends_on_the_image():
    estimator = build_initial_estimator(48, seed=1)
    features = torch.randn(8, 2048)
    with torch.no_grad():
        image = estimator.image_features(features)
        x = estimator.regress(image, torch.zeros(8, 3))
    assert image.shape == (8, 48) and x.shape == (8, 157)
    assert (x - mean_estimate()).abs().max() < 0.5
    assert not torch.allclose(x[0], x[1])
    pose, betas, camera = split_estimate(mean_estimate())
    assert pose.shape == (24, 6) and betas.abs().sum() == 0 and torch.equal(camera, torch.tensor([0.9, 0.0, 0.0]))


def test_estimator_weights_round_trip(tmp_path):
    from safetensors.torch import save_file

    estimator = build_initial_estimator(48, seed=3)
    save_file({k: v for k, v in estimator.state_dict().items() if k != "mean"}, tmp_path / "head.safetensors")
    loaded = build_initial_estimator(48, str(tmp_path / "head.safetensors"), seed=99)
    features = torch.randn(4, 2048)
    with torch.no_grad():
        assert torch.equal(loaded.image_features(features), estimator.image_features(features))


def test_closeint_timesteps_and_the_last_step_returns_the_prediction():
    steps = ddim.plan(closeint_config())
    assert [s.t for s in steps] == [80, 60, 40, 20, 0]
    assert steps[-1].abar_prev == 1.0 and steps[-1].a == 0.0 and steps[-1].b == 1.0


def test_sampling_starts_at_the_initial_estimate_and_recovers_a_perfect_prediction():
    steps = ddim.plan(closeint_config())
    x_init, target = torch.randn(4, 2, 16, 157), torch.randn(4, 2, 16, 157)
    z = torch.randn_like(x_init)
    seen = []

    def denoise(y, t):
        seen.append(y.clone())
        return target - x_init  # the offset y0 = x0 - x_init

    x0 = sample_around(denoise, x_init, z, steps, sigma=0.5)
    assert torch.allclose(seen[0], 0.5 * z)  # x_T = x_init + sigma z (eq. 3's start)
    assert torch.allclose(x0, target, atol=1e-5)
    # DDIM eq. 12 (eta 0) keeps the implied noise of x_T: y_t = sqrt(abar_t) y0 + sqrt(1 - abar_t) eps
    first, second = steps[0], steps[1]
    y0 = target - x_init
    eps = (0.5 * z - math.sqrt(first.abar_t) * y0) / math.sqrt(1 - first.abar_t)
    expected = math.sqrt(second.abar_t) * y0 + math.sqrt(1 - second.abar_t) * eps
    assert torch.allclose(seen[1], expected, atol=1e-5)


def test_an_estimate_with_betas_and_a_camera_keeps_them_once():
    """CloseInt's network predicts the offset from (initial pose, zero betas, camera (0.9, 0, 0)).
    A network that returns the estimate itself must give back the estimate: its betas and camera
    once, not added again by centring on the whole estimate."""
    from types import SimpleNamespace

    from motionfleet.socialmirror.runner import Reconstructor, ReconstructSettings, ReconstructSpec

    reconstructor = Reconstructor(ReconstructSpec(preset="small"), ReconstructSettings(steps=2, batch_size=2))
    frames, dim = reconstructor.clip_len, reconstructor.config.image_feature_dim
    estimate = mean_estimate().expand(2, frames, -1).clone()
    estimate[..., :144] += 0.1 * torch.randn(2, frames, 144, generator=torch.Generator().manual_seed(0))
    estimate[..., 144:154] = 0.7
    estimate[..., 154:] = torch.tensor([1.2, 0.1, -0.2])
    offset = estimate.clone()  # hand-derived: estimate minus CloseInt's centre
    offset[..., :144] = 0
    offset[..., 154:] -= torch.tensor([0.9, 0.0, 0.0])
    reconstructor.denoiser = lambda y, t, features, bbox, text: offset.expand_as(y)
    clip = SimpleNamespace(x_init=estimate, image_features=torch.zeros(2, frames, dim), bbox=torch.zeros(2, frames, 3),
                           text=None)
    x0 = reconstructor.diffuse([clip], seeds=[0])[0]
    torch.testing.assert_close(x0, estimate, rtol=0, atol=1e-5)


def test_pair_loss_gradient_matches_autograd():
    generator = torch.Generator().manual_seed(0)
    pair = 0.1 * torch.randn(3, 2, 24, 3, generator=generator, dtype=torch.float64)
    aux = pair + 0.05 * torch.randn(pair.shape, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[True, False], [True, True], [False, False]])
    loss, grad = pair_loss_and_grad(pair, 0.08, 2.0, 0.5, aux, mask)
    x = pair.clone().requires_grad_(True)
    offsets = x[:, 0, :, None] - x[:, 1, None]
    reference = 2.0 * (torch.relu(0.16 - offsets.norm(dim=-1)) ** 2).sum((1, 2))
    reference = reference + 0.5 * 0.5 * ((mask[..., None, None] * (x - aux)) ** 2).sum((1, 2, 3))
    (expected,) = torch.autograd.grad(reference.sum(), x)
    assert loss.gt(0).all() and torch.allclose(loss, reference) and torch.allclose(grad, expected)


def test_auxiliary_joints_without_their_mask_are_a_clear_error():
    pair = torch.zeros(3, 2, 24, 3)
    with pytest.raises(ValueError, match="aux_mask"):
        pair_loss_and_grad(pair, 0.08, 2.0, 0.5, pair, None)


def test_smpl_joints_equal_the_body_models_joints(body):
    generator = torch.Generator().manual_seed(1)
    pose = torch.randn(5, 24, 6, generator=generator)
    betas = torch.randn(5, 10, generator=generator)
    from motionfleet.common.rotations import rotation_6d_to_matrix

    expected = body(pose, betas).joints
    assert torch.allclose(SMPLJoints(body)(rotation_6d_to_matrix(pose), betas), expected, atol=1e-5)


def overlapping_pair(batch=2, frames=4):
    """Estimates of two people in the mean pose, person 1 a few centimetres right of person 0."""
    x = mean_estimate().expand(batch, 2, frames, 157).clone()
    squares = torch.tensor([[100.0, 60.0, 220.0, 180.0], [106.0, 60.0, 226.0, 180.0]])
    return x, CropGeometry(squares[:, None].expand(batch, 2, frames, 4).clone(), WIDTH, HEIGHT)


def test_guidance_gradient_matches_autograd_through_the_body(body):
    joints = SMPLJoints(body)
    x, crops = overlapping_pair()
    x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    guidance = PairJointGuidance(joints, crops, GuidanceWeights(scale=1.0))
    loss, grad = guidance(x)
    probe = x.clone().requires_grad_(True)
    pair = estimate_joints(probe, crops, joints).transpose(1, 2)
    offsets = pair[:, :, 0, :, None] - pair[:, :, 1, None]
    reference = (torch.relu(0.16 - offsets.norm(dim=-1)) ** 2).sum((1, 2, 3))
    (expected,) = torch.autograd.grad(reference.sum(), probe)
    assert loss.gt(0).all() and torch.allclose(loss, reference, rtol=1e-4)
    assert torch.allclose(grad, expected, rtol=1e-3, atol=1e-5)


def test_guided_sampling_separates_two_people_standing_in_one_place(body):
    joints = SMPLJoints(body)
    x_init, crops = overlapping_pair()
    guidance = PairJointGuidance(joints, crops, GuidanceWeights(scale=1.0))
    steps = ddim.plan(closeint_config())
    z = torch.zeros_like(x_init)

    def denoise(y, t):  # a model that trusts its input: the prediction is the current state
        return y

    plain = sample_around(denoise, x_init, z, steps)
    guided = sample_around(denoise, x_init, z, steps, loss_grad=guidance, rho=1.0)
    assert torch.equal(plain, x_init)
    assert guidance(guided)[0].sum() < 0.5 * guidance(plain)[0].sum()


def test_prefetch_is_bounded_and_passes_on_errors():
    produced = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    with Prefetch(items(), depth=2) as stream:
        iterator = iter(stream)
        assert next(iterator) == 0
        time.sleep(0.2)
        assert len(produced) <= 4  # the one consumed, two queued, one waiting to be queued
        assert list(iterator) == list(range(1, 20))

    def failing():
        yield 1
        raise ValueError("broken input")

    with Prefetch(failing(), depth=1) as stream, pytest.raises(ValueError, match="broken input"):
        list(stream)


def test_prefetch_close_stops_the_producer_early():
    started = threading.Event()

    def endless():
        i = 0
        while True:
            started.set()
            yield i
            i += 1

    stream = Prefetch(endless(), depth=1)
    started.wait(5)
    stream.close()
    assert not stream.thread.is_alive()
