"""One folder on any filesystem pyarrow knows: a local path or a URI (file://, s3://, gs://, hdfs://).

``pyarrow.fs.FileSystem.from_uri`` resolves the URI with the usual environment configuration (for
S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_REGION``, ...). Object stores have no rename
and no append, but a PUT of a whole object is atomic, so ``write`` is one PUT there; on a local
disk (NFS included) it writes a temporary name, fsyncs it, renames it into place and fsyncs the
directory, so a power loss never leaves a renamed file that is empty.

Every relative path is checked before it is joined to the root (``path``): no empty, ``.`` or
``..`` component and no leading ``/``, so a name read from a file of the folder (a commit record,
a lease) can never reach outside it. ``read_json`` turns a file that is not UTF-8 JSON into one
``DamagedFile`` line naming it; the caller checks the value's shape.

An S3 store that stops answering must fail the job, not hang it: each request gives up after
``MOTIONFLEET_S3_TIMEOUT`` seconds without a byte (connect or transfer; 10 by default) and is tried
``MOTIONFLEET_S3_ATTEMPTS`` times (3), so one operation fails within about attempts x timeout (30 s
by default; the AWS SDK's own defaults retry for about 100 s). A stalled store, refused credentials
or a missing bucket become ``StoreUnavailable``: one line naming the store and the fix, and the job
stops (committed shards are kept; a rerun resumes).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from motionfleet.core.errors import DataError, OutputUnwritable
from motionfleet.core.options import UsageError

# The temporaries this engine names (``.<name>.tmp-<16 hex>``); nothing else is ever removed as one.
TEMPORARY = re.compile(r"^\.[A-Za-z0-9_.-]+\.tmp-[0-9a-f]{16}$")


class DamagedFile(DataError):
    """A file of the job folder that this engine did not write as it is (hand-edited, foreign,
    truncated): the message names it and what to do."""


class OutsideFolder(DataError):
    """A relative path that would leave the folder (``..``, an absolute path): never followed."""


class StoreUnavailable(OutputUnwritable):
    """The object store of the job folder stopped answering, refuses the credentials, or has no such bucket."""


S3_TIMEOUT_ENV, S3_TIMEOUT_DEFAULT_S = "MOTIONFLEET_S3_TIMEOUT", 10.0
S3_ATTEMPTS_ENV, S3_ATTEMPTS_DEFAULT = "MOTIONFLEET_S3_ATTEMPTS", 3
# Markers of the AWS SDK's messages (as pyarrow passes them on) -> what is wrong and what to do.
STORE_PROBLEMS = (
    (("NETWORK_CONNECTION", "curlCode: 28", "Timeout was reached"),
     "did not answer within {bound}", "check that the endpoint is up and reachable (AWS_ENDPOINT_URL), then rerun "
     "(committed shards are kept)"),
    (("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "AccessDenied", "InvalidAccessKeyId",
      "SignatureDoesNotMatch", "EXPIRED_TOKEN", "ExpiredToken"),
     "refused the credentials", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key that may "
     "read and write {bucket}, then rerun"),
    (("NO_SUCH_BUCKET", "NoSuchBucket", "not found. To create buckets"),
     "has no bucket {bucket}", "create the bucket, or fix --out"),
)


def new_token() -> str:
    """16 hex digits, unique per attempt, lease or temporary file."""
    return secrets.token_hex(8)


def is_uri(location: str) -> bool:
    return "://" in location


class Storage:
    """Paths relative to one root folder; picklable (it is rebuilt from ``location`` on workers)."""

    def __init__(self, location: str | os.PathLike):
        location = str(location)
        if is_uri(location):
            self.location = location
            self.fs, self.root = bounded_filesystem(location)
        else:  # absolute, so that a worker whose working folder differs finds the same folder
            self.location = str(Path(location).absolute())
            self.fs, self.root = pafs.LocalFileSystem(), self.location
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self):
        return Storage, (self.location,)

    def path(self, rel: str) -> str:
        return f"{self.root}/{inside(rel)}" if rel else self.root

    def shown(self, rel: str) -> str:
        """``rel`` as a user finds it: the folder's location, then the relative path."""
        return f"{self.location.rstrip('/')}/{rel}"

    def damaged(self, rel: str, problem: str, fix: str) -> DamagedFile:
        return DamagedFile(f"{self.shown(rel)}: {problem}; {fix}")

    def read_json(self, rel: str, fix: str) -> Any:
        """The JSON value in ``rel``; ``DamagedFile`` (naming it, then ``fix``) if it is not UTF-8 JSON."""
        try:
            return json.loads(self.read(rel))
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise self.damaged(rel, f"not readable JSON ({_first_line(err)})", fix) from None

    def makedirs(self, rel: str) -> None:
        with self.answering():
            self.fs.create_dir(self.path(rel), recursive=True)

    def write(self, rel: str, data: bytes) -> None:
        """Put ``data`` at ``rel`` whole: readers see the old content or the new, never a part."""
        if not self.local:
            with self.answering(), self.fs.open_output_stream(self.path(rel)) as stream:
                stream.write(data)
            return
        final = Path(self.path(rel))
        tmp = final.with_name(f".{final.name}.tmp-{new_token()}")
        with _removed_if_unfinished(tmp):
            _write_durably(tmp, data)
            os.replace(tmp, final)
        _fsync_dir(final.parent)

    def write_new(self, rel: str, data: bytes) -> None:
        """Put ``data`` under a name no reader trusts until a commit record names it (no rename needed);
        durable on a local disk before this returns."""
        if self.local:
            with _removed_if_unfinished(Path(self.path(rel))):
                _write_durably(Path(self.path(rel)), data)
            _fsync_dir(Path(self.path(rel)).parent)
        else:
            self.write(rel, data)

    def read(self, rel: str) -> bytes:
        with self.answering(), self.fs.open_input_stream(self.path(rel)) as stream:
            return stream.read()

    def open_input(self, rel: str):
        with self.answering():
            return self.fs.open_input_file(self.path(rel))

    def size(self, rel: str) -> int | None:
        """Bytes of ``rel``, or None where there is no such file."""
        with self.answering():
            info = self.fs.get_file_info(self.path(rel))
        return info.size if info.type == pafs.FileType.File else None

    def listing(self, rel: str = "") -> dict[str, int | None]:
        """Name -> size (None for folders) of the entries directly in ``rel`` (empty if it does not exist)."""
        with self.answering():
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), allow_not_found=True))
        return {info.base_name: info.size if info.type == pafs.FileType.File else None for info in infos}

    def delete(self, rel: str) -> None:
        try:
            with self.answering():
                self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    @contextmanager
    def answering(self):
        """Turn an object store's stall, refused credentials or missing bucket into ``StoreUnavailable``."""
        try:
            yield
        except OSError as err:
            problem = None if self.local else store_problem(err, self.location)
            if problem is None:
                raise
            raise StoreUnavailable(problem) from err


def bounded_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """``FileSystem.from_uri(location)``; an S3 one rebuilt with the same options plus the bounded
    timeout and attempts (a URI takes no timeout options)."""
    try:
        fs, root = pafs.FileSystem.from_uri(location)
        if isinstance(fs, pafs.S3FileSystem):
            timeout_s, attempts = s3_limits()
            _, (options,) = fs.__reduce__()  # its pickled form: every option from_uri resolved
            fs = pafs.S3FileSystem(**{**options, "connect_timeout": timeout_s, "request_timeout": timeout_s,
                                      "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)})
    except OSError as err:
        problem = store_problem(err, location)
        if problem is None:
            raise
        raise StoreUnavailable(problem) from err
    return fs, root


def s3_limits() -> tuple[float, int]:
    """(seconds a request may go without a byte, tries of each request), from the environment."""
    return (_positive(S3_TIMEOUT_ENV, float, S3_TIMEOUT_DEFAULT_S), int(_positive(S3_ATTEMPTS_ENV, int, S3_ATTEMPTS_DEFAULT)))


def _positive(name: str, kind: type, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not 0 < value < 1e6:
        raise UsageError(f"{name}={text!r} is not a positive {'whole number' if kind is int else 'number of seconds'}; "
                         f"unset it for the default ({default:g})")
    return value


def store_problem(err: OSError, location: str) -> str | None:
    """One line for an object store that does not answer, refuses the credentials or lacks the bucket; None for
    any other error (a missing file, a full disk)."""
    text = str(err)
    bucket = location.split("://", 1)[-1].split("/", 1)[0]
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint"
    timeout_s, attempts = s3_limits()
    bound = f"{attempts} x {timeout_s:g} s ({S3_ATTEMPTS_ENV}, {S3_TIMEOUT_ENV})"
    for markers, problem, fix in STORE_PROBLEMS:
        if any(marker in text for marker in markers):
            return (f"cannot use the job folder {location}: the object store at {endpoint} {problem.format(bound=bound, bucket=bucket)} "
                    f"({_first_line(err)[:160]}); {fix.format(bucket=bucket)}")
    return None


def inside(rel: str) -> str:
    """``rel`` if it names something inside the folder, else ``OutsideFolder``."""
    parts = rel.split("/")
    if rel.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\\" in rel or "\0" in rel:
        raise OutsideFolder(f"{rel!r} is not a path inside the job folder; refusing to follow it")
    return rel


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


@contextmanager
def _removed_if_unfinished(path: Path):
    """Remove ``path`` when the block does not finish (an error, Ctrl-C, SIGTERM), so that a stopped
    job leaves no partial file for the next run's cleanup to find."""
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
