"""Two-person reconstruction protocol for socialmirror: reconstruct videos with ground truth,
then MPJPE, PA-MPJPE, interaction error and penetration (``socialmirror/metrics.py``).

Ground truth: ``DIR/ground_truth.parquet`` beside the corpus ``DIR/videos/``, one row per video,
output frame and person, in the conventions of reconstruct's own output (docs/reconstruct.md):

| column | type | |
|---|---|---|
| ``video_id`` | string | the video's path relative to ``DIR/videos`` (as the job names it) |
| ``frame_index`` | int | output frame index at ``--fps`` |
| ``person`` | int | 0 or 1, the same person as the track file's |
| ``pose_axis_angle`` | list<float> (72) | 24 SMPL joint rotations, root first |
| ``betas`` | list<float> (10) | |
| ``translation`` | list<float> (3) | camera frame, metres |

Hi4D and CHI3D convert to it: their per-frame SMPL fits of the two people (global orientation and
body pose -> ``pose_axis_angle``, betas, translation) expressed in the camera of the video used;
frames are numbered at the rate the videos are resampled to.

Each (video, frame) with both people in the result and the ground truth is scored: MPJPE (pelvis
aligned) and PA-MPJPE per person, interaction error over the pair's joint distances, and
penetration (mm, summed depth of each body's vertices inside the other) of the reconstruction.
Frames are added in (video, frame) order. Replication r reconstructs with job seed
blake2b(seed, "replication", r), so each clip's start noise comes from (that seed, video, clip).
Without ``--dataset``: reconstruct's three demo videos, and a synthetic ground truth (the two
people standing 2 m apart in rest pose, 4 m from the camera) that tests the pipeline, not quality.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from motionfleet.common.rotations import axis_angle_to_matrix
from motionfleet.core.errors import MissingFile
from motionfleet.core.jobfolder.sink import read_results
from motionfleet.core.options import UsageError
from motionfleet.core.runtime.seeding import sample_seed
from motionfleet.socialmirror import metrics

PROTOCOL = "pair-reconstruction"
MAIN_METRIC = "mpjpe_mm"
LOWER_IS_BETTER = {"mpjpe_mm": True, "pa_mpjpe_mm": True, "interaction_mm": True, "penetration_mm": True}
GROUND_TRUTH = "ground_truth.parquet"
FRAMES_PER_BATCH = 64  # frames posed at once: 64 pairs of SMPL bodies in float64 take about 21 MB
GT_SCHEMA = pa.schema([("video_id", pa.string()), ("frame_index", pa.int32()), ("person", pa.int32()),
                       ("pose_axis_angle", pa.list_(pa.float32())), ("betas", pa.list_(pa.float32())),
                       ("translation", pa.list_(pa.float32()))])


def replication_seed(seed: int, replication: int) -> int:
    return sample_seed(seed, "replication", replication) & 0x7FFFFFFF


def pairs_by_frame(rows: list[dict]) -> dict[tuple[str, int], dict[int, dict]]:
    out: dict[tuple[str, int], dict[int, dict]] = {}
    for row in rows:
        out.setdefault((row["video_id"], row["frame_index"]), {})[row["person"]] = row
    return out


class PairBodies:
    """SMPL (the job's body model): parameters of both people -> joints and vertices, float64, and
    the hierarchy over its faces that penetration's winding numbers descend."""

    def __init__(self, body_models: Optional[str]):
        from motionfleet.socialmirror.runner import load_smpl

        body, self.description = load_smpl(body_models)
        self.body = body.double()  # a frame's float32 vertices moved ~5e-7 m with the frames posed beside it
        self.surface = metrics.face_tree(self.body.faces, self.body.template_vertices)

    @torch.no_grad()
    def pose(self, frames: list[dict[int, dict]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(F, 2, J, 3) joints and (F, 2, V, 3) vertices of both people of each frame."""
        people = [frame[p] for frame in frames for p in (0, 1)]
        column = lambda name: torch.tensor(np.stack([row[name] for row in people]), dtype=torch.float64)
        rotations = axis_angle_to_matrix(column("pose_axis_angle").reshape(len(people), 24, 3))
        out = self.body.forward_rotmats(rotations, column("betas"), column("translation"))
        return out.joints.reshape(len(frames), 2, *out.joints.shape[1:]), out.vertices.reshape(len(frames), 2, *out.vertices.shape[1:])


def frames_metrics(bodies: PairBodies, predicted: list[dict[int, dict]], truth: list[dict[int, dict]]) -> dict[str, float]:
    """Each metric's mean over the frames (each frame's pair given as {person: row})."""
    pred_joints, pred_vertices = bodies.pose(predicted)
    true_joints, _ = bodies.pose(truth)
    people = lambda joints: joints.reshape(-1, *joints.shape[2:])  # (F * 2, J, 3)
    return {"mpjpe_mm": metrics.mpjpe(people(pred_joints), people(true_joints)),
            "pa_mpjpe_mm": metrics.pa_mpjpe(people(pred_joints), people(true_joints)),
            "interaction_mm": metrics.interaction_error(pred_joints, true_joints),
            "penetration_mm": metrics.pair_penetration(pred_vertices[:, 0], pred_vertices[:, 1], bodies.surface)}


def replication_metrics(results: list[dict], truth: dict, bodies: PairBodies) -> tuple[dict[str, float], int]:
    """Mean over the scored frames of each metric, frames in (video, frame) order, posed
    ``FRAMES_PER_BATCH`` at a time."""
    predicted = pairs_by_frame(results)
    scored = [key for key in sorted(set(predicted) & set(truth)) if len(predicted[key]) == 2 and len(truth[key]) == 2]
    if not scored:
        raise ValueError("no frame has both people in the reconstruction and the ground truth: check video_id and "
                         "frame_index against the reconstruct results")
    totals = dict.fromkeys(LOWER_IS_BETTER, 0.0)
    for i in range(0, len(scored), FRAMES_PER_BATCH):
        batch = scored[i:i + FRAMES_PER_BATCH]
        for name, mean in frames_metrics(bodies, [predicted[k] for k in batch], [truth[k] for k in batch]).items():
            totals[name] += mean * len(batch)
    return {name: total / len(scored) for name, total in totals.items()}, len(scored)


def synthetic_ground_truth(results: list[dict], path: Path) -> Path:
    """Every reconstructed (video, frame): two people in rest pose, 2 m apart, 4 m away."""
    keys = sorted(pairs_by_frame(results))
    rows = [{"video_id": v, "frame_index": f, "person": p, "pose_axis_angle": [0.0] * 72, "betas": [0.0] * 10,
             "translation": [-1.0 + 2 * p, 0.0, 4.0]} for v, f in keys for p in (0, 1)]
    pq.write_table(pa.Table.from_pylist(rows, schema=GT_SCHEMA), path)
    return path


def read_ground_truth(path: Path) -> dict:
    if not path.is_file():
        raise MissingFile(f"{path} is missing: socialmirror's protocol reads per-frame SMPL ground truth beside the videos "
                          "(docs/evaluate.md, socialmirror)")
    table = pq.read_table(path)
    missing = sorted(set(GT_SCHEMA.names) - set(table.column_names))
    if missing:
        raise ValueError(f"{path} lacks columns {', '.join(missing)}")
    return pairs_by_frame(table.select(GT_SCHEMA.names).to_pylist())


def evaluate(out_dir: str | Path, settings: dict, dataset: Optional[str] = None, replications: int = 2,
             workers: int = 1, address: Optional[str] = None) -> dict:
    """Run (or resume) one reconstruct job per replication (``settings``: reconstruct's options)
    and write OUT/metrics.json."""
    from motionfleet.core import jobs
    from motionfleet.demo.videos import write_demo_corpus
    from motionfleet.evaluation.results import METRICS_JSON, read_metrics, write_metrics

    if replications < 1:
        raise UsageError("--replications must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(dataset) if dataset else out / "dataset"
    videos = root / "videos" if dataset else write_demo_corpus(root / "videos")
    if dataset:
        read_ground_truth(root / GROUND_TRUTH)  # a missing or malformed file stops us before any work
    seed = settings.get("seed") or 0
    started, ran = time.perf_counter(), []
    for r in range(replications):
        job_settings = {**settings, "seed": replication_seed(seed, r)}
        ran.append(jobs.run("reconstruct", str(videos), out=out / f"reconstruct-r{r}", workers=workers, address=address,
                            **job_settings))
    if all(map(jobs.ran_nothing, ran)) and (out / METRICS_JSON).is_file():
        return read_metrics(out)
    if not dataset and not (root / GROUND_TRUTH).is_file():
        synthetic_ground_truth(read_results(out / "reconstruct-r0").to_pylist(), root / GROUND_TRUTH)
    truth = read_ground_truth(root / GROUND_TRUTH)
    bodies = PairBodies(settings.get("body_models"))
    values: dict[str, list[float]] = {}
    for r in range(replications):
        per_frame, frames = replication_metrics(read_results(out / f"reconstruct-r{r}").to_pylist(), truth, bodies)
        for name, value in per_frame.items():
            values.setdefault(name, []).append(value)
    info = {
        "protocol": PROTOCOL, "family": "socialmirror", "main_metric": MAIN_METRIC, "lower_is_better": LOWER_IS_BETTER,
        "replications": replications, "protocol_settings": {"replications": replications}, "seed": seed,
        "protocol_upstream": None,  # not pinned: this family has no protocol preset (evaluation/protocols.py) yet
        "protocol_scaled": None,  # the built-in set runs with every default (reconstruct's 3 demo videos)
        "dataset": {"root": str(root), "motions": frames, "sha256": _digest(root / GROUND_TRUTH)},
        "model": {"settings": settings},
        "evaluator": {"weights": f"none (geometric metrics; body model {bodies.description})"},
        "timing_s": {"reconstruct_and_score": time.perf_counter() - started},
    }
    return write_metrics(out, {"generated": values}, info)


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
