"""Stages (``core.execution.stages``): work a job's shards read, run once and committed in a job
folder of its own before them, resumable, its rows found from its commit records."""

import json
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from motionfleet import cli
from motionfleet.core import registry

STAGED_FAMILY = '''
"""Numbers -> number + its square; the squares are a stage (one stage shard per number) that
the job's shards (two numbers each) read."""

from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from motionfleet.core.execution.stages import Stage
from motionfleet.core.io.rejections import rejected_row, rejected_table
from motionfleet.core.options import Option, existing_file, file_option
from motionfleet.core.registry import Family, Plan, Summary
from motionfleet.core.runtime.stopwatch import Timings
from motionfleet.core.shards import Shard, plan_shards

SQUARES = pa.schema([("number_id", pa.string()), ("square", pa.int64())])
ROWS = pa.schema([("number_id", pa.string()), ("value", pa.int64()), ("square", pa.int64())])


@dataclass(frozen=True)
class Settings:
    batch_size: int
    calls: str  # a file each stage call appends its number to (so a test counts them)


@dataclass(frozen=True)
class Item:
    index: int
    text: str
    square: object = None  # the StageFiles of its number's stage shard


def build(values):
    return None, Settings(values["batch_size"], values["calls"] or "")


def attach(shards, files):
    return [Shard(s.shard_id, tuple(replace(i, square=files.get(f"n-{i.index}")) for i in s.items)) for s in shards]


def plan(path, spec, settings, shard_size, out_dir):
    items = [Item(i, t) for i, t in enumerate(open(path).read().split())]
    stage = Stage("squares", [Shard(f"n-{i.index}", (i,)) for i in items], {"of": str(path)}, Squarer, attach)
    return Plan(plan_shards(items, shard_size or 2), {"inputs": str(path)}, (stage,))


class Squarer:
    def __init__(self, spec, settings):
        self.settings = settings

    def warm_up(self):
        pass

    def run(self, items):
        (item,) = items
        if self.settings.calls:
            with open(self.settings.calls, "a") as f:
                f.write(item.text + "\\n")
        if not item.text.isdigit():
            return SQUARES.empty_table(), rejected_table([rejected_row("number_id", str(item.index), 0, item.text,
                                                                       "not a number")], "number_id"), Timings()
        n = int(item.text)
        return pa.Table.from_pylist([{"number_id": str(item.index), "square": n * n}], schema=SQUARES), \\
            rejected_table([], "number_id"), Timings({"square": 0.001}, {"numbers": 1})


class Adder:
    def __init__(self, spec, settings):
        pass

    def warm_up(self):
        pass

    def run(self, items):
        rows, rejected = [], []
        for item in items:
            squares = item.square.read().to_pylist() if item.square else []
            if squares:
                rows.append({"number_id": str(item.index), "value": int(item.text), "square": squares[0]["square"]})
            else:
                reason = item.square.read("rejected").column("reason")[0].as_py() if item.square else "stage failed"
                rejected.append(rejected_row("number_id", str(item.index), 0, item.text, reason))
        return pa.Table.from_pylist(rows, schema=ROWS), rejected_table(rejected, "number_id"), Timings()


FAMILY = Family(
    name="staged", command="square", summary="numbers -> squares (a test family with a stage)",
    example="motionfleet square --numbers n.txt --out o", unit="number", id_column="number_id",
    presets=("unit",), default_preset="unit",
    inputs=file_option("numbers", "a text file of integers", existing_file),
    options=(Option("calls", None, "a file each stage call appends to", str),),
    build=build, plan=plan, runner=Adder,
    summarise=lambda done, wall_s, out: Summary({}, {"name": "n", "value": None, "unit": "", "meaning": "none"}),
    report_lines=lambda report: [], load_model=lambda checkpoint, preset, seed: (None, "none"),
)
'''


@pytest.fixture
def staged(tmp_path, monkeypatch):
    package = tmp_path / "stagedfamily"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "family.py").write_text(textwrap.dedent(STAGED_FAMILY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.FAMILIES, "staged", ("square", "stagedfamily.family:FAMILY"))
    yield
    for name in [m for m in sys.modules if m.startswith("stagedfamily")]:
        del sys.modules[name]


def square(numbers, out, calls, *more):
    return cli.main(["square", "--numbers", str(numbers), "--out", str(out), "--calls", str(calls), "--workers", "0",
                     "--device", "cpu", *more])


def test_a_stage_runs_once_before_the_shards_that_read_it(staged, tmp_path):
    numbers, out, calls = tmp_path / "n.txt", tmp_path / "out", tmp_path / "calls.txt"
    numbers.write_text("3 4 x 5 6")
    assert square(numbers, out, calls) == 0
    rows = sorted(pq.read_table(out / "results").to_pylist(), key=lambda r: r["number_id"])
    assert [(r["value"], r["square"]) for r in rows] == [(3, 9), (4, 16), (5, 25), (6, 36)]
    rejected = pq.read_table(out / "rejected").to_pylist()
    assert [(r["number_id"], r["reason"]) for r in rejected] == [("2", "not a number")]
    assert sorted(calls.read_text().split()) == ["3", "4", "5", "6", "x"]  # one stage call per number
    stage = out / "stages" / "squares"
    assert len(list((stage / "commits").glob("n-*.json"))) == 5
    assert json.loads((stage / "job.json").read_text())["job"]["stage"] == "squares"
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["squares"]["shards"] == {"run": 5, "failed": 0, "committed": 5, "total": 5}
    assert report["stages"]["squares"]["counts"] == {"numbers": 4}


def test_a_resumed_job_reuses_the_committed_stage(staged, tmp_path):
    numbers, out, calls = tmp_path / "n.txt", tmp_path / "out", tmp_path / "calls.txt"
    numbers.write_text("1 2 3 4")
    assert square(numbers, out, calls) == 0
    first = pq.read_table(out / "results").sort_by("number_id")
    for f in (out / "commits").glob("*.json"):  # the job's shards are lost, the stage's kept
        f.unlink()
    calls.unlink()
    assert square(numbers, out, calls) == 0
    assert not calls.exists()  # no stage shard ran again
    assert pq.read_table(out / "results").sort_by("number_id").equals(first)


def test_the_same_rows_whatever_the_job_shard_size(staged, tmp_path):
    numbers = tmp_path / "n.txt"
    numbers.write_text("7 8 9 10 11")
    tables = []
    for size in ("1", "3"):
        out = tmp_path / f"out{size}"
        assert square(numbers, out, tmp_path / f"calls{size}", "--shard-size", size) == 0
        tables.append(pq.read_table(out / "results").sort_by("number_id"))
    assert tables[0].equals(tables[1])


def test_verify_checks_the_stage_folders_too(staged, tmp_path, capsys):
    numbers, out = tmp_path / "n.txt", tmp_path / "out"
    numbers.write_text("2 3")
    assert square(numbers, out, tmp_path / "calls.txt") == 0
    assert cli.main(["verify", str(out)]) == 0
    (victim,) = [p for p in (out / "stages" / "squares" / "results").glob("n-1.*.parquet")]
    victim.write_bytes(victim.read_bytes()[:-3])
    capsys.readouterr()
    assert cli.main(["verify", str(out)]) == 1
    assert "damaged stages/squares/n-1:" in capsys.readouterr().out
    assert cli.main(["verify", str(out), "--repair"]) == 0  # what stays committed is whole
    assert square(numbers, out, tmp_path / "calls2.txt") == 0  # the damaged stage shard is computed again
    assert (tmp_path / "calls2.txt").read_text().split() == ["3"]
    assert cli.main(["verify", str(out)]) == 0
