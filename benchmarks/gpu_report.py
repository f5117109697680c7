"""The summary ``benchmarks/gpu_check.sh`` writes from its results folder (runs on any machine).

    python -m benchmarks.gpu_report DIR    ->  DIR/gpu_check.json, DIR/gpu_check.png

Reads what the script's steps left: ``steps.tsv`` (step, exit status, seconds; 124 = out of its
time), ``gpu-tests.xml`` (pytest's JUnit report), ``bench/*.json`` (``motionfleet bench`` records)
``socialmirror/report.json`` (the demo job's stage table) and ``decode_stage.json`` (pytest-benchmark's
record of the decode stage's frames/s against decode CPUs).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from motionfleet.bench import plot, read_records

TIMED_OUT = 124


def steps(folder: Path) -> list[dict]:
    path = folder / "steps.tsv"
    if not path.is_file():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    return [{"step": name, "exit_status": int(rc), "seconds": int(s), "timed_out": int(rc) == TIMED_OUT}
            for name, rc, s in rows]


def tests(folder: Path) -> dict | None:
    path = folder / "gpu-tests.xml"
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                        if case.find("failure") is not None or case.find("error") is not None]
    return counts


def bench_records(folder: Path) -> list[dict]:
    records = []
    for path in sorted((folder / "bench").glob("bench-*.json")):
        records += read_records(path)
    return records


def headline(records: list[dict]) -> list[dict]:
    keys = ("family", "case", "backend", "precision", "batch", "per_item_p50_ms", "per_item_iqr_ms", "items_per_s",
            "per_item_gemm_floor_ms", "device_name", "busy")
    return [{k: r.get(k) for k in keys} for r in records]


def socialmirror_stages(folder: Path) -> dict | None:
    path = folder / "socialmirror" / "report.json"
    if not path.is_file():
        return None
    timing = json.loads(path.read_text()).get("timing", {})
    return {k: timing.get(k) for k in ("frames", "fps_end_to_end", "fps_wall", "stages", "slowest_stage", "model_busy",
                                       "clips_decoded_elsewhere")}


def decode_scaling(folder: Path) -> list[dict]:
    """(decode CPUs, frames/s) of each case of the decode-stage benchmark, fewest CPUs first."""
    path = folder / "decode_stage.json"
    if not path.is_file():
        return []
    cases = [b["extra_info"] for b in json.loads(path.read_text())["benchmarks"] if "decode_cpus" in b["extra_info"]]
    return sorted(({"decode_cpus": c["decode_cpus"], "frames_per_s": c["frames_per_s"]} for c in cases),
                  key=lambda c: c["decode_cpus"])


def summarise(folder: str | Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"gpu_report: error: {folder} is not a folder written by benchmarks/gpu_check.sh")
    records = bench_records(folder)
    body = {"folder": str(folder), "steps": steps(folder), "tests": tests(folder), "benchmarks": headline(records),
            "socialmirror": socialmirror_stages(folder), "decode_scaling": decode_scaling(folder)}
    (folder / "gpu_check.json").write_text(json.dumps(body, indent=1))
    if records:
        plot(records, folder / "gpu_check.png")
    return body


def lines(body: dict) -> list[str]:
    out = [f"{s['step']}: exit {s['exit_status']} in {s['seconds']} s" + (" (out of time)" if s["timed_out"] else "")
           for s in body["steps"]]
    if body["tests"]:
        t = body["tests"]
        out.append(f"gpu tests: {t['passed']} passed, {len(t['failed'])} failed, {t['skipped']} skipped")
    out += [f"{r['family']}/{r['case']} {r['backend']} {r['precision']} batch {r['batch']}: "
            f"{r['per_item_p50_ms']:.3f} ms per item (IQR {r['per_item_iqr_ms']:.3f})" for r in body["benchmarks"]]
    out += [f"socialmirror decode on {c['decode_cpus']} CPUs: {c['frames_per_s']:.0f} frames/s" for c in body["decode_scaling"]]
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m benchmarks.gpu_report DIR")
    print("\n".join(lines(summarise(sys.argv[1]))))
