"""The run report: what was produced, how fast, with what."""

from __future__ import annotations

import json
from pathlib import Path

from motionfleet.core import provenance
from motionfleet.core.storage import Storage

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
    """Write ``report.json`` whole (a crash leaves the old report or the new one, never a part)."""
    body = {**body, "versions": provenance.software_versions(), "machine": provenance.machine()}
    Storage(str(out_dir)).write(REPORT, json.dumps(body, indent=2, default=str).encode())
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


RECONSTRUCT_STAGES = ("decode", "backbone", "diffusion", "body", "rows", "write")


def stage_report(done: list, wall_s: float) -> dict:
    """Video frames per second end to end and per stage (reconstruct), summed over this run's shards.

    ``stages[s].seconds`` is the time stage s ran (decode = PyAV decoding, clip cutting and person
    crops, in its own thread, overlapped with the rest; rows = Arrow columns; write = Parquet files)
    and ``fps`` the rate it alone would sustain; ``fps_end_to_end`` is frames over the shards'
    own seconds (decode of the first clip to the Parquet rename, models already built and warm),
    ``fps_wall`` frames over the job's wall time (model building and Ray start included).
    ``decode_hidden`` is the share of decoding that ran while the models were busy.
    """
    frames = sum(d.timings.frames for d in done)
    seconds = {s: sum(d.timings.seconds.get(s, 0.0) for d in done) for s in RECONSTRUCT_STAGES[:-1]}
    seconds["write"] = sum(d.write_s for d in done)
    shard_s = sum(d.timings.shard_s + d.write_s for d in done)
    rate = lambda s: frames / s if s > 0 else None
    stages = {name: {"seconds": s, "fps": rate(s)} for name, s in seconds.items()}
    slowest = max(seconds, key=seconds.get)
    decode_wait = sum(d.timings.decode_wait_s for d in done)
    return {
        "frames": frames, "clips": sum(d.timings.clips for d in done),
        "rows": sum(d.results for d in done), "rejected": sum(d.rejected for d in done),
        "wall_s": wall_s, "shard_s": shard_s,
        "fps_end_to_end": rate(shard_s), "fps_wall": rate(wall_s),
        "stages": stages, "slowest_stage": slowest,
        "end_to_end_vs_slowest": rate(shard_s) / stages[slowest]["fps"] if frames and seconds[slowest] else None,
        "decode_wait_s": decode_wait,
        "decode_hidden": 1 - decode_wait / seconds["decode"] if seconds["decode"] > 0 else None,
        "peak_rss_mb": max((d.peak_rss_mb for d in done), default=0.0),
        "peak_device_mb": max((d.peak_device_mb for d in done), default=0.0),
    }


def stage_lines(report: dict) -> list[str]:
    """The reconstruct report as a stage table."""
    t = report["timing"]
    fps = lambda v: "n/a" if v is None else f"{v:.2f}"
    lines = [f"frames {t['frames']} ({t['rows']} rows)  clips {t['clips']}  rejected {t['rejected']}  "
             f"wall {t['wall_s']:.1f} s",
             f"{'stage':<10}{'seconds':>10}{'frames/s':>11}"]
    lines += [f"{name:<10}{s['seconds']:>10.2f}{fps(s['fps']):>11}" for name, s in t["stages"].items()]
    lines += [f"{'end-to-end':<10}{t['shard_s']:>10.2f}{fps(t['fps_end_to_end']):>11}  "
              f"(slowest: {t['slowest_stage']}; end-to-end / slowest = {fps(t['end_to_end_vs_slowest'])}; "
              f"decode hidden {fps(t['decode_hidden'])})",
              f"model {report['model']}  weights {report['weights']}  on {report['settings']['device']}  "
              f"peak RSS {t['peak_rss_mb']:.0f} MiB"]
    return lines


REFINE_STAGES = ("denoiser", "body", "loss")


def fps_report(done: list, wall_s: float) -> dict:
    """Images per second (refine) per variant, summed over this run's shards, and where the time went.

    A batch's seconds run from its raw estimates to its result rows (validation, image reading,
    inversion and guided sampling, output), device synchronised, warm-up and metrics excluded.
    ``split`` gives the share of those seconds in the denoiser, the body model (forward and
    backward) and the fused loss; ``other`` is the rest (Python, DDIM updates, contact masks).
    """
    batches = [b for d in done for b in d.timings.batches]
    out = {"wall_s": wall_s, "rejected": sum(d.rejected for d in done),
           "metrics_s": sum(d.timings.metrics_s for d in done),
           "peak_rss_mb": max((d.peak_rss_mb for d in done), default=0.0),
           "peak_device_mb": max((d.peak_device_mb for d in done), default=0.0)}
    for variant in dict.fromkeys(b["variant"] for b in batches):
        mine = [b for b in batches if b["variant"] == variant]
        images, seconds = sum(b["size"] for b in mine), sum(b["seconds"] for b in mine)
        stages = {s: sum(b.get(f"{s}_s", 0.0) for b in mine) for s in REFINE_STAGES}
        stages["other"] = seconds - sum(stages.values())
        out[variant] = {"images": images, "seconds": seconds, "fps": images / seconds if seconds > 0 else None,
                        "batch_sizes": sorted({b["size"] for b in mine}),
                        "split": {s: v / seconds if seconds > 0 else None for s, v in stages.items()}}
    return out


def fps_lines(report: dict) -> list[str]:
    """The refine report's speed as lines: FPS and time split per variant."""
    t = report["timing"]
    lines = [f"rejected {t['rejected']}  wall {t['wall_s']:.1f} s  metrics {t['metrics_s']:.1f} s (not in FPS)"]
    for variant in report["variants"]:
        if variant in t:
            v = t[variant]
            split = "  ".join(f"{s} {share:.0%}" for s, share in v["split"].items() if share is not None)
            lines.append(f"{variant}: {v['images']} images in {v['seconds']:.1f} s = {v['fps'] or 0:.3f} images/s "
                         f"(batches {v['batch_sizes']}; {split})")
    return lines
