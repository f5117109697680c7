"""Benchmarks run with ``python -m pytest benchmarks --benchmark-enable`` (CI runs tests/ only).

Each case records FLOPs in ``extra_info`` so achieved GFLOP/s can be set against the machine's
fp32 matmul rate measured in the same run (``test_fp32_matmul_rate``).
"""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def all_cores():
    torch.set_num_threads(os.cpu_count() or 1)


def record(benchmark, flops: int, items: int, **extra) -> None:
    """Run ``benchmark`` results into extra_info: flops per call, GFLOP/s, per-item median and IQR,
    and the load average when the case ended (other work on the machine slows every number).
    Under ``--benchmark-disable`` the case ran once, untimed: only the counts are recorded."""
    if benchmark.disabled:
        benchmark.extra_info.update({"flops": flops, "items": items, **extra})
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "flops": flops, "gflops_per_s": flops / median / 1e9, "items": items,
        "median_s": median, "median_per_item_s": median / items,
        "iqr_per_item_s": benchmark.stats.stats.iqr / items, "load_average_after": os.getloadavg(), **extra,
    })
