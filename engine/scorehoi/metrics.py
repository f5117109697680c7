"""Metrics of human-object reconstruction.

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

from motionfleet.common.geometry import nearest_distances, procrustes_align

CONTACT_THRESHOLD_M = 0.05


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
