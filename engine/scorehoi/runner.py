"""Score-guided refinement of human-object estimates (ScoreHOI) for one shard on one device.

``ScoreHOIRefiner`` holds the denoiser (folded by default, ``models.scorehoi.fold_scorehoi``), the
body model at ScoreHOI's 431 vertices (``body_points``), the object templates and the planned
inversion and guided DDIM steps; ``run`` turns a shard's work items into a results table and a
rejected table, and times what it did. Every model call runs on a batch padded to a multiple of
``batching.ROW_QUANTUM`` rows, narrow layers avoid GEMM (``row_invariant``), and no noise is drawn
(eta 0 both ways), so a row's bytes depend on the row alone, not on its batch, shard or worker.

Work items are (estimate, variant): ``guided`` refines with guidance scale rho; ``control`` runs
the same inversion and sampling with rho = 0, which isolates the guidance's effect whatever the
denoiser's weights (``refine --control``, on by default for ``--demo``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable, Optional

import av
import numpy as np
import pyarrow as pa
import torch

from motionfleet.common.bodies import load_body_model, sample_vertex_ids
from motionfleet.common.body_points import BodyPoints
from motionfleet.common.resnet import ResNet50, build_resnet50, normalise
from motionfleet.common.rotations import rotation_6d_to_matrix
from motionfleet.core.errors import RejectedInput, checkpoint_errors
from motionfleet.core.execution.batcher import key_of
from motionfleet.core.io import progress, provenance, rejections
from motionfleet.core.io.inputs import non_finite_rows, open_media, printable
from motionfleet.core.runtime import backends
from motionfleet.core.runtime.batching import ROW_QUANTUM
from motionfleet.core.runtime.row_invariant import rowwise_narrow_linears
from motionfleet.core.runtime.stopwatch import StageClock, Timings, synchronize
from motionfleet.sampling.ddim import plan_strided
from motionfleet.sampling.ddim_invert import plan_inversion
from motionfleet.sampling.schedules import NoiseSchedule
from motionfleet.sampling.score_guidance import refine
from motionfleet.scorehoi import metrics
from motionfleet.scorehoi import model as scorehoi
from motionfleet.scorehoi.fold_cache import folded_denoiser
from motionfleet.scorehoi.hoi import (
    NUM_HUMAN_POINTS,
    NUM_JOINTS,
    ContactMasks,
    DistanceContactPredictor,
    HOIState,
    ObjectBatch,
    PhysicalGuidance,
    object_batch,
    object_sdf,
    pack_state,
    pose_scene,
    surface_samples,
    unpack_state,
)
from motionfleet.scorehoi.objects import ObjectTemplate, get_object
from motionfleet.scorehoi.settings import RefineModelSpec, RefineSettings
from motionfleet.scorehoi.source import VARIANTS, Estimate, EstimateRecord, RefineItem, validate

SCHEDULE = NoiseSchedule(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")  # ScoreHOI: cosine
IMAGE_SIZE = 256  # ScoreHOI's body crop (input_body_shape)
MAX_IMAGE_PIXELS = 8192 * 8192  # a crop's source image; 200 MB as RGB
BODY_POINTS_SEED = 0


def read_image(path: str | Path, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(size, size, 3) uint8 RGB, or RejectedInput for a missing or undecodable file (a local
    regular file only: never a URL, protocol or FIFO)."""
    try:
        with open_media(path, "image_path") as container:
            check_image_size(container, path)
            frame = next(container.decode(video=0))
            return torch.from_numpy(frame.to_ndarray(format="rgb24", width=size, height=size))
    except (av.FFmpegError, OSError, StopIteration, IndexError) as err:
        raise RejectedInput(f"unreadable image {printable(str(path))}: {printable(str(err))}") from err


def check_image_size(container, path: str | Path) -> None:
    """The decoder allocates the size the header states before it reads a pixel: a few hundred
    bytes of PNG can claim 10^8 pixels. Refuse more than ``MAX_IMAGE_PIXELS``."""
    context = container.streams.video[0].codec_context
    if context.width * context.height > MAX_IMAGE_PIXELS:
        raise RejectedInput(f"image {printable(str(path))} is {context.width}x{context.height}: over the limit of "
                            f"{MAX_IMAGE_PIXELS} pixels")


def image_features(estimate: Estimate) -> torch.Tensor:
    """The row's image features: given, or encoded from its image by ``check`` when conditions are used."""
    if estimate.image_features is None:
        raise RuntimeError(f"{estimate.sample_id}: no image features; check() encodes a row's image when conditions are used")
    return estimate.image_features


def geometry_features(template: ObjectTemplate, dim: int) -> torch.Tensor:
    """The geometry condition: the 64 template points, then zeros where the public model reads a
    1024-dim PointNeXt feature (not public), cut or padded to ``dim``. The denoiser's output does
    not depend on it (``scorehoi.model``: attention over one key); it only feeds the unfolded reference."""
    points = torch.from_numpy(template.points).flatten()
    return torch.cat([points, torch.zeros(max(dim - len(points), 0))])[:dim]


def padded(items: list, quantum: int = ROW_QUANTUM) -> list:
    """Repeat the last item to a multiple of ``quantum`` (``batching.pad_rows`` for lists)."""
    return items + items[-1:] * (-len(items) % quantum)


@dataclass
class RoundLog:
    """Per round: L_P of x0^n under round n's masks, and the mask sizes (Algorithm 1)."""

    losses: list = field(default_factory=list)  # (B,) tensors, one per round, then the final one
    contacts: list = field(default_factory=list)  # (B,) counts of human contact points
    floor_contacts: list = field(default_factory=list)
    masks: list = field(default_factory=list)  # ContactMasks per round


def load_denoiser(spec: RefineModelSpec, folded: bool, device: torch.device) -> tuple[torch.nn.Module, str]:
    """(denoiser on ``device``, weights description): folded where it runs (``fold_cache``), or the unfolded reference."""
    if folded:
        return folded_denoiser(spec.checkpoint, spec.preset, spec.dummy_seed, device)
    model, weights = scorehoi.load_model(spec.checkpoint, spec.preset, spec.dummy_seed)
    return model.to(device), weights


class ScoreHOIRefiner:
    def __init__(self, spec: RefineModelSpec, settings: RefineSettings):
        self.spec, self.settings = spec, settings
        self.device = torch.device(settings.device)
        with checkpoint_errors(spec.checkpoint, "scorehoi"):
            denoiser, self.weights = load_denoiser(spec, settings.folded, self.device)
        self.config = scorehoi.PRESETS[spec.preset]
        self.model = rowwise_narrow_linears(denoiser)
        self.denoiser = backends.make_backend(settings.backend, self.model, settings.precision, self.device,
                                              weights=self.weights)
        body = load_body_model("smplh", spec.body_models, device=self.device)
        ids = sample_vertex_ids(body.template_vertices, NUM_HUMAN_POINTS, seed=BODY_POINTS_SEED)
        self.points = BodyPoints(body, ids).to(self.device)
        self.mesh = BodyPoints(body, torch.arange(len(body.template_vertices))).to(self.device)  # metrics
        self.inversion = plan_inversion(SCHEDULE, settings.tau, settings.stride)
        self.steps = plan_strided(SCHEDULE, settings.tau, settings.stride)
        self.predictor = DistanceContactPredictor(settings.contact_distance, settings.floor_distance)
        self.body_description = spec.body_description()
        self._objects: dict[str, tuple[ObjectTemplate, np.ndarray]] = {}  # by the rows' object names
        self._bad_objects: dict[str, str] = {}  # name -> why it is refused
        self._image_encoder: Optional[ResNet50] = None

    # -- validation --------------------------------------------------------------------------
    def check(self, record: EstimateRecord) -> Estimate:
        """The record as tensors with its object loaded and image read, or RejectedInput."""
        estimate = validate(record, self.config.condition_dim)
        self.template(estimate.object, estimate.object_file)
        if estimate.image_path is not None:
            image = read_image(estimate.image_path)
            if self.uses_conditions:
                estimate.image_features = self.encode_image(image)
        return estimate

    def template(self, name: str, file: Optional[Path] = None) -> ObjectTemplate:
        """The object a row names (``file``: its mesh), loaded once per name, as is a refusal."""
        if name in self._bad_objects:
            raise RejectedInput(self._bad_objects[name])
        if name not in self._objects:
            try:
                template = get_object(file or name)
            except RejectedInput as err:
                self._bad_objects[name] = err.reason
                raise
            self._objects[name] = (template, surface_samples(template))
        return self._objects[name][0]

    @property
    def uses_conditions(self) -> bool:
        """Only the unfolded reference reads image and geometry features (they do not change its output)."""
        return not self.settings.folded

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        if self.config.condition_dim != 2048:
            raise RejectedInput(f"image_path gives 2048 ResNet-50 features; the '{self.spec.preset}' denoiser "
                                f"takes {self.config.condition_dim}: give image_features instead")
        if self._image_encoder is None:
            self._image_encoder = build_resnet50(self.spec.image_encoder_weights, seed=self.spec.dummy_seed)
        with torch.inference_mode():
            return self._image_encoder.features(normalise(image[None]))[0]

    # -- batching across shards (core.execution.batcher) ---------------------------------------
    @property
    def batch_items(self) -> int:
        return self.settings.batch_size

    @staticmethod
    def item_key(item: RefineItem) -> tuple[str, int]:
        return item.record.sample_id, VARIANTS.index(item.variant)

    @staticmethod
    def row_keys(table: pa.Table) -> list[Hashable]:
        """(sample_id, variant index): a results row names its variant, a rejected row its index."""
        if "variant" in table.column_names:
            return [(i, VARIANTS.index(v)) for i, v in zip(table.column("sample_id").to_pylist(),
                                                            table.column("variant").to_pylist())]
        return key_of("sample_id", "repeat")(table)

    # -- running -----------------------------------------------------------------------------
    def run(self, items: tuple[RefineItem, ...]) -> tuple[pa.Table, pa.Table, Timings]:
        rows, rejected, timings = [], [], Timings()
        size = self.settings.batch_size
        items = tuple(items)  # a streamed shard (shards.RangeItems) reads its rows once
        for variant in VARIANTS:
            group = [item for item in items if item.variant == variant]
            for start in range(0, len(group), size):
                batch_rows, batch_rejected, batch_timings = self.run_batch(group[start : start + size], variant)
                progress.items_done(len(group[start : start + size]))
                rows += batch_rows
                rejected += batch_rejected
                timings.add(batch_timings)
        return (pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA),
                rejections.rejected_table(rejected, "sample_id"), timings)

    def run_batch(self, items: list[RefineItem], variant: str) -> tuple[list, list, Timings]:
        synchronize(self.device)
        started, start = time.time(), time.perf_counter()
        clock = StageClock(self.device)
        accepted, rejected, records = [], [], []
        for item in items:
            try:
                accepted.append(self.check(item.record))
                records.append(item.record)
            except RejectedInput as err:
                rejected.append(rejected_row(item.record, variant, err.reason))
        rows = []
        if accepted:
            rho = self.settings.guidance_scale if variant == "guided" else 0.0
            batch = padded(accepted)
            x, log, objects = self.refine_batch(batch, rho, clock)
            not_finite = set(non_finite_rows(x[:len(accepted)]))  # never a result, and no metrics of NaN
            with clock.stage("metrics"):
                quality = self.quality(batch, x, log.masks[0], objects, len(accepted), not_finite)
            rows = [self.row(e, variant, rho, x[i], log, quality[i], i) for i, e in enumerate(accepted)
                    if i not in not_finite]
            rejected += [rejected_row(records[i], variant, "refined state is not finite (NaN or infinite values)")
                         for i in sorted(not_finite)]
        synchronize(self.device)
        seconds = time.perf_counter() - start - clock.seconds["metrics"]
        for row in rows:
            row.update(batch_size=len(accepted), batch_seconds=seconds)
        stages = {f"{name}_s": value for name, value in clock.seconds.items() if name != "metrics"}
        timing = {"variant": variant, "size": len(accepted), "start": started, "seconds": seconds, **stages}
        return rows, rejected, Timings({"metrics": clock.seconds["metrics"]}, {}, [timing] if accepted else [])

    def object_batch(self, estimates: list[Estimate]) -> ObjectBatch:
        return object_batch([e.object for e in estimates], self._objects, self.device)

    def conditions(self, estimates: list[Estimate]) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(image features, geometry features) for the unfolded reference; the folded model takes none."""
        if not self.uses_conditions:
            return None, None
        image = torch.stack([image_features(e) for e in estimates])
        geometry = torch.stack([geometry_features(self.template(e.object), self.config.geometry_input_dim)
                                for e in estimates])
        return image.to(self.device), geometry.to(self.device)

    def denoise_fn(self, conditions: tuple, clock: StageClock):
        """``denoise(x, t) -> eps`` over the batch's conditions, timed as the 'denoiser' stage."""

        @torch.inference_mode()
        def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
            with clock.stage("denoiser"):
                return self.denoiser(x, t, *conditions)

        return denoise

    def refine_batch(self, estimates: list[Estimate], rho: float, clock: StageClock):
        """(refined x (B, 331), round log, objects) for a padded batch."""
        objects = self.object_batch(estimates)
        x0 = torch.stack([e.x for e in estimates]).to(self.device)
        log = RoundLog()
        weights = self.settings.weights

        def guidance_for_round(_: int, x: torch.Tensor) -> PhysicalGuidance:
            with clock.stage("body"), torch.no_grad():
                scene = pose_scene(x, self.points, objects)
            masks = self.predictor(scene, objects)
            guidance = PhysicalGuidance(self.points, objects, masks, weights, clock)
            log.masks.append(masks)
            log.losses.append(guidance.loss(x))
            log.contacts.append(masks.human.sum(1))
            log.floor_contacts.append(masks.floor.sum(1))
            return guidance

        x = refine(self.denoise_fn(self.conditions(estimates), clock), x0, self.inversion, self.steps,
                   guidance_for_round, self.settings.rounds, rho)
        log.losses.append(PhysicalGuidance(self.points, objects, log.masks[-1], weights, clock).loss(x))
        return x, log, objects

    # -- metrics -----------------------------------------------------------------------------
    def quality(self, estimates: list[Estimate], refined: torch.Tensor, first_masks: ContactMasks,
                objects: ObjectBatch, count: int, skip: frozenset | set = frozenset()) -> list[dict]:
        """Per row (the first ``count``): penetration depth and contact distance before and after,
        and for rows with ground truth, Chamfer distances and contact P / R / F (``metrics``).
        Contact distance is measured at the ground truth's contact vertices where there is ground
        truth, else at the points the first round's contact mask marked. Rows in ``skip`` get none."""
        initial = torch.stack([e.x for e in estimates]).to(self.device)
        truth = torch.stack([e.x if e.ground_truth is None else e.ground_truth for e in estimates]).to(self.device)
        before, after = self.posed_meshes(initial, objects), self.posed_meshes(refined, objects)
        target = self.posed_meshes(truth, objects)
        out: list[dict] = []
        for i in range(count):
            if i in skip:
                out.append({})
                continue
            has_truth = estimates[i].ground_truth is not None
            true_contacts = contact_map(target, i)
            chosen = true_contacts.nonzero()[:, 0] if has_truth else self.points.vertex_ids[first_masks.human[i] > 0]
            row = {}
            for label, meshes in (("before", before), ("after", after)):
                row.update(plausibility(meshes, i, chosen, label))
                if has_truth:
                    row.update(accuracy(meshes, target, true_contacts, i, label))
            out.append(row)
        return out

    def posed_meshes(self, x: torch.Tensor, objects: ObjectBatch) -> "PosedMeshes":
        """All body vertices, the placed object surface and the vertices' SDF, for metrics."""
        with torch.no_grad():
            scene = pose_scene(x, self.points, objects)
            vertices = self.mesh(rotation_6d_to_matrix(unpack_state(x).pose_6d), unpack_state(x).betas)
            surface = objects.surface @ scene.rotation.transpose(1, 2) + scene.translation[:, None]
            sdf = object_sdf(vertices, scene.rotation, scene.translation, objects)
        return PosedMeshes(vertices, surface, sdf)

    # -- output ------------------------------------------------------------------------------
    def row(self, estimate: Estimate, variant: str, rho: float, x: torch.Tensor, log: RoundLog,
            quality: dict, i: int) -> dict:
        state = unpack_state(x[None])
        final_mask = log.masks[-1].human[i] > 0
        return {
            "sample_id": estimate.sample_id, "variant": variant, "object": estimate.object,
            "pose_6d": state.pose_6d[0].flatten().tolist(), "betas": state.betas[0].tolist(),
            "object_rotation_6d": state.object_rotation_6d[0].tolist(),
            "object_translation": state.object_translation[0].tolist(),
            "round_losses": [float(loss[i]) for loss in log.losses],
            "contact_points_per_round": [int(count[i]) for count in log.contacts],
            "floor_contact_points_per_round": [int(count[i]) for count in log.floor_contacts],
            "contact_vertex_ids": self.points.vertex_ids[final_mask].tolist(),
            **{name: quality.get(name) for name in QUALITY_COLUMNS},
            "guidance_scale": rho, **self.provenance(),
        }

    def provenance(self) -> dict:
        s = self.settings
        return {
            "model": f"scorehoi/{self.spec.preset}", "weights": self.weights, "folded": s.folded,
            "body_model": self.body_description, "backend": s.backend, "precision": s.precision,
            "device": self.device.type, **s.sampler(), "contact_distance_m": s.contact_distance,
            "engine_version": provenance.engine_version(),
        }

    def warm_up(self) -> None:
        """One denoiser call and one guidance evaluation on a rest-pose batch, untimed."""
        if not backends.first_calls_cost(self.settings.backend, self.device):
            return
        batch = ROW_QUANTUM
        self.template("box")
        objects = object_batch(["box"] * batch, self._objects, self.device)
        x = rest_state(batch).to(self.device)
        masks = self.predictor(pose_scene(x, self.points, objects), objects)
        PhysicalGuidance(self.points, objects, masks, self.settings.weights)(x)
        conditions: tuple[Optional[torch.Tensor], Optional[torch.Tensor]] = (None, None)
        if self.uses_conditions:
            conditions = (torch.zeros(batch, self.config.condition_dim, device=self.device),
                          torch.zeros(batch, self.config.geometry_input_dim, device=self.device))
        self.denoise_fn(conditions, StageClock(self.device))(x, self.steps[0].t)
        synchronize(self.device)


def rejected_row(record: EstimateRecord, variant: str, reason: str) -> dict:
    """The row as given (its columns as JSON); ``repeat`` is the variant's index."""
    return rejections.rejected_row("sample_id", record.sample_id, VARIANTS.index(variant), dict(record.values),
                                   reason)


def rest_state(batch: int) -> torch.Tensor:
    """(batch, 331) states with every rotation the identity and everything else zero."""
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    return pack_state(HOIState(identity.repeat(batch, NUM_JOINTS, 1), identity.repeat(batch, 1),
                               torch.zeros(batch, 3), torch.zeros(batch, 10)))


@dataclass
class PosedMeshes:
    vertices: torch.Tensor  # (B, V, 3) all body vertices
    surface: torch.Tensor  # (B, S, 3) object surface samples
    sdf: torch.Tensor  # (B, V) object SDF at the vertices, +inf outside its grid


def contact_map(meshes: PosedMeshes, i: int) -> torch.Tensor:
    """(V,) vertices within 5 cm of the object or inside it (the paper's contact definition)."""
    return metrics.contact_mask(metrics.surface_gap(meshes.vertices[i], meshes.surface[i], meshes.sdf[i] < 0))


def plausibility(meshes: PosedMeshes, i: int, contact_vertex_ids: torch.Tensor, label: str) -> dict:
    """Penetration depth over all vertices; contact distance: the mean distance of the chosen
    vertices to the object's surface (off the surface either way, outside or inside)."""
    distance = metrics.nearest_distances(meshes.vertices[i, contact_vertex_ids], meshes.surface[i])
    return {f"penetration_depth_m_{label}": metrics.penetration_depth(meshes.sdf[i]),
            f"contact_distance_m_{label}": nan_to_none(metrics.contact_distance(distance))}


def accuracy(meshes: PosedMeshes, target: PosedMeshes, true_contacts: torch.Tensor, i: int, label: str) -> dict:
    """Chamfer distances after Procrustes, contact P / R / F at 5 cm, against the ground truth."""
    cd_human, cd_object = metrics.hoi_chamfer_distances(meshes.vertices[i], meshes.surface[i],
                                                        target.vertices[i], target.surface[i])
    precision, recall, fscore = metrics.precision_recall_fscore(contact_map(meshes, i), true_contacts)
    values = {"chamfer_human_cm": cd_human, "chamfer_object_cm": cd_object, "contact_precision": precision,
              "contact_recall": recall, "contact_fscore": fscore}
    return {f"{name}_{label}": nan_to_none(value) for name, value in values.items()}


def nan_to_none(value: float) -> Optional[float]:
    return None if math.isnan(value) else value


QUALITY_NAMES = ("penetration_depth_m", "contact_distance_m", "chamfer_human_cm", "chamfer_object_cm",
                 "contact_precision", "contact_recall", "contact_fscore")
QUALITY_COLUMNS = tuple(f"{name}_{label}" for name in QUALITY_NAMES for label in ("before", "after"))

RESULTS_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("variant", pa.string()), ("object", pa.string()),
    ("pose_6d", pa.list_(pa.float32(), NUM_JOINTS * 6)), ("betas", pa.list_(pa.float32(), 10)),
    ("object_rotation_6d", pa.list_(pa.float32(), 6)), ("object_translation", pa.list_(pa.float32(), 3)),
    ("round_losses", pa.list_(pa.float32())), ("contact_points_per_round", pa.list_(pa.int32())),
    ("floor_contact_points_per_round", pa.list_(pa.int32())), ("contact_vertex_ids", pa.list_(pa.int32())),
    *[(name, pa.float64()) for name in QUALITY_COLUMNS],
    ("batch_size", pa.int32()), ("batch_seconds", pa.float64()),
    ("guidance_scale", pa.float32()), ("model", pa.string()), ("weights", pa.string()), ("folded", pa.bool_()),
    ("body_model", pa.string()), ("backend", pa.string()), ("precision", pa.string()), ("device", pa.string()),
    ("sampler", pa.string()), ("rounds", pa.int32()), ("tau", pa.int32()), ("stride", pa.int32()),
    ("eta", pa.float32()), ("contact_distance_m", pa.float32()), ("engine_version", pa.string()),
])
TIMING_COLUMNS = ("batch_size", "batch_seconds")
