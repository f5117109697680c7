"""ScoreHOI physical guidance: loss and analytic gradient in one fused pass.

ScoreHOI (Sec. 3.3) guides DDIM with L_P = l_ho L_ho + l_of L_of + l_pt L_pt, evaluated on the
predicted clean human points h (B, Nh, 3) and object points o (B, No, 3), world frame, y up, floor
at y = 0. The extraction lost the equation numbers, so the exact formulas are given here. Every
term is a SUM over points, per sample (as the public code's ``.sum(1)``), so a weight is per point.

    L_ho = sum_i c_i * relu(d_i - m_c),   d_i = min_j ||h_i - o_j||
        human side of the paper's ||(M_h + M_o) * |V_h - V_o| ||; hinged at m_c (public code's
        contact threshold, 0.02 m) so points already touching are left alone.
    L_of = sum_j relu(-y_j) + f_j * relu(y_j)
        the paper's ||M_f * |V_o| ||_1 for the floor-contact points f (f_j = 1 gives |y_j|), plus a
        below-floor penalty on every point. A floating object is pulled down only where f marks
        floor contact: an object the person holds or carries is legitimately off the floor, and
        the paper restricts L_of to M_f for that reason.
    L_pt = sum_i relu(-Phi_k(R^T (h_i - t)) - m_p)
        the paper's -E[|Phi^-(V_h)|] made differentiable: Phi_k is the trilinearly interpolated SDF
        grid of object k (negative inside), so the gradient pushes points out along grad Phi.
        Points outside the grid are outside the object. (The public code counts SDF-negative
        points, whose gradient is zero.)

Gradients (all analytic; u_i = (h_i - o_n(i)) / d_i with n(i) the nearest object point,
g_i = -relu'(-Phi - m_p) * R^T-frame grad Phi at q_i = R^T (h_i - t)):
    dL_ho/dh_i = c_i u_i [d_i > m_c],  dL_ho/do_j = -sum_{i: n(i) = j} c_i u_i [d_i > m_c]
    dL_of/dy_j = -[y_j < 0] + f_j [y_j > 0]
    dL_pt/dh_i = R g_i,  dL_pt/dt = -sum_i R g_i,  dL_pt/dR = sum_i (h_i - t) g_i^T
``obj_points`` is an independent input: the caller who built o = R p + t chains grad_obj_points
into R and t itself; grad_obj_rot / grad_obj_trans hold only the SDF term's dependence on the pose.

SDF grid layout: ``sdf[k, ix, iy, iz]`` is the value at grid_min[k] + (ix, iy, iz) * voxel[k],
voxel = (grid_max - grid_min) / (R - 1) (numpy ``meshgrid(..., indexing="ij")`` order).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from motionfleet.kernels.triton_loader import UNAVAILABLE, tl, triton


class GuidanceResult(NamedTuple):
    loss: torch.Tensor  # (B,)
    grad_human: torch.Tensor  # (B, Nh, 3)
    grad_obj_points: torch.Tensor  # (B, No, 3)
    grad_obj_rot: torch.Tensor  # (B, 3, 3)
    grad_obj_trans: torch.Tensor  # (B, 3)


def _validate(human, contact, obj_points, obj_rot, obj_trans, sdf, grid_min, grid_max, obj_index):
    b, nh = human.shape[:2]
    expected = {
        "human": (human, (b, nh, 3)), "contact": (contact, (b, nh)),
        "obj_points": (obj_points, (b, obj_points.shape[1], 3)), "obj_rot": (obj_rot, (b, 3, 3)),
        "obj_trans": (obj_trans, (b, 3)), "obj_index": (obj_index, (b,)),
        "grid_min": (grid_min, (sdf.shape[0], 3)), "grid_max": (grid_max, (sdf.shape[0], 3)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}")
    if sdf.dim() != 4 or not (sdf.shape[1] == sdf.shape[2] == sdf.shape[3] >= 2):
        raise ValueError(f"sdf must be (K, R, R, R) with R >= 2, got {tuple(sdf.shape)}")


# ----------------------------------------------------------------------------- reference (torch)

def _contact_term(human, contact, obj_points, margin):
    """L_ho and its gradients on human and object points."""
    offsets = human[:, :, None, :] - obj_points[:, None, :, :]  # (B, Nh, No, 3)
    dist, nearest = offsets.norm(dim=-1).min(dim=2)
    active = dist > margin
    loss = torch.where(active, contact * (dist - margin), torch.zeros_like(dist)).sum(1)
    to_nearest = torch.gather(offsets, 2, nearest[:, :, None, None].expand(-1, -1, 1, 3))[:, :, 0]
    scale = torch.where(active, contact / dist.clamp_min(1e-12), torch.zeros_like(dist))
    grad_human = scale[..., None] * to_nearest  # c_i u_i
    grad_obj = torch.zeros_like(obj_points).scatter_add_(
        1, nearest[..., None].expand(-1, -1, 3), -grad_human)
    return loss, grad_human, grad_obj


def _floor_term(obj_points, floor_contact):
    """L_of and its gradient on object points."""
    height = obj_points[..., 1]
    loss = (torch.relu(-height) + floor_contact * torch.relu(height)).sum(1)
    grad_height = -(height < 0).to(height.dtype) + floor_contact * (height > 0).to(height.dtype)
    grad_obj = torch.zeros_like(obj_points)
    grad_obj[..., 1] = grad_height
    return loss, grad_obj


def _trilinear_sdf(local, sdf, grid_min, grid_max, obj_index):
    """Phi_k(q), dPhi/dq and an inside-the-grid mask for local points q (B, N, 3)."""
    res = sdf.shape[-1]
    lo, hi = grid_min[obj_index][:, None], grid_max[obj_index][:, None]
    cells_per_unit = (res - 1) / (hi - lo)  # (B, 1, 3)
    coord = (local - lo) * cells_per_unit
    inside = ((coord >= 0) & (coord <= res - 1)).all(-1)
    base = coord.floor().clamp(0, res - 2)
    frac = coord - base
    base = base.long()
    # corners[..., a, b, c] = sdf at base + (a, b, c)
    offset = torch.tensor([0, 1], device=local.device)
    ix = base[..., 0, None, None, None] + offset[:, None, None]
    iy = base[..., 1, None, None, None] + offset[None, :, None]
    iz = base[..., 2, None, None, None] + offset[None, None, :]
    grid_start = (obj_index * res ** 3)[:, None, None, None, None]
    corners = sdf.reshape(-1)[grid_start + (ix * res + iy) * res + iz]  # (B, N, 2, 2, 2)
    wx, wy, wz = torch.stack([1 - frac, frac], dim=-1).unbind(2)  # (B, N, 2) lerp weights
    dw = torch.tensor([-1.0, 1.0], dtype=local.dtype, device=local.device)  # d(weight)/d(frac)
    # Phi = sum_abc C_abc wx_a wy_b wz_c; dPhi/dfrac_x replaces wx by dw, and so on
    value = torch.einsum("...abc,...a,...b,...c->...", corners, wx, wy, wz)
    dfrac = torch.stack([
        torch.einsum("...abc,a,...b,...c->...", corners, dw, wy, wz),
        torch.einsum("...abc,...a,b,...c->...", corners, wx, dw, wz),
        torch.einsum("...abc,...a,...b,c->...", corners, wx, wy, dw),
    ], dim=-1)
    return value, dfrac * cells_per_unit, inside


def _penetration_term(human, obj_rot, obj_trans, sdf, grid_min, grid_max, obj_index, margin):
    """L_pt and its gradients on human points and object pose."""
    rel = human - obj_trans[:, None]
    local = rel @ obj_rot  # rows of R^T (h - t)
    value, grad_local, inside = _trilinear_sdf(local, sdf, grid_min, grid_max, obj_index)
    depth = -value - margin
    active = inside & (depth > 0)
    loss = torch.where(active, depth, torch.zeros_like(depth)).sum(1)
    grad_q = torch.where(active[..., None], -grad_local, torch.zeros_like(grad_local))
    grad_human = grad_q @ obj_rot.transpose(1, 2)  # rows of R g
    grad_rot = rel.transpose(1, 2) @ grad_q  # sum_i (h_i - t) g_i^T
    return loss, grad_human, grad_rot, -grad_human.sum(1)


def guidance_loss_and_grad_reference(
    human: torch.Tensor, contact: torch.Tensor, obj_points: torch.Tensor, obj_rot: torch.Tensor,
    obj_trans: torch.Tensor, sdf: torch.Tensor, grid_min: torch.Tensor, grid_max: torch.Tensor,
    obj_index: torch.Tensor, *, w_contact: float = 1.0, w_floor: float = 1.0,
    w_penetration: float = 1.0, floor_contact: Optional[torch.Tensor] = None,
    contact_margin: float = 0.02, penetration_margin: float = 0.0,
) -> GuidanceResult:
    """L_P = w_contact L_ho + w_floor L_of + w_penetration L_pt and its gradients, plain torch.

    ``floor_contact`` (B, No) is the paper's M_f; None means no object point is meant to touch
    the floor (only below-floor points are penalised).
    """
    _validate(human, contact, obj_points, obj_rot, obj_trans, sdf, grid_min, grid_max, obj_index)
    if floor_contact is None:
        floor_contact = torch.zeros_like(obj_points[..., 0])
    loss_ho, gh_ho, go_ho = _contact_term(human, contact, obj_points, contact_margin)
    loss_of, go_of = _floor_term(obj_points, floor_contact)
    loss_pt, gh_pt, grad_rot, grad_trans = _penetration_term(
        human, obj_rot, obj_trans, sdf, grid_min, grid_max, obj_index, penetration_margin)
    return GuidanceResult(
        loss=w_contact * loss_ho + w_floor * loss_of + w_penetration * loss_pt,
        grad_human=w_contact * gh_ho + w_penetration * gh_pt,
        grad_obj_points=w_contact * go_ho + w_floor * go_of,
        grad_obj_rot=w_penetration * grad_rot,
        grad_obj_trans=w_penetration * grad_trans,
    )


# ----------------------------------------------------------------------------- Triton kernel

if triton is not None:

    @triton.jit
    def _contact_block(hx, hy, hz, c, row_ok, obj_base, n_obj, margin, BLOCK_O: tl.constexpr):
        """L_ho per row, dL_ho/dh per row, and each row's nearest object point."""
        cols = tl.arange(0, BLOCK_O)
        col_ok = cols < n_obj
        ox = tl.load(obj_base + cols * 3 + 0, mask=col_ok, other=0.0)
        oy = tl.load(obj_base + cols * 3 + 1, mask=col_ok, other=0.0)
        oz = tl.load(obj_base + cols * 3 + 2, mask=col_ok, other=0.0)
        dx = hx[:, None] - ox[None, :]
        dy = hy[:, None] - oy[None, :]
        dz = hz[:, None] - oz[None, :]
        dist2 = tl.where(col_ok[None, :], dx * dx + dy * dy + dz * dz, float("inf"))
        nearest = tl.argmin(dist2, axis=1)
        dist = tl.sqrt_rn(tl.min(dist2, axis=1))
        active = row_ok & (dist > margin)
        loss = tl.where(active, c * (dist - margin), 0.0)
        scale = tl.where(active, c / tl.maximum(dist, 1e-12), 0.0)
        nx = tl.load(obj_base + nearest * 3 + 0, mask=row_ok, other=0.0)
        ny = tl.load(obj_base + nearest * 3 + 1, mask=row_ok, other=0.0)
        nz = tl.load(obj_base + nearest * 3 + 2, mask=row_ok, other=0.0)
        return loss, scale * (hx - nx), scale * (hy - ny), scale * (hz - nz), nearest

    @triton.jit
    def _floor_block(obj_base, floor_base, grad_obj_base, n_points, w_floor,
                     BLOCK_O: tl.constexpr):
        """w_floor * L_of over the first n_points object points, gradient added into grad_obj."""
        cols = tl.arange(0, BLOCK_O)
        mask = cols < n_points
        height = tl.load(obj_base + cols * 3 + 1, mask=mask, other=0.0)
        on_floor = tl.load(floor_base + cols, mask=mask, other=0.0)
        loss = tl.maximum(-height, 0.0) + on_floor * tl.maximum(height, 0.0)
        grad = tl.where(height < 0, -1.0, 0.0) + tl.where(height > 0, on_floor, 0.0)
        tl.atomic_add(grad_obj_base + cols * 3 + 1, w_floor * grad, mask=mask)
        return w_floor * tl.sum(loss, axis=0)

    @triton.jit
    def _sdf_corner(grid_base, ix, iy, iz, res, mask):
        return tl.load(grid_base + (ix * res + iy) * res + iz, mask=mask, other=0.0)

    @triton.jit
    def _trilinear_block(qx, qy, qz, grid_base, lo_ptr, hi_ptr, res, row_ok):
        """Phi(q), dPhi/dq and the inside-the-grid mask for one block of local points."""
        lox = tl.load(lo_ptr + 0)
        loy = tl.load(lo_ptr + 1)
        loz = tl.load(lo_ptr + 2)
        sx = (res - 1) / (tl.load(hi_ptr + 0) - lox)
        sy = (res - 1) / (tl.load(hi_ptr + 1) - loy)
        sz = (res - 1) / (tl.load(hi_ptr + 2) - loz)
        ux = (qx - lox) * sx
        uy = (qy - loy) * sy
        uz = (qz - loz) * sz
        top = res - 1.0
        inside = (row_ok & (ux >= 0) & (ux <= top) & (uy >= 0) & (uy <= top)
                  & (uz >= 0) & (uz <= top))
        bx = tl.minimum(tl.maximum(tl.floor(ux), 0.0), top - 1.0)
        by = tl.minimum(tl.maximum(tl.floor(uy), 0.0), top - 1.0)
        bz = tl.minimum(tl.maximum(tl.floor(uz), 0.0), top - 1.0)
        fx = ux - bx
        fy = uy - by
        fz = uz - bz
        ix = bx.to(tl.int32)
        iy = by.to(tl.int32)
        iz = bz.to(tl.int32)
        c000 = _sdf_corner(grid_base, ix, iy, iz, res, inside)
        c001 = _sdf_corner(grid_base, ix, iy, iz + 1, res, inside)
        c010 = _sdf_corner(grid_base, ix, iy + 1, iz, res, inside)
        c011 = _sdf_corner(grid_base, ix, iy + 1, iz + 1, res, inside)
        c100 = _sdf_corner(grid_base, ix + 1, iy, iz, res, inside)
        c101 = _sdf_corner(grid_base, ix + 1, iy, iz + 1, res, inside)
        c110 = _sdf_corner(grid_base, ix + 1, iy + 1, iz, res, inside)
        c111 = _sdf_corner(grid_base, ix + 1, iy + 1, iz + 1, res, inside)
        # lerp along x, then y, then z; derivatives by the product rule on the same lerps
        c00 = c000 + fx * (c100 - c000)
        c01 = c001 + fx * (c101 - c001)
        c10 = c010 + fx * (c110 - c010)
        c11 = c011 + fx * (c111 - c011)
        c0 = c00 + fy * (c10 - c00)
        c1 = c01 + fy * (c11 - c01)
        value = c0 + fz * (c1 - c0)
        dx0 = (c100 - c000) + fy * ((c110 - c010) - (c100 - c000))
        dx1 = (c101 - c001) + fy * ((c111 - c011) - (c101 - c001))
        dfx = dx0 + fz * (dx1 - dx0)
        dfy = (c10 - c00) + fz * ((c11 - c01) - (c10 - c00))
        dfz = c1 - c0
        return value, dfx * sx, dfy * sy, dfz * sz, inside

    @triton.jit
    def _guidance_kernel(
        human_ptr, contact_ptr, obj_ptr, floor_ptr, rot_ptr, trans_ptr,
        sdf_ptr, grid_min_ptr, grid_max_ptr, obj_index_ptr,
        loss_ptr, grad_human_ptr, grad_obj_ptr, grad_rot_ptr, grad_trans_ptr,
        n_human, n_obj, res, w_contact, w_floor, w_penetration, contact_margin, penetration_margin,
        BLOCK_H: tl.constexpr, BLOCK_O: tl.constexpr,
    ):
        """One program per (sample, block of human points); per-sample sums go through atomics."""
        b = tl.program_id(0)
        block = tl.program_id(1)
        rows = block * BLOCK_H + tl.arange(0, BLOCK_H)
        row_ok = rows < n_human
        h_off = (b * n_human + rows) * 3
        hx = tl.load(human_ptr + h_off + 0, mask=row_ok, other=0.0)
        hy = tl.load(human_ptr + h_off + 1, mask=row_ok, other=0.0)
        hz = tl.load(human_ptr + h_off + 2, mask=row_ok, other=0.0)
        c = tl.load(contact_ptr + b * n_human + rows, mask=row_ok, other=0.0)
        obj_base = obj_ptr + b * n_obj * 3
        grad_obj_base = grad_obj_ptr + b * n_obj * 3

        # contact L_ho: scatter -dL/dh onto each row's nearest object point
        loss_ho, gx_ho, gy_ho, gz_ho, nearest = _contact_block(
            hx, hy, hz, c, row_ok, obj_base, n_obj, contact_margin, BLOCK_O)
        gx_ho *= w_contact
        gy_ho *= w_contact
        gz_ho *= w_contact
        tl.atomic_add(grad_obj_base + nearest * 3 + 0, -gx_ho, mask=row_ok)
        tl.atomic_add(grad_obj_base + nearest * 3 + 1, -gy_ho, mask=row_ok)
        tl.atomic_add(grad_obj_base + nearest * 3 + 2, -gz_ho, mask=row_ok)

        # floor L_of, once per sample: only the first block sees the object points
        loss_of = _floor_block(obj_base, floor_ptr + b * n_obj, grad_obj_base,
                               tl.where(block == 0, n_obj, 0), w_floor, BLOCK_O)

        # penetration L_pt at q = R^T (h - t)
        r00 = tl.load(rot_ptr + b * 9 + 0)
        r01 = tl.load(rot_ptr + b * 9 + 1)
        r02 = tl.load(rot_ptr + b * 9 + 2)
        r10 = tl.load(rot_ptr + b * 9 + 3)
        r11 = tl.load(rot_ptr + b * 9 + 4)
        r12 = tl.load(rot_ptr + b * 9 + 5)
        r20 = tl.load(rot_ptr + b * 9 + 6)
        r21 = tl.load(rot_ptr + b * 9 + 7)
        r22 = tl.load(rot_ptr + b * 9 + 8)
        vx = hx - tl.load(trans_ptr + b * 3 + 0)
        vy = hy - tl.load(trans_ptr + b * 3 + 1)
        vz = hz - tl.load(trans_ptr + b * 3 + 2)
        qx = r00 * vx + r10 * vy + r20 * vz
        qy = r01 * vx + r11 * vy + r21 * vz
        qz = r02 * vx + r12 * vy + r22 * vz
        k = tl.load(obj_index_ptr + b)
        value, dqx, dqy, dqz, inside = _trilinear_block(
            qx, qy, qz, sdf_ptr + k * res * res * res, grid_min_ptr + k * 3, grid_max_ptr + k * 3,
            res, row_ok)
        depth = -value - penetration_margin
        active = inside & (depth > 0)
        loss_pt = tl.where(active, depth, 0.0)
        gqx = tl.where(active, -w_penetration * dqx, 0.0)
        gqy = tl.where(active, -w_penetration * dqy, 0.0)
        gqz = tl.where(active, -w_penetration * dqz, 0.0)
        gx_pt = r00 * gqx + r01 * gqy + r02 * gqz
        gy_pt = r10 * gqx + r11 * gqy + r12 * gqz
        gz_pt = r20 * gqx + r21 * gqy + r22 * gqz

        tl.store(grad_human_ptr + h_off + 0, gx_ho + gx_pt, mask=row_ok)
        tl.store(grad_human_ptr + h_off + 1, gy_ho + gy_pt, mask=row_ok)
        tl.store(grad_human_ptr + h_off + 2, gz_ho + gz_pt, mask=row_ok)
        # dL/dR[m, n] = sum_i v_m g_n ; dL/dt = -sum_i R g
        rot_base = grad_rot_ptr + b * 9
        tl.atomic_add(rot_base + 0, tl.sum(vx * gqx, axis=0))
        tl.atomic_add(rot_base + 1, tl.sum(vx * gqy, axis=0))
        tl.atomic_add(rot_base + 2, tl.sum(vx * gqz, axis=0))
        tl.atomic_add(rot_base + 3, tl.sum(vy * gqx, axis=0))
        tl.atomic_add(rot_base + 4, tl.sum(vy * gqy, axis=0))
        tl.atomic_add(rot_base + 5, tl.sum(vy * gqz, axis=0))
        tl.atomic_add(rot_base + 6, tl.sum(vz * gqx, axis=0))
        tl.atomic_add(rot_base + 7, tl.sum(vz * gqy, axis=0))
        tl.atomic_add(rot_base + 8, tl.sum(vz * gqz, axis=0))
        tl.atomic_add(grad_trans_ptr + b * 3 + 0, -tl.sum(gx_pt, axis=0))
        tl.atomic_add(grad_trans_ptr + b * 3 + 1, -tl.sum(gy_pt, axis=0))
        tl.atomic_add(grad_trans_ptr + b * 3 + 2, -tl.sum(gz_pt, axis=0))
        block_loss = (w_contact * tl.sum(loss_ho, axis=0) + loss_of
                      + w_penetration * tl.sum(loss_pt, axis=0))
        tl.atomic_add(loss_ptr + b, block_loss)


def guidance_loss_and_grad_triton(
    human: torch.Tensor, contact: torch.Tensor, obj_points: torch.Tensor, obj_rot: torch.Tensor,
    obj_trans: torch.Tensor, sdf: torch.Tensor, grid_min: torch.Tensor, grid_max: torch.Tensor,
    obj_index: torch.Tensor, *, w_contact: float = 1.0, w_floor: float = 1.0,
    w_penetration: float = 1.0, floor_contact: Optional[torch.Tensor] = None,
    contact_margin: float = 0.02, penetration_margin: float = 0.0, block_h: int = 32,
) -> GuidanceResult:
    """Same as the reference, one Triton launch; float32 only."""
    if triton is None:
        raise ImportError(f"the Triton guidance kernel {UNAVAILABLE}")
    _validate(human, contact, obj_points, obj_rot, obj_trans, sdf, grid_min, grid_max, obj_index)
    floats = (human, contact, obj_points, obj_rot, obj_trans, sdf, grid_min, grid_max)
    if any(t.dtype != torch.float32 for t in floats):
        raise TypeError("the Triton guidance kernel takes float32 tensors")
    if floor_contact is None:
        floor_contact = torch.zeros_like(obj_points[..., 0])
    batch, n_human = human.shape[:2]
    n_obj = obj_points.shape[1]
    result = GuidanceResult(
        loss=human.new_zeros(batch), grad_human=torch.empty_like(human),
        grad_obj_points=torch.zeros_like(obj_points), grad_obj_rot=torch.zeros_like(obj_rot),
        grad_obj_trans=torch.zeros_like(obj_trans),
    )
    inputs = [t.contiguous() for t in (human, contact, obj_points, floor_contact.float(), obj_rot,
                                       obj_trans, sdf, grid_min, grid_max, obj_index.long())]
    _guidance_kernel[(batch, triton.cdiv(n_human, block_h))](
        *inputs, *result, n_human, n_obj, sdf.shape[-1],
        float(w_contact), float(w_floor), float(w_penetration),
        float(contact_margin), float(penetration_margin),
        BLOCK_H=block_h, BLOCK_O=triton.next_power_of_2(n_obj),
    )
    return result


def guidance_loss_and_grad(
    human: torch.Tensor, contact: torch.Tensor, obj_points: torch.Tensor, obj_rot: torch.Tensor,
    obj_trans: torch.Tensor, sdf: torch.Tensor, grid_min: torch.Tensor, grid_max: torch.Tensor,
    obj_index: torch.Tensor, **options,
) -> GuidanceResult:
    """Triton kernel for float32 CUDA tensors when triton imports, else the torch reference.

    ``options``: w_contact, w_floor, w_penetration, floor_contact, contact_margin,
    penetration_margin (see the module docstring for what each means).
    """
    args = (human, contact, obj_points, obj_rot, obj_trans, sdf, grid_min, grid_max, obj_index)
    if triton is not None and human.is_cuda and human.dtype == torch.float32:
        return guidance_loss_and_grad_triton(*args, **options)
    return guidance_loss_and_grad_reference(*args, **options)
