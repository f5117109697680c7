"""The generate job's report: AITS (DHVAE, Table 7) and where the time went."""

from __future__ import annotations

from motionfleet.core.jobfolder.report import common_lines, peak_memory
from motionfleet.core.registry import Summary
from motionfleet.core.runtime.stopwatch import total


def summarise(done: list, wall_s: float, out_dir=None) -> Summary:
    """Timings summed over this run's shards (warm-up excluded, text encoder excluded from AITS).

    AITS = (denoising + decoding seconds) / sentences, as DHVAE's Table 7 measures it per
    sentence; here sentences are generated in batches, so it is the per-sentence share.
    """
    t = total([d.timings for d in done])
    samples = t.counts.get("samples", 0)
    denoise, decode = t.seconds.get("denoise", 0.0), t.seconds.get("decode", 0.0)
    per = (lambda s: s / samples) if samples else (lambda s: None)
    timing = {
        "sentences": samples, "wall_s": wall_s,
        "aits_s": per(denoise + decode), "aits_denoise_s": per(denoise), "aits_decode_s": per(decode),
        "text_encoder_s": t.seconds.get("text_encoder", 0.0),
        "throughput_sentences_per_s": samples / wall_s if wall_s > 0 else None,
        **peak_memory(done),
    }
    headline = {"name": "aits_s", "value": timing["aits_s"], "unit": "s",
                "meaning": "average inference time per sentence: denoising + decoding, text encoder excluded"}
    return Summary(timing, headline)


def report_lines(report: dict) -> list[str]:
    t = report["timing"]
    ms = lambda v: "n/a" if v is None else f"{v * 1e3:.2f} ms"
    return [
        f"sentences {t['sentences']}  AITS {ms(t['aits_s'])} (denoise {ms(t['aits_denoise_s'])}, decode "
        f"{ms(t['aits_decode_s'])}; text encoder excluded: {t['text_encoder_s']:.2f} s total)  "
        f"throughput {t['throughput_sentences_per_s'] or 0:.2f} sentences/s",
        *common_lines(report),
        *motion_space_lines(report),
    ]


def motion_space_lines(report: dict) -> list[str]:
    space = report["job"].get("motion_space")
    return [f"motion space {space['space']}: {space['note']}"] if space else []
