"""``motionfleet bench``: flat JSON records pandas reads as is, the two-panel plot, the batch sizes
asked for and no others, a timestamped file in the folder named, ``--compare``, cold start, build
time and peak memory per case, ``--profile`` traces, and the ``--compare BASELINE --fail-over``
gate (baselines made from a real run's output with medians scaled far past any timing noise)."""

import json

import pandas as pd
import pytest

from motionfleet.cli import main

TINY = ["bench", "--families", "dhvae", "--backends", "torch", "--preset", "tiny", "--steps", "2",
        "--num-frames", "4", "--repeats", "3"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(TINY + ["--batch-sizes", "1,3", "--out", str(out)]) == 0
    (path,) = out.glob("bench-cpu-*.json")
    return out, path


def test_records_are_flat_and_honour_the_batch_sizes(result):
    out, path = result
    frame = pd.read_json(path)
    assert sorted(frame["batch"]) == [1, 3]
    assert set(frame["family"]) == {"dhvae"} and set(frame["backend"]) == {"torch"}
    for column in ("p50_ms", "p90_ms", "p99_ms", "iqr_ms", "per_item_p50_ms", "items_per_s", "gemm_floor_ms",
                   "load_before", "device_name", "torch", "date", "repeats"):
        assert column in frame.columns, column
    row = frame.iloc[0]
    assert row["repeats"] == 3 and row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["per_item_p50_ms"] == pytest.approx(row["p50_ms"] / row["batch"])
    assert path.with_suffix(".png").stat().st_size > 10_000


def test_compare_prints_the_change_per_case(result, tmp_path, capsys):
    _, path = result
    slower = json.loads(path.read_text())
    for record in slower:
        record["per_item_p50_ms"] *= 2
    other = tmp_path / "b.json"
    other.write_text(json.dumps(slower))
    assert main(["bench", "--compare", str(path), str(other), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("2.00x slower") == 2
    assert list(tmp_path.glob("compare-*.png"))


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(TINY + ["--repeats", "2", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--families", "nope", "--out", str(tmp_path)]) == 2
    assert main(["bench", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("motionfleet: error: ") for line in errors)


def test_every_family_at_the_default_families(tmp_path):
    """No --families: each family is measured and the file written (scorehoi's case once failed on
    an import after dhvae had run, and nothing was written)."""
    smallest = ["--backends", "torch", "--batch-sizes", "1", "--repeats", "3", "--preset", "tiny", "--steps", "1",
                "--num-frames", "4", "--scorehoi-preset", "small", "--refine-preset", "public", "--refine-rounds", "1",
                "--socialmirror-preset", "small"]
    assert main(["bench", *smallest, "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("bench-cpu-*.json")
    frame = pd.read_json(path)
    assert sorted(frame["family"]) == ["dhvae", "scorehoi", "socialmirror"]
    assert dict(zip(frame["family"], frame["preset"])) == {"dhvae": "tiny", "scorehoi": "small", "socialmirror": "small"}
    assert (frame["p50_ms"] > 0).all()


def test_help_shows_defaults_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: dhvae,scorehoi,socialmirror)", "(default: 1,8,64)", "(default: official)", "(default: 50)",
                  "(default: fast)", "(default: 10)", "example:", "motionfleet bench --compare A.json B.json"):
        assert shown in text, shown


def scaled(path, tmp_path, factor, batches=None):
    """A baseline: the run's records (those of ``batches``, default all) with medians times ``factor``."""
    records = [r for r in json.loads(path.read_text()) if batches is None or r["batch"] in batches]
    for record in records:
        record["p50_ms"] *= factor
        record["per_item_p50_ms"] *= factor
    baseline = tmp_path / f"baseline-x{factor}.json"
    baseline.write_text(json.dumps(records))
    return baseline


def test_cold_start_build_and_peak_memory_per_case(result):
    _, path = result
    for record in json.loads(path.read_text()):
        assert record["startup_s"] > 0 and record["setup_s"] > 0 and record["first_batch_s"] > 0
        assert record["cold_start_s"] == pytest.approx(record["startup_s"] + record["setup_s"] + record["first_batch_s"])
        assert record["build_s"] is None  # eager torch builds nothing
        assert record["peak_host_mb"] > 50  # torch alone is resident above this
        assert record["peak_device_mb"] is None  # no CUDA on a CPU run


def test_graph_backend_build_and_profile_traces(tmp_path, monkeypatch, capsys):
    """onnxruntime's export and session are its build time, counted in its cold start; --profile
    writes one Chrome trace per case with the profiled batches in it; make_backend is itself again."""
    from motionfleet.core.runtime import backends

    make_backend = backends.make_backend
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))  # a fresh export, not a cached graph
    args = ["bench", "--families", "dhvae", "--backends", "torch,onnxruntime", "--preset", "tiny", "--steps", "1",
            "--num-frames", "4", "--repeats", "3", "--batch-sizes", "1"]
    assert main(args + ["--out", str(tmp_path / "out"), "--profile", str(tmp_path / "traces")]) == 0
    assert backends.make_backend is make_backend
    (path,) = (tmp_path / "out").glob("bench-cpu-*.json")
    records = {r["backend"]: r for r in json.loads(path.read_text())}
    onnx = records["onnxruntime"]
    assert records["torch"]["build_s"] is None
    assert 0 < onnx["build_s"] <= onnx["setup_s"] + onnx["first_batch_s"]
    assert onnx["cold_start_s"] > onnx["build_s"]
    header = capsys.readouterr().out.splitlines()[0].split()
    assert {"cold", "build", "host", "dev"} <= set(header)
    for backend, record in records.items():
        trace = tmp_path / "traces" / f"dhvae-generate-tiny-{backend}-b1.json"
        assert record["profile"] == str(trace)
        events = json.loads(trace.read_text())["traceEvents"]
        names = {e.get("name") for e in events}
        assert {f"dhvae-generate-tiny-{backend}-b1 batch {i}" for i in range(3)} <= names, backend
        assert len(events) > 10


def test_gate_fails_a_case_slower_than_the_baseline(result, tmp_path, capsys):
    _, path = result
    baseline = scaled(path, tmp_path, 0.1)  # now is ~10x the baseline, far over 20%
    assert main(TINY + ["--batch-sizes", "1,3", "--compare", str(baseline), "--fail-over", "20", "--out", str(tmp_path)]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("dhvae/generate tiny torch batch")]
    assert len(lines) == 2 and all("baseline" in line and "FAIL" in line for line in lines)


def test_gate_passes_a_faster_run_and_reports_a_new_case(result, tmp_path, capsys):
    _, path = result
    baseline = scaled(path, tmp_path, 10, batches={1})  # now is ~10x faster; batch 3 is not in the baseline
    assert main(TINY + ["--batch-sizes", "1,3", "--compare", str(baseline), "--fail-over", "20", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dhvae/generate tiny torch batch 3: new (not in the baseline)" in out
    (line,) = [line for line in out.splitlines() if line.startswith("dhvae/generate tiny torch batch 1: baseline")]
    assert "FAIL" not in line and "gate: passed" in out


def test_gate_between_two_files_matches_cases_by_their_settings(result, tmp_path, capsys):
    """--compare A B --fail-over measures nothing; a record with other loop settings is another case."""
    _, path = result
    slower = scaled(path, tmp_path, 1.5)
    assert main(["bench", "--compare", str(path), str(slower), "--fail-over", "49", "--out", str(tmp_path)]) == 1
    assert main(["bench", "--compare", str(path), str(slower), "--fail-over", "51", "--out", str(tmp_path)]) == 0
    other_steps = json.loads(slower.read_text())
    for record in other_steps:
        record["settings"] = json.dumps({**json.loads(record["settings"]), "steps": 99})
    slower.write_text(json.dumps(other_steps + json.loads(path.read_text())[:1]))
    capsys.readouterr()
    assert main(["bench", "--compare", str(path), str(slower), "--fail-over", "49", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count(": new (not in the baseline)") == 2


def test_a_bad_baseline_or_gate_flag_is_one_line_before_measuring(tmp_path, capsys):
    not_json = tmp_path / "not.json"
    not_json.write_text("{oops")
    other_json = tmp_path / "other.json"
    other_json.write_text(json.dumps([{"family": "dhvae", "p50_ms": 1.0}]))
    gate = ["--fail-over", "10", "--out", str(tmp_path)]
    assert main(TINY + ["--compare", str(not_json), *gate]) == 2
    assert main(TINY + ["--compare", str(other_json), *gate]) == 2
    assert main(TINY + ["--compare", str(tmp_path / "missing.json"), *gate]) == 2
    assert main(TINY + ["--fail-over", "10", "--out", str(tmp_path)]) == 2
    assert main(TINY + ["--compare", str(other_json), "--fail-over", "-5", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 5 and all(line.startswith("motionfleet: error: ") for line in errors)
    assert "not a motionfleet bench result" in errors[0] and "not a motionfleet bench result" in errors[1]
    assert not list(tmp_path.glob("bench-*.json")) and captured.out == ""
