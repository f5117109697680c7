"""ScoreHOI physical guidance: reference vs autograd, Triton (interpreter) vs reference."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from motionfleet.kernels.guidance import (
    guidance_loss_and_grad,
    guidance_loss_and_grad_reference,
)

RES = 8
SPHERE_RADIUS = 0.35
BOX_HALF = torch.tensor([0.3, 0.25, 0.3])
OPTIONS = dict(w_contact=1.3, w_floor=0.7, w_penetration=2.0, contact_margin=0.02,
               penetration_margin=0.01)


def sdf_grids():
    """(2, R, R, R) grids, sdf[k, ix, iy, iz]: a sphere and a box, negative inside."""
    lo = torch.tensor([[-0.5, -0.5, -0.5], [-0.4, -0.3, -0.35]])
    hi = -lo
    grids = []
    for k in range(2):
        axes = [torch.linspace(lo[k, a], hi[k, a], RES) for a in range(3)]
        p = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        if k == 0:
            grids.append(p.norm(dim=-1) - SPHERE_RADIUS)
        else:
            q = p.abs() - BOX_HALF
            grids.append(q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0))
    return torch.stack(grids), lo, hi


def random_rotation(batch, gen):
    x, y, z = torch.randn(3, batch, generator=gen)
    zero = torch.zeros(batch)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).view(batch, 3, 3)
    return torch.linalg.matrix_exp(skew)


def random_scene(batch, n_human=40, n_obj=64, seed=0, dtype=torch.float32):
    """Object near the floor (some points below it), human points in and around it."""
    gen = torch.Generator().manual_seed(seed)
    sdf, grid_min, grid_max = sdf_grids()
    rot = random_rotation(batch, gen)
    trans = torch.randn(batch, 3, generator=gen) * 0.3
    trans[:, 1] = 0.15
    template = F.normalize(torch.randn(batch, n_obj, 3, generator=gen), dim=-1) * SPHERE_RADIUS
    human = trans[:, None] + (torch.rand(batch, n_human, 3, generator=gen) - 0.5) * 1.1
    contact = torch.rand(batch, n_human, generator=gen)
    contact = contact * (torch.rand(batch, n_human, generator=gen) > 0.5)  # half masked out
    scene = dict(
        human=human, contact=contact, obj_points=template @ rot.transpose(1, 2) + trans[:, None],
        obj_rot=rot, obj_trans=trans, sdf=sdf, grid_min=grid_min, grid_max=grid_max,
        floor_contact=(torch.rand(batch, n_obj, generator=gen) > 0.5).float(),
    )
    scene = {name: t.to(dtype) for name, t in scene.items()}
    scene["obj_index"] = torch.arange(batch) % 2
    return scene


def naive_sdf(local, sdf, grid_min, grid_max, obj_index):
    """Phi_k(q) by grid_sample (independent of the kernel's indexing); +1 outside the grid."""
    values = []
    for b in range(local.shape[0]):
        lo, hi = grid_min[obj_index[b]], grid_max[obj_index[b]]
        unit = 2 * (local[b] - lo) / (hi - lo) - 1  # (N, 3) in [-1, 1]
        grid = unit[:, [2, 1, 0]].view(1, -1, 1, 1, 3)  # grid_sample wants (W, H, D) = (z, y, x)
        volume = sdf[obj_index[b]][None, None]
        values.append(F.grid_sample(volume, grid, align_corners=True).view(-1))
    lo, hi = grid_min[obj_index][:, None], grid_max[obj_index][:, None]
    inside = ((local >= lo) & (local <= hi)).all(-1)
    return torch.where(inside, torch.stack(values), torch.ones_like(inside, dtype=local.dtype))


def naive_loss(human, contact, obj_points, obj_rot, obj_trans, sdf, grid_min, grid_max,
               obj_index, floor_contact, w_contact, w_floor, w_penetration, contact_margin,
               penetration_margin):
    """The module docstring's L_P written directly in differentiable torch."""
    dist = torch.cdist(human, obj_points, compute_mode="donot_use_mm_for_euclid_dist")
    dist = dist.min(dim=2).values
    l_ho = (contact * torch.relu(dist - contact_margin)).sum(1)
    height = obj_points[..., 1]
    l_of = (torch.relu(-height) + floor_contact * torch.relu(height)).sum(1)
    local = torch.einsum("bji,bnj->bni", obj_rot, human - obj_trans[:, None])
    phi = naive_sdf(local, sdf, grid_min, grid_max, obj_index)
    l_pt = torch.relu(-phi - penetration_margin).sum(1)
    return w_contact * l_ho + w_floor * l_of + w_penetration * l_pt


def test_reference_matches_naive_loss_and_autograd():
    scene = random_scene(batch=3, seed=1, dtype=torch.float64)
    result = guidance_loss_and_grad_reference(**scene, **OPTIONS)
    leaves = {name: scene[name].clone().requires_grad_() for name in
              ("human", "obj_points", "obj_rot", "obj_trans")}
    loss = naive_loss(**{**scene, **leaves}, **OPTIONS)
    grads = torch.autograd.grad(loss.sum(), list(leaves.values()))
    assert (result.grad_obj_rot.abs().sum((1, 2)) > 0).all(), "scene has no penetrating points"
    torch.testing.assert_close(result.loss, loss.detach(), rtol=1e-10, atol=1e-10)
    names = ("grad_human", "grad_obj_points", "grad_obj_rot", "grad_obj_trans")
    for name, expected in zip(names, grads):
        torch.testing.assert_close(getattr(result, name), expected, rtol=1e-9, atol=1e-10, msg=name)


TRITON_SCRIPT = """
import sys, torch
from motionfleet.kernels.guidance import guidance_loss_and_grad_triton
inputs = torch.load(sys.argv[1], weights_only=True)
torch.save(guidance_loss_and_grad_triton(**inputs, block_h=16)._asdict(), sys.argv[2])
"""


@pytest.mark.parametrize("batch", [2, 3])
def test_triton_kernel_matches_reference(batch, tmp_path):
    """Interpreter run in a fresh process: TRITON_INTERPRET must be set before @triton.jit runs."""
    inputs = {**random_scene(batch=batch, seed=10 + batch), **OPTIONS}
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, str(tmp_path / "inputs.pt"),
                          str(tmp_path / "out.pt")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    expected = guidance_loss_and_grad_reference(**inputs)._asdict()
    for name, value in expected.items():
        assert value.abs().max() > 0, f"{name} is all zero: the scene tests nothing"
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-5 * value.abs().max(),
                                   msg=name)


def one_sample(human, contact=None, obj_points=None, **overrides):
    """Sphere object (index 0) rotated about y and moved to (0.2, 0.5, -0.1)."""
    sdf, grid_min, grid_max = sdf_grids()
    angle = torch.tensor(0.7)
    rot = torch.tensor([[angle.cos(), 0, angle.sin()], [0, 1, 0], [-angle.sin(), 0, angle.cos()]])
    scene = dict(
        human=human[None], obj_rot=rot[None], obj_trans=torch.tensor([[0.2, 0.5, -0.1]]),
        contact=torch.zeros(1, len(human)) if contact is None else contact[None],
        obj_points=torch.full((1, 64, 3), 5.0) if obj_points is None else obj_points[None],
        sdf=sdf, grid_min=grid_min, grid_max=grid_max, obj_index=torch.tensor([0]),
    )
    scene.update(overrides)
    return scene


def test_penetration_gradient_pushes_inside_points_out():
    centre = torch.tensor([0.2, 0.5, -0.1])
    inside = centre + torch.tensor([[0.1, 0.05, -0.03], [0.0, -0.25, 0.1]])
    outside = centre + torch.tensor([[0.0, 0.45, 0.0], [3.0, 0.0, 0.0]])  # in the grid / far away
    scene = one_sample(torch.cat([inside, outside]))
    result = guidance_loss_and_grad_reference(**scene, w_contact=0.0, w_floor=0.0)
    grad = result.grad_human[0]
    assert (grad[:2].norm(dim=-1) > 0.1).all()
    assert (grad[2:] == 0).all()

    def sdf_at(points):
        local = (points - scene["obj_trans"]) @ scene["obj_rot"][0]
        return naive_sdf(local[None], scene["sdf"], scene["grid_min"], scene["grid_max"],
                         scene["obj_index"])[0]

    stepped = inside - 0.01 * grad[:2] / grad[:2].norm(dim=-1, keepdim=True)
    assert (sdf_at(stepped) > sdf_at(inside) + 0.005).all()


def test_masked_contact_points_get_no_contact_gradient():
    gen = torch.Generator().manual_seed(3)
    human = torch.randn(10, 3, generator=gen) + torch.tensor([3.0, 0.0, 0.0])  # far from the object
    obj_points = torch.randn(64, 3, generator=gen) * 0.2 + torch.tensor([0.0, 1.0, 0.0])
    contact = torch.tensor([1.0, 0.0] * 5)
    options = dict(w_floor=0.0, w_penetration=0.0)
    result = guidance_loss_and_grad_reference(**one_sample(human, contact, obj_points), **options)
    grad_norm = result.grad_human[0].norm(dim=-1)
    assert (grad_norm[contact == 0] == 0).all()
    torch.testing.assert_close(grad_norm[contact == 1], torch.ones(5))  # |c_i u_i| = 1
    silent = guidance_loss_and_grad_reference(
        **one_sample(human, torch.zeros(10), obj_points), **options)
    assert (silent.grad_obj_points == 0).all() and (silent.loss == 0).all()


def test_floor_penalises_below_floor_and_floating_only_where_marked():
    # below the floor / floating / floating but marked as resting on the floor
    obj_points = torch.tensor([[0.0, -0.1, 0.0], [1.0, 0.2, 0.0], [2.0, 0.2, 0.0]])
    obj_points = obj_points.repeat(22, 1)[:64]
    floor_contact = torch.tensor([[0.0, 0.0, 1.0]]).repeat(1, 22)[:, :64]
    scene = one_sample(torch.full((4, 3), 9.0), obj_points=obj_points, floor_contact=floor_contact)
    result = guidance_loss_and_grad_reference(**scene, w_contact=0.0, w_penetration=0.0,
                                              w_floor=0.5)
    grad_height = result.grad_obj_points[0, :3, 1]
    torch.testing.assert_close(grad_height, torch.tensor([-0.5, 0.0, 0.5]))


def test_dispatch_on_cpu_is_the_reference():
    scene = random_scene(batch=2, seed=5)
    got = guidance_loss_and_grad(**scene, **OPTIONS)
    expected = guidance_loss_and_grad_reference(**scene, **OPTIONS)
    for name, value in expected._asdict().items():
        assert torch.equal(getattr(got, name), value), name
