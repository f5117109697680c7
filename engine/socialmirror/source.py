"""Video corpus -> reconstruct's work items: clips of videos, in shards of one video each.

Plan (driver, before any work): every video is probed and cut into shards of at most
``clips_per_shard`` clips (``video-<n>-clips-<first clip>``; the last shard of a video takes every
clip from its first on, so a wrong duration in the container only changes the last shard's size).
A video that cannot be probed gets one shard, which the worker rejects with the reason.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq

from motionfleet.common.bodies import find_model_file
from motionfleet.common.text import CONDITION_DIM
from motionfleet.common.weights import weights_description
from motionfleet.core.errors import RejectedInput
from motionfleet.core.execution.planning import map_ordered
from motionfleet.core.execution.stages import Stage, StageFiles
from motionfleet.core.io import digests
from motionfleet.core.io.digests import content_sha256, listing_sha256, weights_digest
from motionfleet.core.options import output_settings
from motionfleet.core.shards import Shard
from motionfleet.socialmirror import model as socialmirror
from motionfleet.socialmirror.settings import ReconstructSettings, ReconstructSpec, model_name
from motionfleet.socialmirror.track_stage import STAGE, VideoToTrack, VideoTracker
from motionfleet.socialmirror.video import VideoItem, check_index, list_videos, probe_video

# The fewest bytes a coded frame takes in a container (a skipped inter frame and its packet header);
# it bounds how many frames the plan believes a small file that claims a long duration.
MIN_BYTES_PER_FRAME = 8
TRACKS_SETTINGS = ("target_fps", "detector_size", "detector_confidence", "detect_every", "max_gap")  # what decides the tracks


@dataclass(frozen=True)
class ClipSpan:
    """One shard's work: clips ``first_clip`` .. ``end_clip - 1`` of a video (``None``: to its end)."""

    video_id: str
    path: str
    track_path: Optional[str]
    caption: Optional[str]
    first_clip: int
    end_clip: Optional[int]
    error: Optional[str] = None  # why the video is rejected before it is opened (``VideoItem.error``)
    tracked_by_stage: bool = False  # its boxes come from the job's tracks stage (``track_stage``)
    stage_tracks: Optional[StageFiles] = None  # that stage's files for the video (``attach_tracks``)


@dataclass(frozen=True)
class ClipSlot:
    """A planned clip of a span: a shard's work items (the progress bar counts them). ``last``
    marks the span's last planned clip, which carries the span's end (``None``: to the video's end)."""

    span: ClipSpan
    clip_index: int
    last: bool = False


def slots_span(slots: tuple[ClipSlot, ...]) -> ClipSpan:
    """The clips a run of consecutive slots covers: the shard's whole span, or the part of it a
    split batch kept (``execution.worker.run_split_on_oom`` halves a shard that ran out of memory)."""
    span = slots[0].span
    end = span.end_clip if slots[-1].last else slots[-1].clip_index + 1
    return replace(span, first_clip=slots[0].clip_index, end_clip=end)


def clips_for_frames(frames: int, clip_len: int, stride: int) -> int:
    """How many clips ``video.iter_clips`` cuts from ``frames`` frames."""
    return 1 if frames <= clip_len else 1 + math.ceil((frames - clip_len) / stride)


def planned_clips(path: Path, clip_len: int, settings: ReconstructSettings) -> Optional[int]:
    """Clips the container's stated duration promises at the target fps, but no more than its bytes
    can hold (``MIN_BYTES_PER_FRAME``: a 752-byte file that claims 23 h is not 155,251 clips);
    None if it cannot say or the video is rejected (``check_index`` finds faults of the whole file,
    so that its one shard rejects it once). The last shard takes every clip from its first on, so an estimate
    that is too small only makes that shard longer."""
    try:
        info = probe_video(path)
        check_index(path)
    except RejectedInput:
        return None
    if info.duration_s is None:
        return None
    frames = math.ceil(info.duration_s * settings.target_fps - 1e-6)
    by_size = math.ceil(path.stat().st_size / MIN_BYTES_PER_FRAME * max(settings.target_fps / info.fps, 1.0))
    return clips_for_frames(min(frames, by_size), clip_len, settings.stride)


def video_clips(video: VideoItem, clip_len: int, settings: ReconstructSettings) -> int:
    """The clips planned for one video (1 when it cannot say: the one shard takes them all)."""
    return (None if video.error else planned_clips(video.path, clip_len, settings)) or 1


def video_spans(video: VideoItem, caption: Optional[str], total: int, settings: ReconstructSettings,
                detect: bool) -> list[tuple[ClipSpan, int]]:
    """(span, planned clip count) of each shard of one video of ``total`` planned clips."""
    size = settings.clips_per_shard
    track = str(video.track_path) if video.track_path else None
    firsts = list(range(0, total, size))
    staged = detect and track is None and video.error is None
    return [(ClipSpan(video.video_id, str(video.path), track, caption, first,
                      firsts[i + 1] if i + 1 < len(firsts) else None, video.error, staged), min(size, total - first))
            for i, first in enumerate(firsts)]


def video_shard_id(number: int) -> str:
    """The tracks stage's shard of the ``number``-th video; its clip shards' ids start with it."""
    return f"video-{number:06d}"


def tracks_stage(videos: list[VideoItem], job: dict) -> Stage:
    """The stage that detects and tracks each video without a user's track file (``track_stage``)."""
    shards = [Shard(video_shard_id(number), (VideoToTrack(v.video_id, str(v.path)),))
              for number, v in enumerate(videos) if v.track_path is None and v.error is None]
    return Stage(STAGE, shards, job, VideoTracker, attach_tracks, unit="video")


def attach_tracks(shards: list[Shard], files: dict[str, StageFiles]) -> list[Shard]:
    """Each clip shard tracked by the stage with its video's stage files (None: the stage failed on it)."""
    attached = []
    for shard in shards:
        span = shard.items[0].span
        if span.tracked_by_stage:
            span = replace(span, stage_tracks=files.get(shard.shard_id.split("-clips-")[0]))
            shard = Shard(shard.shard_id, tuple(replace(slot, span=span) for slot in shard.items))
        attached.append(shard)
    return attached


def plan_shards(videos: list[VideoItem], captions: dict[str, str], clip_len: int,
                settings: ReconstructSettings, detect: bool = False) -> list[Shard]:
    shards = []
    # Probing opens every video: in parallel, on the cluster's CPUs when the job runs on Ray.
    totals = map_ordered(partial(video_clips, clip_len=clip_len, settings=settings), videos)
    for number, (video, total) in enumerate(zip(videos, totals)):
        for span, count in video_spans(video, captions.get(video.video_id), total, settings, detect):
            slots = tuple(ClipSlot(span, span.first_clip + k, k == count - 1) for k in range(count))
            shards.append(Shard(f"{video_shard_id(number)}-clips-{span.first_clip:06d}", slots))
    return shards


def read_captions(corpus: str | Path, videos: list[VideoItem]) -> dict[str, str]:
    """video id -> caption, from the ``caption`` column of a Parquet manifest (else none)."""
    corpus = Path(corpus)
    if corpus.suffix.lower() != ".parquet" or "caption" not in pq.read_schema(corpus).names:
        return {}
    table = pq.read_table(corpus, columns=["path", "caption"])
    by_path = {os.path.normpath(corpus.parent / p): c
               for p, c in zip(table.column("path").to_pylist(), table.column("caption").to_pylist()) if p and c}
    return {v.video_id: by_path[str(v.path)] for v in videos if str(v.path) in by_path}


def corpus_digest(videos: list[VideoItem], captions: dict[str, str]) -> str:
    """What identifies the corpus: per video its id, its sampled digest, its track file's digest
    and its caption (``core.io.digests``: cached, on a thread pool, 128 KiB read a video)."""
    video_digests = digests.many([v.path for v in videos], sampled=True)
    track_digests = iter(digests.many([v.track_path for v in videos if v.track_path]))
    return listing_sha256((v.video_id, video_digest, next(track_digests) if v.track_path else None,
                           captions.get(v.video_id)) for v, video_digest in zip(videos, video_digests))


def weight_files(spec: ReconstructSpec) -> dict:
    """The content digest of every weights file the spec names (None: dummy or synthetic)."""
    body = find_model_file("smpl", spec.body_models) if spec.body_models else None
    return {"backbone": weights_digest(spec.backbone_weights), "estimator": weights_digest(spec.estimator_weights),
            "detector": weights_digest(spec.detector_weights),
            "text_encoder": weights_digest(spec.text_encoder_weights), "body_model": weights_digest(body)}


def model_config(spec: ReconstructSpec) -> socialmirror.SocialMirrorConfig:
    return socialmirror.PRESETS.get(spec.preset, socialmirror.SocialMirrorConfig())


def plan_job(corpus: str | Path, spec: ReconstructSpec,
             settings: ReconstructSettings) -> tuple[list[Shard], dict, tuple[Stage, ...]]:
    """(shards, job description, stages) of a corpus; the description decides the output bytes."""
    videos = list_videos(corpus)
    captions = read_captions(corpus, videos)
    config = model_config(spec)
    if captions and spec.checkpoint is None and config.text_feature_dim != CONDITION_DIM:
        raise ValueError(f"captions give {CONDITION_DIM}-dim text features; preset {spec.preset} takes "
                         f"{config.text_feature_dim}")
    clip_len = config.frames
    detect = spec.detector_weights is not None
    shards = plan_shards(videos, captions, clip_len, settings, detect)
    inputs = {"source": str(corpus), "videos": len(videos), "sha256": corpus_digest(videos, captions)}
    job = {
        "model": asdict(spec), "model_name": model_name(spec),
        "weights": weights_description(spec.checkpoint, spec.dummy_seed),
        "estimates_sha256": content_sha256(spec.estimates) if spec.estimates else None,
        "weight_files": weight_files(spec),
        "settings": output_settings(settings),
        "inputs": inputs, "boxes": boxes_sources(videos, detect),
    }
    stages = (tracks_stage(videos, tracks_job(spec, settings, inputs)),) if detect else ()
    return shards, job, stages


def boxes_sources(videos: list[VideoItem], detect: bool) -> dict:
    """How many videos take their people's boxes from a track file, the detector, or the whole frame."""
    files = sum(v.track_path is not None for v in videos)
    return {"track_file": files, "detector": len(videos) - files if detect else 0,
            "full_frame": 0 if detect else len(videos) - files}


def tracks_job(spec: ReconstructSpec, settings: ReconstructSettings, inputs: dict) -> dict:
    """What decides the tracks stage's rows."""
    return {"detector": weights_digest(spec.detector_weights), "inputs": inputs,
            "settings": {k: getattr(settings, k) for k in TRACKS_SETTINGS}}
