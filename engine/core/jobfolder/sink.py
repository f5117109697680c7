"""The job folder: Parquet output exactly once per shard, on any filesystem pyarrow knows.

Layout (``--out`` is a local path or a URI: file://, s3://, gs://, hdfs://):
    job.json                               the job's identity (fingerprint + settings), written before any shard
    results/<shard>.<attempt>.parquet      accepted rows of one attempt at a shard
    rejected/<shard>.<attempt>.parquet     rejected items of that attempt, with reasons
    commits/<shard>.<attempt>.json         the commit record: each file's size, rows and sha256, the shard's
                                           counts and timings
    commits/_records-<token>.parquet       a cache of the records' contents (``JobFolder.compact``)
    report.json                            the whole job's report, rebuilt from the commit records
    _lock/<token>.json                     the lease of the job running now (``lease``)

Object stores have no atomic rename, so nothing is renamed into a trusted name: a worker writes an
attempt's files under final, attempt-unique names (one PUT each; fsynced on a local disk); the
driver checks them (exist, size, rows) and writes the shard's commit record (one small object,
O(1) whatever was committed before). Readers read only committed attempts; a cleanup removes the
files of uncommitted attempts (only names this engine gives). Two attempts at a shard write the
same bytes and the first commit wins, so a retried or speculative attempt is harmless. A resume
compares every committed file's size with a listing and recomputes a shard whose files are missing
or truncated; ``verify_folder`` also reads every byte against the recorded sha256.

Every file of the folder is read as untrusted data. ``job.json`` must be an object with a string
``fingerprint`` and a ``job`` object, else the job stops with one ``DamagedFile`` line naming it. A
commit record must be the object ``commit`` writes: ``shard_id`` a shard id (``[A-Za-z0-9_-]+``),
``attempt`` 16 hex digits, its own name ``<shard_id>.<attempt>.json``, ``files`` exactly
``results`` and ``rejected``, each with ``path`` exactly ``<table>/<shard_id>.<attempt>.parquet``,
``size`` and ``rows`` non-negative integers, ``sha256`` 64 hex digits, and ``summary``, ``run``,
``started``, ``committed`` of their types. Any other record (its cached copy included) is damaged:
the paths it names are never read or removed, its shard counts as uncommitted (a rerun computes it
again), ``verify`` reports it and ``verify --repair`` removes the record itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from motionfleet.core.jobfolder.failures import FAILED_DIR
from motionfleet.core.jobfolder.lease import LOCK_DIR, FolderInUse, FolderRefused, Lease, LeaseLost
from motionfleet.core.jobfolder.report import REPORT
from motionfleet.core.jobfolder.storage import TEMPORARY, DamagedFile, Storage, new_token

__all__ = ["JobFolder", "JobMismatch", "FolderInUse", "LeaseLost", "UnrelatedFolder", "FolderNotShared", "FolderRefused",
           "DamagedFile", "read_job", "write_shard", "check_visible", "read_results", "iter_results", "verify_folder"]

JOB = "job.json"
RESULTS_DIR = "results"
REJECTED_DIR = "rejected"
COMMITS_DIR = "commits"
TABLES = (RESULTS_DIR, REJECTED_DIR)
# Everything the engine names at the top of a job folder (``failures``: shards that failed after
# their retries; ``demo_videos``: the synthetic corpus of ``reconstruct --demo``; ``stages``: the
# job folders of the stages its shards read, ``execution.stages``).
STAGES_DIR = "stages"
ENGINE_NAMES = {JOB, REPORT, RESULTS_DIR, REJECTED_DIR, COMMITS_DIR, LOCK_DIR, FAILED_DIR, "demo_videos", STAGES_DIR}
CACHE_FILE = re.compile(r"^_records-[0-9a-f]{16}\.parquet$")
ATTEMPT_FILE = re.compile(r"^(?P<shard>[A-Za-z0-9_-]+)\.(?P<attempt>[0-9a-f]{16})\.parquet$")
SHARD_ID = re.compile(r"^[A-Za-z0-9_-]+$")
ATTEMPT = re.compile(r"^[0-9a-f]{16}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")

class JobMismatch(FolderRefused):
    """The output folder holds shards of a different job."""


class UnrelatedFolder(FolderRefused):
    """The output folder is not empty and is not a job folder."""


class FolderNotShared(FolderRefused):
    """A worker cannot see the job folder the driver writes (a local --out on a multi-node cluster)."""


@dataclass(frozen=True)
class FileRecord:
    """One written file of an attempt: where, how big, how many rows, its sha256."""
    path: str
    size: int
    rows: int
    sha256: str


def _leaf_type(t: pa.DataType) -> pa.DataType:
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return t


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth Parquet's dictionary encoding: not floats. A motion's floats almost never
    repeat; trying a dictionary on them was most of a shard's encoding and made the file 1.6x
    larger (a dhvae shard of 2 x 300 frames, benchmarks/test_job_folder.py::test_encode_a_motion_shard
    on the quiet 2-core CPU: 26.2 ms and 1.90 MB against 4.8 ms and 1.16 MB)."""
    return [f.name for f in schema if not pa.types.is_floating(_leaf_type(f.type))]


def _table_bytes(table: pa.Table, metadata: dict[str, str]) -> bytes:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", use_dictionary=dictionary_columns(table.schema))
    return sink.getvalue().to_pybytes()


def write_shard(location: str, shard_id: str, results: pa.Table, rejected: pa.Table,
                metadata: dict[str, str]) -> dict[str, dict]:
    """Worker side: both files of one attempt at a shard, under attempt-unique names; returns their
    records (table -> FileRecord as a dict) for the driver to check and commit."""
    storage, attempt, files = Storage(location), new_token(), {}
    for table_dir, table in zip(TABLES, (results, rejected)):
        data = _table_bytes(table, metadata)
        path = f"{table_dir}/{shard_id}.{attempt}.parquet"
        storage.write_new(path, data)
        files[table_dir] = FileRecord(path, len(data), table.num_rows, hashlib.sha256(data).hexdigest()).__dict__
    return files


class JobFolder:
    """Driver side: one job's folder. ``open`` refuses what it must, takes the lease, writes the job's
    identity and cleans up; then ``commit`` each shard; ``close`` releases the lease."""

    def __init__(self, location: str, ttl_s: float | None = None):
        self.storage = Storage(location)
        self.location = self.storage.location
        self.ttl_s = ttl_s
        self.committed: dict[str, dict] = {}
        self.lease: Optional[Lease] = None
        self.run = {"run": new_token(), "started": time.time()}

    # --- opening ---------------------------------------------------------------------------------
    def open(self, job: dict, fingerprint: str) -> "JobFolder":
        self._refuse_other_job(fingerprint)
        self.lease = Lease(self.storage, owner=f"{job.get('job', 'job')} {fingerprint[:12]}", ttl_s=self.ttl_s)
        self.lease.acquire()
        try:
            self._refuse_other_job(fingerprint)  # a job that finished while this one waited for the lease
            if self.storage.size(JOB) is None:
                self.storage.write(JOB, json.dumps({"fingerprint": fingerprint, "job": job}, indent=1).encode())
            for sub in (*TABLES, COMMITS_DIR):
                self.storage.makedirs(sub)
            self.committed = committed_records(self.storage)
            self.uncached = sum(not r.get("cached") for r in self.committed.values())
            self._uncommit_damaged()
            self.clean_up()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> "JobFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def _refuse_other_job(self, fingerprint: str) -> None:
        entries = self.storage.listing()
        if JOB in entries:
            theirs = read_job(self.storage)["fingerprint"]
            if theirs != fingerprint:
                raise JobMismatch(
                    f"{self.location} holds results of another job (fingerprint {theirs[:12]}, this job "
                    f"{fingerprint[:12]}): use a new --out, or the same settings to resume")
            return
        strangers = sorted(set(entries) - ENGINE_NAMES - {n for n in entries if TEMPORARY.match(n)})
        if strangers or REPORT in entries or any(self.storage.listing(sub) for sub in TABLES):
            shown = ", ".join((strangers or [n for n in entries if n in ENGINE_NAMES])[:3])
            raise UnrelatedFolder(f"{self.location} is not empty and is not a motionfleet job folder (it holds {shown}): "
                                  f"use a new or empty --out")

    def _uncommit_damaged(self) -> None:
        """Cheap resume check: every committed file is listed with its recorded size; a shard whose
        files are missing or truncated loses its commit record and is computed again."""
        sizes = {table_dir: self.storage.listing(table_dir) for table_dir in TABLES}
        for shard_id, record in list(self.committed.items()):
            damaged = [f["path"] for table_dir, f in record["files"].items()
                       if sizes[table_dir].get(f["path"].rsplit("/", 1)[1]) != f["size"]]
            if damaged:
                print(f"motionfleet: shard {shard_id}: {', '.join(damaged)} missing or of the wrong size; "
                      f"computing it again", file=sys.stderr)
                self.storage.delete(record_name(record))
                del self.committed[shard_id]

    def clean_up(self) -> None:
        """Remove what no commit record names: files of uncommitted attempts and this engine's temporaries."""
        keep = {f["path"] for record in self.committed.values() for f in record["files"].values()}
        for sub in (*TABLES, COMMITS_DIR, FAILED_DIR, ""):
            for name, size in self.storage.listing(sub).items():
                path = f"{sub}/{name}" if sub else name
                ours = TEMPORARY.match(name) or (sub in TABLES and ATTEMPT_FILE.match(name))
                if size is not None and ours and path not in keep:
                    self.storage.delete(path)

    # --- committing ------------------------------------------------------------------------------
    def is_committed(self, shard_id: str) -> bool:
        return shard_id in self.committed

    def commit(self, shard_id: str, files: dict[str, dict], summary: dict) -> bool:
        """Check an attempt's files and commit it; False if the shard was already committed (the
        first commit wins; a later attempt's files are removed)."""
        if shard_id in self.committed:
            self.discard(files)
            return False
        for f in files.values():
            self._check_file(f)
        assert self.lease is not None, "commit() needs the job folder open"
        self.lease.assert_held()
        named = ATTEMPT_FILE.match(files[RESULTS_DIR]["path"].rsplit("/", 1)[1])
        assert named is not None, "attempt files are named above, in this module"
        attempt = named["attempt"]
        record = {"shard_id": shard_id, "attempt": attempt, "files": files, "summary": summary, **self.run,
                  "committed": time.time()}
        self.storage.write(record_name(record), json.dumps(record).encode())
        try:
            self.lease.assert_held()  # stalled inside the write: the job that took over never counts this record
        except LeaseLost:
            self.storage.delete(record_name(record))
            raise
        self.committed[shard_id] = record
        self.uncached += 1
        return True

    def compact(self, every: int = 1000) -> None:
        """Once ``every`` records are not in a cache, write every record's content into one new cache
        (one Parquet object) and remove the older caches, so that a resume reads one object instead of
        a million. The listing of ``commits/`` stays the truth of what is committed: a cache only
        holds contents, which never change under a record's name (shard + attempt)."""
        if self.uncached < every:
            return
        old = [n for n in self.storage.listing(COMMITS_DIR) if CACHE_FILE.match(n)]
        records = [{k: v for k, v in r.items() if k != "cached"} for r in self.committed.values()]
        cache = pa.table({"name": [record_name(r).rsplit("/", 1)[1] for r in records],
                          "record": [json.dumps(r) for r in records]})
        sink = pa.BufferOutputStream()
        pq.write_table(cache, sink, compression="zstd")
        self.storage.write(f"{COMMITS_DIR}/_records-{new_token()}.parquet", sink.getvalue().to_pybytes())
        for name in old:
            self.storage.delete(f"{COMMITS_DIR}/{name}")
        self.uncached = 0

    def discard(self, files: dict[str, dict]) -> None:
        """Remove the files of an attempt that will not be committed (another attempt was)."""
        for f in files.values():
            self.storage.delete(f["path"])

    def _check_file(self, f: dict) -> None:
        size = self.storage.size(f["path"])
        if size != f["size"]:
            raise OSError(f"{self.location}/{f['path']}: the worker wrote {f['size']} bytes, the driver sees "
                          f"{'no file' if size is None else f'{size} bytes'}: is --out on storage every node shares?")
        with self.storage.open_input(f["path"]) as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        if rows != f["rows"]:
            raise OSError(f"{self.location}/{f['path']}: {rows} rows, the worker wrote {f['rows']}")

    # --- shared storage ---------------------------------------------------------------------------
    def visibility_probe(self) -> tuple[str, str, str]:
        """Write a token that every worker must read back (``check_visible``) before any work; the
        caller removes it with ``storage.delete(path)`` (a cleanup does too, it is a temporary)."""
        token = new_token()
        path = f".probe.tmp-{token}"
        self.storage.write(path, token.encode())
        return self.location, path, token

    # --- the report ------------------------------------------------------------------------------
    def summaries(self) -> list[dict]:
        """Every committed shard's summary with its run and commit time, in shard order: the whole job
        across resumes, from which the report is rebuilt."""
        return [{**r["summary"], "run": r["run"], "run_started": r["started"], "committed": r["committed"]}
                for _, r in sorted(self.committed.items())]


def whole_job_wall_s(summaries: list[dict]) -> float:
    """Seconds the job's runs spent, each from its start to its last commit (killed runs included)."""
    runs: dict[str, tuple[float, float]] = {}
    for s in summaries:
        start, last = runs.get(s["run"], (s["run_started"], s["committed"]))
        runs[s["run"]] = (start, max(last, s["committed"]))
    return sum(last - start for start, last in runs.values())


def check_visible(probe: tuple[str, str, str]) -> Optional[str]:
    """Worker side of ``JobFolder.visibility_probe``: None, or why this node cannot see the job folder
    (the driver raises ``FolderNotShared`` with it)."""
    location, path, token = probe
    try:
        seen = Storage(location).read(path).decode()
    except OSError:  # FileNotFoundError included
        seen = None
    if seen == token:
        return None
    return (f"--out {location} is not visible from the worker node {socket.gethostname()}: on a multi-node cluster "
            f"use storage every node shares (an NFS path, or an s3:// / gs:// / hdfs:// URI)")


def record_name(record: dict) -> str:
    return f"{COMMITS_DIR}/{record['shard_id']}.{record['attempt']}.json"


def committed_records(storage: Storage) -> dict[str, dict]:
    """shard id -> commit record of every valid record ``commits/`` lists; a damaged one is named on
    stderr and left out (its shard is computed again)."""
    records, damaged = read_commits(storage)
    for name, problem in damaged.items():
        print(f"motionfleet: {storage.shown(name)}: {problem}; ignoring it (motionfleet verify --repair removes it)",
              file=sys.stderr)
    return records


def read_commits(storage: Storage) -> tuple[dict[str, dict], dict[str, str]]:
    """(shard id -> commit record, ``commits/<name>`` -> why it is not one) for every record
    ``commits/`` lists: from a cache where it holds the name (marked ``cached``), else read (an
    object store answers many small GETs at once)."""
    listed = storage.listing(COMMITS_DIR)
    cached = _read_caches(storage, [n for n in listed if CACHE_FILE.match(n)])
    names = [n for n in listed if n.endswith(".json") and not TEMPORARY.match(n)]
    missing = [n for n in names if n not in cached]
    with ThreadPoolExecutor(1 if storage.local else 32) as pool:
        read = dict(zip(missing, pool.map(lambda name: _read_record(storage, name), missing)))
    records: list[dict] = []
    damaged: dict[str, str] = {}
    for name in names:
        record, problem = _parsed_record(name, cached[name]) if name in cached else read[name]
        if problem is not None:
            damaged[f"{COMMITS_DIR}/{name}"] = f"not a commit record motionfleet wrote ({problem})"
        elif record is not None:  # None: removed between the listing and the read, not committed
            records.append({**record, "cached": True} if name in cached else record)
    by_shard: dict[str, dict] = {}
    for record in sorted(records, key=lambda r: r["committed"]):
        by_shard[record["shard_id"]] = record  # a record left behind by a failed removal loses to a later one
    return by_shard, damaged


def _read_caches(storage: Storage, names: list[str]) -> dict[str, str]:
    cached: dict[str, str] = {}
    for name in names:
        try:
            with storage.open_input(f"{COMMITS_DIR}/{name}") as handle:
                table = pq.read_table(handle)
            cached.update(zip(table.column("name").to_pylist(), table.column("record").to_pylist()))
        except (OSError, pa.ArrowException, KeyError):  # a damaged cache only costs reading the records themselves
            continue
    return cached


def _read_record(storage: Storage, name: str) -> tuple[Optional[dict], Optional[str]]:
    try:
        return _parsed_record(name, storage.read(f"{COMMITS_DIR}/{name}"))
    except FileNotFoundError:
        return None, None


def _parsed_record(name: str, data) -> tuple[Optional[dict], Optional[str]]:
    """(the record, None), or (None, why ``commits/<name>`` holding ``data`` is not a commit record)."""
    try:
        record = json.loads(data)
    except (ValueError, TypeError, RecursionError) as err:
        return None, f"not readable JSON: {str(err).splitlines()[0][:120] if str(err) else type(err).__name__}"
    problem = record_problem(name, record)
    return (None, problem) if problem else (record, None)


def record_problem(name: str, record) -> Optional[str]:
    """Why ``record``, listed as ``commits/<name>``, is not a record ``JobFolder.commit`` writes, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    shard_id, attempt = record.get("shard_id"), record.get("attempt")
    if not isinstance(shard_id, str) or not SHARD_ID.match(shard_id):
        return f"shard_id {shard_id!r:.80} is not a shard id"
    if not isinstance(attempt, str) or not ATTEMPT.match(attempt):
        return f"attempt {attempt!r:.80} is not 16 hex digits"
    if name != f"{shard_id}.{attempt}.json":
        return f"its name is not {shard_id}.{attempt}.json"
    files = record.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(TABLES):
        return f"files must name exactly {' and '.join(TABLES)}"
    problem = next(filter(None, (_file_record_problem(t, files[t], f"{t}/{shard_id}.{attempt}.parquet") for t in TABLES)), None)
    if problem:
        return problem
    kinds: dict[str, type | tuple[type, ...]] = {"summary": dict, "run": str, "started": (int, float), "committed": (int, float)}
    wrong = [key for key, kind in kinds.items() if isinstance(record.get(key), bool) or not isinstance(record.get(key), kind)]
    return f"{', '.join(wrong)} missing or of the wrong type" if wrong else None


def _file_record_problem(table_dir: str, f, path: str) -> Optional[str]:
    if not isinstance(f, dict):
        return f"files.{table_dir} is not an object"
    if f.get("path") != path:
        return f"files.{table_dir}.path {f.get('path')!r:.120} is not {path}"
    counts = [f.get(key) for key in ("size", "rows")]
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts):
        return f"files.{table_dir} size / rows are not non-negative integers"
    if not isinstance(f.get("sha256"), str) or not SHA256.match(f["sha256"]):
        return f"files.{table_dir}.sha256 is not 64 hex digits"
    return None


def read_job(storage: Storage) -> dict:
    """``job.json``: {"fingerprint": str, "job": {...}}, or ``DamagedFile`` naming it."""
    fix = "restore it, or use a new --out (the folder's results belong to the job it described)"
    job = storage.read_json(JOB, fix)
    if not isinstance(job, dict) or not isinstance(job.get("fingerprint"), str) or not isinstance(job.get("job"), dict):
        raise storage.damaged(JOB, 'not the job description motionfleet writes ({"fingerprint": ..., "job": {...}})', fix)
    return job


def read_results(location, subdir: str = RESULTS_DIR) -> pa.Table:
    """All committed shards of one table (results or rejected), in shard order."""
    storage = Storage(str(location))
    tables = []
    for _, record in sorted(committed_records(storage).items()):
        with storage.open_input(record["files"][subdir]["path"]) as handle:
            tables.append(pq.read_table(handle))
    return pa.concat_tables(tables) if tables else pa.table({})


def result_locations(location, keys: tuple[str, ...] = ("sample_id", "repeat")) -> dict[tuple, tuple[str, int]]:
    """Each committed result row's ``keys`` values -> (its file's path inside the job folder, its row in that file)."""
    storage = Storage(str(location))
    found = {}
    for _, record in sorted(committed_records(storage).items()):
        path = record["files"][RESULTS_DIR]["path"]
        with storage.open_input(path) as handle:
            table = pq.read_table(handle, columns=list(keys))
        for row, key in enumerate(zip(*(table[k].to_pylist() for k in keys))):
            found[key] = (path, row)
    return found


def iter_results(location, columns: Optional[list[str]] = None, batch_rows: int = 256,
                 subdir: str = RESULTS_DIR) -> Iterator[pa.RecordBatch]:
    """The committed rows of one table in shard order, ``batch_rows`` at most at a time (one Parquet
    file open at once), for readers of a job too large to hold: ``read_results`` as a stream."""
    storage = Storage(str(location))
    for _, record in sorted(committed_records(storage).items()):
        with storage.open_input(record["files"][subdir]["path"]) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns)


def verify_folder(location: str, repair: bool = False) -> dict:
    """Read every committed file fully: present, its recorded size, sha256 and rows, readable Parquet;
    a record that is not one ``commit`` writes is damaged too (the paths it names are not read).
    ``repair`` removes the damaged records, so the next run computes their shards again: it changes
    the folder, so it holds the job's lease meanwhile (``FolderInUse`` while a job runs, nothing
    read or removed); a check without ``repair`` only reads, and may run beside a job."""
    storage = Storage(location)
    if storage.size(JOB) is None:
        raise UnrelatedFolder(f"{location} is not a motionfleet job folder (no {JOB})")
    read_job(storage)
    found = _verified_with_lease(storage, repair)
    for stage in _stage_folders(storage):  # each is a job folder of its own (``execution.stages``)
        for name, problems in verify_folder(stage, repair)["damaged"].items():
            found["damaged"][f"{stage[len(storage.location) + 1:]}/{name}"] = problems
    return found


def _stage_folders(storage: Storage) -> list[str]:
    """The locations of ``stages/<name>`` folders that hold a job (names this engine gives only)."""
    names = [n for n, size in storage.listing(STAGES_DIR).items() if size is None and SHARD_ID.match(n)]
    return [f"{storage.location}/{STAGES_DIR}/{n}" for n in sorted(names) if storage.size(f"{STAGES_DIR}/{n}/{JOB}") is not None]


def _verified_with_lease(storage: Storage, repair: bool) -> dict:
    if not repair:
        return _verified(storage, repair=False)
    lease = Lease(storage, owner="verify --repair")
    try:
        lease.acquire()
    except FolderInUse as err:
        raise FolderInUse(f"{str(err).split(': wait for')[0]}: verify --repair changes the folder; run it once that "
                          f"job has stopped (verify without --repair only reads)") from None
    try:
        return _verified(storage, repair=True)
    finally:
        lease.release()


def _verified(storage: Storage, repair: bool) -> dict:
    records, damaged_records = read_commits(storage)
    damaged = {name: [problem] for name, problem in damaged_records.items()}
    for shard_id, record in sorted(records.items()):
        problems = [p for f in record["files"].values() if (p := _file_problem(storage, f))]
        if problems:
            damaged[shard_id] = problems
            if repair:
                storage.delete(record_name(record))
    if repair:
        for name in damaged_records:
            storage.delete(name)
    named = {f["path"] for r in records.values() for f in r["files"].values()}
    uncommitted = [f"{d}/{n}" for d in TABLES for n in storage.listing(d) if f"{d}/{n}" not in named]
    return {"shards": len(records), "damaged": damaged, "uncommitted_files": uncommitted,
            "rows": sum(r["files"][RESULTS_DIR]["rows"] for r in records.values()),
            "rejected": sum(r["files"][REJECTED_DIR]["rows"] for r in records.values())}


def _file_problem(storage: Storage, f: dict) -> Optional[str]:
    try:
        data = storage.read(f["path"])
    except FileNotFoundError:
        return f"{f['path']}: missing"
    if len(data) != f["size"]:
        return f"{f['path']}: {len(data)} bytes, committed {f['size']}"
    if hashlib.sha256(data).hexdigest() != f["sha256"]:
        return f"{f['path']}: sha256 differs from the commit record"
    try:
        rows = pq.read_table(pa.BufferReader(data)).num_rows
    except (pa.ArrowException, OSError) as err:
        return f"{f['path']}: unreadable Parquet ({err})"
    return None if rows == f["rows"] else f"{f['path']}: {rows} rows, committed {f['rows']}"

