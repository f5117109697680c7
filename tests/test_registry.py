"""The registry: a fourth family is one folder and one registry line, and runs through the real
command line, job runner, sink and report like the built-in ones."""

import json
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from motionfleet import cli
from motionfleet.core import registry

TOY_FAMILY = '''
"""A toy family: numbers -> their multiples. Everything a family registers, nothing else."""

from dataclasses import dataclass

import pyarrow as pa

from motionfleet.core.options import existing_file, file_option, int_option
from motionfleet.core.registry import Family, Plan, Summary
from motionfleet.core.io.rejections import rejected_row, rejected_table
from motionfleet.core.jobfolder.report import common_lines, peak_memory
from motionfleet.core.shards import plan_shards, shard_size_for
from motionfleet.core.runtime.stopwatch import Timings, total

SCHEMA = pa.schema([("number_id", pa.string()), ("value", pa.int64()), ("multiple", pa.int64())])


@dataclass(frozen=True)
class Settings:
    factor: int
    batch_size: int


def build(values):
    return values["preset"], Settings(values["factor"], values["batch_size"])


def plan(path, preset, settings, shard_size, out_dir):
    lines = open(path).read().split() if path else ["1", "2", "3"]
    items = list(enumerate(lines))
    size = shard_size or shard_size_for(len(items), 4)
    return Plan(plan_shards(items, size), {"weights": "none", "settings": {"factor": settings.factor},
                                           "inputs": {"source": str(path), "count": len(items)}})


class Multiplier:
    def __init__(self, preset, settings):
        self.settings = settings

    def warm_up(self):
        pass

    def run(self, items):
        rows, rejected = [], []
        for index, text in items:
            if text.lstrip("-").isdigit():
                rows.append({"number_id": str(index), "value": int(text), "multiple": int(text) * self.settings.factor})
            else:
                rejected.append(rejected_row("number_id", str(index), 0, text, "not an integer"))
        return (pa.Table.from_pylist(rows, schema=SCHEMA), rejected_table(rejected, "number_id"),
                Timings({"multiply": 0.001}, {"numbers": len(rows)}))


def summarise(done, wall_s, out_dir):
    t = total([d.timings for d in done])
    rate = t.counts.get("numbers", 0) / wall_s if wall_s else None
    return Summary({"numbers": t.counts.get("numbers", 0), **peak_memory(done)},
                   {"name": "numbers_per_s", "value": rate, "unit": "numbers/s", "meaning": "numbers per second"})


def load_model(checkpoint, preset, seed):
    return None, "none"


FAMILY = Family(
    name="toy", command="multiply", summary="numbers -> multiples (a test family)",
    example="motionfleet multiply --numbers n.txt --out runs/toy", unit="number", id_column="number_id",
    presets=("unit",), default_preset="unit",
    inputs=file_option("numbers", "a text file of integers", existing_file),
    options=(int_option("factor", 2, "what every number is multiplied by", low=1),),
    build=build, plan=plan, runner=Multiplier, summarise=summarise,
    report_lines=lambda report: [f"numbers {report['timing']['numbers']}", *common_lines(report)],
    load_model=load_model,
)
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy family's folder on the path, and its one registry line."""
    package = tmp_path / "toyfamily"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "family.py").write_text(textwrap.dedent(TOY_FAMILY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.FAMILIES, "toy", ("multiply", "toyfamily.family:FAMILY"))
    yield
    for name in [m for m in sys.modules if m.startswith("toyfamily")]:
        del sys.modules[name]


def test_a_fourth_family_runs_through_the_command_line_runner_sink_and_report(toy, tmp_path, capsys):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("3 5 x 7 11 13")
    out = tmp_path / "out"
    assert cli.main(["multiply", "--numbers", str(numbers), "--factor", "10", "--out", str(out), "--workers", "0",
                     "--device", "cpu"]) == 0
    results = pq.read_table(out / "results").to_pylist()
    assert sorted(r["multiple"] for r in results) == [30, 50, 70, 110, 130]
    rejected = pq.read_table(out / "rejected").to_pylist()
    assert rejected == [{"number_id": "2", "repeat": 0, "input": '"x"', "reason": "not an integer"}]
    report = json.loads((out / "report.json").read_text())
    assert report["family"] == "toy" and report["command"] == "multiply" and report["schema_version"] == 1
    assert report["headline"]["name"] == "numbers_per_s" and report["rows"] == {"results": 5, "rejected": 1}
    assert report["shards"]["total"] == 6  # 6 numbers: shard_size_for gives ceil(6 / 32) = 1 a shard
    assert "numbers 5" in capsys.readouterr().out
    # a rerun resumes: nothing left to do
    assert cli.main(["multiply", "--numbers", str(numbers), "--factor", "10", "--out", str(out), "--workers", "0",
                     "--device", "cpu"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_a_fourth_family_gets_the_shared_contract(toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as help_exit:
        cli.main(["multiply", "--help"])
    assert help_exit.value.code == 0
    text = capsys.readouterr().out
    assert "--factor N" in text and "(default: 2)" in text and "--workers" in text and "example:" in text
    assert cli.main(["multiply", "--factor", "0", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "motionfleet: error: --factor: must be >= 1, got 0"


def test_every_built_in_family_is_registered_with_its_command():
    assert registry.commands() == {"generate": "dhvae", "reconstruct": "socialmirror", "refine": "scorehoi"}
    for name in registry.FAMILIES:
        family = registry.get(name)
        assert family.name == name and family.load_model and family.graphs and family.presets
