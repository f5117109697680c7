"""Reading and writing model weights.

Our own format is a folder with ``model.safetensors`` and ``config.json``. Released checkpoints
that are pickles (Lightning ``.ckpt``, ``.pth.tar``, ``.pkl``) are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, plus
numpy's scalar types (training logs in released checkpoints hold them; rebuilding one runs no code).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from motionfleet.core.errors import MissingFile, RejectedInput, UnsafeCheckpoint
from motionfleet.core.io.digests import content_sha256

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def read_state_dict(path: str | Path, mmap: bool = False, allowed_globals: Sequence = ()) -> dict:
    """Tensors from a safetensors file or a pickle-based checkpoint, without running its code.

    Returns whatever the file holds (a flat dict for safetensors; the pickled container, e.g.
    ``{'state_dict': ...}`` or ``{'model_state_dict': ...}``, for torch files). ``mmap`` maps a
    zip-format torch file instead of reading it (cheap when only its metadata is wanted). What the
    file claims is checked before anything is allocated: a safetensors header against the file's
    size, a torch archive for torch's own layout (stored entries, a ``data.pkl``).
    ``allowed_globals`` adds ``torch.serialization.safe_globals`` entries for a released format
    (each a stand-in that runs none of the file's code).
    """
    path = Path(path)
    if path.is_dir():
        raise MissingFile(f"{path} is a folder; give the checkpoint file itself")
    if not path.is_file():
        raise MissingFile(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        safetensors_layout(path)
        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types for truncated files
            raise ValueError(f"unreadable safetensors file {path}: {err}") from err
    zipped = check_torch_file(path)
    if zipped and is_torchscript_archive(path):
        raise UnsafeCheckpoint(f"{path} is a TorchScript archive (code, not a state dict) and was refused; "
                               f"save its state_dict() with torch.save and pass that file")
    try:
        with torch.serialization.safe_globals([*numpy_scalar_globals(), *allowed_globals]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipped)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpoint(
            f"{path} needs arbitrary code to unpickle and was refused "
            f"(torch.load weights_only=True): {err}"
        ) from err
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, OverflowError) as err:
        raise ValueError(f"unreadable checkpoint {path}: {err}") from err


PICKLE_PROTOCOL_2_OR_LATER = b"\x80"  # the PROTO opcode every torch.save pickle (and protocol >= 2) starts with


def check_torch_file(path: Path) -> bool:
    """Whether ``path`` is a zip-format torch file (else a pickle, torch's legacy format); anything
    else raises ValueError before ``torch.load`` reads it. torch inflates a compressed entry in
    full, so an archive may only hold stored (uncompressed) entries, as ``torch.save`` writes them."""
    import zipfile

    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        raise ValueError(f"unreadable checkpoint {path}: the file is empty")
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise ValueError(f"unreadable checkpoint {path}: a damaged or truncated zip archive")
        if not head.startswith(PICKLE_PROTOCOL_2_OR_LATER):
            raise ValueError(f"unreadable checkpoint {path}: neither a torch.save file (zip or pickle) nor "
                             f"safetensors")
        return False
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
    if not any(entry.filename.endswith("/data.pkl") for entry in entries):
        raise ValueError(f"unreadable checkpoint {path}: a zip archive without a torch.save data.pkl")
    compressed = [entry.filename for entry in entries if entry.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise ValueError(f"unreadable checkpoint {path}: compressed entries ({compressed[0]}, ...), which "
                         f"torch.save never writes and torch.load would inflate in full")
    return True


MAX_SAFETENSORS_HEADER = 100 << 20  # safetensors' own limit on the JSON header
SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                           "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def safetensors_layout(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape from a safetensors header, read without its tensors. The header is an 8-byte
    little-endian length then JSON; the length, each dtype, shape and data span are checked against
    the file's size, so a header cannot claim more than the file holds (ValueError otherwise)."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as file:
        prefix = file.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= min(size - 8, MAX_SAFETENSORS_HEADER):
            raise ValueError(f"unreadable safetensors file {path}: its header claims {max(length, 0)} bytes and the "
                             f"file has {size}; not a safetensors file, or a truncated one")
        raw = file.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"unreadable safetensors file {path}: its header is not JSON ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"unreadable safetensors file {path}: its header is not a JSON object")
    data_bytes = size - 8 - length
    return {key: tensor_span(entry, data_bytes, f"unreadable safetensors file {path}: tensor {key[:80]!r}")
            for key, entry in header.items() if key != "__metadata__"}


def tensor_span(entry, data_bytes: int, source: str) -> tuple[int, ...]:
    """The shape of one safetensors header entry whose dtype x shape fills its ``data_offsets``
    inside the file's ``data_bytes``."""
    if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPE_BYTES:
        raise ValueError(f"{source}: not a tensor entry of a known whole-byte dtype")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
            and isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)):
        raise ValueError(f"{source}: shape and data_offsets must be lists of non-negative integers")
    begin, end = offsets
    if not 0 <= begin <= end <= data_bytes:
        raise ValueError(f"{source}: data_offsets {offsets} lie outside the file's {data_bytes} data bytes")
    if math.prod(shape) * SAFETENSORS_DTYPE_BYTES[entry["dtype"]] != end - begin:
        raise ValueError(f"{source}: shape {shape[:8]} of {entry['dtype']} does not fill its {end - begin} bytes")
    return tuple(shape)


def numpy_scalar_globals() -> list:
    """What ``weights_only`` needs to rebuild a pickled numpy scalar (``np.float64(0.3)`` in a
    training log): ``multiarray.scalar`` (named as numpy 1 and 2 pickle it), ``np.dtype`` and the
    dtype classes of bool, integer and float scalars. No object, string or array types."""
    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray")
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
    weights, config = model_folder_files(path)
    return read_state_dict(weights), read_config(config)


def is_model_folder(path: str | Path) -> bool:
    """A model folder or one ``.safetensors`` file of one (else a released checkpoint file)."""
    return Path(path).is_dir() or Path(path).suffix == ".safetensors"


def model_folder_files(path: str | Path) -> tuple[Path, Path]:
    """(weights file, config.json) of a model folder or of one weights file in it; both must exist."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    for file in (weights, weights.parent / CONFIG_FILE):
        if not file.is_file():
            raise MissingFile(f"{file} is missing; a model folder holds {WEIGHTS_FILE} and {CONFIG_FILE}")
    return weights, weights.parent / CONFIG_FILE


MAX_CONFIG_BYTES = 1 << 20  # ours are under 1 KB


def read_config(path: Path) -> dict:
    """A model folder's ``config.json``: a JSON object of at most MAX_CONFIG_BYTES, else ValueError."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path} has {path.stat().st_size} bytes; a model config is a small JSON object")
    try:
        config = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not the model's settings object")
    return config


def probe_checkpoint(path: str | Path, check_config: Callable[[dict], object] = lambda config: config) -> None:
    """Read what a checkpoint claims without loading its tensors, so a file that is not one is
    refused before a job folder is written: a model folder's safetensors header and ``config.json``
    (given to ``check_config``), a torch file memory-mapped (a legacy pickle file is read)."""
    if is_model_folder(path):
        weights, config = model_folder_files(path)
        safetensors_layout(weights)
        check_config(read_config(config))
    else:
        read_state_dict(path, mmap=True)


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


MAX_CONFIG_INT = 1 << 16  # no width or length of these models comes near it
# Depth is built module by module even on the meta device: 4096 dhvae layers took 24 s to lay out;
# the released models have at most 12.
MAX_CONFIG_LAYERS = 256


def checked_config(config_class: type, values: dict, source: str):
    """``config_class(**values)`` with each value of the type of the field's default and integers
    in [0, MAX_CONFIG_INT] (depths, the fields named ``*layers``, in [0, MAX_CONFIG_LAYERS]), or
    ValueError naming the field: a checkpoint's header is untrusted."""
    known = {f.name: f.default for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown model settings {unknown}")
    for name, value in values.items():
        default, high = known[name], MAX_CONFIG_LAYERS if name.endswith("layers") else MAX_CONFIG_INT
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{source}: model setting {name}={str(value)[:50]!r} is not a valid "
                             f"{type(default).__name__}" + (f" in [0, {high}]" if type(default) is int else ""))
    return config_class(**values)


Built = TypeVar("Built", bound=torch.nn.Module)


def build_checked(build: Callable[[], Built], state_dict: dict, source: str, layout: str) -> Built:
    """``build()``, once its layout (built on the meta device, no memory) matches ``state_dict``:
    a header cannot make us allocate more than the tensors its file holds."""
    check_layout(state_dict, meta_layout(build), source, layout)
    return build()


def assigned(build: Callable[[], Built], state_dict: dict) -> Built:
    """``build()`` holding ``state_dict``'s own tensors (strict keys): built on the meta device and
    filled by assignment, so no default initialisation runs and nothing is copied (a released model
    is allocated once). The meta device's first use in a process imports torch's reference ops
    (1.2 s on the 2-core CPU): for a model of a few MB, building and copying is faster. A tensor
    ``build()`` makes that is not in ``state_dict`` (a non-persistent buffer) would be left on the
    meta device: that is a ValueError."""
    with torch.device("meta"):
        module = build()
    module.load_state_dict(state_dict, strict=True, assign=True)
    left = [name for name, tensor in [*module.named_parameters(), *module.named_buffers()] if tensor.is_meta]
    if left:
        raise ValueError(f"{type(module).__name__}: {', '.join(left[:3])} not in the state dict, so never filled")
    return module


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
