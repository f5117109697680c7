"""``motionfleet bench``: latency and throughput of every family, per backend and batch size.

One case is one batch as a job runs it, device synchronised, warm-up excluded; each family that
registers one (``registry.BenchCase``) says what it runs and what its items are, and its own
settings are flags of this command: ``dhvae/generate`` (``dhvae/bench.py``), ``scorehoi/refine``
(``scorehoi/bench.py``) and ``socialmirror/diffuse`` (``socialmirror/bench.py``).

Backends are interleaved round robin within each (family, batch), so a busy neighbour slows every
backend alike. Each measurement is one flat record (``records``; ``pandas.read_json`` reads the
file as is) with p50 / p90 / p99 and the interquartile range over ``repeats`` runs, per item and
per batch, and the load average before and after; a load above ``LOAD_WARNING`` x CPUs is
flagged. Where the family gives a case's cost (dhvae), the GEMM floor (the run's matrix products
replayed as bare fp32 matmuls: what no backend can beat without changing the math or the
precision) and achieved GFLOP/s are recorded.

Each record also says what a fresh job process would wait for (``cold_start_s``: the process's
start-up to the bench, this case's model and backend construction and its first batch), of which
``build_s`` is the backend's own build (ONNX export, ONNX Runtime session, TensorRT engine in
``make_backend``; Inductor compile, CUDA graph capture in the first batch), and the peak host
(VmHWM) and device memory of the first batch. ``--profile DIR`` writes a ``torch.profiler`` Chrome
trace of a few batches per case. ``compare`` sets two result files side by side; ``gate`` fails
a run whose medians are slower than a baseline's by more than a given percentage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from motionfleet.core.execution.worker import peak_device_mb, peak_rss_mb
from motionfleet.core.io import provenance
from motionfleet.core.runtime.stopwatch import synchronize

if TYPE_CHECKING:  # the registry is imported when a bench runs, not with this module
    from motionfleet.core.registry import BenchCase

MATMUL_SIZE = 2048
LOAD_WARNING = 0.5  # load average per CPU above which timings are flagged as taken on a busy machine
PROFILED_BATCHES = 3  # batches per case in a --profile trace, after the warm-up and timed runs
MAX_BATCH = 65536  # a case builds its whole batch's inputs at once (2**64 overflowed torch's sizes)
# What ``traced`` runs a call under: a TorchDispatchMode, or FlopCounterMode (a context manager that is not one).
TracingMode = TypeVar("TracingMode", bound=AbstractContextManager)


def bench_families() -> tuple[str, ...]:
    """The families that register a case (``registry.BenchCase``), by name."""
    from motionfleet.core import registry

    return tuple(family.name for family in registry.registering("bench"))


def bench_case(family: str) -> BenchCase:
    """The case ``family`` registers, or a usage error naming the families that register one."""
    from motionfleet.core import registry
    from motionfleet.core.options import UsageError

    case = registry.get(family).bench
    if case is None:
        raise UsageError(f"family {family!r} registers no bench case; families with one: {', '.join(bench_families())}")
    return case


def flagged(case: BenchCase) -> list:
    """The fields of a case's settings that are flags (``registry.bench_setting``), each with its flag."""
    return [(f, f.metadata["flag"] or "--" + f.name.replace("_", "-")) for f in fields(case.settings)
            if f.metadata.get("help")]


@dataclass(frozen=True)
class BenchSettings:
    families: tuple[str, ...] = field(default_factory=bench_families)
    backends: tuple[str, ...] = ("torch", "torch-compile", "onnxruntime")
    batch_sizes: tuple[int, ...] = (1, 8, 64)
    repeats: int = 10
    device: str = "cpu"
    precision: str = "fp32"
    cases: dict = field(default_factory=dict)  # family -> its own settings (BenchCase.settings); default: its defaults

    def own(self, family: str):
        return self.cases.get(family) or bench_case(family).settings()

    def record(self) -> dict:
        """What every record keeps of the run's settings: the bench's and every case's, one flat table."""
        common = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cases"}
        return {**common, **{k: v for family in bench_families() for k, v in asdict(self.own(family)).items()}}


# --- timing --------------------------------------------------------------------------------


def timed(fn: Callable, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def round_robin(cases: dict[str, Callable], repeats: int, device: torch.device,
                warm_up: bool = True) -> dict[str, list[float]]:
    """Seconds of each case, ``repeats`` times, interleaved; one untimed call of each first
    unless the caller ran it (``warm_up=False``)."""
    if warm_up:
        for fn in cases.values():
            fn()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            seconds[name].append(timed(fn, device))
    return seconds


def spread(seconds: list[float], items: int) -> dict:
    """p50 / p90 / p99 / IQR of a case's runs, in ms per batch and per item."""
    ms = np.asarray(seconds) * 1e3
    p25, p50, p75, p90, p99 = np.percentile(ms, [25, 50, 75, 90, 99])
    stats = {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "iqr_ms": p75 - p25, "p25_ms": p25, "p75_ms": p75}
    per_item = {f"per_item_{k}": v / items for k, v in stats.items()}
    return {**{k: float(v) for k, v in stats.items()}, **{k: float(v) for k, v in per_item.items()},
            "items_per_s": float(items / (p50 / 1e3)), "repeats": len(seconds), "runs_ms": [float(x) for x in ms]}


def matmul_gflops(device: torch.device, repeats: int = 10) -> float:
    """Median GFLOP/s of a plain fp32 (MATMUL_SIZE)^2 matmul."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device)
    seconds = round_robin({"matmul": lambda: a @ b}, repeats, device)["matmul"]
    return 2 * MATMUL_SIZE**3 / statistics.median(seconds) / 1e9


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def busy(load: list[float]) -> bool:
    return load[0] > LOAD_WARNING * (os.cpu_count() or 1)


# --- cold start, builds and memory --------------------------------------------------------


def process_age_s() -> float | None:
    """Seconds since this process started: /proc/self/stat's starttime against /proc/uptime
    (both counted from boot, in clock ticks of 10 ms); None where there is no /proc."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except OSError:
        return None
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name may hold spaces
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def reset_peak_memory(device: torch.device) -> None:
    """Start the host and device high-water marks afresh, so the next reading is one case's peak.
    Host: writing 5 to /proc/self/clear_refs resets VmHWM to the current resident set (Linux 4.0+);
    where it cannot, VmHWM stays the process's peak so far, an upper bound."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def first_batch(fn: Callable, device: torch.device) -> dict:
    """The case's first batch (kept out of the spread): its seconds and the peak memory it reached
    (device memory None on the CPU)."""
    reset_peak_memory(device)
    seconds = timed(fn, device)
    return {"first_batch_s": seconds, "peak_host_mb": peak_rss_mb(),
            "peak_device_mb": peak_device_mb() if device.type == "cuda" else None}


class SetupClock:
    """Seconds each backend's runner took to construct, and of them the seconds in
    ``backends.make_backend`` (where the graph backends export ONNX and build their session or
    engine), timed by wrapping that function while the runner is built."""

    def __init__(self):
        self.setup_s: dict[str, float] = {}
        self.make_backend_s: dict[str, float] = {}

    def build(self, backend: str, make: Callable):
        self.make_backend_s.setdefault(backend, 0.0)
        start = time.perf_counter()
        with self._timing_make_backend(backend):
            runner = make()
        self.setup_s[backend] = time.perf_counter() - start
        return runner

    @contextmanager
    def _timing_make_backend(self, backend: str):
        from motionfleet.core.runtime import backends

        make_backend = backends.make_backend

        def timed_make_backend(*args, **kwargs):
            start = time.perf_counter()
            try:
                return make_backend(*args, **kwargs)
            finally:
                self.make_backend_s[backend] += time.perf_counter() - start

        backends.make_backend = timed_make_backend
        try:
            yield
        finally:
            backends.make_backend = make_backend


def build_s(backend: str, make_backend_s: float, first_batch_s: float, p50_s: float) -> float | None:
    """What the backend spends building what it runs: its construction in make_backend plus its
    first batch's time over a steady one (Inductor's compile, CUDA graph capture, ONNX Runtime
    TensorRT's lazy engine). None for eager torch, which builds nothing."""
    if backend == "torch":
        return None
    return make_backend_s + max(0.0, first_batch_s - p50_s)


def cold_start_s(startup_s: float | None, shared_setup_s: float, setup_s: float, first_batch_s: float) -> float | None:
    """Process start to the end of the first batch, for a process that runs only this case."""
    return None if startup_s is None else startup_s + shared_setup_s + setup_s + first_batch_s


# --- profiling -----------------------------------------------------------------------------


def profile_case(fn: Callable, device: torch.device, path: Path, label: str, batches: int = PROFILED_BATCHES) -> Path:
    """A torch.profiler trace of ``batches`` calls of an already warm case, as a Chrome trace
    (chrome://tracing, Perfetto); on CUDA each call is also an NVTX range for Nsight Systems."""
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(batches):
            if cuda:
                torch.cuda.nvtx.range_push(f"{label} batch {i}")
            with record_function(f"{label} batch {i}"):
                fn()
            synchronize(device)
            if cuda:
                torch.cuda.nvtx.range_pop()
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))
    return path


# --- FLOPs and the GEMM floor --------------------------------------------------------------

GEMM_OPERANDS = {"mm": (0, 1), "addmm": (1, 2), "bmm": (0, 1), "baddbmm": (1, 2)}


def attention_products(q: torch.Tensor, k: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The two batched products of attention, q k^T and p v, as (A, B) shapes."""
    *lead, length, dim = q.shape
    span = k.shape[-2]
    batch = math.prod(lead)
    return [((batch, length, dim), (batch, dim, span)), ((batch, length, span), (batch, span, dim))]


class GemmShapes(TorchDispatchMode):
    """Counts the (A, B) operand shapes of every matrix product a call runs, attention included."""

    def __init__(self):
        super().__init__()
        self.shapes: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in GEMM_OPERANDS:
            self.shapes[tuple(tuple(args[i].shape) for i in GEMM_OPERANDS[name])] += 1
        elif name == "linear":  # seen undecomposed where a module runs in inference mode
            x, weight = args[0], args[1]
            self.shapes[((math.prod(x.shape[:-1]), x.shape[-1]), tuple(weight.shape[::-1]))] += 1
        elif "scaled_dot_product" in name:
            self.shapes.update(attention_products(args[0], args[1]))
        return func(*args, **(kwargs or {}))


def traced(fn: Callable, mode: TracingMode) -> TracingMode:
    """Run ``fn`` under ``mode`` with autograd on, so PyTorch's fused inference-only layers
    (whose FLOPs no counter sees) are not taken; the math is the same."""
    with torch.inference_mode(False), torch.enable_grad(), mode:
        fn()
    return mode


def count_flops(fn: Callable) -> int:
    return traced(fn, FlopCounterMode(display=False)).get_total_flops()


def gemm_floor_s(fn: Callable, device: torch.device, repeats: int = 5) -> float:
    """Seconds of the matrix products ``fn`` runs, replayed as bare fp32 matmuls (each distinct
    shape timed once, its median times its count): what the call would cost if everything but
    its GEMMs took no time."""
    total = 0.0
    for (a_shape, b_shape), count in traced(fn, GemmShapes()).shapes.items():
        a, b = torch.randn(a_shape, device=device), torch.randn(b_shape, device=device)
        total += count * statistics.median(round_robin({"gemm": lambda: torch.matmul(a, b)}, repeats, device)["gemm"])
    return total


# --- the sweep -----------------------------------------------------------------------------


def context(settings: BenchSettings) -> dict:
    """What every record repeats: device, versions, date, threads."""
    device = torch.device(settings.device)
    versions = provenance.software_versions()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else provenance.host()["cpu_model"]
    return {"device": device.type, "device_name": name, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": versions.get("torch"), "onnxruntime": versions.get("onnxruntime") or versions.get("onnxruntime-gpu"),
            "motionfleet": versions.get("motionfleet"), "precision": settings.precision,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def measure_family(family: str, settings: BenchSettings, common: dict, log: Callable[[str], None],
                   profile_dir: Path | None = None) -> list[dict]:
    bench = bench_case(family)
    own = settings.own(family)
    case, unit = bench.case, bench.unit
    device = torch.device(settings.device)
    clock = SetupClock()
    start = time.perf_counter()
    cases_at = bench.cases(own, settings, clock)
    shared_setup_s = time.perf_counter() - start - sum(clock.setup_s.values())  # what every backend's case needs
    cost_of = bench.cost(own, settings) if bench.cost else None
    records = []
    for batch in settings.batch_sizes:
        cases = cases_at(batch)
        load_before = load_average()
        cold = {backend: first_batch(fn, device) for backend, fn in cases.items()}
        seconds = round_robin(cases, settings.repeats, device, warm_up=False)
        load_after = load_average()
        cost = cost_of(batch) if cost_of else {}
        for backend, runs in seconds.items():
            record = {"family": family, "case": case, "preset": getattr(own, bench.preset), "backend": backend,
                      "batch": batch, "items": batch, "unit": unit,
                      **spread(runs, batch), "load_before": load_before, "load_after": load_after,
                      "busy": busy(load_before) or busy(load_after), **common}
            record.update(startup(common["startup_s"], shared_setup_s, clock, backend, cold[backend], record["p50_ms"]))
            record.update({name: getattr(own, name) for name in bench.loop_settings})
            if cost:
                record.update(**cost, per_item_gemm_floor_ms=cost["gemm_floor_ms"] / batch,
                              gflops=cost["gflop_per_batch"] / (record["p50_ms"] / 1e3))
            if profile_dir is not None:
                name = f"{family}-{case}-{record['preset']}-{backend}-b{batch}"
                record["profile"] = str(profile_case(cases[backend], device, profile_dir / f"{name}.json", name))
            records.append(record)
            log(f"{family}/{case} {backend} batch {batch}: p50 {record['per_item_p50_ms']:.2f} ms/{unit[:-1]} "
                f"(IQR {record['per_item_iqr_ms']:.2f}), cold start {fixed(record['cold_start_s'], 2)} s, "
                f"load {load_before[0]}")
    return records


def startup(startup_s: float | None, shared_setup_s: float, clock: SetupClock, backend: str, cold: dict,
            p50_ms: float) -> dict:
    """A case's cold start, setup and build seconds and first batch's peak memory."""
    setup_s = shared_setup_s + clock.setup_s[backend]
    return {"cold_start_s": cold_start_s(startup_s, shared_setup_s, clock.setup_s[backend], cold["first_batch_s"]),
            "setup_s": setup_s, "build_s": build_s(backend, clock.make_backend_s[backend], cold["first_batch_s"], p50_ms / 1e3),
            **cold}


def run_bench(settings: BenchSettings, out_dir: str | Path, log: Callable[[str], None] = print,
              profile_dir: str | Path | None = None) -> tuple[Path, list[dict]]:
    """Measure every family, write ``bench-<date>.json`` (flat records) and ``.png`` into ``out_dir``
    (and with ``profile_dir`` one Chrome trace per case there)."""
    startup_s = process_age_s()  # interpreter start and imports, before any case is built
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = context(settings)
    if busy(load_average()):
        log(f"warning: load average {load_average()} on {os.cpu_count()} CPUs: other work is running, "
            f"timings will be slow and spread; compare only numbers taken in one run")
    common["matmul_fp32_gflops"] = matmul_gflops(torch.device(settings.device))
    common["settings"] = json.dumps(settings.record())
    common["startup_s"] = startup_s
    records = []
    for family in settings.families:
        records += measure_family(family, settings, common, log, None if profile_dir is None else Path(profile_dir))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"bench-{settings.device}-{stamp}.json"
    path.write_text(json.dumps(records, indent=1))
    plot(records, path.with_suffix(".png"))
    return path, records


# --- plots and tables ----------------------------------------------------------------------


def title_of(records: list[dict]) -> str:
    r = records[0]
    return (f"{r['device_name']} ({r['device']}, {r['torch_threads']} threads), torch {r['torch']}, "
            f"onnxruntime {r['onnxruntime']}, {r['precision']}, {r['date'][:10]}, load {r['load_before'][0]}")


def series(records: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    out: dict = {}
    for r in sorted(records, key=lambda r: r["batch"]):
        out.setdefault((r["family"], r["case"], r["backend"]), []).append(r)
    return out


def plot(records: list[dict], path: Path) -> None:
    """Two panels: per-item latency (p50, IQR error bars, GEMM floor dashed) and throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.8))
    for (family, case, backend), rows in series(records).items():
        batches = [r["batch"] for r in rows]
        p50 = np.array([r["per_item_p50_ms"] for r in rows])
        low = p50 - np.array([r["per_item_p25_ms"] for r in rows])
        high = np.array([r["per_item_p75_ms"] for r in rows]) - p50
        label = f"{family}/{case} {backend}"
        lat.errorbar(batches, p50, yerr=[low, high], marker="o", capsize=3, label=label)
        thr.errorbar(batches, [r["items_per_s"] for r in rows], yerr=[1e3 * low / p50**2, 1e3 * high / p50**2],
                     marker="o", capsize=3, label=label)
    floors: dict[str, dict[int, float]] = {}
    for r in records:
        if "per_item_gemm_floor_ms" in r:
            floors.setdefault(r["family"], {})[r["batch"]] = r["per_item_gemm_floor_ms"]
    for family, floor in floors.items():
        batches = sorted(floor)
        lat.plot(batches, [floor[b] for b in batches], "k--", label=f"{family} GEMM floor")
        thr.plot(batches, [1e3 / floor[b] for b in batches], "k--", label=f"{family} GEMM floor")
    for ax, ylabel in ((lat, "latency per item, ms (p50, IQR bars)"), (thr, "throughput, items / s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    thr.legend(fontsize=7)
    fig.suptitle(title_of(records), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(records: list[dict]) -> list[str]:
    lines = [f"{'case':<24} {'backend':<14} {'batch':>5} {'p50/item ms':>12} {'IQR':>8} {'p90':>9} {'p99':>9} "
             f"{'items/s':>9} {'cold s':>7} {'build s':>7} {'host MB':>8} {'dev MB':>7} {'load':>6}"]
    for r in records:
        lines.append(f"{r['family'] + '/' + r['case']:<24} {r['backend']:<14} {r['batch']:>5} {r['per_item_p50_ms']:>12.2f} "
                     f"{r['per_item_iqr_ms']:>8.2f} {r['per_item_p90_ms']:>9.2f} {r['per_item_p99_ms']:>9.2f} "
                     f"{r['items_per_s']:>9.2f} {fixed(r.get('cold_start_s'), 2):>7} {fixed(r.get('build_s'), 2):>7} "
                     f"{fixed(r.get('peak_host_mb'), 0):>8} {fixed(r.get('peak_device_mb'), 0):>7} "
                     f"{r['load_before'][0]:>6.2f}" + ("  (busy)" if r["busy"] else ""))
    return lines


def fixed(value: float | None, digits: int) -> str:
    """A number with ``digits`` decimals, or - where the case has none (no build, no CUDA)."""
    return "-" if value is None else f"{value:.{digits}f}"


CASE_FIELDS = ("family", "case", "preset", "backend", "batch", "device", "precision")


def loop_settings(family: str) -> tuple[str, ...]:
    """The family's settings besides its preset that make another case (none for a family that is not registered)."""
    from motionfleet.core import registry

    bench = registry.get(family).bench if family in registry.FAMILIES else None
    return bench.loop_settings if bench else ()


def case_key(record: dict) -> tuple:
    """What makes two records the same case: family, case, model preset, backend, batch, device,
    precision and the family's loop settings (not the machine: ``gate`` names a different one)."""
    settings = json.loads(record["settings"])
    return tuple(record[f] for f in CASE_FIELDS) + tuple(settings.get(f) for f in loop_settings(record["family"]))


def case_label(record: dict) -> str:
    return f"{record['family']}/{record['case']} {record['preset']} {record['backend']} batch {record['batch']}"


def read_records(path: str | Path) -> list[dict]:
    from motionfleet.core.options import UsageError

    usage = "give a JSON file written by motionfleet bench"
    if not Path(path).is_file():
        raise UsageError(f"--compare: {path} is not a file; {usage}")
    try:
        records = json.loads(Path(path).read_text())
        if not isinstance(records, list) or not records:
            raise ValueError("not a list of records")
        for record in records:
            case_key(record)
            if not record["p50_ms"] > 0 or not record["per_item_p50_ms"] > 0:
                raise ValueError("a median that is not a positive number")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"--compare: {path} is not a motionfleet bench result ({err!s:.80}); {usage}") from err
    return records


def compare(path_a: str | Path, path_b: str | Path, out_dir: str | Path) -> tuple[list[str], Path]:
    """Per case present in both: p50 per item in A and B and the change; a bar plot of B / A."""
    a = {case_key(r): r for r in read_records(path_a)}
    b = {case_key(r): r for r in read_records(path_b)}
    common = [k for k in a if k in b]
    if not common:
        raise ValueError(f"{path_a} and {path_b} share no case ({', '.join(CASE_FIELDS)} and loop settings)")
    lines = [f"A = {path_a} ({a[common[0]]['date']}), B = {path_b} ({b[common[0]]['date']})",
             f"{'case':<24} {'backend':<14} {'batch':>5} {'A p50 ms':>10} {'B p50 ms':>10} {'B/A':>6}  change"]
    ratios = []
    for k in common:
        ra, rb = a[k]["per_item_p50_ms"], b[k]["per_item_p50_ms"]
        ratio = rb / ra
        ratios.append(ratio)
        change = f"{1 / ratio:.2f}x faster" if ratio < 1 else f"{ratio:.2f}x slower"
        r = b[k]
        lines.append(f"{r['family'] + '/' + r['case']:<24} {r['backend']:<14} {r['batch']:>5} {ra:>10.2f} {rb:>10.2f} "
                     f"{ratio:>6.2f}  {change}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"compare-{Path(path_a).stem}-vs-{Path(path_b).stem}.png"
    plot_compare([case_label(b[k]) for k in common], ratios, png, lines[0])
    return lines, png


def gate(baseline: list[dict], now: list[dict], fail_over_pct: float | None) -> tuple[list[str], bool]:
    """One line per case of ``now``: the baseline's median batch time, now's and the change; a case
    slower than the baseline by more than ``fail_over_pct`` percent fails (None: none fails), a
    case the baseline lacks is new. Returns the lines and whether any case failed."""
    before = {case_key(r): r for r in baseline}
    machines = {r.get("device_name") for r in baseline} ^ {r.get("device_name") for r in now}
    lines = [f"warning: the baseline was measured on another machine ({', '.join(sorted(map(str, machines)))}): "
             f"compare runs of one machine"] if machines else []
    failed = False
    for record in now:
        old = before.get(case_key(record))
        if old is None:
            lines.append(f"{case_label(record)}: new (not in the baseline), now {record['p50_ms']:.2f} ms")
            continue
        change = 100 * (record["p50_ms"] / old["p50_ms"] - 1)
        slower = fail_over_pct is not None and change > fail_over_pct
        failed |= slower
        lines.append(f"{case_label(record)}: baseline {old['p50_ms']:.2f} ms, now {record['p50_ms']:.2f} ms, "
                     f"{change:+.1f}%" + (f"  FAIL (more than {fail_over_pct:g}% slower)" if slower else ""))
    return lines, failed


def plot_compare(labels: list[str], ratios: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.5))
    colors = ["tab:green" if r < 1 else "tab:red" for r in ratios]
    ax.barh(labels, ratios, color=colors)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xlabel("B / A, p50 latency per item (< 1: B faster)")
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- command line --------------------------------------------------------------------------


def default_out() -> Path:
    """Outside the source tree: results never overwrite the committed benchmarks/results/."""
    from motionfleet.core.io.cache import cache_dir

    return cache_dir("bench")


def comma_list(kind):
    return lambda text: tuple(kind(item) for item in text.split(",") if item)


EXAMPLE = """example:
  motionfleet bench                                   # every family, backend and batch size at the defaults
  motionfleet bench --families dhvae --backends torch,onnxruntime --batch-sizes 1,8 --repeats 5
  motionfleet bench --compare A.json B.json           # B / A per case, and a bar plot
  motionfleet bench --families dhvae --compare BASELINE.json --fail-over 10   # measure; exit 1 if a case is >10% slower
  motionfleet bench --families dhvae --batch-sizes 8 --profile traces/        # a Chrome trace per case"""


def joined(values: tuple) -> str:
    return ",".join(map(str, values))


def add_arguments(p: argparse.ArgumentParser) -> None:
    from motionfleet.core.runtime.backends import PRECISIONS

    d = BenchSettings()
    p.epilog = EXAMPLE
    p.add_argument("--families", type=comma_list(str), default=d.families, metavar="LIST",
                   help=f"comma-separated, of {', '.join(bench_families())} (default: {joined(d.families)})")
    p.add_argument("--backends", type=comma_list(str), default=d.backends, metavar="LIST",
                   help=f"comma-separated job backends (default: {joined(d.backends)})")
    p.add_argument("--batch-sizes", type=comma_list(int), default=d.batch_sizes, metavar="LIST",
                   help=f"comma-separated items per batch (default: {joined(d.batch_sizes)})")
    for setting_field, flag in case_flags():
        meta, default = setting_field.metadata, setting_field.default
        text = meta["help"] if "(default" in meta["help"] else f"{meta['help']} (default: {default})"
        p.add_argument(flag, dest=setting_field.name, type=meta["type"], default=default, choices=meta["choices"],
                       metavar=meta["metavar"], help=text)
    p.add_argument("--repeats", type=int, default=d.repeats,
                   help=f"timed runs per case after one warm-up run, at least 3 (default: {d.repeats})")
    p.add_argument("--device", choices=["cpu", "cuda"], default=d.device, help=f"(default: {d.device})")
    p.add_argument("--precision", default=d.precision, choices=PRECISIONS, help=f"(default: {d.precision})")
    p.add_argument("--out", metavar="DIR", help=f"folder for the timestamped JSON and PNG (default: {default_out()})")
    p.add_argument("--compare", nargs="+", metavar="FILE",
                   help="A.json B.json: compare two result files instead of measuring; BASELINE.json: measure, then "
                        "print each case's median against the baseline's")
    p.add_argument("--fail-over", type=float, metavar="PCT",
                   help="with --compare: exit 1 when a case's median batch time is more than PCT percent over the "
                        "baseline's (a case the baseline lacks is reported as new)")
    p.add_argument("--profile", metavar="DIR",
                   help=f"write a torch.profiler Chrome trace of {PROFILED_BATCHES} batches per case into DIR "
                        f"(after the timed runs; NVTX ranges on CUDA)")


def check_gate_arguments(args) -> None:
    from motionfleet.core.options import UsageError

    if args.compare is not None and len(args.compare) > 2:
        raise UsageError(f"--compare takes BASELINE.json or A.json B.json, got {len(args.compare)} files")
    if args.fail_over is not None and args.compare is None:
        raise UsageError("--fail-over needs --compare BASELINE.json (the run to compare this one against)")
    if args.fail_over is not None and not args.fail_over >= 0:
        raise UsageError(f"--fail-over must be a percentage >= 0, got {args.fail_over:g}")


def check_arguments(args) -> None:
    from motionfleet.core.options import UsageError, at_least, at_most
    from motionfleet.core.runtime.backends import check_backend

    if args.profile is not None and Path(args.profile).exists() and not Path(args.profile).is_dir():
        raise UsageError(f"--profile: {args.profile} is a file; give a folder for the traces")

    known = bench_families()
    unknown = [f for f in args.families if f not in known]
    if unknown:
        raise UsageError(f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; choose from {', '.join(known)}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or max(args.batch_sizes) > MAX_BATCH:
        raise UsageError(f"--batch-sizes needs integers from 1 to {MAX_BATCH}, e.g. --batch-sizes 1,8,64")
    for setting_field, flag in case_flags():
        value, low, high = (getattr(args, setting_field.name), setting_field.metadata["low"],
                            setting_field.metadata["high"])
        checks = ([at_least(low)] if low is not None else []) + ([at_most(high)] if high is not None else [])
        for problem in (check(value) for check in checks if value is not None):
            if problem:
                raise UsageError(f"{flag} {problem}")
    if args.repeats < 3:
        raise UsageError("--repeats must be at least 3 for a spread (10 or more for a stable p90)")
    for backend in args.backends:
        check_backend(backend, args.precision, args.device)


def main(args) -> int:
    out = Path(args.out) if args.out else default_out()
    check_gate_arguments(args)
    if args.compare is not None and len(args.compare) == 2:
        path_a, path_b = args.compare
        lines, png = compare(path_a, path_b, out)
        print("\n".join(lines))
        print(f"plot: {png}")
        return gated(read_records(args.compare[0]), read_records(args.compare[1]), args.fail_over)
    baseline = read_records(args.compare[0]) if args.compare else None  # a bad baseline stops before measuring
    check_arguments(args)
    settings = BenchSettings(families=args.families, backends=args.backends, batch_sizes=args.batch_sizes,
                             repeats=args.repeats, device=args.device, precision=args.precision, cases=case_settings(args))
    path, records = run_bench(settings, out, log=lambda line: print(line, file=sys.stderr, flush=True),
                              profile_dir=args.profile)
    print("\n".join(table(records)))
    print(f"written: {path} and {path.with_suffix('.png')}")
    if args.profile is not None:
        print(f"traces: {args.profile} (chrome://tracing or https://ui.perfetto.dev)")
    return 0 if baseline is None else gated(baseline, records, args.fail_over)


def case_flags() -> list:
    """(settings field, flag) of every family's case settings that are flags."""
    return [pair for name in bench_families() for pair in flagged(bench_case(name))]


def case_settings(args) -> dict:
    """family -> its case settings, the flags given over the defaults."""
    cases = {name: bench_case(name) for name in bench_families()}
    return {name: case.settings(**{f.name: getattr(args, f.name) for f, _ in flagged(case)}) for name, case in cases.items()}


def gated(baseline: list[dict], now: list[dict], fail_over_pct: float | None) -> int:
    """Print the gate's lines; 1 if a case is slower than the baseline by more than the percentage."""
    lines, failed = gate(baseline, now, fail_over_pct)
    print("\n".join(lines))
    if fail_over_pct is not None:
        print(f"gate: {'FAILED' if failed else 'passed'} (a case fails more than {fail_over_pct:g}% over the baseline's median)")
    return 1 if failed else 0
