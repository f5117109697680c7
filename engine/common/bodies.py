"""Parametric body models (SMPL, SMPL-H, SMPL-X) through the ``smplx`` package, read safely.

Model files are licensed, so users bring them. They are looked up the way ``smplx.create``
lays them out, ``<model_dir>/<kind>/<KIND>_<GENDER>.<ext>`` (``<model_dir>/<KIND>_<GENDER>.<ext>``
is accepted too), e.g. ``models/smplx/SMPLX_NEUTRAL.npz``.

smplx would ``pickle.load`` the file, which runs whatever code the file names. Instead the
arrays are read here (``np.load(allow_pickle=False)``, or a restricted unpickler that only
rebuilds numpy arrays and scipy sparse matrices) and handed to smplx: through ``data_struct``
for SMPL and SMPL-H, and for SMPL-X, whose constructor has no ``data_struct`` and always
reads its own file, through a private temporary ``.npz`` holding only the checked numeric arrays.

Coordinates: metres, y up, the body faces +z and its left is +x (the SMPL template frame).
Poses are one rotation per joint in kinematic-tree order, the root (global orientation) first.

:func:`write_synthetic_body_model` writes a well-formed stand-in model (a capsule-ish body
~1.7 m tall standing on y = 0) for tests and demos.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import smplx
import torch
from smplx.utils import Struct

from motionfleet.common.rotations import rotation_6d_to_matrix
from motionfleet.core.errors import MissingFile, RejectedInput, UnsafeCheckpoint

KINDS = ("smpl", "smplh", "smplx")
GENDERS = ("neutral", "male", "female")
NUM_BETAS = 10

# File stem and extensions, the first extension being the one named when the file is missing.
_FILE_STEMS = {"smpl": "SMPL", "smplh": "SMPLH", "smplx": "SMPLX"}
_FILE_EXTENSIONS = {"smpl": ("pkl", "npz"), "smplh": ("npz", "pkl"), "smplx": ("npz", "pkl")}
_DISPLAY_NAMES = {"smpl": "SMPL", "smplh": "SMPL-H", "smplx": "SMPL-X"}

# How smplx's layers split the per-joint rotations: (forward() argument, joint count), in
# kinematic-tree order. SMPL-H/X replace SMPL's two hand joints by 15 finger joints per hand.
POSE_GROUPS = {
    "smpl": (("global_orient", 1), ("body_pose", 23)),
    "smplh": (("global_orient", 1), ("body_pose", 21), ("left_hand_pose", 15), ("right_hand_pose", 15)),
    "smplx": (("global_orient", 1), ("body_pose", 21), ("jaw_pose", 1), ("leye_pose", 1),
              ("reye_pose", 1), ("left_hand_pose", 15), ("right_hand_pose", 15)),
}

_COMMON_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
_HAND_KEYS = ("hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr")
_REQUIRED_KEYS = {
    "smpl": _COMMON_KEYS,
    "smplh": _COMMON_KEYS,
    "smplx": _COMMON_KEYS + _HAND_KEYS + ("lmk_faces_idx", "lmk_bary_coords"),
}
# AMASS's SMPL+H files carry no hand PCA. With full per-joint hand rotations (use_pca=False)
# smplx reads these arrays but its rotation-matrix layers never use them, so zeros stand in.
_OPTIONAL_HAND_ARRAYS = {
    "hands_componentsl": np.zeros((45, 45)), "hands_componentsr": np.zeros((45, 45)),
    "hands_meanl": np.zeros(45), "hands_meanr": np.zeros(45),
}


# --------------------------------------------------------------------------------------------
# Finding and safely reading model files
# --------------------------------------------------------------------------------------------

def model_file_name(kind: str, gender: str = "neutral", ext: str | None = None) -> str:
    """``SMPLX_NEUTRAL.npz`` style name; ``ext`` defaults to the kind's usual extension."""
    _check_kind_and_gender(kind, gender)
    return f"{_FILE_STEMS[kind]}_{gender.upper()}.{ext or _FILE_EXTENSIONS[kind][0]}"


def _check_kind_and_gender(kind: str, gender: str) -> None:
    if kind not in KINDS:
        raise RejectedInput(f"unknown body model kind {kind!r}; expected one of {KINDS}")
    if gender not in GENDERS:
        raise RejectedInput(f"unknown body model gender {gender!r}; expected one of {GENDERS}")


def find_model_file(kind: str, model_dir: str | Path, gender: str = "neutral") -> Path:
    """The model file in ``model_dir/<kind>/`` or ``model_dir/``; MissingFile names what to put where."""
    model_dir = Path(model_dir)
    for folder in (model_dir / kind, model_dir):
        for ext in _FILE_EXTENSIONS[kind]:
            candidate = folder / model_file_name(kind, gender, ext)
            if candidate.is_file():
                return candidate
    other = model_file_name(kind, gender, _FILE_EXTENSIONS[kind][1])
    raise MissingFile(
        f"{_DISPLAY_NAMES[kind]} body model not found: put {model_file_name(kind, gender)} "
        f"(or {other}) in {model_dir / kind} . The model files are licensed and downloaded by "
        f"the user from the {_DISPLAY_NAMES[kind]} website."
    )


def _allowed_pickle_globals() -> dict[tuple[str, str], object]:
    """(module, name) -> object for the only globals a model pickle may name.

    numpy array/scalar reconstruction, scipy CSC/CSR matrices (under their old and new module
    paths), and the protocol helpers these pickles use (``copyreg._reconstructor`` for
    protocol 0, ``_codecs.encode`` for bytes in Python 3 protocol <= 2). Python 2 names are
    listed as written in the file, since overriding ``find_class`` skips pickle's name mapping.
    """
    import codecs
    import copyreg
    import importlib

    core = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # typeshed's copyreg stub leaves out the private _reconstructor, which CPython defines and pickles name
        ("copy_reg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]
        ("copyreg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]
        ("__builtin__", "object"): object,
        ("builtins", "object"): object,
        ("_codecs", "encode"): codecs.encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = core._reconstruct
        allowed[(module, "scalar")] = core.scalar
    for module in ("scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc",
                   "scipy.sparse.csr", "scipy.sparse._csr"):
        allowed[(module, "csc_matrix")] = scipy.sparse.csc_matrix
        allowed[(module, "csr_matrix")] = scipy.sparse.csr_matrix
    return allowed


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and scipy sparse matrices and nothing else."""

    def __init__(self, file, source: Path):
        super().__init__(file, encoding="latin1")
        self._source = source
        self._allowed = _allowed_pickle_globals()

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            raise UnsafeCheckpoint(
                f"{self._source} names {module}.{name}, which is not a numpy array or scipy sparse "
                "matrix, so it was not loaded (loading it would run code from the file). Convert the "
                "file to .npz (load it once where you trust it, e.g. with chumpy installed, and "
                "np.savez the arrays as plain numpy), and put the .npz next to it."
            )
        return found


def _read_pickle_arrays(path: Path) -> dict:
    with open(path, "rb") as file:
        try:
            data = _ArraysOnlyUnpickler(file, path).load()
        except (pickle.UnpicklingError, EOFError) as err:
            raise RejectedInput(f"unreadable body model pickle {path}: {err}") from err
    if not isinstance(data, dict):
        raise RejectedInput(f"{path} holds a {type(data).__name__}, not a dict of model arrays")
    return data


def _as_plain_array(value, key: str, path: Path) -> np.ndarray:
    """A numeric ndarray from an ndarray or scipy sparse matrix (J_regressor is CSC in SMPL pickles)."""
    if hasattr(value, "toarray"):
        value = value.toarray()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise RejectedInput(f"{path}: {key} has dtype {array.dtype}, expected a numeric array")
    return array


def read_model_arrays(path: str | Path, kind: str) -> dict[str, np.ndarray]:
    """The numeric arrays smplx needs for ``kind``, read without running code from the file."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return _select_arrays(npz, kind, path)
    return _select_arrays(_read_pickle_arrays(path), kind, path)


def _select_arrays(source, kind: str, path: Path) -> dict[str, np.ndarray]:
    """The required (and optional) keys of ``source`` as numeric arrays; other keys are never read."""
    present = set(source.keys())
    optional = _OPTIONAL_HAND_ARRAYS if kind == "smplh" else {}
    missing = [key for key in _REQUIRED_KEYS[kind] if key not in present]
    if missing:
        raise RejectedInput(f"{path} is not a {_DISPLAY_NAMES[kind]} model: it lacks {missing}")
    arrays = {}
    for key in _REQUIRED_KEYS[kind] + tuple(optional):
        if key not in present:
            arrays[key] = optional[key]
            continue
        try:
            value = source[key]
        except ValueError as err:  # np.load refusing an object array
            raise UnsafeCheckpoint(f"{path}: {key} is a pickled object array and was not loaded: {err}") from err
        arrays[key] = _as_plain_array(value, key, path)
    return arrays


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

@dataclass
class BodyOutput:
    """``vertices`` (B, V, 3); ``joints`` (B, J, 3), the kinematic skeleton; ``keypoints``: all of
    smplx's joints (skeleton, then vertex keypoints such as toes and fingertips, then SMPL-X face
    landmarks)."""

    vertices: torch.Tensor
    joints: torch.Tensor
    keypoints: torch.Tensor


class BodyModel(torch.nn.Module):
    """A smplx rotation-matrix layer with the engine's pose layout: one rotation per joint."""

    def __init__(self, kind: str, layer: torch.nn.Module):
        super().__init__()
        self.kind = kind
        self.layer: Any = layer  # a smplx layer: its tensors (v_template, shapedirs, ...) are attributes smplx does not type

    @property
    def num_joints(self) -> int:
        return sum(count for _, count in POSE_GROUPS[self.kind])

    @property
    def parents(self) -> torch.Tensor:
        """(J,) parent index of each joint, -1 for the root."""
        return self.layer.parents

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) long vertex indices."""
        return self.layer.faces_tensor

    @property
    def template_vertices(self) -> torch.Tensor:
        """(V, 3) rest-pose vertices at zero shape."""
        return self.layer.v_template

    def forward(self, pose_6d: torch.Tensor, betas: torch.Tensor,
                transl: torch.Tensor | None = None) -> BodyOutput:
        """Pose (B, J, 6) in the 6D rotation representation, betas (B, 10), transl (B, 3)."""
        return self.forward_rotmats(rotation_6d_to_matrix(pose_6d), betas, transl)

    def forward_rotmats(self, rotmats: torch.Tensor, betas: torch.Tensor,
                        transl: torch.Tensor | None = None) -> BodyOutput:
        """Pose (B, J, 3, 3) as rotation matrices (local, relative to the parent joint)."""
        if rotmats.shape[1:] != (self.num_joints, 3, 3):
            raise ValueError(f"{self.kind} pose must be (B, {self.num_joints}, 3, 3), got {tuple(rotmats.shape)}")
        groups = POSE_GROUPS[self.kind]
        parts = torch.split(rotmats, [count for _, count in groups], dim=1)
        pose = {name: part for (name, _), part in zip(groups, parts)}
        out = self.layer(betas=betas, transl=transl, **pose)
        return BodyOutput(vertices=out.vertices, joints=out.joints[:, : self.num_joints], keypoints=out.joints)


def _smplx_layer(kind: str, arrays: dict[str, np.ndarray], path: Path, gender: str) -> torch.nn.Module:
    """smplx prints (to stdout, where job reports and piped output go) that a model has only 10
    shape coefficients: the count every family uses (NUM_BETAS), so the notice is kept off stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        return _build_smplx_layer(kind, arrays, path, gender)


def _build_smplx_layer(kind: str, arrays: dict[str, np.ndarray], path: Path, gender: str) -> torch.nn.Module:
    options = dict(gender=gender, num_betas=NUM_BETAS)
    if kind == "smpl":
        return smplx.SMPLLayer(model_path=str(path), data_struct=Struct(**arrays), **options)
    if kind == "smplh":
        return smplx.SMPLHLayer(model_path=str(path), data_struct=Struct(**arrays),
                                use_pca=False, **options)
    with tempfile.TemporaryDirectory(prefix="motionfleet-smplx-") as tmp:
        checked = Path(tmp) / model_file_name("smplx", gender, "npz")
        np.savez(checked, allow_pickle=False, **arrays)
        return smplx.SMPLXLayer(model_path=str(checked), ext="npz", use_pca=False,
                                num_expression_coeffs=10, **options)


def load_body_model(kind: str, model_dir: str | Path, gender: str = "neutral",
                    device: str | torch.device = "cpu") -> BodyModel:
    """Find, safely read and build ``kind`` ("smpl", "smplh", "smplx") from ``model_dir``."""
    _check_kind_and_gender(kind, gender)
    path = find_model_file(kind, model_dir, gender)
    arrays = read_model_arrays(path, kind)
    return BodyModel(kind, _smplx_layer(kind, arrays, path, gender)).to(device)


def farthest_point_indices(points: np.ndarray, n: int, first: int = 0) -> np.ndarray:
    """Greedy farthest point sampling: start at ``first``, then repeatedly take the point
    maximising the distance to the chosen set. Returns (n,) int64 indices."""
    points = np.asarray(points, dtype=np.float64)
    if not 0 < n <= len(points):
        raise ValueError(f"cannot choose {n} of {len(points)} points")
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = first
    nearest_sq = ((points - points[first]) ** 2).sum(-1)
    for i in range(1, n):
        chosen[i] = int(nearest_sq.argmax())
        nearest_sq = np.minimum(nearest_sq, ((points - points[chosen[i]]) ** 2).sum(-1))
    return chosen


def sample_vertex_ids(template_vertices: torch.Tensor | np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    """(n,) long ids spread over the template by farthest point sampling from a seeded start.

    Computed once per model; apply to any batch as ``vertices[:, ids]``.
    """
    device = template_vertices.device if torch.is_tensor(template_vertices) else torch.device("cpu")
    points = template_vertices.detach().cpu().numpy() if torch.is_tensor(template_vertices) else template_vertices
    first = int(np.random.default_rng(seed).integers(len(points)))
    return torch.from_numpy(farthest_point_indices(points, n, first)).to(device)
