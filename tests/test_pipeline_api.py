"""``motionfleet.load``: a family's model kept between calls, rows returned in memory, the same
rows as the job's; and a job called again on a finished folder returns the folder's report."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import motionfleet
from motionfleet.core.jobfolder.report import REPORT
from motionfleet.core.options import UsageError
from motionfleet.demo.body_models import write_synthetic_body_model
from motionfleet.demo.scenes import demo_scenes
from motionfleet.demo.videos import write_demo_tracks, write_demo_video
from motionfleet.scorehoi.runner import TIMING_COLUMNS
from motionfleet.socialmirror.runner import Reconstructor

GENERATE = dict(preset="tiny", steps=2, guidance_scale=3.5, seed=7, num_frames=8, batch_size=3)
PROMPTS = [
    {"id": "hug", "text": "two people hug each other warmly", "num_frames": 6},
    {"id": "shake", "text": "they greet each other by shaking hands"},
    {"id": "push", "text": "one person pushes the other", "num_frames": 5},
    {"id": "bad", "text": "", "num_frames": 4},  # an empty prompt: rejected, in the job and here
]
REFINE = dict(preset="small", rounds=2, tau=10, ddim_stride=5, guidance_scale=1.0, batch_size=2)
SMALL_CONDITION_DIM = 32  # the small preset's image feature size
RECONSTRUCT = dict(preset="small", crop_size=32, max_frame_size=160, steps=2, seed=5, batch_size=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared 2-core machine two OpenMP threads stall each other; the bytes
    do not depend on it (tests/test_generate_job.py, test_reconstruct_job.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dhvae():
    return motionfleet.load("dhvae", **GENERATE)


def job_tables(out) -> tuple[pa.Table, pa.Table]:
    return motionfleet.read_results(out), motionfleet.read_results(out, rejected=True)


def same_rows(got: pa.Table, job: pa.Table, varying: tuple = ()) -> bool:
    """Equal tables (schema and values), the columns in ``varying`` (wall-clock timings) left out."""
    return got.drop_columns(list(varying)).equals(job.drop_columns(list(varying)))


# --- dhvae ---------------------------------------------------------------------------------------


def test_generate_pipeline_gives_the_rows_of_the_job(tmp_path, dhvae):
    motionfleet.generate(PROMPTS, out=tmp_path / "job", workers=0, shard_size=2, **GENERATE)
    results, rejected = job_tables(tmp_path / "job")
    got = dhvae.generate(PROMPTS)
    assert got.results.num_rows == 3 and got.rejected.num_rows == 1
    assert same_rows(got.results, results) and same_rows(got.rejected, rejected)
    again = dhvae(PROMPTS)  # the model is kept: a second call gives the same rows
    assert same_rows(again.results, got.results)


def test_generate_pipeline_takes_a_dataframe_and_a_path(tmp_path, dhvae):
    path = tmp_path / "prompts.parquet"
    pq.write_table(pa.Table.from_pylist(PROMPTS), path)
    motionfleet.generate(str(path), out=tmp_path / "job", workers=0, **GENERATE)
    results, rejected = job_tables(tmp_path / "job")
    frame = pd.DataFrame(PROMPTS).astype({"num_frames": "Int64"}).set_index("id", drop=False)
    for inputs in (frame, str(path)):
        got = dhvae.generate(inputs)
        assert same_rows(got.results, results) and same_rows(got.rejected, rejected)
    table = dhvae.generate(frame).to_pandas()
    assert list(table["sample_id"]) == ["hug", "shake", "push"] and list(table["num_frames"]) == [6, 8, 5]


def test_the_builtin_prompts_and_a_list_of_strings(dhvae):
    assert dhvae.generate().results.num_rows > 1
    got = dhvae.generate(["two people wave", "one chases the other"])
    assert got.results["sample_id"].to_pylist() == ["0", "1"]


def test_bad_settings_and_inputs_are_usage_errors(dhvae):
    with pytest.raises(UsageError, match="unknown setting 'out'"):
        motionfleet.load("dhvae", out="runs/x")
    with pytest.raises(UsageError, match="--steps"):
        motionfleet.load("dhvae", preset="tiny", steps=0)
    with pytest.raises(UsageError, match="unknown family"):
        motionfleet.load("nope")
    with pytest.raises(UsageError, match=r"pipe\.generate"):
        dhvae.refine()
    with pytest.raises(UsageError, match="no demo"):
        dhvae.run(demo=True)
    with pytest.raises(UsageError, match="give a path, a DataFrame"):
        dhvae.generate({"text": "a dict is not a table"})
    with pytest.raises(UsageError, match="--prompts: no/such/prompts.txt is not a file"):
        dhvae.generate("no/such/prompts.txt")


# --- scorehoi ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def body_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("body_models")
    write_synthetic_body_model(folder, "smplh")
    return str(folder)


def scene_rows() -> list[dict]:
    return [{"id": r.sample_id, **dict(r.values)} for r in demo_scenes(SMALL_CONDITION_DIM).records]


def test_refine_pipeline_gives_the_rows_of_the_job_from_a_dataframe(tmp_path, body_dir):
    rows = scene_rows()[:3]
    path = tmp_path / "scenes.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    settings = {**REFINE, "body_models": body_dir}
    motionfleet.refine(str(path), out=tmp_path / "job", workers=0, shard_size=2, **settings)
    results, rejected = job_tables(tmp_path / "job")
    pipe = motionfleet.load("refine", **settings)
    for inputs in (pa.Table.from_pylist(rows).to_pandas(), rows, str(path)):
        got = pipe.refine(inputs)
        assert got.results.num_rows == 3
        assert same_rows(got.results, results, TIMING_COLUMNS) and same_rows(got.rejected, rejected)
    with pytest.raises(UsageError, match="needs --estimates or --demo"):
        pipe.refine()


def test_refine_pipeline_demo_is_the_demo_job(tmp_path, body_dir):
    settings = {**REFINE, "body_models": body_dir}
    motionfleet.refine(out=tmp_path / "job", demo=True, workers=0, **settings)
    results, _ = job_tables(tmp_path / "job")
    got = motionfleet.load("scorehoi", control=True, **settings).refine(demo=True)  # the demo job turns control on
    assert same_rows(got.results, results, TIMING_COLUMNS)


# --- socialmirror --------------------------------------------------------------------------------


def test_reconstruct_pipeline_gives_the_rows_of_the_job(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_demo_video(videos / "walk.mp4", 20, 30, (160, 120), seed=1)
    write_demo_tracks(videos / "walk.tracks.csv", 20, (160, 120))
    motionfleet.reconstruct(str(videos), out=tmp_path / "job", workers=0, **RECONSTRUCT)
    results, rejected = job_tables(tmp_path / "job")
    pipe = motionfleet.load("reconstruct", **RECONSTRUCT)
    assert isinstance(pipe.runner, Reconstructor)
    got = pipe.reconstruct(str(videos))
    assert got.results.num_rows == results.num_rows > 0
    assert same_rows(got.results, results) and same_rows(got.rejected, rejected)
    with pytest.raises(UsageError, match="manifest"):
        pipe.reconstruct(pd.DataFrame({"path": [str(videos / "walk.mp4")]}))


# --- a job called again on a finished folder ------------------------------------------------------


def test_a_second_call_on_a_finished_folder_returns_its_report(tmp_path):
    out = tmp_path / "job"
    first = motionfleet.generate(PROMPTS[:2], out=out, workers=0, **GENERATE)
    again = motionfleet.generate(PROMPTS[:2], out=out, workers=0, **GENERATE)
    assert again is not None and again == first
    (out / REPORT).unlink()  # a folder whose report was lost: rebuilt from the commit records
    rebuilt = motionfleet.generate(PROMPTS[:2], out=out, workers=0, **GENERATE)
    assert rebuilt["rows"] == first["rows"] and rebuilt["job"] == first["job"]
    assert (out / REPORT).is_file()
