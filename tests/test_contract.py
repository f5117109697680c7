"""The command line and API contract: one line and exit 2 for a bad invocation of every command,
exit 1 for data and checkpoint errors, Ctrl-C then a rerun that resumes, the API with in-memory
prompts, and outputs that pyarrow, polars and DuckDB read as (2, T, 262) arrays."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from killed_job import committed

import motionfleet
from motionfleet import cli
from motionfleet.core.options import Option

ENV = dict(os.environ, MOTIONFLEET_PROGRESS="0", OMP_NUM_THREADS="1")
TINY = ["--preset", "tiny", "--steps", "2", "--num-frames", "6", "--workers", "0"]


def one_line_error(capsys) -> str:
    """The one error line (the last on stderr; a progress bar may stand before it)."""
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("motionfleet:")]
    assert len(lines) == 1 and lines[0].startswith("motionfleet: error: "), captured.err
    assert captured.err.strip().endswith(lines[0]) and "Traceback" not in captured.err + captured.out
    return lines[0]


CPUS = os.cpu_count() or 1
BAD = {  # argv -> what the one line must say
    "generate": [
        (["--preset", "nonsense"], "--preset: unknown value 'nonsense'; choose one of official, paper, tiny"),
        (["--steps", "0"], "--steps: must be >= 1, got 0"),
        (["--steps", "-3"], "--steps: must be >= 1, got -3"),
        (["--steps", "2.5"], "--steps: '2.5' is not an integer"),
        (["--steps", "1000"], "--steps: 1000 steps: the schedule of 1000 training timesteps (leading spacing, steps_offset 1) "
                              "has timesteps for 1 to 999 steps"),
        (["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
        (["--workers", "-1"], "--workers: must be >= 0, got -1"),
        (["--workers", str(CPUS + 1), "--device", "cpu"], f"--workers {CPUS + 1}: this machine has {CPUS} CPUs"),
        (["--guidance-scale", "nan"], "--guidance-scale: must be a finite number, got nan"),
        (["--eta", "2"], "--eta: must be <= 1.0, got 2.0"),
        (["--num-frames", "301"], "--num-frames: must be <= 300, got 301"),
        (["--prompts", "/nonexistent/p.txt"], "--prompts: /nonexistent/p.txt is not a file"),
        (["--checkpoint", "/nonexistent/ckpt"], "--checkpoint: /nonexistent/ckpt does not exist"),
        (["--shard-size", "0"], "--shard-size: must be >= 1, got 0"),
        (["--device", "tpu"], "--device: unknown value 'tpu'"),
        (["--guidance", "3"], "unrecognized arguments: --guidance 3"),
        (["--seed", str(2**63)], f"--seed: must be <= {2**63 - 1}, got {2**63}"),  # the results' int64 column
        (["--dummy-seed", str(2**64)], f"--dummy-seed: must be <= {2**63 - 1}, got {2**64}"),  # torch's generator
    ],
    "reconstruct": [
        ([], "one of the arguments --videos --demo is required"),
        (["--demo", "--fps", "0"], "--fps: must be > 0, got 0.0"),
        (["--demo", "--stride", "0"], "--stride: must be >= 1, got 0"),
        (["--demo", "--preset", "huge"], "--preset: unknown value 'huge'; choose one of released, small"),
        (["--videos", "/nonexistent/v"], "--videos: /nonexistent/v does not exist"),
        (["--demo", "--seed", str(2**63)], f"--seed: must be <= {2**63 - 1}, got {2**63}"),
        (["--demo", "--fps", "1e20"], "--fps: must be <= 240.0, got 1e+20"),  # was the planner's MemoryError
        (["--demo", "--crop-size", str(2**64)], f"--crop-size: must be <= 1024, got {2**64}"),  # every shard failed
        (["--demo", "--stride", "17"], "--stride 17: the model's clips are 16 frames; give 1 to 16"),  # was exit 1
    ],
    "refine": [
        (["--demo", "--batch-size", "-1"], "--batch-size: must be >= 1, got -1"),
        (["--demo", "--sampler-preset", "slow"], "--sampler-preset: unknown value 'slow'"),
        (["--demo", "--tau", "0"], "--tau: must be >= 1, got 0"),
        (["--demo", "--tau", "10", "--ddim-stride", "20"], "--ddim-stride 20 is larger than --tau 10"),
        (["--demo", "--tau", "49", "--ddim-stride", "2"], "--tau 49 --ddim-stride 2: need 0 < stride <= start < 1000 with start "
                                                          "a multiple of stride"),
        (["--demo", "--seed", "1"], "unrecognized arguments: --seed 1"),
        (["--demo", "--preset", "paper"], "--preset: unknown value 'paper'; choose one of released, small"),
    ],
}


@pytest.mark.parametrize("command,argv,message", [(c, a, m) for c, cases in BAD.items() for a, m in cases])
def test_a_bad_job_invocation_is_one_line_and_exit_2(command, argv, message, tmp_path, capsys):
    assert cli.main([command, "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("argv,message", [
    (["export", "--family", "mdm", "--out", "x"], "--family: unknown value 'mdm'"),
    (["export", "--family", "dhvae", "--preset", "released", "--out", "x"], "--preset: unknown value 'released'"),
    (["export", "--family", "scorehoi", "--loop-steps", "3", "--out", "x"], "the whole-loop graph exists for dhvae only"),
    (["export", "--family", "dhvae", "--opset", "7", "--out", "x"], "--opset: must be >= 18, got 7"),
    (["export", "--family", "dhvae", "--opset", "26", "--out", "x"], "--opset: must be <= 23, got 26"),  # was a traceback
    (["export", "--family", "dhvae", "--loop-steps", "1000", "--out", "x"], "--loop-steps: must be <= 999, got 1000"),
    (["bench", "--num-frames", str(2**64), "--out", "x"], f"--num-frames must be <= 300, got {2**64}"),  # was a traceback
    (["bench", "--batch-sizes", str(2**64), "--out", "x"], "--batch-sizes needs integers from 1 to 65536"),
    (["bench", "--batch-sizes", "0", "--out", "x"], "--batch-sizes needs integers from 1 to 65536"),
    (["bench", "--batch-sizes", "a,b", "--out", "x"], "--batch-sizes: invalid"),
    (["bench", "--steps", "0", "--out", "x"], "--steps must be >= 1, got 0"),
    (["bench", "--steps", "1000", "--out", "x"], "--steps must be <= 999, got 1000"),
    (["bench", "--backends", "tensorrt", "--device", "cpu", "--out", "x"], "backend tensorrt"),
    (["evaluate", "--family", "dhvae", "--replications", "0", "--out", "x"], "--replications: must be >= 1, got 0"),
    (["leaderboard"], "the following arguments are required: config, --out"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_a_bad_invocation_of_the_other_commands_is_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in one_line_error(capsys)


def write_empty_input(kind: str, folder: Path) -> Path:
    if kind == "folder":
        (folder / "videos").mkdir()
        (folder / "videos" / "notes.txt").write_text("not a video")
        return folder / "videos"
    if kind == "parquet":
        pq.write_table(pa.table({"sample_id": pa.array([], pa.string())}), folder / "estimates.parquet")
        return folder / "estimates.parquet"
    (folder / f"empty.{kind}").write_text("")
    return folder / f"empty.{kind}"


@pytest.mark.parametrize("command,flag,kind,message", [
    ("reconstruct", "--videos", "folder", "names no video; put video files (.3gp, .avi"),
    ("reconstruct", "--videos", "txt", "names no video; put video files"),
    ("generate", "--prompts", "txt", "holds no prompt; give one prompt per line"),
    ("generate", "--prompts", "jsonl", "holds no prompt"),
    ("refine", "--estimates", "parquet", "holds no row; give one row of initial estimates per image"),
])
def test_an_input_that_names_nothing_is_a_usage_error(command, flag, kind, message, tmp_path, capsys):
    empty = write_empty_input(kind, tmp_path)
    assert cli.main([command, flag, str(empty), "--out", str(tmp_path / "out"), "--preset", "tiny" if command == "generate"
                     else "small", "--workers", "0"]) == 2
    line = one_line_error(capsys)
    assert f"{flag} {empty}: {message}" in line
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["generate", "--out", str(tmp_path / "file"), *TINY]) == 2
    assert "is a file; give a folder" in one_line_error(capsys)


def test_a_broken_model_folder_is_a_data_error_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    (folder / "config.json").write_text("{")
    assert cli.main(["generate", "--out", str(tmp_path / "out"), "--checkpoint", str(folder), *TINY]) == 1
    assert str(folder) in one_line_error(capsys)


def test_a_job_that_rejects_every_row_exits_1(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": ""}\n{"text": 5}\n')
    assert cli.main(["generate", "--prompts", str(prompts), "--out", str(tmp_path / "out"), *TINY]) == 1
    assert "every input was rejected" in one_line_error(capsys)


def test_version_and_python_dash_m(tmp_path):
    assert motionfleet.__version__ and motionfleet.__version__[0].isdigit()
    version = subprocess.run([sys.executable, "-m", "motionfleet", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"motionfleet {motionfleet.__version__}"
    bad = subprocess.run([sys.executable, "-m", "motionfleet", "generate", "--out", str(tmp_path), "--steps", "0"],
                         capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and bad.stderr == "motionfleet: error: --steps: must be >= 1, got 0\n"


def test_every_command_help_shows_defaults_and_an_example(capsys):
    for command in ("generate", "reconstruct", "refine", "export", "evaluate", "leaderboard", "verify", "bench", "render",
                    "report"):
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "example:" in text, command
        if command in ("generate", "reconstruct", "refine"):
            assert "--guidance-scale X" in text and "(default: auto)" in text and "--shard-timeout" in text


def test_every_api_function_the_docs_call_exists(tmp_path):
    api_page = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    documented = set(re.findall(r"\bmotionfleet\.(\w+)\(", api_page))
    assert {"generate", "refine", "reconstruct", "read_results", "evaluate", "leaderboard"} <= documented
    for name in sorted(documented):
        assert callable(getattr(motionfleet, name)), name
        assert name in motionfleet.__all__, name
    with pytest.raises(motionfleet.UsageError, match="--steps: 'x' is not an integer"):  # checked as the flag is
        motionfleet.evaluate("dhvae", tmp_path / "eval", steps="x")
    with pytest.raises(motionfleet.UsageError, match="--preset: unknown value 'official'"):
        motionfleet.evaluate("scorehoi", tmp_path / "eval", preset="official")
    assert not (tmp_path / "eval").exists()


def help_text(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_each_default_and_what_is_required(capsys):
    assert "--contact-distance X the default contact predictor marks human points this close to the object (m) " \
           "(default: 0.1)" in help_text(capsys, "refine")
    export = help_text(capsys, "export")
    assert "[--family" not in export and "--family {dhvae,socialmirror,scorehoi} which model (required)" in export
    assert "--samples N rendered samples in the gallery, the job's first ids (0: none) (default: 3)" in help_text(capsys, "report")
    assert "--ids ID[,ID...]" in help_text(capsys, "render")


def test_evaluate_help_lists_each_flag_under_the_protocols_that_take_it(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    lines = capsys.readouterr().out.splitlines()
    group, flags = None, {}
    for line in lines[lines.index("options:"):]:
        if line.endswith(":") and not line.startswith(" "):
            group = line[:-1]
        elif line.startswith("  --"):
            flags[line.split()[0]] = group
    assert flags["--replications"] == flags["--preset"] == flags["--workers"] == "every protocol"
    assert flags["--match-batch"] == flags["--evaluator-checkpoint"] == "dhvae only"
    assert flags["--sampler-preset"] == flags["--contact-distance"] == "scorehoi only"
    assert flags["--crop-size"] == "socialmirror only" and flags["--body-models"] == "scorehoi and socialmirror only"
    text = " ".join(" ".join(lines).split())
    # --replications: each family's own; dhvae's from its --protocol preset (interhuman: 20)
    assert "(default: dhvae its --protocol preset's, scorehoi 1, socialmirror 2)" in text and "interhuman: 20" in text
    assert "(default: dhvae official, scorehoi released, socialmirror released)" in text


def test_a_protocol_setting_without_choices_in_one_family_takes_any_value_through_the_shared_flag():
    listed, free = Option("device", "cpu", "where", choices=("cpu", "cuda")), Option("device", "cpu", "where")
    assert cli.merged_option({"a": listed, "b": free}).choices is None
    assert cli.merged_option({"a": free, "b": listed}).choices is None
    assert cli.merged_option({"a": listed, "b": Option("device", "cpu", "where", choices=("mps", "cpu"))}).choices \
        == ("cpu", "cuda", "mps")


def test_the_api_takes_prompts_in_memory_and_outputs_read_as_arrays(tmp_path):
    out = tmp_path / "out"
    report = motionfleet.generate(["two people hug", {"id": "wave", "text": "they wave", "num_frames": 7}],
                                  out=out, preset="tiny", steps=2, num_frames=5, workers=0)
    assert report["rows"] == {"results": 2, "rejected": 0} and report["inputs" if "inputs" in report else "job"]
    table = motionfleet.read_results(out)
    assert isinstance(table, pa.Table) and table.schema.field("motion").type == \
        pa.list_(pa.list_(pa.list_(pa.float32(), 262)), 2)
    shapes = {"0": (2, 5, 262), "wave": (2, 7, 262)}
    by_id = dict(zip(table["sample_id"].to_pylist(), table["motion"].to_pylist()))
    assert {k: np.asarray(v).shape for k, v in by_id.items()} == shapes
    files = sorted(str(p) for p in (out / "results").rglob("*.parquet"))
    frame = pl.read_parquet(files)
    assert {i: np.asarray(m.to_list()).shape for i, m in zip(frame["sample_id"], frame["motion"])} == shapes
    rows = duckdb.sql(f"select sample_id, motion from read_parquet({files!r})").fetchall()
    assert {i: np.asarray(m).shape for i, m in rows} == shapes
    assert np.array_equal(np.asarray(by_id["wave"], np.float32), np.asarray(dict(rows)["wave"], np.float32))


def test_rejected_rows_keep_the_id_column_and_the_input_as_json(tmp_path):
    motionfleet.generate([{"id": "bad", "text": ["not", "text"]}, "fine"], out=tmp_path / "out", preset="tiny",
                         steps=2, num_frames=4, workers=0)
    rejected = motionfleet.read_results(tmp_path / "out", rejected=True).to_pylist()
    assert [(r["sample_id"], json.loads(r["input"])) for r in rejected] == [("bad", ["not", "text"])]


def test_the_report_has_one_documented_shape(tmp_path):
    report = motionfleet.generate(["two people hug"], out=tmp_path / "out", preset="tiny", steps=2, num_frames=4,
                                  workers=0)
    assert report["schema_version"] == 1 and report["family"] == "dhvae" and report["command"] == "generate"
    assert report["started_at"] <= report["finished_at"] and report["host"]["cpu_model"]
    assert "gpu" in report["host"] and report["versions"]["torch"]
    assert report["headline"]["name"] == "aits_s" and report["headline"]["value"] > 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["headline"] == report["headline"]


def test_export_takes_our_socialmirror_model_folder(tmp_path, capsys):
    from motionfleet.common.weights import save_model
    from motionfleet.socialmirror.model import PRESETS, build_model

    model = build_model(PRESETS["small"], seed=3)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}  # untie shared buffers
    save_model(tmp_path / "model", state, dict(vars(PRESETS["small"])))
    assert cli.main(["export", "--family", "socialmirror", "--checkpoint", str(tmp_path / "model"),
                     "--out", str(tmp_path / "graphs")]) == 0
    assert (tmp_path / "graphs" / "socialmirror-denoiser-fp32.onnx").is_file()


def test_ctrl_c_says_a_rerun_resumes_and_the_rerun_does(tmp_path):
    out, prompts = tmp_path / "job", tmp_path / "prompts.txt"
    prompts.write_text("".join(f"two people greet each other, take {i}\n" for i in range(24)))
    cmd = [sys.executable, "-m", "motionfleet", "generate", "--prompts", str(prompts), "--out", str(out), "--preset",
           "tiny", "--steps", "30", "--num-frames", "8", "--shard-size", "4", "--batch-size", "4", "--workers", "0"]
    driver = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(committed(out)) < 1 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("run the same command again to resume")
    before = committed(out)
    assert 1 <= len(before) < 6

    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    keys = motionfleet.read_results(out)["sample_id"].to_pylist()
    assert len(keys) == len(set(keys)) == 24
    assert {s: r["files"] for s, r in committed(out).items() if s in before} == {s: r["files"] for s, r in before.items()}


@pytest.mark.slow
def test_two_workers_on_the_built_in_prompts_run_two_actors_and_progress_moves_per_batch(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(["motionfleet", "generate", "--out", str(out), "--workers", "2", "--preset", "tiny",
                             "--steps", "2", "--num-frames", "6", "--batch-size", "8", "--shard-size", "72"],
                            capture_output=True, text=True, env={**ENV, "MOTIONFLEET_PROGRESS": "1"}, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["workers"]["ran"] == 2 and report["shards"]["total"] == 2  # 143 prompts: shards of 72 and 71
    assert report["rows"]["results"] == 143
    shown = {int(n) for n in re.findall(r"(\d+)/143", result.stderr)}
    assert shown - {0, 71, 72, 143}, f"the bar only moved per shard: {sorted(shown)}"
