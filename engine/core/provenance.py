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


def machine() -> dict[str, str]:
    import os

    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": str(os.cpu_count())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
