"""Metrics of human-object reconstruction, one flat module of functions (later issues add theirs).

From ScoreHOI Sec. 4.1 (following CONTHO and its public evaluation code):
- Chamfer distance: align the predicted human + object points to the ground truth's by one
  similarity Procrustes on the combined, corresponding point sets, then the bidirectional Chamfer
  distance (mean nearest distance both ways, summed) of the human and of the object separately,
  in centimetres.
- Contact precision / recall / F-score: a human vertex is in contact when it lies within 5 cm of
  the object; compare the predicted map with the ground truth's.
Physical plausibility, used by ``refine``'s report:
- penetration depth: how far the deepest human point is inside the object (0 when none is);
- contact distance: mean distance of chosen human points (those that should touch) to the
  object's surface, outside or inside it.
All functions take one sample's points as (N, 3) tensors, metres.
"""

from __future__ import annotations

import math

import torch
from scipy.spatial import cKDTree

CONTACT_THRESHOLD_M = 0.05


def procrustes_align(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``source`` moved by the similarity (scale, rotation, translation) that best fits
    ``target`` in least squares (Umeyama 1991), for corresponding (N, 3) points."""
    source64, target64 = source.double(), target.double()
    mean_s, mean_t = source64.mean(0), target64.mean(0)
    centred_s, centred_t = source64 - mean_s, target64 - mean_t
    u, sigma, vt = torch.linalg.svd(centred_s.T @ centred_t)
    sign = torch.sign(torch.linalg.det(vt.T @ u.T))
    correction = torch.diag(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign]))
    rotation = vt.T @ correction @ u.T
    scale = (sigma * correction.diagonal()).sum() / (centred_s**2).sum()
    return (scale * centred_s @ rotation.T + mean_t).to(source.dtype)


def nearest_distances(points: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(N,) distance from each point to the nearest of ``others`` (M, 3), by a k-d tree (float64)."""
    tree = cKDTree(others.detach().cpu().double().numpy())
    return torch.from_numpy(tree.query(points.detach().cpu().double().numpy())[0])


def chamfer_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """mean_x min_y |x - y| + mean_y min_x |x - y| (the public evaluation's 'bi' direction), metres."""
    return float(nearest_distances(x, y).mean() + nearest_distances(y, x).mean())


def hoi_chamfer_distances(pred_human: torch.Tensor, pred_object: torch.Tensor, target_human: torch.Tensor,
                          target_object: torch.Tensor) -> tuple[float, float]:
    """(CD human, CD object) in cm after aligning the combined prediction to the combined target."""
    aligned = procrustes_align(torch.cat([pred_human, pred_object]), torch.cat([target_human, target_object]))
    human, obj = aligned[: len(pred_human)], aligned[len(pred_human):]
    return 100 * chamfer_distance(human, target_human), 100 * chamfer_distance(obj, target_object)


def surface_gap(points: torch.Tensor, surface: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(N,) distance from each point to the object's surface samples, 0 for points ``inside`` it."""
    return torch.where(inside, torch.zeros((), dtype=torch.float64), nearest_distances(points, surface))


def contact_mask(gap: torch.Tensor, threshold: float = CONTACT_THRESHOLD_M) -> torch.Tensor:
    """Human points in contact: within ``threshold`` of the object (points inside it included)."""
    return gap < threshold


def precision_recall_fscore(predicted: torch.Tensor, target: torch.Tensor) -> tuple[float, float, float]:
    """Of boolean contact maps; NaN where undefined (no predicted or no true contact), as the
    public evaluation skips such samples when averaging."""
    true_positive = float((predicted & target).sum())
    precision = true_positive / float(predicted.sum()) if predicted.any() else math.nan
    recall = true_positive / float(target.sum()) if target.any() else math.nan
    return precision, recall, fscore(precision, recall)


def fscore(precision: float, recall: float) -> float:
    """2 p r / (p + r); 0 when both are 0, NaN when either is undefined."""
    if math.isnan(precision) or math.isnan(recall):
        return math.nan
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def penetration_depth(sdf_values: torch.Tensor) -> float:
    """Depth of the deepest point inside the object (SDF negative inside), 0 when none is."""
    return float((-sdf_values).clamp_min(0).max()) if sdf_values.numel() else 0.0


def contact_distance(distances: torch.Tensor) -> float:
    """Mean distance of the chosen points to the surface; NaN when no point was chosen."""
    return float(distances.mean()) if distances.numel() else math.nan


# --- two-person reconstruction from video (socialmirror) ---------------------------------------
#
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
