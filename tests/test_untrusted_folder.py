"""The job folder as untrusted data (issue 23.1): paths read from it never leave it, a hand-edited
or foreign file is one line naming it, a prompt file rewritten mid-job fails its shards."""

import json
import os
import subprocess
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from motionfleet import cli
from motionfleet.core.execution import in_process
from motionfleet.core.io.planned_bytes import BLOCK, InputChanged
from motionfleet.core.jobfolder import failures
from motionfleet.core.jobfolder.sink import DamagedFile, JobFolder, read_results, verify_folder, write_shard
from motionfleet.core.jobfolder.storage import OutsideFolder, Storage
from motionfleet.dhvae.source import prompt_rows, scan_prompt_file
from motionfleet.scorehoi.source import estimate_rows, scan_estimates

JOB = {"job": "test", "seed": 0}
ATTEMPT = "0123456789abcdef"
ENV = dict(os.environ, MOTIONFLEET_PROGRESS="0")


def table(n: int, tag: str) -> pa.Table:
    return pa.table({"sample_id": [f"{tag}{i}" for i in range(n)], "value": list(range(n))})


def committed_folder(path, tag: str, rows: int = 3, fingerprint: str = "a" * 64) -> dict:
    """A job folder at ``path`` with one committed shard of ``rows`` rows; its files' records."""
    with JobFolder(str(path)).open(JOB, fingerprint) as folder:
        files = write_shard(folder.location, "shard-00000", table(rows, tag), table(1, f"{tag}-r"), {})
        folder.commit("shard-00000", files, {"results": rows})
    return files


def forge_record(job, shard_id: str, files: dict, name: str | None = None) -> str:
    """A commit record written by hand into ``job``; its name under commits/."""
    record = {"shard_id": shard_id, "attempt": ATTEMPT, "files": files, "summary": {}, "run": "forged",
              "started": 0.0, "committed": time.time()}
    name = name or f"{shard_id}.{ATTEMPT}.json"
    (job / "commits" / name).write_text(json.dumps(record))
    return name


def motionfleet(*args):
    return subprocess.run(["motionfleet", *args], capture_output=True, text=True, env=ENV, timeout=600)


def one_line_error(result, *named: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("motionfleet: error: "), result.stderr
    assert all(part in lines[0] for part in named), lines[0]
    return lines[0]


# --- case 1: a path read from the folder never leaves it ------------------------------------------------


def test_a_record_naming_a_file_of_another_folder_is_damaged_and_never_read(tmp_path):
    job, other = tmp_path / "job", tmp_path / "other"
    committed_folder(job, "ours")
    theirs = committed_folder(other, "theirs", rows=4, fingerprint="b" * 64)
    outside = {table_dir: {**f, "path": f"../other/{f['path']}"} for table_dir, f in theirs.items()}  # size, rows, sha256 all true
    name = forge_record(job, "shard-00001", outside)

    assert read_results(job).column("sample_id").to_pylist() == ["ours0", "ours1", "ours2"]
    found = verify_folder(str(job))
    assert found["shards"] == 1 and found["rows"] == 3
    assert "../other/results" in found["damaged"][f"commits/{name}"][0]
    verify_folder(str(job), repair=True)
    assert not (job / "commits" / name).exists()
    assert all((other / f["path"]).exists() for f in theirs.values())  # named, never followed nor removed


@pytest.mark.parametrize("action", ["rerun", "repair"])
def test_a_record_whose_shard_id_climbs_out_of_the_folder_removes_nothing_outside(tmp_path, action):
    job, victim = tmp_path / "job", tmp_path / "victim" / f"precious.{ATTEMPT}.json"
    committed_folder(job, "ours")
    victim.parent.mkdir()
    victim.write_text("precious")
    shard_id = "../../victim/precious"  # commits/<shard_id>.<attempt>.json is the victim
    files = {t: {"path": f"{t}/gone.{ATTEMPT}.parquet", "size": 1, "rows": 1, "sha256": "0" * 64} for t in ("results", "rejected")}
    name = forge_record(job, shard_id, files, name="evil.json")

    if action == "rerun":
        with JobFolder(str(job)).open(JOB, "a" * 64) as folder:
            assert sorted(folder.committed) == ["shard-00000"]
    else:
        found = verify_folder(str(job), repair=True)
        assert "shard_id '../../victim/precious' is not a shard id" in found["damaged"][f"commits/{name}"][0]
    assert victim.read_text() == "precious"


def test_storage_refuses_a_relative_path_that_leaves_its_folder(tmp_path):
    (tmp_path / "secret").write_text("x")
    storage = Storage(tmp_path / "job")
    for rel in ("../secret", "results/../../secret", "/etc/passwd", "results//x", "./x"):
        with pytest.raises(OutsideFolder):
            storage.read(rel)
        with pytest.raises(OutsideFolder):
            storage.delete(rel)
    assert (tmp_path / "secret").exists()


# --- case 2: hand-edited or foreign JSON is one line naming the file ---------------------------------------


BAD_RECORDS = {"empty-object": b"{}", "list": b"[]", "truncated": b'{"shard_id": "shard-00001", "att',
               "not-utf8": b'{"shard_id": "\xff\xfe"}', "number": b"7"}


@pytest.mark.parametrize("content", list(BAD_RECORDS.values()), ids=list(BAD_RECORDS))
def test_a_damaged_commit_record_is_reported_by_verify_and_ignored_by_a_resume(tmp_path, content, capsys):
    job = tmp_path / "job"
    committed_folder(job, "ours")
    (job / "commits" / f"shard-00001.{ATTEMPT}.json").write_bytes(content)

    assert cli.main(["verify", str(job)]) == 1
    out = capsys.readouterr().out
    assert f"damaged commits/shard-00001.{ATTEMPT}.json: not a commit record motionfleet wrote" in out
    with JobFolder(str(job)).open(JOB, "a" * 64) as folder:
        assert sorted(folder.committed) == ["shard-00000"]
    assert f"shard-00001.{ATTEMPT}.json: not a commit record" in capsys.readouterr().err
    assert read_results(job).num_rows == 3
    assert cli.main(["verify", str(job), "--repair"]) == 0 and cli.main(["verify", str(job)]) == 0  # repaired: nothing damaged is left


def write_job_json(job, content: bytes) -> None:
    committed_folder(job, "ours")
    (job / "job.json").write_bytes(content)


@pytest.mark.parametrize("content", [b"[1, 2]", b'{"job": {}}', b'{"fingerprint": 7, "job": {}}', b'{"finger', b"\xff\xfe{}"],
                         ids=["list", "no-fingerprint", "number-fingerprint", "truncated", "not-utf8"])
def test_a_damaged_job_json_stops_a_resume_and_verify_with_one_line(tmp_path, content):
    job = tmp_path / "job"
    write_job_json(job, content)
    with pytest.raises(DamagedFile, match="job.json: "):
        JobFolder(str(job)).open(JOB, "a" * 64)
    with pytest.raises(DamagedFile, match="use a new --out"):
        verify_folder(str(job))
    assert not list((job / "_lock").iterdir())  # the refused run left no lease behind


def test_verify_of_a_job_json_that_is_a_list_is_one_line_exit_1_through_the_command(tmp_path):
    job = tmp_path / "job"
    write_job_json(job, b"[]")
    result = motionfleet("verify", str(job))
    assert result.returncode == 1
    one_line_error(result, f"{job}/job.json", "use a new --out")


def write_lease(job, lease) -> str:
    job.joinpath("_lock").mkdir(parents=True, exist_ok=True)
    path = job / "_lock" / f"{ATTEMPT}.json"
    path.write_bytes(lease if isinstance(lease, bytes) else json.dumps(lease).encode())
    return str(path)


BAD_LEASES = {"empty-object": {}, "string-expiry": {"owner": "x", "host": "h", "pid": 1, "expires": "tomorrow"},
              "pid-zero": {"owner": "x", "host": "h", "pid": 0, "expires": 1.0}, "list": [], "truncated": b'{"owner": ',
              "not-utf8": b"\xff{}"}


@pytest.mark.parametrize("lease", list(BAD_LEASES.values()), ids=list(BAD_LEASES))
def test_a_damaged_lease_is_refused_with_its_name_and_never_removed(tmp_path, lease):
    job = tmp_path / "job"
    path = write_lease(job, lease)
    with pytest.raises(DamagedFile, match="remove it if no motionfleet job is using this folder"):
        JobFolder(str(job)).open(JOB, "a" * 64)
    assert os.path.exists(path) and os.listdir(job / "_lock") == [os.path.basename(path)]


@pytest.mark.slow
@pytest.mark.parametrize("lease", [{}, {"owner": "x", "host": "h", "pid": 1, "expires": "tomorrow"}], ids=["empty", "string-expiry"])
def test_a_job_into_a_folder_with_a_damaged_lease_is_one_line_exit_1(tmp_path, lease):
    job, prompts = tmp_path / "job", tmp_path / "prompts.txt"
    prompts.write_text("two people hug\n")
    path = write_lease(job, lease)
    result = motionfleet("generate", "--prompts", str(prompts), "--out", str(job), "--preset", "tiny", "--steps", "2",
                         "--workers", "0")
    assert result.returncode == 1
    one_line_error(result, path, "not a motionfleet lease")


def test_a_damaged_failure_record_is_one_line_naming_it(tmp_path):
    storage = Storage(tmp_path)
    storage.makedirs(failures.FAILED_DIR)
    storage.write(f"{failures.FAILED_DIR}/shard-00000.json", b'{"shard_id": "shard-00000"}')
    with pytest.raises(DamagedFile, match="failed/shard-00000.json: not a failure record"):
        failures.read_all(tmp_path)


# --- case 3: a prompt file rewritten while the job runs ----------------------------------------------------


PROMPTS = [f"two people hug, take {i}" for i in range(6)]  # one length: a reordered file keeps every offset


def test_a_prompt_file_rewritten_mid_job_fails_the_shards_after_it_with_the_reason(tmp_path, monkeypatch, capsys):
    prompts, out = tmp_path / "prompts.txt", tmp_path / "job"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    size = prompts.stat().st_size
    real = in_process.write_run  # each finished shard is written, then committed

    def rewrite_after_the_first(*args):
        done = real(*args)
        prompts.write_text("\n".join(reversed(PROMPTS)) + "\n")  # same length, rows reordered
        return done

    monkeypatch.setattr(in_process, "write_run", rewrite_after_the_first)
    # batches of one shard: the next shard's rows are read after the first is written
    code = cli.main(["generate", "--prompts", str(prompts), "--out", str(out), "--preset", "tiny", "--steps", "2",
                     "--num-frames", "6", "--shard-size", "2", "--batch-size", "2", "--workers", "0"])
    assert prompts.stat().st_size == size
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("motionfleet")]
    assert code == 1 and len(err) == 1 and "2 shard(s) failed" in err[0]
    assert f"input changed since planning: {prompts} bytes 0-65536" in err[0]
    assert [(f.shard_id, f.error.split(":")[0]) for f in failures.read_all(out)] == [("shard-00001", "InputChanged"),
                                                                                      ("shard-00002", "InputChanged")]
    rows = read_results(out).select(["sample_id", "prompt"]).to_pylist()
    assert rows == [{"sample_id": str(i), "prompt": PROMPTS[i]} for i in range(2)]  # only what was planned


def lines_over_blocks(count: int) -> list[bytes]:
    return [b"%063d" % i for i in range(count)]  # 64 bytes a line with its newline


def test_only_the_shards_whose_bytes_changed_fail(tmp_path):
    path = tmp_path / "prompts.txt"
    lines = lines_over_blocks(4 * BLOCK // 64)  # four blocks
    path.write_bytes(b"\n".join(lines) + b"\n")
    source = scan_prompt_file(path)
    first, last = (prompt_rows(source, a, a + 100) for a in (0, len(lines) - 100))
    lines[-1], lines[-2] = lines[-2], lines[-1]  # two rows of the last block swap places
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert [r.text for r in first.rows.records()] == [line.decode() for line in lines[:100]]
    with pytest.raises(InputChanged, match=f"input changed since planning: {path} bytes {3 * BLOCK}-{4 * BLOCK}"):
        list(last)


def reordered_parquet(path, rows: dict) -> None:
    pq.write_table(pa.table({key: values[::-1] for key, values in rows.items()}), path, row_group_size=50)


def test_a_parquet_prompt_file_rewritten_after_planning_fails_its_shards(tmp_path):
    path = tmp_path / "prompts.parquet"
    rows = {"id": [f"p{i:03d}" for i in range(200)], "text": [f"two people hug {i:03d}" for i in range(200)]}
    pq.write_table(pa.table(rows), path, row_group_size=50)
    source = scan_prompt_file(path)
    shard = prompt_rows(source, 60, 80)
    assert [r.sample_id for r in shard.rows.records()] == [f"p{i:03d}" for i in range(60, 80)]
    reordered_parquet(path, rows)
    with pytest.raises(InputChanged, match="input changed since planning"):
        list(shard)


def test_a_refine_estimates_file_rewritten_after_planning_fails_its_shards(tmp_path):
    path = tmp_path / "estimates.parquet"
    rows = {"id": [f"e{i:03d}" for i in range(200)], "pose": [[float(i)] * 6 for i in range(200)], "object": ["box"] * 200}
    pq.write_table(pa.table(rows), path, row_group_size=50)
    source = scan_estimates(path)
    shard = estimate_rows(source, 120, 140)
    assert [r.sample_id for r in shard.rows.records()] == [f"e{i:03d}" for i in range(120, 140)]
    reordered_parquet(path, rows)
    with pytest.raises(InputChanged, match="input changed since planning"):
        list(shard)
