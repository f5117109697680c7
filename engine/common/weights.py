"""Reading and writing model weights.

Our own format is a folder with ``model.safetensors`` and ``config.json``. Released checkpoints
that are pickles (Lightning ``.ckpt``, ``.pth.tar``, ``.pkl``) are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, plus
numpy's scalar types (training logs in released checkpoints hold them; rebuilding one runs no code).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from motionfleet.core.errors import MissingFile, RejectedInput, UnsafeCheckpoint
from motionfleet.core.io.digests import content_sha256

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def read_state_dict(path: str | Path, mmap: bool = False) -> dict:
    """Tensors from a safetensors file or a pickle-based checkpoint, without running its code.

    Returns whatever the file holds (a flat dict for safetensors; the pickled container, e.g.
    ``{'state_dict': ...}`` or ``{'model_state_dict': ...}``, for torch files). ``mmap`` maps a
    zip-format torch file instead of reading it (cheap when only its metadata is wanted).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types for truncated files
            raise ValueError(f"unreadable safetensors file {path}: {err}") from err
    if is_torchscript_archive(path):
        raise UnsafeCheckpoint(f"{path} is a TorchScript archive (code, not a state dict) and was refused; "
                               f"save its state_dict() with torch.save and pass that file")
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpoint(
            f"{path} needs arbitrary code to unpickle and was refused "
            f"(torch.load weights_only=True): {err}"
        ) from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"unreadable checkpoint {path}: {err}") from err


def numpy_scalar_globals() -> list:
    """What ``weights_only`` needs to rebuild a pickled numpy scalar (``np.float64(0.3)`` in a
    training log): ``multiarray.scalar`` (named as numpy 1 and 2 pickle it), ``np.dtype`` and the
    dtype classes of bool, integer and float scalars. No object, string or array types."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
               np.float16, np.float32, np.float64)
    return [(multiarray.scalar, "numpy.core.multiarray.scalar"), (multiarray.scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *(type(np.dtype(kind)) for kind in numeric)]


def is_torchscript_archive(path: str | Path) -> bool:
    """A TorchScript archive (``torch.jit.save``) is a zip holding ``code/`` and ``constants.pkl``."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def save_model(folder: str | Path, state_dict: dict, config: dict) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder


def load_model_folder(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, config) from a folder written by :func:`save_model`, or from one weights file
    of such a folder (``folder/other.safetensors``: that file, never ``model.safetensors``, with
    the ``config.json`` beside it), so the weights loaded are the file whose hash is recorded."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    for file in (weights, weights.parent / CONFIG_FILE):
        if not file.is_file():
            raise MissingFile(f"{file} is missing; a model folder holds {WEIGHTS_FILE} and {CONFIG_FILE}")
    return read_state_dict(weights), json.loads((weights.parent / CONFIG_FILE).read_text())


def weights_description(checkpoint: str | Path | None, dummy_seed: int) -> str:
    """How a result names its weights: ``dummy, seed N`` or ``sha256:<hash of the weights file>``."""
    if checkpoint is None:
        return f"dummy, seed {dummy_seed}"
    path = Path(checkpoint)
    return f"sha256:{content_sha256(path / WEIGHTS_FILE if path.is_dir() else path)}"


@contextmanager
def seeded(seed: int):
    """Random draws inside come from ``torch.manual_seed(seed)`` (dummy weights: same seed, same
    bytes); the global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


MAX_CONFIG_INT = 1 << 16  # no width, depth or length of these models comes near it


def checked_config(config_class: type, values: dict, source: str):
    """``config_class(**values)`` with each value of the type of the field's default and integers
    in [0, MAX_CONFIG_INT], or ValueError naming the field: a checkpoint's header is untrusted."""
    known = {f.name: f.default for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown model settings {unknown}")
    for name, value in values.items():
        default = known[name]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CONFIG_INT
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{source}: model setting {name}={str(value)[:50]!r} is not a valid "
                             f"{type(default).__name__}" + (f" in [0, {MAX_CONFIG_INT}]" if type(default) is int else ""))
    return config_class(**values)


def build_checked(build: Callable[[], torch.nn.Module], state_dict: dict, source: str, layout: str) -> torch.nn.Module:
    """``build()``, once its layout (built on the meta device, no memory) matches ``state_dict``:
    a header cannot make us allocate more than the tensors its file holds."""
    check_layout(state_dict, meta_layout(build), source, layout)
    return build()


def meta_layout(build: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``build()``'s state dict, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = build()
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def check_layout(state_dict: dict, expected: dict[str, tuple[int, ...]], source: str, layout: str) -> None:
    """Raise RejectedInput naming the missing, unexpected or mis-shaped keys of ``state_dict``
    against ``expected`` (key -> shape); ``layout`` names the architecture in the message."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{key} {tuple(state_dict[key].shape)} != {expected[key]}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != expected[key]
    )
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
        if keys
    ]
    if problems:
        raise RejectedInput(f"{source} does not match the {layout} layout: " + "; ".join(problems))
