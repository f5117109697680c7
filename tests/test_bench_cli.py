"""``motionfleet bench``: flat JSON records pandas reads as is, the two-panel plot, the batch sizes
asked for and no others, a timestamped file in the folder named, and ``--compare``."""

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
