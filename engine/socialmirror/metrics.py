"""Metrics of two-person reconstruction from video."""

from __future__ import annotations

import math

import torch

from motionfleet.common.geometry import nearest_distances, procrustes_align

# SocialMirror reports MPJPE, PA-MPJPE, R-MPJPE, G-MPJPE, Int and Pen (supp. Tables 2-5) without
# defining them; MPJPE, PA-MPJPE and Int follow CloseInt's evaluation (boycehbz/HumanInteraction,
# utils/eval_utils.py), the others are defined here. Joints are (F, J, 3) per person or
# (F, 2, J, 3) per pair, metres, joint 0 the pelvis (SMPL); results are millimetres, averaged over
# frames (and people).


def mpjpe(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean joint error after translating each frame's pelvis (joint 0) onto the target's."""
    return _mean_error_mm(pred - pred[..., :1, :], target - target[..., :1, :])


def pa_mpjpe(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean joint error after a similarity Procrustes alignment of each frame (and person)."""
    pred_frames, target_frames = pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])
    aligned = torch.stack([procrustes_align(p, t) for p, t in zip(pred_frames, target_frames)])
    return _mean_error_mm(aligned, target_frames)


def global_mpjpe(pred_pair: torch.Tensor, target_pair: torch.Tensor) -> float:
    """G-MPJPE: mean error of the pair's 2J joints after one translation per frame, moving the
    midpoint of the two predicted pelvises onto the target's; each person's placement counts."""
    centre = lambda pair: pair[:, :, 0].mean(1)[:, None, None, :]
    return _mean_error_mm(pred_pair - centre(pred_pair), target_pair - centre(target_pair))


def relative_mpjpe(pred_pair: torch.Tensor, target_pair: torch.Tensor) -> float:
    """R-MPJPE: mean error of each person's joints in the other person's pelvis frame (translation
    only): what matters is where each person is relative to the other."""
    relative = lambda pair: pair - pair.flip(1)[:, :, :1]
    return _mean_error_mm(relative(pred_pair), relative(target_pair))


def interaction_error(pred_pair: torch.Tensor, target_pair: torch.Tensor) -> float:
    """Int (CloseInt's ``calcu_interaction``): mean over frames and all (i in a, j in b) joint pairs
    of | ||a_i - b_j||_target - ||a_i - b_j||_pred |."""
    distances = lambda pair: torch.cdist(pair[:, 0].double(), pair[:, 1].double())
    return 1000 * float((distances(pred_pair) - distances(target_pair)).abs().mean())


def pair_penetration(vertices_a: torch.Tensor, vertices_b: torch.Tensor, faces: torch.Tensor) -> float:
    """Pen: per frame, the summed depth of every vertex of one body inside the other (both ways),
    averaged over frames. (F, V, 3) vertices of two bodies sharing (T, 3) faces. A vertex is inside
    where the other mesh's generalised winding number (Jacobson et al. 2013) exceeds 1/2, which
    tolerates the self-intersecting, not quite closed meshes of posed bodies; its depth is the
    distance to the other body's nearest vertex."""
    totals = [_penetration_mm(a, b, faces) + _penetration_mm(b, a, faces) for a, b in zip(vertices_a, vertices_b)]
    return float(sum(totals) / len(totals))


def winding_numbers(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                    chunk: int = 256) -> torch.Tensor:
    """(N,) generalised winding number of a triangle mesh at each point: sum of the triangles'
    signed solid angles / 4 pi (Van Oosterom & Strackee 1983:
    tan(omega / 2) = a . (b x c) / (|a||b||c| + (a . b)|c| + (b . c)|a| + (c . a)|b|))."""
    corners = vertices.double()[faces]  # (T, 3, 3)
    out = []
    for block in points.double().split(chunk):
        a, b, c = (corners[None, :, k] - block[:, None] for k in range(3))
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        numerator = (a * torch.cross(b, c, dim=-1)).sum(-1)
        denominator = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(2 * torch.atan2(numerator, denominator).sum(1) / (4 * math.pi))
    return torch.cat(out)


def _penetration_mm(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> float:
    in_box = ((points >= vertices.min(0).values) & (points <= vertices.max(0).values)).all(1)
    candidates = points[in_box]  # only points inside the other body's bounding box can be inside it
    if not len(candidates):
        return 0.0
    inside = candidates[winding_numbers(candidates, vertices, faces).abs() > 0.5]
    return 1000 * float(nearest_distances(inside, vertices).sum()) if len(inside) else 0.0


def _mean_error_mm(pred: torch.Tensor, target: torch.Tensor) -> float:
    return 1000 * float((pred.double() - target.double()).norm(dim=-1).mean())
