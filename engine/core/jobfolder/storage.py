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

from motionfleet.core.errors import DataError

# The temporaries this engine names (``.<name>.tmp-<16 hex>``); nothing else is ever removed as one.
TEMPORARY = re.compile(r"^\.[A-Za-z0-9_.-]+\.tmp-[0-9a-f]{16}$")


class DamagedFile(DataError):
    """A file of the job folder that this engine did not write as it is (hand-edited, foreign,
    truncated): the message names it and what to do."""


class OutsideFolder(DataError):
    """A relative path that would leave the folder (``..``, an absolute path): never followed."""


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
            self.fs, self.root = pafs.FileSystem.from_uri(location)
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
        self.fs.create_dir(self.path(rel), recursive=True)

    def write(self, rel: str, data: bytes) -> None:
        """Put ``data`` at ``rel`` whole: readers see the old content or the new, never a part."""
        if not self.local:
            with self.fs.open_output_stream(self.path(rel)) as stream:
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
        with self.fs.open_input_stream(self.path(rel)) as stream:
            return stream.read()

    def open_input(self, rel: str):
        return self.fs.open_input_file(self.path(rel))

    def size(self, rel: str) -> int | None:
        """Bytes of ``rel``, or None where there is no such file."""
        info = self.fs.get_file_info(self.path(rel))
        return info.size if info.type == pafs.FileType.File else None

    def listing(self, rel: str = "") -> dict[str, int | None]:
        """Name -> size (None for folders) of the entries directly in ``rel`` (empty if it does not exist)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), allow_not_found=True))
        return {info.base_name: info.size if info.type == pafs.FileType.File else None for info in infos}

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass


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
