"""Video corpus -> two-person SMPL motion with SocialMirror, one shard on one device (no Ray here).

Plan (driver, before any work): every video is probed and cut into shards of at most
``clips_per_shard`` clips (``video-<n>-clips-<first clip>``; the last shard of a video takes every
clip from its first on, so a wrong duration in the container only changes the last shard's size).
A video that cannot be probed gets one shard, which the worker rejects with the reason.

Pipeline (worker, per call: the clips of one shard or of several, ``execution.batcher``)::

    CPU stage:      probe -> seek to the shard's first frame -> decode (PyAV, resampled to the
                    target fps) -> clips -> person crops                    (decode)
                        | at most ``prefetch_clips`` clips ahead (``core.io.prefetch.stream``: a
                        | thread of the worker, or a one-CPU Ray task anywhere on the cluster)
                        | one stage per span of the call, all at once
    model thread:   ResNet-50 + projection + regression head per clip      (backbone)
                    DDIM around the initial estimate, B clips of any of the
                    call's spans per model call                             (diffusion)
                    6D -> matrices -> axis-angle, SMPL joints, translation  (body)
                    Arrow columns of the frames each clip owns              (rows)

Memory is bounded by the streams, one batch of clip features and the open shards' rows (at most
``clips_per_shard`` x clip_len x 2 rows each), never by the video or corpus size. Every output frame
is owned by exactly one clip (``video.iter_clips``), so every (video, person, frame) is written
once; a shard is committed whole (``sink``), so a rerun redoes only uncommitted shards. A
model batch takes the clips of several shards (``batch_size`` whatever the shard size); each
row names its slot (``item_key``, ``row_keys``), so each shard gets back its own rows, and a
shard whose video is rejected in one of its batches is rejected whole (``settle_shard``).

A shard whose video is missing, empty, corrupt, audio-only, too large, truncated (a decode
error, or decoding ending before the stated duration) or whose tracks or upstream estimates
are bad writes no rows and one rejected row with the reason.

Determinism: each clip's noise comes from (job seed, video id, clip index); the backbone runs in
chunks of ``BACKBONE_CHUNK`` crops of one torch thread each and every other model call pads its
rows to a multiple of 4 (``batching``), so the bytes do not depend on the batch size, the batch's
other clips, shard size, worker count or thread count.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import torch

from motionfleet.common.bodies import find_model_file, load_body_model
from motionfleet.common.resnet import build_resnet50
from motionfleet.common.rotations import matrix_to_axis_angle, matrix_to_rotation_6d, rotation_6d_to_matrix
from motionfleet.common.text import TextEncoder, build_text_encoder
from motionfleet.common.weights import weights_description
from motionfleet.core.errors import RejectedInput, checkpoint_errors
from motionfleet.core.execution.batcher import ShardRun
from motionfleet.core.io import prefetch, progress, provenance, rejections
from motionfleet.core.io.digests import content_sha256
from motionfleet.core.io.inputs import non_finite_rows
from motionfleet.core.runtime import backends
from motionfleet.core.runtime.batching import fixed_thread_pool, pad_rows
from motionfleet.core.runtime.seeding import SampleNoise, sample_seed
from motionfleet.core.runtime.stopwatch import StageClock, Timings, synchronize
from motionfleet.demo.body_models import cached_synthetic_body_models
from motionfleet.sampling import ddim
from motionfleet.sampling.initial_ddim import closeint_config, sample_around
from motionfleet.socialmirror import hmr2
from motionfleet.socialmirror import model as socialmirror
from motionfleet.socialmirror.frame_estimates import FrameEstimates, VideoEstimates
from motionfleet.socialmirror.hmr2_estimate import DemoCrops, EstimatorOutput, HMR2Estimator, demo_crops
from motionfleet.socialmirror.initial_estimate import (
    bbox_info,
    build_initial_estimator,
    diffusion_centre,
    split_estimate,
)
from motionfleet.socialmirror.pair_guidance import (
    CropGeometry,
    GuidanceWeights,
    PairJointGuidance,
    SMPLJoints,
    estimate_joints,
)
from motionfleet.socialmirror.settings import ReconstructSettings, ReconstructSpec, model_name
from motionfleet.socialmirror.source import ClipSlot, ClipSpan, slots_span
from motionfleet.socialmirror.track_stage import lost_in_clip, stage_tracks
from motionfleet.socialmirror.video import (
    Clip,
    DecodeStats,
    Tracks,
    check_index,
    crop_people,
    iter_clips,
    iter_frames,
    probe_video,
    read_tracks,
    square_boxes,
)

BACKBONE_CHUNK = 8  # crops per ResNet-50 call: a multiple of 4 (batch-invariant bits), and fast on CPU
NUM_JOINTS = 24
STAGES = ("decode", "backbone", "diffusion", "body", "rows")


# ----------------------------------------------------------------------------- decode stage


@dataclass
class DecodedClip:
    """A clip without its pixels: per-slot indices, the crop squares (2, L, 4) and the crops."""

    index: int
    frame_indices: np.ndarray
    source_indices: np.ndarray
    timestamps: np.ndarray
    owned: np.ndarray
    squares: torch.Tensor
    width: int
    height: int
    tracks_source: str
    crops: Optional[torch.Tensor]
    hmr2_crops: Optional[DemoCrops] = None  # HMR 2.0's crops of the L x 2 boxes (frame-major)
    decode_s: float = 0.0  # seconds the CPU stage spent making it (open, decode, resample, crop)
    lost: tuple[int, ...] = ()  # source frames it owns where the tracked pair is lost (it is rejected)


def resnet_crops(clip: DecodedClip) -> torch.Tensor:
    """The clip's ResNet-50 crops: made by the CPU stage whenever neither upstream features nor HMR 2.0 give F_img."""
    if clip.crops is None:
        raise RuntimeError(f"clip {clip.index} has no crops for ResNet-50 and no upstream image features")
    return clip.crops


def prepare_clip(index: int, clip: Clip, crop_size: int, crops: str) -> DecodedClip:
    """``crops``: which crops the CPU stage makes: ``"resnet50"`` (squares of ``crop_size``),
    ``"hmr2"`` (HMR 2.0's, ``hmr2_estimate.demo_crops``) or ``"none"`` (upstream features)."""
    height, width = clip.frames.shape[1:3]
    boxes = torch.as_tensor(clip.boxes).reshape(-1, 4)
    squares = square_boxes(boxes, width, height).reshape(len(clip.boxes), 2, 4).transpose(0, 1)
    return DecodedClip(index, clip.frame_indices, clip.source_indices, clip.timestamps, clip.owned & clip.mask,
                       squares.contiguous(), width, height, clip.tracks_source,
                       crop_people(clip, crop_size) if crops == "resnet50" else None,
                       demo_crops(clip.frames, clip.boxes) if crops == "hmr2" else None)


def decoded_clips(span: ClipSpan, clip_len: int, settings: ReconstructSettings,
                  crops: str) -> Iterator[DecodedClip]:
    """The span's clips, decoded and cropped, each with the seconds it took to make; raises
    RejectedInput for a bad video. A generator function of picklable arguments: the job runs it
    where ``prefetch.stream`` places the CPU stage (a thread here, or a Ray task elsewhere)."""
    start = time.perf_counter()
    info = probe_video(span.path)
    check_index(span.path)
    tracks, lost = span_tracks(span, (info.width, info.height))
    stats = DecodeStats()
    frames = iter_frames(span.path, settings.target_fps, max_size=settings.max_frame_size, stats=stats,
                         start_frame=span.first_clip * settings.stride)
    with closing(frames):
        clips = iter_clips(frames, clip_len, settings.stride, tracks, first_clip=span.first_clip)
        for index, clip in enumerate(clips, start=span.first_clip):
            if span.end_clip is not None and index >= span.end_clip:
                return
            decoded = prepare_clip(index, clip, settings.crop_size, crops)
            decoded.lost = tuple(lost_in_clip(lost, clip.source_indices, clip.owned & clip.mask))
            decoded.decode_s = time.perf_counter() - start
            yield decoded
            start = time.perf_counter()
    if stats.truncated:
        raise RejectedInput(f"truncated: {stats.note}")


def hmr2_estimator(weights: Optional[str], image_feature_dim: int, settings: ReconstructSettings) -> Optional[HMR2Estimator]:
    """HMR 2.0 as the initial estimator when ``weights`` is its released checkpoint (the preset whose
    features the denoiser takes), on the job's device, backend and precision, as the detector and
    the denoiser; None: the ResNet-50 head (``initial_estimate``)."""
    if weights is None or not hmr2.is_released_file(weights):
        return None
    return HMR2Estimator(hmr2.load_model(weights, hmr2.preset_feeding(image_feature_dim)), backend=settings.backend,
                         device=settings.device, precision=settings.precision, weights=weights_description(weights, 0),
                         onnx_dir=settings.onnx_dir)


def span_tracks(span: ClipSpan, frame_size: tuple[int, int]) -> tuple[Optional[Tracks], np.ndarray]:
    """(the pair's tracks, source frames where the pair is lost): from the job's tracks stage, the
    user's track file, or none (full-frame boxes)."""
    if span.tracked_by_stage:
        staged = stage_tracks(span.stage_tracks)
        return staged.tracks, staged.lost
    return (read_tracks(span.track_path, frame_size) if span.track_path else None), np.empty(0, dtype=np.int64)


def backbone_pool(device: torch.device) -> Optional[ThreadPoolExecutor]:
    """On CPU, ResNet-50 chunks run in ``torch.get_num_threads()`` threads of one torch thread each:
    oneDNN's convolutions give other bits with another thread count (measured), a one-thread
    convolution of a fixed chunk does not, and whole chunks in parallel keep every core busy. On
    CUDA the chunks run in turn (None)."""
    return fixed_thread_pool(torch.get_num_threads()) if device.type == "cpu" else None


def span_rejected_row(span: ClipSpan, reason: str) -> dict:
    """The one rejected row of a span whose video is rejected."""
    where = {"path": span.path, "first_clip": span.first_clip, "end_clip": span.end_clip}
    return rejections.rejected_row("video_id", span.video_id, 0, where, reason)


def rejected_clip(row_input: str) -> int:
    """The clip a rejected row names: its clip (pair lost) or its span's first clip."""
    where = json.loads(row_input)
    return where["clip"] if "clip" in where else where["first_clip"]


def lost_pair_row(span: ClipSpan, clip: DecodedClip) -> dict:
    where = {"path": span.path, "clip": clip.index}
    return rejections.rejected_row("video_id", span.video_id, 0, where,
                                   f"pair_lost: one of the pair is missing at source frames {clip.lost[0]}..{clip.lost[-1]}, "
                                   f"a gap longer than --max-gap")


# ----------------------------------------------------------------------------- the worker


@dataclass
class EncodedClip:
    """A clip after the backbone: F_img (2, L, D), bbox_info (2, L, 3), x_init (2, L, 157),
    auxiliary joints (2, L, 24, 3) or None, text feature (2, T) or None."""

    clip: DecodedClip
    image_features: torch.Tensor
    bbox: torch.Tensor
    x_init: torch.Tensor
    aux_joints: Optional[torch.Tensor]
    text: Optional[torch.Tensor]


@dataclass
class SpanPart:
    """A call's run of consecutive slots of one span (``source.slots_span``: its clips) and what
    they gave: a chunk of columns per clip, a rejected row per clip whose pair is lost, or the reason
    the span's video is rejected."""

    span: ClipSpan
    estimates: Optional[VideoEstimates] = None
    text: Optional[torch.Tensor] = None
    source: str = ""
    chunks: list[dict] = field(default_factory=list)
    lost: list[dict] = field(default_factory=list)
    reason: Optional[str] = None

    def rejected_rows(self) -> list[dict]:
        return [span_rejected_row(self.span, self.reason)] if self.reason else self.lost


def span_runs(slots: tuple[ClipSlot, ...]) -> list[tuple[ClipSlot, ...]]:
    """The runs of consecutive slots of one span in a call's slots (one shard's, or several's)."""
    runs: list[list[ClipSlot]] = []
    for slot in slots:
        before = runs[-1][-1] if runs else None
        if before is not None and not before.last and before.span == slot.span and before.clip_index + 1 == slot.clip_index:
            runs[-1].append(slot)
        else:
            runs.append([slot])
    return [tuple(run) for run in runs]


def crop_geometry(squares: torch.Tensor, batch: list[EncodedClip]) -> CropGeometry:
    """The batch's crop squares (B' >= B clips: rows past B repeat the last) in their videos' frame sizes."""
    sizes = [(e.clip.width, e.clip.height) for e in batch]
    sizes += sizes[-1:] * (len(squares) - len(sizes))
    return CropGeometry(squares, *sizes[0], None if len(set(sizes)) == 1 else tuple(sizes))


def load_smpl(body_models: Optional[str]):
    """(SMPL body model, how results name it)."""
    if body_models is None:
        return load_body_model("smpl", cached_synthetic_body_models("smpl")), "synthetic smpl, seed 0"
    return load_body_model("smpl", body_models), f"sha256:{content_sha256(find_model_file('smpl', body_models))}"


class Reconstructor:
    """Models of one device and the pipeline; ``run(items)`` is the engine's worker call.

    Each span of a call decodes in its own CPU stage (``prefetch.stream``), so several videos
    decode in parallel for one model; on Ray with spare CPUs the stages run as Ray tasks there
    (``concurrent_shards``). ``run`` may also be called from several threads at once: the model
    calls take turns under ``model_lock``."""

    concurrent_shards = True

    def __init__(self, spec: ReconstructSpec, settings: ReconstructSettings):
        self.spec, self.settings = spec, settings
        self.device = torch.device(settings.device)
        self.model_lock = threading.Lock()
        self.video_end: dict[str, int] = {}  # video id -> its slot that takes every clip to the video's end (``row_keys``)
        with checkpoint_errors(spec.checkpoint, "socialmirror"):
            model, self.weights = socialmirror.load_model(spec.checkpoint, spec.preset, spec.dummy_seed)
        self.model_name = model_name(spec)
        self.model = model.to(self.device)
        self.config = model.config
        self.backbone = build_resnet50(spec.backbone_weights, spec.dummy_seed).to(self.device)
        self.backbone_pool = backbone_pool(self.device)
        self.hmr2 = hmr2_estimator(spec.estimator_weights, self.config.image_feature_dim, settings)
        head_weights = None if self.hmr2 else spec.estimator_weights
        self.estimator = build_initial_estimator(self.config.image_feature_dim, head_weights, spec.dummy_seed).to(self.device)
        body, self.body_description = load_smpl(spec.body_models)
        self.joints = SMPLJoints(body.to(self.device))
        self.steps = ddim.plan(closeint_config(settings.steps, settings.eta))
        self.upstream = FrameEstimates(spec.estimates, self.config.image_feature_dim) if spec.estimates else None
        self.text_encoder: Optional[TextEncoder] = None  # built by the first caption
        self._text_cache: dict[str, torch.Tensor] = {}
        self.denoiser = backends.make_backend(settings.backend, self.model, settings.precision, self.device,
                                              onnx_dir=settings.onnx_dir, weights=self.weights)
        self.provenance = self._provenance()

    @property
    def clip_len(self) -> int:
        return self.config.frames

    # -- batching across shards (core.execution.batcher) ---------------------------------------
    @property
    def batch_items(self) -> int:
        return self.settings.batch_size

    @staticmethod
    def item_key(slot: ClipSlot) -> tuple[str, int]:
        return slot.span.video_id, slot.clip_index

    def row_keys(self, table: pa.Table) -> list[tuple[str, int]]:
        """The slot of each row: a results row's clip, a pair-lost row's clip, a rejected span's
        first clip; a clip past the planned ones belongs to the slot that takes its video to the end."""
        videos = table.column("video_id").to_pylist()
        if "clip_id" in table.column_names:
            clips = table.column("clip_id").to_pylist()
        else:
            clips = [rejected_clip(text) for text in table.column("input").to_pylist()]
        return [(video, min(clip, self.video_end.get(video, clip))) for video, clip in zip(videos, clips)]

    def settle_shard(self, run: ShardRun) -> ShardRun:
        """The shard's rows as one call on its own gives them: a span rejected in any of its parts
        (a decode error after the clips of an earlier batch, say) rejects the shard with one row,
        the first part's reason, and no results; its frame count is its own rows'."""
        assert run.results is not None and run.rejected is not None and run.timings is not None
        if not run.shard.items:
            return run
        results, rejected, last = run.results, run.rejected, run.shard.items[-1]
        if last.last and last.span.end_clip is None:
            self.video_end.pop(last.span.video_id, None)
        reasons = [reason for reason, text in zip(rejected.column("reason").to_pylist(), rejected.column("input").to_pylist())
                   if "first_clip" in json.loads(text)]
        if reasons:
            results = RESULTS_SCHEMA.empty_table()
            rejected = rejections.rejected_table([span_rejected_row(slots_span(tuple(run.shard.items)), reasons[0])], "video_id")
        run.timings.counts["frames"] = results.num_rows // 2
        return replace(run, results=results, rejected=rejected)

    # -- one call: the slots of one or more shards -----------------------------------------------
    @torch.no_grad()
    def run(self, items: tuple[ClipSlot, ...]) -> tuple[pa.Table, pa.Table, Timings]:
        """Rows of the slots of one shard, or of several (each shard's in order, the first or last
        maybe cut at any clip: ``execution.batcher``), in model batches of ``batch_size`` clips of
        any of them."""
        start = time.perf_counter()
        timings = Timings(dict.fromkeys((*STAGES, "decode_wait"), 0.0), {"frames": 0, "clips": 0, "clips_decoded_elsewhere": 0})
        parts = [self.span_part(slots) for slots in span_runs(items)]
        clock = StageClock(self.device)
        self.reconstruct_parts(parts, clock, timings)
        with clock.stage("rows"):
            results = results_table([chunk for part in parts if not part.reason for chunk in part.chunks], self.provenance)
        for stage, seconds in clock.seconds.items():
            timings.seconds[stage] += seconds
        timings.counts["frames"] = results.num_rows // 2
        timings.seconds["shard"] = time.perf_counter() - start
        return results, rejections.rejected_table([row for part in parts for row in part.rejected_rows()], "video_id"), timings

    def span_part(self, slots: tuple[ClipSlot, ...]) -> SpanPart:
        if slots[-1].last and slots[0].span.end_clip is None:
            self.video_end[slots[0].span.video_id] = slots[-1].clip_index
        return SpanPart(slots_span(slots))

    def reconstruct_parts(self, parts: list[SpanPart], clock: StageClock, timings: Timings) -> None:
        """Each part's chunks of columns (or rejected rows): every part decodes in its own CPU stage,
        as many at once as the executor allows (``prefetch.at_once``), and the model takes their
        clips in order, ``batch_size`` at a time."""
        pending: list[tuple[SpanPart, DecodedClip]] = []
        ahead = prefetch.at_once() or len(parts)
        streams: dict[int, Any] = {}  # the parts' started stages, not yet read
        try:
            for i, part in enumerate(parts):
                for j in range(i, min(i + ahead, len(parts))):
                    if j not in streams:
                        streams[j] = self.decode_stage(parts[j])
                clips = streams.pop(i)
                if clips is None:
                    continue
                with clips:  # ends its stage once read: a paused stage would keep its CPU
                    self.read_part(part, clips, pending, clock, timings)
            if pending:
                self.model_batch(pending, clock, timings)
        finally:
            for stream in streams.values():
                if stream is not None:
                    stream.__exit__(None, None, None)

    def read_part(self, part: SpanPart, clips, pending: list[tuple[SpanPart, DecodedClip]], clock: StageClock,
                  timings: Timings) -> None:
        """Add the part's clips to ``pending``, running a model batch whenever it is full."""
        try:
            for decoded in clips:
                timings.seconds["decode"] += decoded.decode_s
                timings.counts["clips"] += 1
                timings.counts["clips_decoded_elsewhere"] += int(clips.remote)
                if decoded.lost:
                    part.lost.append(lost_pair_row(part.span, decoded))
                    progress.items_done(1)
                    continue
                pending.append((part, decoded))
                if len(pending) == self.settings.batch_size:
                    self.model_batch(pending, clock, timings)
                    pending.clear()
                if part.reason:  # a clip gave NaN: the rest of its span is not run
                    break
        except RejectedInput as err:
            part.reason = err.reason
        timings.seconds["decode_wait"] += clips.wait_s

    def decode_stage(self, part: SpanPart):
        """The part's clips from its CPU stage (``prefetch.stream``), started; None when the video is
        rejected before it is opened (``part.reason``)."""
        span = part.span
        try:
            if span.error:
                raise RejectedInput(span.error)
            part.estimates = self.upstream.for_video(span.video_id) if self.upstream else None
        except RejectedInput as err:
            part.reason = err.reason
            return None
        estimator = "hmr2" if self.hmr2 else "resnet50"
        crops = estimator if part.estimates is None or "image_features" not in part.estimates.values else "none"
        part.source = estimator if part.estimates is None else "upstream"
        with self.model_lock:
            part.text = self.text_feature(span.caption)
        return prefetch.stream(partial(decoded_clips, span, self.clip_len, self.settings, crops), self.settings.prefetch_clips)

    def model_batch(self, batch: list[tuple[SpanPart, DecodedClip]], clock: StageClock, timings: Timings) -> None:
        """Backbone, diffusion, bodies and row columns of a batch of clips (of one span or several),
        each clip's chunk in its part, and the batch's record in ``timings.batches``. Calls run at
        once (``concurrent_shards``) take turns at the models, a batch at a time; the record's
        seconds are its turn's."""
        with self.model_lock:
            started, began = time.time(), time.perf_counter()
            encoded = []
            with clock.stage("backbone"):
                for part, clip in batch:
                    try:
                        if not part.reason:
                            encoded.append((part, self.encode(clip, part.estimates, part.text)))
                    except RejectedInput as err:  # e.g. no upstream row for one of its frames
                        part.reason = err.reason
            encoded = [(part, clip) for part, clip in encoded if not part.reason]
            if encoded:
                self.finish(encoded, clock)
                timings.batches.append({"size": len(encoded), "start": started, "seconds": time.perf_counter() - began})

    def finish(self, batch: list[tuple[SpanPart, EncodedClip]], clock: StageClock) -> None:
        """Diffusion, bodies and row columns of a batch of clips; a part with a clip whose outputs
        are not finite (e.g. upstream values that overflow) is rejected, naming its first such clip."""
        clips = [e for _, e in batch]
        seeds = [sample_seed(self.settings.seed, part.span.video_id, e.clip.index) for part, e in batch]
        with clock.stage("diffusion"):
            x0 = self.diffuse(clips, seeds)
        with clock.stage("body"):
            bodies = self.bodies(x0, clips)
        for b in sorted({b for values in bodies.values() for b in non_finite_rows(values)}):
            part = batch[b][0]
            part.reason = part.reason or f"non_finite: clip {clips[b].clip.index} gave NaN or infinite outputs"
        with clock.stage("rows"):
            for b, ((part, encoded), seed) in enumerate(zip(batch, seeds)):
                if not part.reason:
                    part.chunks.append(clip_columns(encoded, {name: values[b] for name, values in bodies.items()},
                                                    part, seed))
        progress.items_done(len(batch))

    # -- backbone -------------------------------------------------------------------------------
    def encode(self, clip: DecodedClip, estimates: Optional[VideoEstimates],
               text: Optional[torch.Tensor]) -> EncodedClip:
        """F_img, bbox_info and x_init of a clip, from the crops (HMR 2.0's, which also give CloseInt's
        crop squares, or ResNet-50's) or the upstream file."""
        def upstream(column: str) -> Optional[np.ndarray]:
            return estimates.clip_values(column, clip.frame_indices) if estimates else None

        hmr2 = self.hmr2_outputs(clip)
        if hmr2 is not None:
            clip = replace(clip, squares=hmr2.squares.float(), hmr2_crops=None)
        bbox = bbox_info(clip.squares, clip.width, clip.height).to(self.device)
        given_features = upstream("image_features")
        if given_features is not None:
            features = torch.from_numpy(given_features).to(self.device)
        elif hmr2 is not None:
            features = hmr2.image_features
        else:
            features = self.image_features(resnet_crops(clip))
        given_x_init = upstream("initial_estimate")
        if given_x_init is not None:
            x_init = torch.from_numpy(given_x_init).to(self.device)
        elif hmr2 is not None:
            x_init = hmr2.x_init
        else:
            rows = features.reshape(-1, features.shape[-1])
            x_init = self.estimator.regress(rows, bbox.reshape(-1, 3)).reshape(*features.shape[:2], -1)
        given_aux = upstream("aux_joints")
        aux = None if given_aux is None else torch.from_numpy(given_aux).reshape(2, -1, NUM_JOINTS, 3).to(self.device)
        return EncodedClip(replace(clip, crops=None), features, bbox, x_init, aux, text)  # crops freed

    def hmr2_outputs(self, clip: DecodedClip) -> Optional[EstimatorOutput]:
        """HMR 2.0's outputs of the clip's crops; None where the CPU stage made none (another estimator, or upstream features)."""
        if clip.hmr2_crops is None:
            return None
        if self.hmr2 is None:  # the CPU stage makes HMR 2.0's crops only for a runner that loaded it
            raise RuntimeError("a clip with HMR 2.0's crops reached a runner without HMR 2.0")
        return self.hmr2.of_crops(clip.hmr2_crops, len(clip.frame_indices), 2)

    def image_features(self, crops: torch.Tensor) -> torch.Tensor:
        """(2, L, 3, S, S) crops -> (2, L, image_feature_dim) F_img, ``BACKBONE_CHUNK`` crops per call."""
        images = crops.reshape(-1, *crops.shape[2:]).to(self.device)
        chunks = [pad_rows(images[i:i + BACKBONE_CHUNK], BACKBONE_CHUNK) for i in range(0, len(images), BACKBONE_CHUNK)]
        run = self.backbone_pool.map if self.backbone_pool else map
        features = torch.cat(list(run(self._backbone_features, chunks)))[:len(images)]
        return self.estimator.image_features(features).reshape(*crops.shape[:2], -1)

    def _backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # grad mode is per thread
            return self.backbone.features(images)

    def text_feature(self, caption: Optional[str]) -> Optional[torch.Tensor]:
        """(2, text_feature_dim) feature of the caption for both people; None is the empty text."""
        if not caption:
            return None
        if caption not in self._text_cache:
            feature = self._encoder().encode([caption])[0].to(self.device)
            self._text_cache[caption] = torch.stack([feature, feature])
        return self._text_cache[caption]

    def _encoder(self) -> TextEncoder:
        if self.text_encoder is None:
            kw = {"projection_seed": self.spec.dummy_seed} if self.spec.text_encoder == "minilm" else {}
            self.text_encoder = build_text_encoder(self.spec.text_encoder, self.spec.text_encoder_weights, **kw)
        return self.text_encoder

    # -- diffusion ------------------------------------------------------------------------------
    def diffuse(self, batch: list[EncodedClip], seeds: list[int]) -> torch.Tensor:
        """(B, 2, L, 157) x0 by DDIM around each clip's initial estimate (model rows padded to 4)."""
        noise = SampleNoise(seeds, self.device)
        shape = tuple(batch[0].x_init.shape)
        stack = lambda name: pad_rows(torch.stack([getattr(e, name) for e in batch]))
        x_init, features, bbox = stack("x_init"), stack("image_features"), stack("bbox")
        text = pad_rows(torch.stack([self.empty_text(1)[0] if e.text is None else e.text for e in batch]))

        def denoise(y: torch.Tensor, t: int) -> torch.Tensor:
            return self.denoiser(y, t, features, bbox, text)

        x0 = sample_around(denoise, diffusion_centre(x_init), pad_rows(noise.draw(shape)), self.steps,
                           self.settings.sigma, lambda _: pad_rows(noise.draw(shape)), self.guidance(batch),
                           self.settings.guidance_scale)
        return x0[:len(batch)]

    def empty_text(self, rows: int) -> torch.Tensor:
        """The ControlNet's condition without a caption: the empty-text feature, zeros."""
        return torch.zeros(rows, socialmirror.NUM_PEOPLE, self.config.text_feature_dim, device=self.device)

    def guidance(self, batch: list[EncodedClip]) -> Optional[PairJointGuidance]:
        if not self.settings.guidance_scale:
            return None
        squares = pad_rows(torch.stack([e.clip.squares for e in batch]).to(self.device))
        aux = aux_mask = None
        if any(e.aux_joints is not None for e in batch):
            zeros = torch.zeros(2, self.clip_len, NUM_JOINTS, 3, device=self.device)
            aux = pad_rows(torch.stack([zeros if e.aux_joints is None else e.aux_joints for e in batch]))
            given = torch.tensor([[e.aux_joints is not None] for e in batch], device=self.device)
            aux_mask = pad_rows(given[:, :, None].expand(-1, 2, self.clip_len))
        return PairJointGuidance(self.joints, crop_geometry(squares, batch), GuidanceWeights.of(self.settings), aux, aux_mask)

    # -- bodies ---------------------------------------------------------------------------------
    def bodies(self, x0: torch.Tensor, batch: list[EncodedClip]) -> dict[str, np.ndarray]:
        """(B, 2, L, ...) arrays of the output columns from x0."""
        crops = crop_geometry(torch.stack([e.clip.squares for e in batch]).to(self.device), batch)
        pose, betas, camera = split_estimate(x0)
        rotations = rotation_6d_to_matrix(pose)
        numpy = lambda t: t.float().cpu().numpy()
        return {
            "pose_axis_angle": numpy(matrix_to_axis_angle(rotations).flatten(-2)),
            "pose_6d": numpy(matrix_to_rotation_6d(rotations).flatten(-2)),
            "betas": numpy(betas),
            "translation": numpy(crops.translation(camera)),
            "joints_3d": numpy(estimate_joints(x0, crops, self.joints).flatten(-2)),
        }

    # -- warm-up and provenance -----------------------------------------------------------------
    def warm_up(self) -> None:
        """One backbone chunk, one denoiser call and one body pass, outside any timing."""
        if not backends.first_calls_cost(self.settings.backend, self.device):
            return
        with torch.no_grad():
            size = self.settings.crop_size
            crops = torch.zeros(2, BACKBONE_CHUNK // 2, 3, size, size)
            self.image_features(crops)
            rows = pad_rows(torch.zeros(min(self.settings.batch_size, 4)))
            x = torch.zeros(len(rows), 2, self.clip_len, socialmirror.MOTION_DIM, device=self.device)
            features = torch.zeros(*x.shape[:3], self.config.image_feature_dim, device=self.device)
            bbox = torch.zeros(*x.shape[:3], 3, device=self.device)
            self.denoiser(x, 0, features, bbox, self.empty_text(len(x)))
            rotations = torch.eye(3, device=self.device).expand(2, NUM_JOINTS, 3, 3)
            self.joints(rotations, torch.zeros(2, 10, device=self.device))
            synchronize(self.device)

    def _provenance(self) -> dict:
        s, spec = self.settings, self.spec
        return {
            "model": self.model_name, "weights": self.weights,
            "backbone_weights": weights_description(spec.backbone_weights, spec.dummy_seed),
            "estimator_weights": weights_description(spec.estimator_weights, spec.dummy_seed),
            "body_model": self.body_description,
            "backend": s.backend, "precision": s.precision, "device": self.device.type,
            "sampler": "ddim-around-initial-estimate", "steps": s.steps, "eta": s.eta, "sigma": s.sigma,
            "guidance_scale": s.guidance_scale, "job_seed": s.seed, "engine_version": provenance.engine_version(),
        }


# ----------------------------------------------------------------------------- output


def clip_columns(encoded: EncodedClip, bodies: dict[str, np.ndarray], part: SpanPart, seed: int) -> dict:
    """Columns of a clip's rows: the frames it owns, person 0 then 1 per frame (``bodies``: its
    (2, L, ...) arrays)."""
    clip = encoded.clip
    slots = np.repeat(np.flatnonzero(clip.owned), 2)
    person = np.tile(np.array([0, 1], dtype=np.int8), len(slots) // 2)
    columns = {
        "frame_index": clip.frame_indices[slots], "timestamp_s": clip.timestamps[slots],
        "person": person, "source_frame_index": clip.source_indices[slots],
        "clip_id": np.full(len(slots), clip.index, dtype=np.int32),
        "seed": np.full(len(slots), seed, dtype=np.int64),
        "tracks_source": np.full(len(slots), clip.tracks_source, dtype=object),
        "video_id": np.full(len(slots), part.span.video_id, dtype=object),
        "caption": np.full(len(slots), part.span.caption, dtype=object),
        "estimates": np.full(len(slots), part.source, dtype=object),
    }
    return {**columns, **{name: values[person, slots] for name, values in bodies.items()}}


VECTOR_COLUMNS = {"pose_axis_angle": 72, "pose_6d": 144, "betas": 10, "translation": 3, "joints_3d": 72}

RESULTS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("frame_index", pa.int64()), ("timestamp_s", pa.float64()), ("person", pa.int8()),
    ("source_frame_index", pa.int64()), ("clip_id", pa.int32()),
    *[(name, pa.list_(pa.float32(), width)) for name, width in VECTOR_COLUMNS.items()],
    ("tracks_source", pa.string()), ("caption", pa.string()), ("seed", pa.int64()), ("job_seed", pa.int64()),
    ("model", pa.string()), ("weights", pa.string()), ("backbone_weights", pa.string()),
    ("estimator_weights", pa.string()), ("body_model", pa.string()), ("estimates", pa.string()),
    ("backend", pa.string()), ("precision", pa.string()), ("device", pa.string()), ("sampler", pa.string()),
    ("steps", pa.int32()), ("eta", pa.float32()), ("sigma", pa.float32()), ("guidance_scale", pa.float32()),
    ("engine_version", pa.string()),
])


def results_table(chunks: list[dict], provenance_values: dict) -> pa.Table:
    """One Arrow table from column chunks; provenance columns repeat one value."""
    if not chunks:
        return RESULTS_SCHEMA.empty_table()
    merged = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    rows = len(merged["person"])
    arrays = []
    for f in RESULTS_SCHEMA:
        if f.name in VECTOR_COLUMNS:
            flat = pa.array(np.ascontiguousarray(merged[f.name], dtype=np.float32).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, VECTOR_COLUMNS[f.name]))
        elif f.name in merged:
            values = merged[f.name]
            arrays.append(pa.array(values.tolist() if values.dtype == object else values, f.type))
        else:
            arrays.append(pa.array([provenance_values[f.name]] * rows, f.type))
    return pa.Table.from_arrays(arrays, schema=RESULTS_SCHEMA)
