"""Video corpus -> two-person SMPL motion with SocialMirror, one shard on one device (no Ray here).

Plan (driver, before any work): every video is probed and cut into shards of at most
``clips_per_shard`` clips (``video-<n>-clips-<first clip>``; the last shard of a video takes every
clip from its first on, so a wrong duration in the container only changes the last shard's size).
A video that cannot be probed gets one shard, which the worker rejects with the reason.

Pipeline (worker, per shard)::

    CPU stage:      probe -> seek to the shard's first frame -> decode (PyAV, resampled to the
                    target fps) -> clips -> person crops                    (decode)
                        | at most ``prefetch_clips`` clips ahead (``core.io.prefetch.stream``: a
                        | thread of the worker, or a one-CPU Ray task anywhere on the cluster)
    model thread:   ResNet-50 + projection + regression head per clip      (backbone)
                    DDIM around the initial estimate, B clips per call      (diffusion)
                    6D -> matrices -> axis-angle, SMPL joints, translation  (body)
                    Arrow columns of the frames each clip owns              (rows)

Memory is bounded by the stream, one batch of clip features and one shard's rows (at most
``clips_per_shard`` x clip_len x 2 rows), never by the video or corpus size. Every output frame
is owned by exactly one clip (``video.iter_clips``), so every (video, person, frame) is written
once; a shard is committed whole (``sink``), so a rerun redoes only uncommitted shards.

A shard whose video is missing, empty, corrupt, audio-only, too large, truncated (a decode
error, or decoding ending before the stated duration) or whose tracks or upstream estimates
are bad writes no rows and one rejected row with the reason.

Determinism: each clip's noise comes from (job seed, video id, clip index); the backbone runs in
chunks of ``BACKBONE_CHUNK`` crops of one torch thread each and every other model call pads its
rows to a multiple of 4 (``batching``), so the bytes do not depend on the batch size, shard size,
worker count or thread count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from typing import Optional

import numpy as np
import pyarrow as pa
import torch

from motionfleet.common.bodies import find_model_file, load_body_model
from motionfleet.common.resnet import build_resnet50
from motionfleet.common.rotations import matrix_to_axis_angle, matrix_to_rotation_6d, rotation_6d_to_matrix
from motionfleet.common.text import TextEncoder, build_text_encoder
from motionfleet.common.weights import weights_description
from motionfleet.core.errors import RejectedInput, checkpoint_errors
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
    cam_crop_to_full,
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


def hmr2_estimator(weights: Optional[str], image_feature_dim: int, device: torch.device) -> Optional[HMR2Estimator]:
    """HMR 2.0 as the initial estimator when ``weights`` is its released checkpoint (the preset whose
    features the denoiser takes); None: the ResNet-50 head (``initial_estimate``)."""
    if weights is None or not hmr2.is_released_file(weights):
        return None
    return HMR2Estimator(hmr2.load_model(weights, hmr2.preset_feeding(image_feature_dim)).to(device))


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


def load_smpl(body_models: Optional[str]):
    """(SMPL body model, how results name it)."""
    if body_models is None:
        return load_body_model("smpl", cached_synthetic_body_models("smpl")), "synthetic smpl, seed 0"
    return load_body_model("smpl", body_models), f"sha256:{content_sha256(find_model_file('smpl', body_models))}"


class Reconstructor:
    """Models of one device and the per-shard pipeline; ``run(items)`` is the engine's worker call.

    ``run`` may be called from several threads at once, one shard each: each shard's clips come
    from its own CPU stage (``prefetch.stream``), and the model calls take turns under
    ``model_lock``. An executor whose CPU stages run elsewhere runs several shards per worker so
    that several videos decode in parallel for one model."""

    concurrent_shards = True

    def __init__(self, spec: ReconstructSpec, settings: ReconstructSettings):
        self.spec, self.settings = spec, settings
        self.device = torch.device(settings.device)
        self.model_lock = threading.Lock()
        with checkpoint_errors(spec.checkpoint, "socialmirror"):
            model, self.weights = socialmirror.load_model(spec.checkpoint, spec.preset, spec.dummy_seed)
        self.model_name = model_name(spec)
        self.model = model.to(self.device)
        self.config = model.config
        self.backbone = build_resnet50(spec.backbone_weights, spec.dummy_seed).to(self.device)
        self.backbone_pool = backbone_pool(self.device)
        self.hmr2 = hmr2_estimator(spec.estimator_weights, self.config.image_feature_dim, self.device)
        head_weights = None if self.hmr2 else spec.estimator_weights
        self.estimator = build_initial_estimator(self.config.image_feature_dim, head_weights, spec.dummy_seed).to(self.device)
        body, self.body_description = load_smpl(spec.body_models)
        self.joints = SMPLJoints(body.to(self.device))
        self.steps = ddim.plan(closeint_config(settings.steps, settings.eta))
        self.upstream = FrameEstimates(spec.estimates, self.config.image_feature_dim) if spec.estimates else None
        self.text_encoder: Optional[TextEncoder] = None  # built by the first caption
        self._text_cache: dict[str, torch.Tensor] = {}
        self.denoiser = backends.make_backend(settings.backend, self.model, settings.precision, self.device,
                                              weights=self.weights)
        self.provenance = self._provenance()

    @property
    def clip_len(self) -> int:
        return self.config.frames

    # -- one shard ------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, items: tuple[ClipSlot, ...]) -> tuple[pa.Table, pa.Table, Timings]:
        start = time.perf_counter()
        span = slots_span(items)
        timings = Timings(dict.fromkeys(STAGES, 0.0), {"frames": 0, "clips": 0, "clips_decoded_elsewhere": 0})
        rejected: list[dict] = []
        try:
            columns = self.reconstruct_span(span, timings, rejected)
        except RejectedInput as err:
            where = {"path": span.path, "first_clip": span.first_clip, "end_clip": span.end_clip}
            columns, rejected = [], [rejections.rejected_row("video_id", span.video_id, 0, where, err.reason)]
        clock = StageClock(self.device)
        with clock.stage("rows"):
            results = results_table(columns, self.provenance)
        timings.seconds["rows"] += clock.seconds["rows"]
        timings.counts["frames"] = results.num_rows // 2
        timings.seconds["shard"] = time.perf_counter() - start
        return results, rejections.rejected_table(rejected, "video_id"), timings

    def reconstruct_span(self, span: ClipSpan, timings: Timings, rejected: list[dict]) -> list[dict]:
        """Column chunks of the span's rows, a rejected row in ``rejected`` for each clip where the
        tracked pair is lost; raises RejectedInput for a bad video."""
        if span.error:
            raise RejectedInput(span.error)
        estimates = self.upstream.for_video(span.video_id) if self.upstream else None
        estimator = "hmr2" if self.hmr2 else "resnet50"
        crops = estimator if estimates is None or "image_features" not in estimates.values else "none"
        source = estimator if estimates is None else "upstream"
        clock = StageClock(self.device)
        with self.model_lock:
            text = self.text_feature(span.caption)
        columns, pending = [], []
        decode = partial(decoded_clips, span, self.clip_len, self.settings, crops)
        with prefetch.stream(decode, self.settings.prefetch_clips) as clips:
            for decoded in clips:
                timings.seconds["decode"] += decoded.decode_s
                timings.counts["clips"] += 1
                timings.counts["clips_decoded_elsewhere"] += int(clips.remote)
                if decoded.lost:
                    rejected.append(lost_pair_row(span, decoded))
                    progress.items_done(1)
                    continue
                pending.append(decoded)
                if len(pending) == self.settings.batch_size:
                    columns.append(self.model_batch(pending, estimates, text, span, source, clock, timings))
                    pending = []
            if pending:
                columns.append(self.model_batch(pending, estimates, text, span, source, clock, timings))
            timings.seconds["decode_wait"] = clips.wait_s
        for stage, seconds in clock.seconds.items():
            timings.seconds[stage] += seconds
        return columns

    def model_batch(self, clips: list[DecodedClip], estimates: Optional[VideoEstimates], text: Optional[torch.Tensor],
                    span: ClipSpan, source: str, clock: StageClock, timings: Timings) -> dict:
        """Backbone, diffusion, bodies and row columns of a batch of one shard's clips, and its
        record in ``timings.batches``. Shards run at once (``concurrent_shards``) take turns at the
        models, a batch at a time; the record's seconds are its turn's."""
        with self.model_lock:
            started, began = time.time(), time.perf_counter()
            with clock.stage("backbone"):
                encoded = [self.encode(clip, estimates, text) for clip in clips]
            columns = self.finish(encoded, span, source, clock)
            timings.batches.append({"size": len(clips), "start": started, "seconds": time.perf_counter() - began})
            return columns

    def finish(self, batch: list[EncodedClip], span: ClipSpan, source: str, clock: StageClock) -> dict:
        """Diffusion, bodies and row columns of a batch of clips."""
        seeds = [sample_seed(self.settings.seed, span.video_id, e.clip.index) for e in batch]
        with clock.stage("diffusion"):
            x0 = self.diffuse(batch, seeds)
        with clock.stage("body"):
            bodies = self.bodies(x0, batch)
        not_finite = sorted({clip for values in bodies.values() for clip in non_finite_rows(values)})
        if not_finite:  # e.g. upstream values that overflow: the shard writes no NaN
            raise RejectedInput(f"non_finite: clips {[batch[i].clip.index for i in not_finite]} gave NaN or "
                                f"infinite outputs")
        with clock.stage("rows"):
            columns = batch_columns(batch, bodies, span, seeds, source)
        progress.items_done(len(batch))
        return columns

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
        text = stack("text") if batch[0].text is not None else self.empty_text(len(x_init))

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
        first = batch[0].clip
        squares = pad_rows(torch.stack([e.clip.squares for e in batch]).to(self.device))
        aux = aux_mask = None
        if any(e.aux_joints is not None for e in batch):
            zeros = torch.zeros(2, self.clip_len, NUM_JOINTS, 3, device=self.device)
            aux = pad_rows(torch.stack([zeros if e.aux_joints is None else e.aux_joints for e in batch]))
            given = torch.tensor([[e.aux_joints is not None] for e in batch], device=self.device)
            aux_mask = pad_rows(given[:, :, None].expand(-1, 2, self.clip_len))
        return PairJointGuidance(self.joints, CropGeometry(squares, first.width, first.height),
                                 GuidanceWeights.of(self.settings), aux, aux_mask)

    # -- bodies ---------------------------------------------------------------------------------
    def bodies(self, x0: torch.Tensor, batch: list[EncodedClip]) -> dict[str, np.ndarray]:
        """(B, 2, L, ...) arrays of the output columns from x0."""
        first = batch[0].clip
        squares = torch.stack([e.clip.squares for e in batch]).to(self.device)
        crops = CropGeometry(squares, first.width, first.height)
        pose, betas, camera = split_estimate(x0)
        rotations = rotation_6d_to_matrix(pose)
        numpy = lambda t: t.float().cpu().numpy()
        return {
            "pose_axis_angle": numpy(matrix_to_axis_angle(rotations).flatten(-2)),
            "pose_6d": numpy(matrix_to_rotation_6d(rotations).flatten(-2)),
            "betas": numpy(betas),
            "translation": numpy(cam_crop_to_full(camera, squares, first.width, first.height)),
            "joints_3d": numpy(estimate_joints(x0, crops, self.joints).flatten(-2)),
        }

    # -- warm-up and provenance -----------------------------------------------------------------
    def warm_up(self) -> None:
        """One backbone chunk, one denoiser call and one body pass, outside any timing."""
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


def batch_columns(batch: list[EncodedClip], bodies: dict[str, np.ndarray], span: ClipSpan, seeds: list[int],
                  source: str) -> dict:
    """Columns of the rows of a batch: each clip's owned frames, person 0 then 1 per frame."""
    parts = []
    for b, (encoded, seed) in enumerate(zip(batch, seeds)):
        clip = encoded.clip
        slots = np.repeat(np.flatnonzero(clip.owned), 2)
        person = np.tile(np.array([0, 1], dtype=np.int8), len(slots) // 2)
        part = {
            "frame_index": clip.frame_indices[slots], "timestamp_s": clip.timestamps[slots],
            "person": person, "source_frame_index": clip.source_indices[slots],
            "clip_id": np.full(len(slots), clip.index, dtype=np.int32),
            "seed": np.full(len(slots), seed, dtype=np.int64),
            "tracks_source": np.full(len(slots), clip.tracks_source, dtype=object),
        }
        for name, values in bodies.items():
            part[name] = values[b][person, slots]
        parts.append(part)
    columns = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    columns["video_id"] = np.full(len(columns["person"]), span.video_id, dtype=object)
    columns["caption"] = np.full(len(columns["person"]), span.caption, dtype=object)
    columns["estimates"] = np.full(len(columns["person"]), source, dtype=object)
    return columns


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
