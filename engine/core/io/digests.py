"""Content digests of the files a job reads, for its fingerprint: a resume must not mix inputs.

Swap a weights file or edit a track file between a kill and the rerun, and the job's fingerprint
changes, so the job folder refuses the rerun instead of ending with rows of both. Two digests:

* **whole** (``file_sha256``): SHA-256 of every byte. Weights, prompt / estimates / upstream
  files, track files and meshes: files a job reads whole anyway, a handful per job or small.
* **sampled** (``sample_sha256``): SHA-256 of the size, the modification time and the first and
  last 64 KiB. For media (videos, images), of which a corpus may hold 10^6: hashing every byte
  would read tens of TB in the driver before the first shard starts; this reads 128 KiB a file,
  on a thread pool (``many``; reads and hashing release the GIL), about what the plan's probe of
  each video reads anyway. The trade-off: an edit that keeps the size, both ends and the mtime
  (a byte patched in the middle, then ``touch -d`` back) goes unseen. Careless changes do not:
  re-encoding, trimming or replacing a file changes its size or an end (MP4 keeps its index at
  one end, Matroska its Cues and SeekHead), and a rewrite in place changes the mtime. Copies that
  keep mtimes (``cp -p``, ``rsync -a``) keep the digest; a plain copy of a corpus changes it and
  a resume is refused (a false alarm, never a mix).

Both are cached in ``digests.sqlite`` under the cache root (``cache``) by (path, size, mtime, ctime, inode), so
a resume stats each file and reads none that did not change; ctime is part of the key because no
user tool sets it back. The cache is a speed-up only: if it cannot be opened, digests are computed.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from motionfleet.core.io.cache import cache_dir

SAMPLE_BYTES = 64 * 1024
MISSING = "missing"  # a listed file that is not there (the worker rejects it; a later copy changes the job)
NOT_A_FILE = "not a regular file"  # never opened: a FIFO would block
UNREADABLE = "unreadable"
_THREADS = min(32, 4 * (os.cpu_count() or 1))


def cache_path() -> Path:
    return cache_dir("digests.sqlite")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (not cached)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sample_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of the size, mtime and first and last ``SAMPLE_BYTES`` (all of a small file)."""
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        digest = hashlib.sha256(f"{info.st_size}:{info.st_mtime_ns}:".encode())
        digest.update(f.read(SAMPLE_BYTES))
        if info.st_size > 2 * SAMPLE_BYTES:
            f.seek(-SAMPLE_BYTES, os.SEEK_END)
        digest.update(f.read(SAMPLE_BYTES))
    return "sampled:" + digest.hexdigest()


def many(paths: Sequence[str | os.PathLike], sampled: bool = False) -> list[str]:
    """The digest of each path (``MISSING`` / ``NOT_A_FILE`` for those that cannot be read as one),
    from the cache where the file did not change, else computed on a thread pool."""
    compute, kind = (sample_sha256, "sampled") if sampled else (file_sha256, "whole")
    with ThreadPoolExecutor(_THREADS) as pool:
        keys = list(pool.map(_stat_key, paths))
        with _Cache() as cache:
            stats = {i: key for i, key in enumerate(keys) if isinstance(key, tuple)}
            found = cache.get(kind, list(stats.values()))
            todo = [i for i, key in stats.items() if key not in found]
            computed = dict(zip(todo, pool.map(lambda i: _readable(compute, paths[i]), todo)))
            cache.put(kind, [(stats[i], digest) for i, digest in computed.items() if digest != UNREADABLE])
    return [key if isinstance(key, str) else computed.get(i) or found[key] for i, key in enumerate(keys)]


def _readable(compute: Callable[[str | os.PathLike], str], path: str | os.PathLike) -> str:
    try:
        return compute(path)
    except OSError:  # removed or unreadable since its stat: the worker rejects it
        return UNREADABLE


def content_sha256(path: str | os.PathLike) -> str:
    """The whole-file digest of one file, cached."""
    return many([path])[0]


def weights_digest(path: Optional[str | os.PathLike]) -> Optional[str]:
    """What identifies a weights path: None for none, a file's digest, or for a folder (a
    tokenizer, a model directory) one digest over each file's relative path and digest."""
    if path is None:
        return None
    folder = Path(path)
    if not folder.is_dir():
        return content_sha256(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return listing_sha256(zip((f.relative_to(folder).as_posix() for f in files), many(files)))


def listing_sha256(entries: Iterable[Sequence[object]]) -> str:
    """One SHA-256 over entries of fields (a name and its digest, say), in the given order."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(("\x1f".join(map(str, entry)) + "\n").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _stat_key(path: str | os.PathLike) -> tuple | str:
    """(absolute path, size, mtime_ns, ctime_ns, inode) of a regular file, else why it has none."""
    try:
        info = os.stat(path)
    except OSError:
        return MISSING
    if not stat.S_ISREG(info.st_mode):
        return NOT_A_FILE
    return (os.fsencode(os.path.abspath(path)), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


class _Cache:
    """The sqlite table of digests; every failure degrades to 'not cached'."""

    def __enter__(self) -> "_Cache":
        self.db: sqlite3.Connection | None
        try:
            cache_path().parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(cache_path(), timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS digests (kind TEXT, path BLOB, size INT, mtime INT, ctime INT,"
                            " inode INT, digest TEXT, PRIMARY KEY (kind, path))")
        except (OSError, sqlite3.Error):
            self.db = None
        return self

    def __exit__(self, *exc) -> None:
        if self.db is not None:
            self.db.close()

    def get(self, kind: str, keys: list[tuple]) -> dict[tuple, str]:
        return self._safely(lambda db: {
            key: row[0] for key in keys
            for row in db.execute("SELECT digest FROM digests WHERE kind = ? AND path = ? AND size = ? AND "
                                       "mtime = ? AND ctime = ? AND inode = ?", (kind, *key))}, {})

    def put(self, kind: str, entries: list[tuple[tuple, str]]) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    [(kind, *key, digest) for key, digest in entries])
        self._safely(write, None)

    def _safely(self, action: Callable[[sqlite3.Connection], Any], fallback: Any) -> Any:
        if self.db is None:
            return fallback
        try:
            return action(self.db)
        except sqlite3.Error:
            return fallback
