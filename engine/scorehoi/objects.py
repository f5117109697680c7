"""Rigid objects for human-object interaction: template points, a signed distance grid, a mesh.

Frames: a built-in object's local frame has its origin at the centre of its bounding box, in
metres, y up (so a stool or box resting on the floor sits at y = +half height). A mesh file
keeps its own coordinates (datasets pose objects relative to the file's frame).

SDF convention: negative inside, positive outside, metres. The grid holds corner samples,
``sdf[i, j, k] = SDF(grid_min + (i, j, k) / (R - 1) * (grid_max - grid_min))`` (x, y, z order),
over the object's bounding box padded by ``_PAD_ABSOLUTE + _PAD_RELATIVE * largest extent``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from motionfleet.common.bodies import farthest_point_indices
from motionfleet.core.errors import RejectedInput
from motionfleet.core.io.cache import cache_dir
from motionfleet.core.io.digests import content_sha256
from motionfleet.core.io.inputs import local_file, printable

NUM_TEMPLATE_POINTS = 64
DEFAULT_RESOLUTION = 32
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
_PAD_ABSOLUTE, _PAD_RELATIVE = 0.05, 0.1
_SURFACE_SAMPLES = 4096  # dense surface sample the template points are chosen from
_INSIDE_TOLERANCE = 1e-3  # m; deeper samples are interior faces (a faceted sphere is ~2e-4 inside)
# An object a person handles, in metres: a mesh in millimetres (or of 1e30) is refused, not refined
MAX_ABS_COORDINATE_M = 10.0
_SDF_PAIRS_AT_ONCE = 1 << 19  # (point, face) pairs measured at once: about 0.4 GB of float64 temporaries

SdfFunction = Callable[[np.ndarray], np.ndarray]


@dataclass
class ObjectTemplate:
    """``points`` (64, 3) on the surface, ``sdf`` (R, R, R) on the grid spanning
    ``grid_min``..``grid_max`` (3,), mesh ``vertices`` (N, 3) and ``faces`` (F, 3), object frame."""

    name: str
    points: np.ndarray
    sdf: np.ndarray
    grid_min: np.ndarray
    grid_max: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray

    @property
    def resolution(self) -> int:
        return self.sdf.shape[0]


def grid_points(grid_min: np.ndarray, grid_max: np.ndarray, resolution: int) -> np.ndarray:
    """(R, R, R, 3) positions of the SDF grid's samples (corners included, 'ij' indexing)."""
    axes = [np.linspace(lo, hi, resolution) for lo, hi in zip(grid_min, grid_max)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _padded_bounds(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grid_min, grid_max) from a (2, 3) bounding box."""
    pad = _PAD_ABSOLUTE + _PAD_RELATIVE * float((bounds[1] - bounds[0]).max())
    return (bounds[0] - pad).astype(np.float32), (bounds[1] + pad).astype(np.float32)


def _surface_template_points(mesh: trimesh.Trimesh, sdf: SdfFunction | None = None) -> np.ndarray:
    """64 surface points spread by farthest point sampling over a fixed-seed dense surface sample.

    With an analytic ``sdf``, samples inside the solid (faces of overlapping parts) are dropped first.
    """
    samples, _ = trimesh.sample.sample_surface(mesh, _SURFACE_SAMPLES, seed=0)
    if sdf is not None:
        samples = samples[sdf(samples) > -_INSIDE_TOLERANCE]
    return np.asarray(samples[farthest_point_indices(samples, NUM_TEMPLATE_POINTS)], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Built-in objects (analytic SDFs)
# --------------------------------------------------------------------------------------------

def box_sdf(points: np.ndarray, centre, half_extents) -> np.ndarray:
    """Exact box SDF: with q = |p - c| - h, ``|max(q, 0)| + min(max_i q_i, 0)``."""
    q = np.abs(points - np.asarray(centre)) - np.asarray(half_extents)
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)


def sphere_sdf(points: np.ndarray, radius: float) -> np.ndarray:
    """``|p| - r`` for a sphere centred at the origin."""
    return np.linalg.norm(points, axis=-1) - radius


# Boxes as (centre, half extents) in metres.
_BOX = (((0.0, 0.0, 0.0), (0.25, 0.2, 0.2)),)  # 0.5 x 0.4 x 0.4 m
_STOOL = (  # 0.4 x 0.45 x 0.4 m: a 4 cm seat on four 4 cm legs that reach 1 cm into it
    ((0.0, 0.205, 0.0), (0.2, 0.02, 0.2)),
    *(((x, -0.015, z), (0.02, 0.21, 0.02)) for x in (-0.16, 0.16) for z in (-0.16, 0.16)),
)
_BALL_RADIUS = 0.12


def _union_of_boxes_sdf(boxes) -> SdfFunction:
    """min over the boxes' SDFs: exact outside the union, a bound (right sign) inside."""
    return lambda points: np.min([box_sdf(points, c, h) for c, h in boxes], axis=0)


def _boxes_mesh(boxes) -> trimesh.Trimesh:
    """The boxes' meshes concatenated (overlapping parts are not merged)."""
    parts = [trimesh.creation.box(extents=2 * np.asarray(h), transform=trimesh.transformations.translation_matrix(c))
             for c, h in boxes]
    mesh = trimesh.util.concatenate(parts)
    assert isinstance(mesh, trimesh.Trimesh)  # trimesh types the result Geometry; Trimesh parts concatenate to a Trimesh
    return mesh


def _analytic_object(name: str, mesh: trimesh.Trimesh, sdf: SdfFunction, resolution: int) -> ObjectTemplate:
    grid_min, grid_max = _padded_bounds(mesh.bounds)
    return ObjectTemplate(
        name=name,
        points=_surface_template_points(mesh, sdf),
        sdf=sdf(grid_points(grid_min, grid_max, resolution)).astype(np.float32),
        grid_min=grid_min,
        grid_max=grid_max,
        vertices=np.asarray(mesh.vertices, dtype=np.float32),
        faces=np.asarray(mesh.faces, dtype=np.int64),
    )


# name -> (mesh factory, analytic SDF)
_BUILTIN_SHAPES: dict[str, tuple[Callable[[], trimesh.Trimesh], SdfFunction]] = {
    "box": (lambda: _boxes_mesh(_BOX), _union_of_boxes_sdf(_BOX)),
    "stool": (lambda: _boxes_mesh(_STOOL), _union_of_boxes_sdf(_STOOL)),
    "ball": (lambda: trimesh.creation.icosphere(subdivisions=3, radius=_BALL_RADIUS),
             lambda points: sphere_sdf(points, _BALL_RADIUS)),
}


def builtin_object(name: str, resolution: int = DEFAULT_RESOLUTION) -> ObjectTemplate:
    make_mesh, sdf = _BUILTIN_SHAPES[name]
    return _analytic_object(name, make_mesh(), sdf, resolution)


def builtin_objects(resolution: int = DEFAULT_RESOLUTION) -> dict[str, ObjectTemplate]:
    """The synthetic objects ``box``, ``stool`` and ``ball`` (sphere, r = 0.12 m), freshly built."""
    return {name: builtin_object(name, resolution) for name in _BUILTIN_SHAPES}


# --------------------------------------------------------------------------------------------
# Mesh files (SDF from trimesh, cached)
# --------------------------------------------------------------------------------------------

def _gltf_json(path: Path) -> dict:
    """The JSON of a .gltf file or of a .glb's first chunk (header: magic, version, length; chunk:
    length, type ``JSON``)."""
    data = path.read_bytes()
    if path.suffix.lower() == ".glb":
        if len(data) < 20 or data[:4] != b"glTF" or data[16:20] != b"JSON":
            raise RejectedInput(f"object mesh {path.name} is not a binary glTF file")
        data = data[20:20 + int.from_bytes(data[12:16], "little")]
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RejectedInput(f"object mesh {path.name} is not glTF JSON ({err})") from None
    if not isinstance(document, dict):
        raise RejectedInput(f"object mesh {path.name} is not glTF JSON (not an object)")
    return document


def _check_self_contained(path: Path) -> None:
    """A glTF's buffers and images must be embedded (``data:`` URIs, or a .glb's own chunk): an
    external ``uri`` would make the loader read another file (``file:///etc/passwd``, ``../x``)."""
    document = _gltf_json(path)
    for section in ("buffers", "images"):
        entries = document.get(section) or []
        for entry in entries if isinstance(entries, list) else [entries]:
            uri = entry.get("uri") if isinstance(entry, dict) else None
            if uri is not None and not (isinstance(uri, str) and uri.startswith("data:")):
                raise RejectedInput(f"object mesh {path.name} refers to an external file ({section} uri "
                                    f"{printable(str(uri))[:100]!r}); embed its data (data: URI or .glb)")


def _read_mesh(path: Path) -> trimesh.Trimesh:
    if path.suffix.lower() in (".gltf", ".glb"):
        _check_self_contained(path)
    try:
        with open(path, "rb") as file:  # a file object: trimesh resolves no other file next to it
            # unprocessed: processing drops NaN vertices and their faces, a mesh other than the file's
            mesh = trimesh.load(file, file_type=path.suffix.lower()[1:], force="mesh", process=False)
    except Exception as err:  # noqa: BLE001 - trimesh's parsers raise many types on a malformed file
        raise RejectedInput(f"unreadable object mesh {path.name}: {type(err).__name__}: {err}"[:500]) from err
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise RejectedInput(f"object mesh {path} has no triangles")
    check_vertices(np.asarray(mesh.vertices), path.name)
    return mesh.process()


def check_vertices(vertices: np.ndarray, name: str) -> None:
    """Finite as float32 (the templates' precision) and within ``MAX_ABS_COORDINATE_M`` of the origin."""
    with np.errstate(over="ignore"):
        if not np.isfinite(vertices.astype(np.float32)).all():
            raise RejectedInput(f"object mesh {name} has NaN or infinite vertices (or values beyond float32)")
    largest = float(np.abs(vertices).max())
    if largest > MAX_ABS_COORDINATE_M:
        raise RejectedInput(f"object mesh {name} has a vertex {largest:.3g} m from its origin, over "
                            f"{MAX_ABS_COORDINATE_M} m: meshes are in metres, around the object")


def _mesh_sdf_grid(mesh: trimesh.Trimesh, grid_min: np.ndarray, grid_max: np.ndarray,
                   resolution: int) -> np.ndarray:
    """(R, R, R) SDF of a mesh, our sign (``mesh_signed_distance``)."""
    points = grid_points(grid_min, grid_max, resolution).reshape(-1, 3)
    return mesh_signed_distance(mesh, points).reshape((resolution,) * 3).astype(np.float32)


def mesh_signed_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """(N,) exact distance of each point to the mesh, negative inside, in bounded memory.

    ``trimesh.proximity.signed_distance`` measures every face in the box reaching to the nearest
    vertex, all points at once: 3.5 GB and 39 s for a 5,120-face sphere on a 32^3 grid, killed past
    20 GB at 81,920 faces. Here the closest point lies on a face whose centroid is within d_v + r of
    the point (d_v, the distance to the nearest corner, bounds the distance from above; r is the
    largest centroid-to-corner distance), a ball that meets a smooth surface in a small cap; those
    (point, face) pairs are measured ``_SDF_PAIRS_AT_ONCE`` at a time. The sign is that of the
    angle-weighted pseudo-normal at the closest point (Baerentzen and Aanaes, 2005), exact for a
    watertight mesh: the faces sharing the closest point, each weighted by its angle there.
    """
    triangles = np.asarray(mesh.triangles, dtype=np.float64)
    centroids = triangles.mean(axis=1)
    reach = float(np.linalg.norm(triangles - centroids[:, None], axis=-1).max())
    radii = cKDTree(triangles.reshape(-1, 3)).query(points)[0] * (1 + 1e-9) + reach + 1e-12
    faces = cKDTree(centroids)
    counts = faces.query_ball_point(points, radii, return_length=True)
    tie = 1e-9 * float(np.ptp(triangles.reshape(-1, 3), axis=0).max())
    out = np.empty(len(points))
    for chunk in _chunks(counts, _SDF_PAIRS_AT_ONCE):
        out[chunk] = _signed_distance_chunk(triangles, faces, points[chunk], radii[chunk], tie)
    return out


def _chunks(counts: np.ndarray, budget: int):
    """Consecutive slices whose counts sum to at most ``budget`` (or one item that alone exceeds it)."""
    total, start = np.cumsum(counts), 0
    while start < len(counts):
        done = total[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(total, done + budget, side="right")))
        yield slice(start, stop)
        start = stop


def _signed_distance_chunk(triangles: np.ndarray, faces: cKDTree, points: np.ndarray, radii: np.ndarray,
                           tie: float) -> np.ndarray:
    candidates = faces.query_ball_point(points, radii)
    sizes = np.fromiter(map(len, candidates), dtype=np.int64, count=len(points))
    face = np.concatenate(candidates).astype(np.int64)
    owner = np.repeat(np.arange(len(points)), sizes)
    closest = trimesh.triangles.closest_point(triangles[face], points[owner])
    offset = points[owner] - closest
    distance = np.linalg.norm(offset, axis=1)
    nearest = np.minimum.reduceat(distance, np.concatenate([[0], np.cumsum(sizes)[:-1]]))
    tied = np.flatnonzero(distance <= nearest[owner] + tie)
    pseudo_normal = np.zeros_like(points)
    weights = _angles_at(triangles[face[tied]], closest[tied])[:, None] * _unit_normals(triangles[face[tied]])
    np.add.at(pseudo_normal, owner[tied], weights)
    first = tied[np.unique(owner[tied], return_index=True)[1]]
    inside = np.einsum("ij,ij->i", offset[first], pseudo_normal) < 0
    return np.where(inside, -nearest, nearest)


def _unit_normals(triangles: np.ndarray) -> np.ndarray:
    cross = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    length = np.linalg.norm(cross, axis=1, keepdims=True)
    return np.divide(cross, length, out=np.zeros_like(cross), where=length > 0)


def _angles_at(triangles: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The angle each triangle spans around a point on it: 2 pi inside, pi on an edge, the corner's
    angle at a corner (0 for a degenerate triangle)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        barycentric = trimesh.triangles.points_to_barycentric(triangles, points)
    on_corner = np.nan_to_num(barycentric, nan=0.0) > 1 - 1e-7
    at_edge = (np.abs(np.nan_to_num(barycentric, nan=1.0)) < 1e-7).sum(axis=1)
    corner = np.argmax(on_corner, axis=1)
    rows = np.arange(len(triangles))
    a = triangles[rows, (corner + 1) % 3] - triangles[rows, corner]
    b = triangles[rows, (corner + 2) % 3] - triangles[rows, corner]
    cosine = np.einsum("ij,ij->i", a, b) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
    corner_angle = np.arccos(np.clip(cosine, -1.0, 1.0))
    angle = np.where(on_corner.any(axis=1), corner_angle, np.where(at_edge == 1, np.pi, 2 * np.pi))
    return np.where(np.isfinite(barycentric).all(axis=1), angle, 0.0)


def _write_npz_atomically(path: Path, **arrays: np.ndarray) -> None:
    """Write to a temporary file in the same folder, then rename (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        np.savez(tmp, allow_pickle=False, **arrays)
    os.replace(tmp.name, path)


def _cached_sdf_grid(mesh: trimesh.Trimesh, path: Path, cache_dir: Path,
                     resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sdf, grid_min, grid_max), read from ``<cache_dir>/<sha256 of the file>_r<R>.npz`` or
    computed once and written there."""
    cache = cache_dir / f"{content_sha256(path)}_r{resolution}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as cached:
            return cached["sdf"], cached["grid_min"], cached["grid_max"]
    grid_min, grid_max = _padded_bounds(mesh.bounds)
    sdf = _mesh_sdf_grid(mesh, grid_min, grid_max, resolution)
    _write_npz_atomically(cache, sdf=sdf, grid_min=grid_min, grid_max=grid_max)
    return sdf, grid_min, grid_max


def load_object_mesh(path: str | Path, cache_dir: str | Path,
                     resolution: int = DEFAULT_RESOLUTION) -> ObjectTemplate:
    """An object from any mesh file trimesh reads (.obj, .ply, .stl, ...), named by the file stem.

    The SDF grid is computed once per (file content, resolution) and cached in ``cache_dir``.
    """
    path = local_file(path, "object mesh")
    mesh = _read_mesh(path)
    sdf, grid_min, grid_max = _cached_sdf_grid(mesh, path, Path(cache_dir), resolution)
    return ObjectTemplate(
        name=path.stem,
        points=_surface_template_points(mesh),
        sdf=sdf,
        grid_min=grid_min,
        grid_max=grid_max,
        vertices=np.asarray(mesh.vertices, dtype=np.float32),
        faces=np.asarray(mesh.faces, dtype=np.int64),
    )


def default_cache_dir() -> Path:
    """``$MOTIONFLEET_CACHE/sdf``."""
    return cache_dir("sdf")


def get_object(name_or_path: str | Path, cache_dir: str | Path | None = None,
               resolution: int = DEFAULT_RESOLUTION) -> ObjectTemplate:
    """A built-in object by name, or a mesh file by path (suffix in ``MESH_SUFFIXES``)."""
    if str(name_or_path) in _BUILTIN_SHAPES:
        return builtin_object(str(name_or_path), resolution)
    if Path(name_or_path).suffix.lower() in MESH_SUFFIXES:
        return load_object_mesh(name_or_path, cache_dir or default_cache_dir(), resolution)
    raise RejectedInput(
        f"unknown object {str(name_or_path)!r}: not a built-in ({', '.join(_BUILTIN_SHAPES)}) "
        f"nor a mesh file ({', '.join(MESH_SUFFIXES)})"
    )
