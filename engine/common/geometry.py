"""Point-set geometry shared by the families' metrics."""

from __future__ import annotations

import torch
from scipy.spatial import cKDTree


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
