"""How ``motionfleet render`` draws a refine row: the body's 52 SMPL-H joints and the object's
template points, first as the job's input estimate ("before") and then as the refined row
("after"), one fixed camera for both. The estimate is read again from the job's estimates file (its
sha256 checked against the job's) or rebuilt from the demo scenes, the joints from the body model
the job used."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from motionfleet.core.options import Option, UsageError
from motionfleet.core.registry import Render
from motionfleet.render import COLOURS, Canvas, Stage, bounds, draw_facing, draw_skeleton, project, recorded_job, write_mp4

HOLD_FRAMES = 15  # each state is shown this long (half a second)


def refined_row(rows: list[dict]) -> dict:
    """An id's guided row (a ``--control`` job also has one refined with guidance off)."""
    return next((r for r in rows if r.get("variant") == "guided"), rows[0])


def job_body(job: Path, body_models: Optional[str]):
    """The SMPL-H the job posed its rows with: the synthetic stand-in, or ``body_models`` when its
    file has the sha256 recorded in job.json."""
    from motionfleet.common.bodies import load_body_model
    from motionfleet.scorehoi.settings import model_spec

    recorded = recorded_job(job)["body_model"]
    spec = model_spec(body_models=body_models)
    if spec.body_description() != recorded:
        raise UsageError(f"{job} was refined with {recorded}; give that model's folder with --body-models")
    return load_body_model("smplh", spec.body_models)


def estimate_record(job: Path, sample_id: str):
    """The input estimate of ``sample_id``: the demo scene, or its row of the job's estimates file
    (refused when the file changed since the job ran). The ids are streamed: one row is read."""
    import pyarrow.parquet as pq

    from motionfleet.core.io.digests import file_sha256
    from motionfleet.core.io.parquet_rows import column_values, read_rows
    from motionfleet.demo.scenes import demo_scenes
    from motionfleet.scorehoi.model import PRESETS
    from motionfleet.scorehoi.source import record_from_row

    recorded = recorded_job(job)
    inputs = recorded["inputs"]
    if inputs["source"] == "demo":
        records = demo_scenes(PRESETS[recorded["model"]["preset"]].condition_dim).records
        return next(r for r in records if r.sample_id == sample_id)
    path = Path(inputs["source"])
    if not path.is_file() or file_sha256(path) != inputs["sha256"]:
        raise UsageError(f"the estimates file {path} is gone or changed since the job ran; render needs it as it was")
    for index, value in enumerate(column_values(pq.ParquetFile(path), "id")):
        if record_from_row(index, {"id": value}).sample_id == sample_id:
            return record_from_row(index, read_rows(path, index, index + 1)[0])
    raise UsageError(f"no estimate with id {sample_id} in {path}")


def points(state, body, object_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(52, 3) SMPL-H joints and (64, 3) placed object template points of one (331,) state."""
    import torch

    from motionfleet.common.rotations import rotation_6d_to_matrix
    from motionfleet.scorehoi.hoi import unpack_state
    from motionfleet.scorehoi.objects import get_object

    s = unpack_state(torch.as_tensor(state, dtype=torch.float32)[None])
    with torch.no_grad():
        joints = body(s.pose_6d, s.betas).joints[0].numpy()
    rotation = rotation_6d_to_matrix(s.object_rotation_6d)[0].numpy()
    placed = get_object(object_name).points @ rotation.T + s.object_translation[0].numpy()
    return joints, placed


def row_state(row: dict):
    """The (331,) state of a refine result row."""
    import torch

    from motionfleet.scorehoi.hoi import HOIState, pack_state

    def tensor(name: str, shape: tuple) -> torch.Tensor:
        return torch.tensor(row[name], dtype=torch.float32).view(shape)

    return pack_state(HOIState(tensor("pose_6d", (1, -1, 6)), tensor("object_rotation_6d", (1, 6)),
                               tensor("object_translation", (1, 3)), tensor("betas", (1, 10))))[0]


def state_frames(states: list[tuple[str, np.ndarray, np.ndarray]], parents, canvas: Canvas) -> Iterable[np.ndarray]:
    """``HOLD_FRAMES`` frames per (title, joints, object points) state: body and object in two
    colours over the ground, the body's facing arrow, one fixed camera over every state."""
    stage = Stage([p for _, joints, placed in states for p in (joints, placed)])
    screens = [(title, project(joints), project(placed), stage.tips(joints)) for title, joints, placed in states]
    limits = bounds([s for _, joints, placed, _ in screens for s in (joints, placed)] + stage.extra)
    for title, joints, placed, tip in screens:
        canvas.titles = [title]
        for _ in range(HOLD_FRAMES):
            canvas.clear()
            ax = canvas.axes[0]
            draw_skeleton(ax, joints, COLOURS[0], parents)
            draw_facing(ax, joints[0], tip, COLOURS[0])
            ax.scatter(placed[:, 0], placed[:, 1], s=6, color=COLOURS[1])
            stage.draw(ax, limits)
            yield canvas.rgb()


def render_row(row: dict, path: Path, job: Path, body) -> int:
    from motionfleet.scorehoi.source import state_from

    before = state_from(estimate_record(job, row["sample_id"]))
    name = f"{row['sample_id']} ({row['object']})"
    states = [(f"{name}: before (input estimate)", *points(before, body, row["object"])),
              (f"{name}: after ({row['variant']}, rho {row['guidance_scale']:g})", *points(row_state(row), body, row["object"]))]
    canvas = Canvas(1, [name])
    try:
        return write_mp4(path, state_frames(states, body.parents.tolist(), canvas))
    finally:
        canvas.close()


def videos(job: Path, values: dict) -> Callable[[list[dict], Path], int]:
    body = job_body(job, values.get("body_models"))
    return lambda rows, path: render_row(refined_row(rows), path, job, body)


BODY_MODELS = Option("body_models", None, "scorehoi jobs run on the licensed SMPL-H: the folder the job was given "
                     "(checked by sha256) (default: the synthetic stand-in the job used)", metavar="DIR")
RENDER = Render(columns=("sample_id", "object", "variant", "guidance_scale", "pose_6d", "object_rotation_6d",
                         "object_translation", "betas"), videos=videos, options=(BODY_MODELS,))
