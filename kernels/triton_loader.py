"""Triton, imported where one of these kernels can run: a machine with a CUDA device, or Triton's
CPU interpreter (``TRITON_INTERPRET=1``, how the tests check the kernels). Elsewhere the torch
references run and ``triton`` and ``tl`` are None: importing Triton took 0.24 s of a CPU job's
1.4 s start on 2 cores (``python -X importtime``), for kernels a CPU tensor never reaches.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

__all__ = ["UNAVAILABLE", "tl", "triton"]

UNAVAILABLE = "needs the 'triton' package and a CUDA device, or TRITON_INTERPRET=1 set before its import (the CPU interpreter)"

if TYPE_CHECKING:  # the kernels' annotations (tl.constexpr) name the module
    import triton
    import triton.language as tl
else:
    triton = tl = None
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        try:
            import triton
            import triton.language as tl
        except ImportError:  # triton is optional on CPU-only installs
            pass
