"""Metrics of two-person reconstruction from video."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from motionfleet.common.geometry import nearest_distances, procrustes_align

# SocialMirror reports MPJPE, PA-MPJPE, R-MPJPE, G-MPJPE, Int and Pen (supp. Tables 2-5) without
# defining them; MPJPE, PA-MPJPE and Int follow CloseInt's evaluation (boycehbz/HumanInteraction,
# utils/eval_utils.py), the others are defined here. Joints are (F, J, 3) per person or
# (F, 2, J, 3) per pair, metres, joint 0 the pelvis (SMPL); results are millimetres, averaged over
# frames (and people).

# Faces per leaf of a FaceTree: on the reconstruct demo's most overlapping frame (6,535 vertices in
# the other body's box) 64 ran fastest of 8 to 256 on 2 busy cores (0.8 s against 1.2-2.2 s; summing
# every triangle for every point took 17-64 s there).
LEAF_FACES = 64


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


def pair_penetration(vertices_a: torch.Tensor, vertices_b: torch.Tensor, surface: FaceTree) -> float:
    """Pen: per frame, the summed depth of every vertex of one body inside the other (both ways),
    averaged over frames. (F, V, 3) vertices of two bodies sharing ``surface``'s faces. A vertex is
    inside where the other mesh's generalised winding number (Jacobson et al. 2013) exceeds 1/2,
    which tolerates the self-intersecting, not quite closed meshes of posed bodies; its depth is the
    distance to the other body's nearest vertex."""
    totals = [_penetration_mm(a, b, surface) + _penetration_mm(b, a, surface) for a, b in zip(vertices_a, vertices_b)]
    return float(sum(totals) / len(totals))


@dataclass(frozen=True)
class FaceTree:
    """A bounding-volume hierarchy over a mesh's faces for exact winding numbers (Jacobson et al.
    2013, Sec. 3.3): node n owns the triangles ``faces[start[n]:end[n]]``; ``children[n]`` is -1 at
    a leaf; the fan ``caps[cap_start[n]:cap_end[n]]`` spans the boundary of node n's patch, so that
    patch and fan reversed form a closed surface inside the node's bounding box. Built from one pose;
    any pose of the same faces evaluates exactly, a far one only more slowly. int64 numpy arrays."""

    faces: np.ndarray
    start: np.ndarray
    end: np.ndarray
    children: np.ndarray
    caps: np.ndarray
    cap_start: np.ndarray
    cap_end: np.ndarray


def face_tree(faces: torch.Tensor, vertices: torch.Tensor, leaf_size: int = LEAF_FACES) -> FaceTree:
    """Split the faces at the median of their centroids along the widest axis until a node has at
    most ``leaf_size``; ``vertices`` (V, 3) is the pose whose layout the split follows."""
    faces_np = faces.cpu().numpy().astype(np.int64)
    centroids = vertices.detach().cpu().double().numpy()[faces_np].mean(1)
    order: list[int] = []
    nodes: list = []
    _split(np.arange(len(faces_np)), centroids, leaf_size, order, nodes)
    ordered = faces_np[order]
    table = np.array(nodes, dtype=np.int64)
    caps = [_boundary_fan(ordered[start:end]) for start, end in table[:, :2]]
    cap_end = np.cumsum([len(c) for c in caps])
    return FaceTree(faces=ordered, start=table[:, 0], end=table[:, 1], children=table[:, 2:], caps=np.concatenate(caps),
                    cap_start=cap_end - [len(c) for c in caps], cap_end=cap_end)


def _split(ids: np.ndarray, centroids: np.ndarray, leaf_size: int, order: list[int], nodes: list) -> int:
    """Append the subtree over the faces ``ids`` depth first (so every node's faces are one run of
    ``order``); returns its root's index."""
    index, start = len(nodes), len(order)
    nodes.append(None)
    if len(ids) <= leaf_size:
        order.extend(ids.tolist())
        children = (-1, -1)
    else:
        axis = np.ptp(centroids[ids], axis=0).argmax()
        ranked = ids[np.argsort(centroids[ids, axis], kind="stable")]
        half = len(ranked) // 2
        children = (_split(ranked[:half], centroids, leaf_size, order, nodes),
                    _split(ranked[half:], centroids, leaf_size, order, nodes))
    nodes[index] = (start, len(order), *children)
    return index


def _boundary_fan(faces: np.ndarray) -> np.ndarray:
    """(E, 3) triangles (apex, u, v) over the directed boundary edges u -> v of the patch ``faces``:
    the edges whose two orientations do not cancel, as often as they are left over, so any mesh
    (open, non-manifold) closes. The apex is one of the patch's vertices; triangles through it are
    dropped (their solid angle is 0)."""
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    keys, inverse = np.unique(np.sort(edges, axis=1), axis=0, return_inverse=True)
    net = np.zeros(len(keys), dtype=np.int64)
    np.add.at(net, inverse.reshape(-1), np.where(edges[:, 0] < edges[:, 1], 1, -1))
    directed = np.where((net > 0)[:, None], keys, keys[:, ::-1])
    boundary = np.repeat(directed, np.abs(net), axis=0)
    apex = faces[0, 0]
    boundary = boundary[(boundary != apex).all(1)]
    return np.concatenate([np.full((len(boundary), 1), apex), boundary], axis=1)


def winding_numbers(points: torch.Tensor, vertices: torch.Tensor, surface: FaceTree) -> torch.Tensor:
    """(N,) generalised winding number at each point of the mesh ``surface`` posed at ``vertices``:
    the triangles' signed solid angles summed / 4 pi. Descending the tree, a node whose bounding
    box holds the point is opened; one that does not adds its boundary fan instead, which subtends
    the same solid angle as its patch (their difference is a closed surface the point is outside)."""
    points_np, vertices_np = (t.detach().cpu().double().numpy() for t in (points, vertices))
    low, high = _node_boxes(vertices_np, surface)
    caps, faces = _corner_coordinates(vertices_np, surface.caps), _corner_coordinates(vertices_np, surface.faces)
    total = np.zeros(len(points_np))
    at, node = np.arange(len(points_np)), np.zeros(len(points_np), dtype=np.int64)
    while len(at):
        here = points_np[at]
        far = ((here < low[node]) | (here > high[node])).any(1)
        leaf = surface.children[node, 0] < 0
        _add_solid_angles(total, points_np, at[far], node[far], caps, surface.cap_start, surface.cap_end)
        near_leaf = ~far & leaf
        _add_solid_angles(total, points_np, at[near_leaf], node[near_leaf], faces, surface.start, surface.end)
        opened = ~far & ~leaf
        at, node = at[opened].repeat(2), surface.children[node[opened]].reshape(-1)
    return torch.from_numpy(total / (4 * math.pi))


def _node_boxes(vertices: np.ndarray, surface: FaceTree) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, 3) lower and upper corners of each node's triangles at ``vertices``: reductions over
    the runs [start, end) of the faces in tree order (a padding row lets a run end at the last face)."""
    corners = vertices[surface.faces]
    runs = np.stack([surface.start, surface.end], 1).reshape(-1)
    low, high = corners.min(1), corners.max(1)
    return (np.minimum.reduceat(np.concatenate([low, low[:1]]), runs)[::2],
            np.maximum.reduceat(np.concatenate([high, high[:1]]), runs)[::2])


def _corner_coordinates(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(3 corners, 3 coordinates, T): each coordinate of the triangles a contiguous row."""
    return np.ascontiguousarray(vertices[triangles].transpose(1, 2, 0))


def _add_solid_angles(total: np.ndarray, points: np.ndarray, at: np.ndarray, node: np.ndarray, corners: np.ndarray,
                      start: np.ndarray, end: np.ndarray) -> None:
    """total[at[i]] += the solid angles of node[i]'s triangles ``corners[..., start:end]`` seen from
    points[at[i]], one node at a time (a point is at most once per node)."""
    order = np.argsort(node, kind="stable")
    at, node = at[order], node[order]
    nodes, first = np.unique(node, return_index=True)
    for n, group in zip(nodes, np.split(at, first[1:])):
        total[group] += _solid_angle_sums(points[group], corners[:, :, start[n]:end[n]])


def _solid_angle_sums(points: np.ndarray, corners: np.ndarray, block: int = 1 << 18) -> np.ndarray:
    """(N,) sum of the signed solid angles of the triangles ``corners`` (3, 3, T) seen from each of
    ``points`` (N, 3) (Van Oosterom & Strackee 1983: tan(omega / 2) = a . (b x c) /
    (|a||b||c| + (a . b)|c| + (b . c)|a| + (c . a)|b|)), about ``block`` (point, triangle) pairs at once."""
    sums = []
    for chunk in np.array_split(points, max(1, len(points) * corners.shape[2] // block)):
        a, b, c = (corner[:, None, :] - chunk.T[:, :, None] for corner in corners)  # (3, N, T) each
        dot = lambda x, y: x[0] * y[0] + x[1] * y[1] + x[2] * y[2]
        la, lb, lc = np.sqrt(dot(a, a)), np.sqrt(dot(b, b)), np.sqrt(dot(c, c))
        triple = a[0] * (b[1] * c[2] - b[2] * c[1]) + a[1] * (b[2] * c[0] - b[0] * c[2]) + a[2] * (b[0] * c[1] - b[1] * c[0])
        denominator = la * lb * lc + dot(a, b) * lc + dot(b, c) * la + dot(c, a) * lb
        sums.append(2 * np.arctan2(triple, denominator).sum(1))
    return np.concatenate(sums)


def _penetration_mm(points: torch.Tensor, vertices: torch.Tensor, surface: FaceTree) -> float:
    in_box = ((points >= vertices.min(0).values) & (points <= vertices.max(0).values)).all(1)
    candidates = points[in_box]  # only points inside the other body's bounding box can be inside it
    if not len(candidates):
        return 0.0
    inside = candidates[winding_numbers(candidates, vertices, surface).abs() > 0.5]
    return 1000 * float(nearest_distances(inside, vertices).sum()) if len(inside) else 0.0


def _mean_error_mm(pred: torch.Tensor, target: torch.Tensor) -> float:
    return 1000 * float((pred.double() - target.double()).norm(dim=-1).mean())
