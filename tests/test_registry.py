"""The registry: a fourth family is one folder and one registry line, and runs through the real
command line, job runner, sink and report like the built-in ones, and through ``evaluate``,
``leaderboard``, ``bench`` and ``render`` with the evaluation protocol, bench case and drawing it
registers."""

import json
import sys
import textwrap

import av
import pandas as pd
import pyarrow.parquet as pq
import pytest

from motionfleet import cli
from motionfleet.core import registry
from motionfleet.render import video_name

TOY_FAMILY = '''
"""A toy family: numbers -> their multiples. Everything a family registers, nothing else."""

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from motionfleet.core.options import build_from, existing_file, file_option, int_option, options_of, scheduling, setting
from motionfleet.core.registry import BenchCase, Evaluation, Family, Plan, Render, Summary, bench_setting
from motionfleet.core.io.rejections import rejected_row, rejected_table
from motionfleet.core.jobfolder.report import common_lines, peak_memory
from motionfleet.core.shards import plan_shards, shard_size_for
from motionfleet.core.runtime.stopwatch import Timings, total

SCHEMA = pa.schema([("number_id", pa.string()), ("value", pa.int64()), ("multiple", pa.int64())])


@dataclass(frozen=True)
class Spec:
    preset: str = "unit"


@dataclass(frozen=True)
class Settings:
    factor: int = setting(2, "what every number is multiplied by", low=1)
    batch_size: int = scheduling(64)


def plan(path, spec, settings, shard_size, out_dir):
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


# Its evaluation: each multiple scored against value x the protocol's expected factor.
def evaluation_options():
    from motionfleet.core import jobs

    return jobs.engine_options(FAMILY) + FAMILY.options + (
        int_option("expected_factor", 10, "the factor a multiple is scored against", low=1),
        int_option("replications", 2, "jobs of the whole set", low=1))


def run_evaluation(out, dataset, workers, address, values):
    from motionfleet.core import jobs
    from motionfleet.core.jobfolder.sink import read_results
    from motionfleet.evaluation.results import write_metrics

    expected, replications = values.pop("expected_factor", 10), values.pop("replications", 2)
    values.pop("seed", None)  # nothing is drawn
    errors = []
    for r in range(replications):
        jobs.run("multiply", dataset, out=Path(out) / f"multiply-r{r}", workers=workers, address=address, **values)
        rows = read_results(Path(out) / f"multiply-r{r}").to_pylist()
        errors.append(sum(abs(row["multiple"] - expected * row["value"]) for row in rows) / len(rows))
    info = {"protocol": "toy-multiples", "family": "toy", "main_metric": "mean_error", "lower_is_better": LOWER_IS_BETTER,
            "replications": replications, "protocol_settings": {"expected_factor": expected}, "seed": None,
            "dataset": {"root": str(dataset), "motions": len(rows), "sha256": "-"}, "model": {"settings": values},
            "evaluator": {"weights": "none (arithmetic)"}}
    return write_metrics(out, {"generated": {"mean_error": errors}}, info)


LOWER_IS_BETTER = {"mean_error": True}
EVALUATION = Evaluation(protocol="toy-multiples", options=evaluation_options, run=run_evaluation,
                        keywords=lambda: {"seed"}, lower_is_better=LOWER_IS_BETTER,
                        dataset="a text file of integers", dataset_is_folder=False)


# Its bench case: one batch of numbers through the runner.
@dataclass(frozen=True)
class MultiplyBench:
    toy_preset: str = bench_setting("unit", "toy model size", choices=("unit",))
    toy_factor: int = bench_setting(3, "toy multiplier", type=int, low=1)


def bench_cases(own, settings, clock):
    runners = {name: clock.build(name, lambda: Multiplier(own.toy_preset, Settings(own.toy_factor, 64)))
               for name in settings.backends}
    return lambda batch: {name: (lambda r=r: r.run([(i, str(i)) for i in range(batch)])) for name, r in runners.items()}


BENCH = BenchCase(case="multiply", unit="numbers", settings=MultiplyBench, preset="toy_preset", cases=bench_cases,
                  loop_settings=("toy_factor",))


# Its drawing: one frame per unit of the row's value, a bar as high as its multiple.
def draw(rows, path):
    from motionfleet.render import Canvas, write_mp4

    row = rows[0]
    canvas = Canvas(1, [f"{row['number_id']}: {row['value']} -> {row['multiple']}"])

    def frames():
        for step in range(1, row["value"] + 1):
            canvas.clear()
            canvas.axes[0].bar([0], [row["multiple"] * step / row["value"]])
            canvas.axes[0].set_ylim(0, max(row["multiple"], 1))
            yield canvas.rgb()

    try:
        return write_mp4(path, frames())
    finally:
        canvas.close()


RENDER = Render(columns=("number_id", "value", "multiple"), videos=lambda job, values: draw)


FAMILY = Family(
    name="toy", command="multiply", summary="numbers -> multiples (a test family)",
    example="motionfleet multiply --numbers n.txt --out runs/toy", unit="number", id_column="number_id",
    presets=("unit",), default_preset="unit",
    inputs=file_option("numbers", "a text file of integers", existing_file),
    options=options_of(Settings), build=build_from(Spec, Settings), plan=plan, runner=Multiplier, summarise=summarise,
    report_lines=lambda report: [f"numbers {report['timing']['numbers']}", *common_lines(report)],
    load_model=load_model, evaluation=EVALUATION, bench=BENCH, render=RENDER,
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


def numbers_job(tmp_path):
    """A multiply job of 3, 5 and 7 by 10."""
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("3 5 7")
    out = tmp_path / "job"
    assert cli.main(["multiply", "--numbers", str(numbers), "--factor", "10", "--out", str(out), "--workers", "0",
                     "--device", "cpu"]) == 0
    return out


def test_a_fourth_family_runs_through_evaluate(toy, tmp_path, capsys):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("3 5 7")
    run = ["evaluate", "--family", "toy", "--dataset", str(numbers), "--workers", "0", "--device", "cpu"]
    assert cli.main([*run, "--factor", "10", "--replications", "3", "--out", str(tmp_path / "exact")]) == 0
    body = json.loads((tmp_path / "exact" / "metrics.json").read_text())
    assert body["protocol"] == "toy-multiples" and body["metrics"]["generated"]["mean_error"]["values"] == [0.0] * 3
    assert "toy-multiples (toy), 3 replications" in capsys.readouterr().out
    # 3, 5 and 7 times 4 where 10 is expected: off by 6 x 5 on average, in each of the 2 default replications
    assert cli.main([*run, "--factor", "4", "--out", str(tmp_path / "off")]) == 0
    assert json.loads((tmp_path / "off" / "metrics.json").read_text())["metrics"]["generated"]["mean_error"]["values"] == [30.0] * 2
    capsys.readouterr()
    # its flags are checked as flags, and another protocol's flag is not one of its settings
    assert cli.main([*run, "--expected-factor", "0", "--out", str(tmp_path / "bad")]) == 2
    assert cli.main([*run, "--match-batch", "8", "--out", str(tmp_path / "bad")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == ["motionfleet: error: --expected-factor: must be >= 1, got 0",
                      "motionfleet: error: --match-batch: not a setting of toy's protocol"]
    assert not (tmp_path / "bad").exists()


def test_the_evaluate_help_lists_a_fourth_protocol_and_its_flags(toy, capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--family {dhvae,scorehoi,socialmirror,toy}" in text and "toy: a text file of integers" in text
    assert "--expected-factor N the factor a multiple is scored against (default: 10)" in text.split("toy only:")[1]


def test_a_fourth_family_runs_through_the_leaderboard(toy, tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("3 5 7")
    config = tmp_path / "board.toml"
    config.write_text(textwrap.dedent(f"""
        protocol = "toy-multiples"
        dataset = "{numbers}"
        workers = 0
        [protocol_settings]
        replications = 1
        [[entry]]
        name = "times-seven"
        [entry.settings]
        factor = 7
        [entry.published]
        paper = "a toy"
        table = "Table 1"
        mean_error = 14.0
        [[entry]]
        name = "times-ten"
        [entry.settings]
        factor = 10
    """))
    assert cli.main(["leaderboard", str(config), "--out", str(tmp_path / "board")]) == 0
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert board["family"] == "toy" and [e["name"] for e in board["entries"]] == ["times-ten", "times-seven"]
    assert board["entries"][1]["cells"]["mean_error"] == {"mean": 15.0, "interval": 0.0, "published": 14.0,
                                                          "published_interval": None, "difference": 1.0}


def test_a_fourth_family_runs_through_bench(toy, tmp_path, capsys):
    assert cli.main(["bench", "--families", "toy", "--backends", "torch", "--batch-sizes", "1,4", "--repeats", "3",
                     "--toy-factor", "5", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("bench-cpu-*.json")
    frame = pd.read_json(path)
    assert list(frame["batch"]) == [1, 4] and set(frame["family"]) == {"toy"} and set(frame["case"]) == {"multiply"}
    assert set(frame["unit"]) == {"numbers"} and set(frame["preset"]) == {"unit"} and set(frame["toy_factor"]) == {5}
    assert (frame["p50_ms"] > 0).all() and json.loads(frame["settings"][0])["toy_factor"] == 5
    assert "toy/multiply" in capsys.readouterr().out
    assert cli.main(["bench", "--families", "toy", "--toy-factor", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "motionfleet: error: --toy-factor must be >= 1, got 0"


def frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_a_fourth_family_runs_through_render_which_reads_the_family_from_job_json(toy, tmp_path, capsys):
    job = numbers_job(tmp_path)
    capsys.readouterr()
    videos = tmp_path / "videos"
    assert cli.main(["render", str(job), "--ids", "0,2", "--out", str(videos)]) == 0
    paths = {i: videos / video_name("toy", i) for i in ("0", "2")}
    assert capsys.readouterr().out.splitlines() == [f"{i} -> {path}" for i, path in paths.items()]
    assert [frame_count(paths["0"]), frame_count(paths["2"])] == [3, 7]  # one frame per unit of the row's value
    recorded = json.loads((job / "job.json").read_text())
    (job / "job.json").write_text(json.dumps({**recorded, "job": {**recorded["job"], "family": "nope"}}))
    assert cli.main(["render", str(job), "--ids", "0", "--out", str(videos)]) == 2
    assert "job.json records 'nope'" in capsys.readouterr().err


def test_every_package_folder_of_the_engine_is_packaged():
    """A folder under engine/ with an ``__init__.py`` ships only when pyproject.toml lists it."""
    import sys
    from pathlib import Path

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("motionfleet", *init.parent.relative_to(root / "engine").parts)) for init in (root / "engine").rglob("__init__.py")}
    missing = sorted(found - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert {"motionfleet.kernels", "motionfleet.export"} <= listed


def test_only_scheduling_settings_stay_out_of_each_familys_job_description():
    """The job's description (and so its fingerprint) keeps every setting that can change a row's
    bytes; batch size and prefetch depth are marked ``scheduling`` on the settings dataclass itself."""
    from dataclasses import asdict, fields, replace

    from motionfleet.core.options import output_settings
    from motionfleet.dhvae.runner import GenerateSettings
    from motionfleet.scorehoi.settings import RefineSettings
    from motionfleet.socialmirror.settings import ReconstructSettings

    expected = {GenerateSettings: {"batch_size"}, RefineSettings: {"batch_size"},
                ReconstructSettings: {"batch_size", "prefetch_clips"}}
    for cls, left_out in expected.items():
        settings = cls()
        assert set(asdict(settings)) - set(output_settings(settings)) == left_out, cls.__name__
        changed = replace(settings, **{name: 3 for name in left_out})
        assert output_settings(changed) == output_settings(settings)
        assert all(not f.metadata.get("scheduling") for f in fields(cls) if f.name not in left_out)
