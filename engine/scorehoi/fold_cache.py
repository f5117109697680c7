"""The folded denoiser, stored once per machine and weights.

Folding the released denoiser (``model.fold_scorehoi``: 25 products of 2048 x 2048 matrices) took
2.5 s of a refine job's start on a 2-core CPU, and building the seeded dummy weights it folds 1.7 s
more; the folded weights (30 M parameters, 119 MB) load from a safetensors file in milliseconds.

The file is a cache: its name is a digest of everything that decides its bits (the weights, the
preset's sizes, the model's code, torch's version, the device and, on a CPU, its kernels and
threads), so a file found is what this process would compute. One that does not load or does not
fit the layout is folded again and replaced; one that cannot be written is not kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from motionfleet.common.weights import weights_description
from motionfleet.core.io.cache import cache_dir
from motionfleet.scorehoi import model as scorehoi


def folded_denoiser(checkpoint: Optional[str], preset: str, seed: int,
                    device: torch.device) -> tuple[scorehoi.FoldedScoreHOIDenoiser, str]:
    """(the folded denoiser on ``device``, its weights description), read from the cache or folded
    (``scorehoi.load_model`` then ``fold_scorehoi``, where it runs) and stored."""
    weights = weights_description(checkpoint, seed)
    path = fold_path(weights, preset, device)
    stored = read_fold(path, scorehoi.PRESETS[preset], device)
    if stored is not None:
        return stored, weights
    model, _ = scorehoi.load_model(checkpoint, preset, seed)
    folded = scorehoi.fold_scorehoi(model.to(device))
    write_fold(folded, path)
    return folded, weights


def fold_path(weights: str, preset: str, device: torch.device) -> Path:
    key = {"weights": weights, "preset": preset, "config": dataclasses.asdict(scorehoi.PRESETS[preset]),
           "model_code": hashlib.sha256(Path(scorehoi.__file__).read_bytes()).hexdigest(),
           "torch": torch.__version__, "device": where_folded(device)}
    return cache_dir("scorehoi-folded") / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]}.safetensors"


def where_folded(device: torch.device) -> str:
    """What decides a fold's bits besides its inputs: the GPU, or the CPU's kernels and threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, cuda {torch.version.cuda}"
    return f"cpu {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"


def read_fold(path: Path, config: scorehoi.ScoreHOIConfig, device: torch.device) -> Optional[scorehoi.FoldedScoreHOIDenoiser]:
    """The stored fold, or None where there is none or it does not load into ``config``'s layout."""
    try:
        tensors = load_file(path, device=str(device))
        if any(t.dtype != torch.float32 for t in tensors.values()):
            return None
        model = scorehoi.folded_layout(config)
        model.load_state_dict(tensors, strict=True, assign=True)
    except (OSError, SafetensorError, RuntimeError):  # absent, damaged, or another layout
        return None
    return model


def write_fold(model: scorehoi.FoldedScoreHOIDenoiser, path: Path) -> None:
    """Written beside its place and moved in, so a reader never sees half a file; a cache that
    cannot be written (read-only, full) keeps nothing and the job goes on with the fold it made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=".fold-")
        os.close(handle)
    except OSError:
        return
    try:
        save_file({name: t.contiguous() for name, t in model.state_dict().items()}, scratch)
        os.chmod(scratch, 0o644)  # mkstemp's 0600 would keep it from the other users of a shared cache
        os.replace(scratch, path)
    except (OSError, SafetensorError):
        Path(scratch).unlink(missing_ok=True)
