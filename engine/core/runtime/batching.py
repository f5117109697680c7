"""Shapes that keep CPU results bit-identical whatever the batch or thread count.

oneDNN/MKL GEMMs give a row the same bits inside any larger matrix, and with 1 or 2 threads,
only when the row count M is a multiple of 4 (measured on this project's CI CPU: M = 1-3, 5-7,
9-11 differ). So every model call pads its rows (samples, or tokens of a prompt) to a multiple
of ``ROW_QUANTUM``; tests/test_generate_job.py checks the resulting bytes.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch

ROW_QUANTUM = 4


def pad_rows(t: torch.Tensor, quantum: int = ROW_QUANTUM) -> torch.Tensor:
    """Repeat the last row until the batch is a multiple of ``quantum``."""
    missing = -len(t) % quantum
    return torch.cat([t, t[-1:].expand(missing, *t.shape[1:])]) if missing else t


def samples_quantum(rows_per_sample: int) -> int:
    """Samples per call that keep a GEMM's rows a multiple of ``ROW_QUANTUM`` when each sample
    contributes ``rows_per_sample`` rows."""
    return ROW_QUANTUM // math.gcd(ROW_QUANTUM, rows_per_sample)


def pool_size(threads: int, per_worker: int = 1) -> int:
    """Workers of ``fixed_thread_pool(threads, per_worker)``."""
    return max(1, threads // per_worker)


def fixed_thread_pool(threads: int, per_worker: int = 1) -> ThreadPoolExecutor:
    """Python threads of exactly ``per_worker`` torch threads each, as many as fit in ``threads``
    (at least one): work whose bits depend on the torch thread count (a GEMM whose rows are not a
    multiple of ``ROW_QUANTUM``, a oneDNN convolution) gives the same bits in every process
    whatever its own thread count, while independent pieces side by side keep the cores busy. The
    OpenMP thread count is per thread, so the caller keeps its own."""
    return ThreadPoolExecutor(pool_size(threads, per_worker), f"{per_worker}-thread", initializer=torch.set_num_threads,
                              initargs=(per_worker,))
