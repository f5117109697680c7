"""What produced a result: engine and library versions, the machine, the numerics settings.

``record()`` is what every report.json and metrics.json carries (``host``, ``versions``,
``accelerator``, ``numerics``); a field that cannot be found is "unknown" or None, never an error.
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path
from typing import Optional


def engine_version() -> str:
    try:
        return version("motionfleet")
    except PackageNotFoundError:
        return "unknown"


def git(folder: Path, *args: str) -> Optional[str]:
    """``git -C folder ARGS``'s output; None when it fails or git is missing."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_describe(folder: Path) -> Optional[str]:
    """``git describe --always --dirty`` of the checkout whose tracked files ``folder`` holds; None
    otherwise (an install in a venv inside some checkout is not that checkout's source)."""
    if not folder.is_dir() or not git(folder, "ls-files", "--", "."):
        return None
    return git(folder, "describe", "--always", "--dirty") or None


def install_origin() -> dict:
    """The installed package's ``direct_url.json`` (PEP 610: where a local, editable or VCS install came from)."""
    try:
        return json.loads(distribution("motionfleet").read_text("direct_url.json") or "{}")
    except (PackageNotFoundError, ValueError):
        return {}


def source_folders(origin: dict) -> list[Path]:
    """Where the engine's source may be: the imported package's folder (resolved through the links
    of an editable install) and the folder a local install came from."""
    import motionfleet

    folders = [Path(motionfleet.__file__).resolve().parent]
    url = origin.get("url", "")
    if url.startswith("file://"):
        folders.append(Path(url.removeprefix("file://")))
    return folders


@functools.lru_cache(maxsize=1)
def engine_revision() -> str:
    """The engine's source revision: a VCS install's recorded commit, else ``git describe`` of the
    checkout it runs from, else "unknown"."""
    origin = install_origin()
    commit = origin.get("vcs_info", {}).get("commit_id")
    if commit:
        return commit
    for folder in source_folders(origin):
        described = git_describe(folder)
        if described:
            return described
    return "unknown"


def software_versions() -> dict[str, str]:
    versions = {"motionfleet": engine_version(), "motionfleet_revision": engine_revision(),
                "python": platform.python_version()}
    for package in ("torch", "numpy", "pyarrow", "ray", "onnxruntime", "onnxruntime-gpu", "tensorrt", "triton", "smplx"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def host() -> dict:
    """The machine a run used: hostname, platform, CPU model and count, GPU name (None without CUDA)."""
    import os
    import socket

    import torch

    return {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu_model": cpu_model(),
            "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def driver_version() -> Optional[str]:
    """The NVIDIA kernel driver's version (Linux ``/proc/driver/nvidia/version``), else nvidia-smi's; None without either."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        found = next((w for w in text.split() if w[:1].isdigit() and "." in w), None)
        if found:
            return found
    except OSError:
        pass
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def accelerator() -> dict:
    """The GPU and the CUDA stack a run used: every field None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return {"gpu": None, "cuda": None, "cudnn": None, "driver": None}
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
            "cudnn": None if cudnn is None else str(cudnn), "driver": driver_version()}


def numerics() -> dict:
    """Settings that change the numbers a model computes: deterministic kernels and TF32 matmuls /
    convolutions (on Ampere and later TF32 keeps 10 mantissa bits of float32's 23)."""
    import torch

    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_deterministic": torch.backends.cudnn.deterministic, "cudnn_benchmark": torch.backends.cudnn.benchmark}


def record() -> dict:
    """What every report.json and metrics.json records about how it was produced."""
    return {"host": host(), "versions": software_versions(), "accelerator": accelerator(), "numerics": numerics()}
