"""Initial human-object estimates for ``refine``: a Parquet file, one row per image.

Columns (docs/refine.md): ``id`` (optional, else the row index), ``pose`` (52 SMPL-H
joint rotations, root first: 312 numbers 6D, 156 axis-angle or 468 matrix), ``betas`` (10),
``object`` (a built-in name or a mesh path), ``object_rotation`` (6 6D, 3 axis-angle or 9
matrix), ``object_translation`` (3, metres), and ``image_features`` (the denoiser's condition
size, 2048 for the released model) or ``image_path``. Optional ground truth for metrics:
``gt_pose``, ``gt_betas``, ``gt_object_rotation``, ``gt_object_translation``.

Every row becomes an ``EstimateRecord`` holding the raw values; ``validate`` turns one into an
``Estimate`` of tensors or raises RejectedInput with the reason, so bad rows are rejected one by
one and never stop the job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional

import pyarrow.parquet as pq
import torch

from motionfleet.common.rotations import axis_angle_to_matrix, matrix_to_rotation_6d
from motionfleet.core.errors import RejectedInput
from motionfleet.core.io import digests
from motionfleet.core.io.digests import listing_sha256
from motionfleet.core.io.inputs import check_id, check_text, file_inside, number_list, printable
from motionfleet.core.io.parquet_rows import RowGroupBytes, column_values, read_rows, row_group_bytes
from motionfleet.core.io.planned_bytes import CheckedFile, FileDigests, scan_file
from motionfleet.core.shards import PlannedBytes, RangeItems, rows_of
from motionfleet.dhvae.source import as_duplicate, duplicate_rows
from motionfleet.scorehoi.hoi import NUM_JOINTS, HOIState, pack_state
from motionfleet.scorehoi.objects import MESH_SUFFIXES

FIELDS = ("pose", "betas", "object", "object_rotation", "object_translation", "image_features", "image_path")
GROUND_TRUTH = ("gt_pose", "gt_betas", "gt_object_rotation", "gt_object_translation")
MAX_ABS_BETA = 5.0
MAX_TRANSLATION_M = 5.0
MAX_ABS_ROTATION_VALUE = 1e4  # 6D / axis-angle / matrix entries; far beyond this, float32 norms overflow
REFUSED = "refused"  # a referenced name that leads outside the estimates file's folder: never read
_MIN_6D_NORM = 1e-3
_ORTHONORMAL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class EstimateRecord:
    sample_id: str
    values: tuple[tuple[str, Any], ...]  # (column, raw value) pairs of FIELDS and GROUND_TRUTH
    error: Optional[str] = None
    folder: Optional[str] = None  # the estimates file's folder: its mesh and image paths stay inside it

    def get(self, key: str):
        return dict(self.values).get(key)


@dataclass(frozen=True)
class EstimateSet:
    records: tuple[EstimateRecord, ...]
    name: str
    digest: str  # sha256 of the source: part of the job's fingerprint


VARIANTS = ("guided", "control")


@dataclass(frozen=True)
class RefineItem:
    record: EstimateRecord
    variant: str  # "guided" or "control"


def refine_items(records: tuple[EstimateRecord, ...], control: bool) -> list[RefineItem]:
    """Items are (row, variant), variants outermost, so shard boundaries depend only on the input
    and the shard size; ``control`` adds every row again with guidance off."""
    variants = VARIANTS if control else VARIANTS[:1]
    return [RefineItem(record, variant) for variant in variants for record in records]


@dataclass
class Estimate:
    sample_id: str
    object: str  # as the row names it
    object_file: Optional[Path]  # its mesh file inside the estimates file's folder; None: a built-in
    x: torch.Tensor  # (331,) the state of models.scorehoi
    image_features: Optional[torch.Tensor]
    image_path: Optional[Path]  # inside the estimates file's folder
    ground_truth: Optional[torch.Tensor]  # (331,) or None


def record_from_row(index: int, row: dict, folder: Optional[str] = None) -> EstimateRecord:
    """Row ``index`` of an estimates file in ``folder`` (None: rows of no file, which name no file)."""
    values = tuple((key, row.get(key)) for key in FIELDS + GROUND_TRUTH if row.get(key) is not None)
    if row.get("id") is None:
        return EstimateRecord(str(index), values, folder=folder)
    try:
        return EstimateRecord(check_id(row["id"]), values, folder=folder)
    except RejectedInput as err:
        return EstimateRecord(printable(str(row["id"])), values, error=err.reason, folder=folder)


@dataclass(frozen=True)
class EstimateFile:
    """What planning knows of an estimates file (streamed: no row is kept): its rows, digests (whole
    and per block), where it keeps its row groups, the digest of the files its rows name, and the
    rows whose id repeats an earlier row's."""

    path: str
    count: int
    scan: FileDigests
    groups: RowGroupBytes
    referenced_files_sha256: str
    duplicates: dict

    @property
    def digest(self) -> str:
        return self.scan.sha256


class EstimateRange(NamedTuple):  # a tuple: every shard ships one, so it pickles without field names
    """Rows [lo, hi) of an estimates file (and which of them repeat an earlier row's id), read from
    the ``planned`` bytes (``InputChanged`` if the file differs there now)."""

    lo: int
    hi: int
    duplicates: dict
    planned: PlannedBytes

    @property
    def path(self) -> str:
        return self.planned.path

    def records(self) -> list[EstimateRecord]:
        with CheckedFile(self.planned) as file:
            rows = read_rows(file, self.lo, self.hi)
        folder = os.path.dirname(self.path) or "."
        records = [record_from_row(row, values, folder) for row, values in enumerate(rows, self.lo)]
        return [as_duplicate(r, row, self.duplicates[row]) if row in self.duplicates else r
                for row, r in enumerate(records, self.lo)]


def refine_item(record: EstimateRecord, variant: int) -> RefineItem:
    return RefineItem(record, VARIANTS[variant])


def scan_estimates(path: str | Path) -> EstimateFile:
    """The estimates file's metadata, ids and referenced files, each column streamed alone."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"estimates file not found: {path}")
    if path.suffix != ".parquet":
        raise ValueError(f"unsupported estimates file {path}: use .parquet (docs/refine.md)")
    scan, file = scan_file(path), pq.ParquetFile(path)
    ids = (record_from_row(row, {"id": value}).sample_id for row, value in enumerate(column_values(file, "id")))
    referenced = referenced_files_sha256(str(path.parent), column_values(file, "object"),
                                         column_values(file, "image_path"))
    return EstimateFile(str(path), file.metadata.num_rows, scan, row_group_bytes(file, scan.size), referenced,
                        duplicate_rows(ids))


def estimate_rows(source: EstimateFile, start: int, stop: int) -> RangeItems:
    """The descriptor of job items [start, stop) over ``source``."""
    lo, hi = rows_of(start, stop, source.count)
    rows = EstimateRange(lo, hi, {row: dup for row, dup in source.duplicates.items() if lo <= row < hi},
                         source.scan.planned(*source.groups.of_rows(lo, hi)))
    return RangeItems(rows, start, stop, source.count, refine_item)


def referenced_files_sha256(folder: Optional[str], objects: Iterable, image_paths: Iterable) -> str:
    """One digest over the mesh files (whole) and images (sampled) the rows name, for the job's
    fingerprint (``core.io.digests``): a mesh or an image swapped between a kill and the rerun
    changes the job instead of mixing results. A name that leads outside ``folder`` is not read
    (its row is rejected), nor is each shared file read more than once."""
    meshes = sorted({v for v in objects if isinstance(v, str) and Path(v).suffix.lower() in MESH_SUFFIXES})
    images = sorted({v for v in image_paths if isinstance(v, str)})
    mesh_files, image_files = inside_or_none(folder, meshes), inside_or_none(folder, images)
    return listing_sha256([*zip(meshes, file_digests(mesh_files)), *zip(images, file_digests(image_files, sampled=True))])


def inside_or_none(folder: Optional[str], names: list[str]) -> list[Optional[Path]]:
    if folder is None:
        return [None for _ in names]

    def resolved(name: str) -> Optional[Path]:
        try:
            return file_inside(folder, name, "file")
        except (RejectedInput, ValueError):
            return None
    return [resolved(name) for name in names]


def file_digests(files: list[Optional[Path]], sampled: bool = False) -> list[str]:
    """``digests.many`` of the files, ``REFUSED`` where there is none."""
    found = iter(digests.many([f for f in files if f is not None], sampled=sampled))
    return [next(found) if f is not None else REFUSED for f in files]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def finite_vector(value, name: str, lengths: tuple[int, ...]) -> torch.Tensor:
    """float64 tensor of one of ``lengths``, all finite also as float32 (the model's precision: 1e39
    is finite in float64 and infinite in float32), or RejectedInput."""
    if value is None:
        raise RejectedInput(f"{name} is missing")
    vector = torch.tensor(number_list(value, name), dtype=torch.float64)
    if len(vector) not in lengths:
        raise RejectedInput(f"{name} has {len(vector)} numbers, expected one of {lengths}")
    if not torch.isfinite(vector.float()).all():
        raise RejectedInput(f"{name} has NaN or infinite values (or values beyond float32)")
    return vector


def rotations_6d(value, name: str, count: int) -> torch.Tensor:
    """(count, 6) from 6D, axis-angle or matrix values (told apart by their length)."""
    vector = bounded(finite_vector(value, name, (6 * count, 3 * count, 9 * count)), name, MAX_ABS_ROTATION_VALUE)
    if len(vector) == 3 * count:
        return matrix_to_rotation_6d(axis_angle_to_matrix(vector.view(count, 3)))
    if len(vector) == 9 * count:
        return matrix_to_rotation_6d(check_rotation_matrices(vector.view(count, 3, 3), name))
    return check_6d(vector.view(count, 6), name)


def check_rotation_matrices(matrices: torch.Tensor, name: str) -> torch.Tensor:
    eye = torch.eye(3, dtype=matrices.dtype)
    orthonormal = (matrices @ matrices.transpose(-1, -2) - eye).abs().amax(dim=(-1, -2)) < _ORTHONORMAL_TOLERANCE
    if not (orthonormal & (torch.linalg.det(matrices) > 0)).all():
        raise RejectedInput(f"{name} has matrices that are not rotations")
    return matrices


def check_6d(d6: torch.Tensor, name: str) -> torch.Tensor:
    """6D rotations need two non-zero, non-parallel 3-vectors (Gram-Schmidt is undefined otherwise)."""
    a1, a2 = d6[:, :3], d6[:, 3:]
    cross = torch.linalg.cross(a1, a2).norm(dim=-1)
    if not ((a1.norm(dim=-1) > _MIN_6D_NORM) & (cross > _MIN_6D_NORM * a2.norm(dim=-1))).all():
        raise RejectedInput(f"{name} has degenerate 6D rotations (zero or parallel vectors)")
    return d6


def bounded(vector: torch.Tensor, name: str, limit: float, unit: str = "") -> torch.Tensor:
    if vector.abs().max() > limit:
        raise RejectedInput(f"{name} out of range: |value| must be <= {limit}{unit}, got {vector.abs().max():.3g}")
    return vector


def state_from(record: EstimateRecord, prefix: str = "") -> torch.Tensor:
    """(331,) float32 state from the columns ``<prefix>pose`` etc."""
    state = HOIState(
        pose_6d=rotations_6d(record.get(f"{prefix}pose"), f"{prefix}pose", NUM_JOINTS)[None],
        object_rotation_6d=rotations_6d(record.get(f"{prefix}object_rotation"), f"{prefix}object_rotation", 1),
        object_translation=bounded(finite_vector(record.get(f"{prefix}object_translation"),
                                                 f"{prefix}object_translation", (3,)),
                                   f"{prefix}object_translation", MAX_TRANSLATION_M, " m")[None],
        betas=bounded(finite_vector(record.get(f"{prefix}betas"), f"{prefix}betas", (10,)),
                      f"{prefix}betas", MAX_ABS_BETA)[None],
    )
    return pack_state(state)[0].float()


def image_condition(record: EstimateRecord, feature_dim: int) -> tuple[Optional[torch.Tensor], Optional[Path]]:
    features, path = record.get("image_features"), record.get("image_path")
    if features is not None:
        return finite_vector(features, "image_features", (feature_dim,)).float(), None
    if path is not None:
        return None, named_file(record, check_text(path, "image_path"), "image_path")
    raise RejectedInput("needs image_features or image_path")


def named_file(record: EstimateRecord, name: str, what: str) -> Path:
    """The file a row names, inside its estimates file's folder (``inputs.file_inside``)."""
    if record.folder is None:
        raise RejectedInput(f"{what} {printable(name)!r}: only rows of an estimates file name files")
    return file_inside(record.folder, name, what)


def object_file(record: EstimateRecord, name: str) -> Optional[Path]:
    """The mesh file of a mesh name; None for a built-in or an unknown name (``objects.get_object`` names it)."""
    return named_file(record, name, "object mesh") if Path(name).suffix.lower() in MESH_SUFFIXES else None


def validate(record: EstimateRecord, feature_dim: int) -> Estimate:
    """The record as tensors, or RejectedInput naming the first problem."""
    if record.error:
        raise RejectedInput(record.error)
    name = record.get("object")
    if not isinstance(name, str) or not name:
        raise RejectedInput("object must be a built-in object name or a mesh path")
    check_text(name, "object")
    has_truth = [record.get(key) is not None for key in GROUND_TRUTH]
    if any(has_truth) and not all(has_truth):
        raise RejectedInput(f"ground truth needs all of {GROUND_TRUTH}")
    mesh = object_file(record, name)
    features, path = image_condition(record, feature_dim)
    return Estimate(record.sample_id, name, mesh, state_from(record), features, path,
                    state_from(record, "gt_") if all(has_truth) else None)
