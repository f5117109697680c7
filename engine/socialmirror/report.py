"""The reconstruct job's report: video frames per second end to end and per stage."""

from __future__ import annotations

from typing import Optional

from motionfleet.core.jobfolder.report import common_lines, peak_memory
from motionfleet.core.registry import Summary
from motionfleet.core.runtime.stopwatch import total

STAGES = ("decode", "backbone", "diffusion", "body", "rows", "write")
MODEL_STAGES = ("backbone", "diffusion", "body", "rows")


def worker_seconds(done: list) -> float:
    """Seconds the workers spent on this run's shards: per worker from the start of its first shard
    to the end of its last, summed over the workers (a worker running shards at once counts its
    time once)."""
    spans: dict[str, tuple[float, float]] = {}
    for d in done:
        first, last = spans.get(d.worker, (d.started_at, d.started_at + d.elapsed_s))
        spans[d.worker] = (min(first, d.started_at), max(last, d.started_at + d.elapsed_s))
    return sum(last - first for first, last in spans.values())


def hidden_share(decode_wait_s: float, decode_s: float):
    """Share of decoding the models did not wait for, in [0, 1] (None without decoding). The wait
    also holds the queue hand-over between the threads, so it can exceed the decoding it waited
    for: then nothing was hidden (0), not a negative share."""
    if decode_s <= 0:
        return None
    return min(1.0, max(0.0, 1 - decode_wait_s / decode_s))


def summarise(done: list, wall_s: float, out_dir=None) -> Summary:
    """Frames per second end to end and per stage, summed over this run's shards.

    ``stages[s].seconds`` is the time stage s ran (decode = PyAV decoding, clip cutting and person
    crops, in its own thread or Ray task, overlapped with the rest; rows = Arrow columns; write =
    Parquet files) and ``fps`` the rate it alone would sustain; ``fps_end_to_end`` is frames over
    the workers' seconds (``worker_seconds``: decode of a worker's first clip to its last Parquet
    rename, models already built and warm),
    ``fps_wall`` frames over the job's wall time (model building and Ray start included).
    ``decode_hidden`` is the share of decoding that ran while the models were busy (None when the
    CPU stage ran as Ray tasks: shards then run at once and one waits for its clips while another
    uses the models), ``model_busy`` the share of the workers' time in the models, and
    ``clips_decoded_elsewhere`` the clips whose CPU stage ran as a Ray task on a CPU no model
    worker holds (``core.io.prefetch.stream``).
    """
    t = total([d.timings for d in done])
    frames = t.counts.get("frames", 0)
    seconds = {s: t.seconds.get(s, 0.0) for s in STAGES[:-1]}
    seconds["write"] = sum(d.write_s for d in done)
    worker_s = worker_seconds(done)
    def rate(s: float) -> Optional[float]:
        return frames / s if s > 0 else None

    end_to_end = rate(worker_s)
    stages = {name: {"seconds": s, "fps": rate(s)} for name, s in seconds.items()}
    slowest = max(seconds, key=lambda name: seconds[name])
    decode_wait = t.seconds.get("decode_wait", 0.0)
    elsewhere = t.counts.get("clips_decoded_elsewhere", 0)
    timing = {
        "frames": frames, "clips": t.counts.get("clips", 0), "wall_s": wall_s, "worker_s": worker_s,
        "fps_end_to_end": end_to_end, "fps_wall": rate(wall_s),
        "stages": stages, "slowest_stage": slowest,
        "end_to_end_vs_slowest": seconds[slowest] / worker_s if frames and worker_s > 0 and seconds[slowest] else None,
        "decode_wait_s": decode_wait,
        "decode_hidden": None if elsewhere else hidden_share(decode_wait, seconds["decode"]),
        "model_busy": sum(seconds[s] for s in MODEL_STAGES) / worker_s if worker_s > 0 else None,
        "clips_decoded_elsewhere": elsewhere,
        **peak_memory(done),
    }
    headline = {"name": "fps_end_to_end", "value": timing["fps_end_to_end"], "unit": "frames/s",
                "meaning": "video frames per second, decode to Parquet, models built and warm"}
    return Summary(timing, headline)


def full_frame_warning(videos: int) -> str:
    return (f"{videos} video{'s have' if videos > 1 else ' has'} no track file and no --detector-weights was given: "
            f"both people get the whole frame (tracks_source full_frame), which makes the motion meaningless; "
            f"give --detector-weights (ByteTrack's bytetrack_x_mot17.pth.tar) or a track file per video")


def tracks_stage_lines(stage: dict) -> list[str]:
    """The tracks stage's seconds and frames/s per step (``track_stage``), and the share of its
    decoding the detector did not wait for."""
    frames = stage["counts"].get("frames", 0)
    seconds = dict(stage["seconds"])
    wait = seconds.pop("decode_wait", None)
    fps = lambda s: f"{frames / s:.2f}" if s > 0 else "n/a"
    hidden = hidden_share(wait, seconds.get("decode", 0.0)) if wait is not None else None
    return [f"tracks stage: {stage['shards']['committed']} videos, {frames} frames, {stage['rows']['rejected']} rejected"
            + ("" if hidden is None else f", decode hidden {hidden:.2f}")] + \
        [f"  {name:<8}{s:>10.2f}{fps(s):>11}" for name, s in seconds.items()]


def report_lines(report: dict) -> list[str]:
    """The tracks stage and the stage table, then the lines every family prints."""
    t = report["timing"]
    fps = lambda v: "n/a" if v is None else f"{v:.2f}"
    boxes = report["job"].get("boxes", {})
    lines = [f"WARNING: {full_frame_warning(boxes['full_frame'])}"] if boxes.get("full_frame") else []
    lines += tracks_stage_lines(report["stages"]["tracks"]) if "tracks" in report.get("stages", {}) else []
    lines += [f"frames {t['frames']}  clips {t['clips']}", f"{'stage':<10}{'seconds':>10}{'frames/s':>11}"]
    lines += [f"{name:<10}{s['seconds']:>10.2f}{fps(s['fps']):>11}" for name, s in t["stages"].items()]
    lines += [f"{'end-to-end':<10}{t['worker_s']:>10.2f}{fps(t['fps_end_to_end']):>11}  "
              f"(slowest: {t['slowest_stage']}; end-to-end / slowest = {fps(t['end_to_end_vs_slowest'])}; "
              f"decode hidden {fps(t['decode_hidden'])}; models busy {fps(t.get('model_busy'))}; clips decoded "
              f"elsewhere {t.get('clips_decoded_elsewhere', 0)})"]
    return lines + common_lines(report)
