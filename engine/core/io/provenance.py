"""What produced a result: engine and library versions, the machine."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def engine_version() -> str:
    try:
        return version("motionfleet")
    except PackageNotFoundError:
        return "unknown"


def software_versions() -> dict[str, str]:
    versions = {"motionfleet": engine_version(), "python": platform.python_version()}
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
