"""The run report: what was produced, how fast, with what."""

from __future__ import annotations

import json
from pathlib import Path

from motionfleet.engine import provenance

REPORT = "report.json"


def aits_report(done: list, wall_s: float) -> dict:
    """Timings summed over this run's shards (warm-up excluded, text encoder excluded from AITS).

    AITS = (denoising + decoding seconds) / sentences, as DHVAE's Table 7 measures it per
    sentence; here sentences are generated in batches, so it is the per-sentence share.
    """
    samples = sum(d.timings.samples for d in done)
    denoise = sum(d.timings.denoise_s for d in done)
    decode = sum(d.timings.decode_s for d in done)
    text = sum(d.timings.text_encoder_s for d in done)
    per = (lambda s: s / samples) if samples else (lambda s: None)
    return {
        "sentences": samples,
        "rejected": sum(d.rejected for d in done),
        "wall_s": wall_s,
        "aits_s": per(denoise + decode),
        "aits_denoise_s": per(denoise),
        "aits_decode_s": per(decode),
        "text_encoder_s": text,
        "throughput_sentences_per_s": samples / wall_s if wall_s > 0 else None,
        "peak_rss_mb": max((d.peak_rss_mb for d in done), default=0.0),
        "peak_device_mb": max((d.peak_device_mb for d in done), default=0.0),
    }


def write_report(out_dir: str | Path, body: dict) -> dict:
    body = {**body, "versions": provenance.software_versions(), "machine": provenance.machine()}
    Path(out_dir, REPORT).write_text(json.dumps(body, indent=2, default=str))
    return body


def summary_lines(report: dict) -> list[str]:
    t = report["timing"]
    fmt = lambda v, unit="s": "n/a" if v is None else f"{v * 1e3:.2f} ms" if unit == "ms" else f"{v:.3f} {unit}"
    return [
        f"sentences {t['sentences']}  rejected {t['rejected']}  wall {t['wall_s']:.1f} s",
        f"AITS {fmt(t['aits_s'], 'ms')} (denoise {fmt(t['aits_denoise_s'], 'ms')}, decode {fmt(t['aits_decode_s'], 'ms')}; "
        f"text encoder excluded: {t['text_encoder_s']:.2f} s total)",
        f"throughput {t['throughput_sentences_per_s'] or 0:.2f} sentences/s  peak RSS {t['peak_rss_mb']:.0f} MiB"
        + (f"  peak device {t['peak_device_mb']:.0f} MiB" if t["peak_device_mb"] else ""),
        f"model {report['model']}  weights {report['weights']}  backend {report['settings']['backend']} "
        f"{report['settings']['precision']} on {report['settings']['device']}",
    ]
