"""A streamed input's bytes as planning read them, checked again where a worker reads them.

Planning streams a prompt or estimates file once (its sha256 for the job's fingerprint, line
offsets, ids); on that same pass ``FileScan`` also keeps a digest of every ``BLOCK`` bytes (16
bytes of BLAKE2b per 64 KiB: 1/4096 of the file, on the driver only). A shard ships one digest
of the bytes it will read (``shards.PlannedBytes`` from ``FileDigests.planned``: BLAKE2b over the digests of the blocks that
cover them, so no second pass), and its worker reads through ``CheckedFile``: it reads those
blocks once, checks them against the planned digest and hands out only their bytes. A file
rewritten while the job runs (same length, rows reordered) fails the shards whose bytes changed
with ``InputChanged`` instead of committing rows that were never planned; the job's fingerprint
holds the old sha256, so a rerun into the same folder is refused and one into a new folder plans
the file as it is.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass

from motionfleet.core.errors import DataError
from motionfleet.core.io.parquet_rows import CHUNK
from motionfleet.core.shards import PlannedBytes

BLOCK = 1 << 16  # bytes one digest covers; CHUNK is a multiple, so planning's chunks split into whole blocks
DIGEST_BYTES = 16


class InputChanged(DataError):
    """A shard's input bytes differ from what planning read: the shard fails, its rows are not committed."""


def _block_digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


def shown(planned: PlannedBytes) -> str:
    return ", ".join(f"{first * BLOCK}-{stop * BLOCK}" for first, stop in planned.runs)


def _digest_of_blocks(block_digests) -> bytes:
    return hashlib.blake2b(b"".join(block_digests), digest_size=DIGEST_BYTES).digest()


@dataclass(frozen=True)
class FileDigests:
    """What one planning pass over a file saw: its size, sha256 and the digest of each block."""

    path: str
    size: int
    sha256: str
    blocks: bytes

    def planned(self, *spans: tuple[int, int]) -> PlannedBytes:
        """The blocks covering byte spans [start, end) (merged where they touch) and their digest."""
        runs: list[list[int]] = []
        for start, end in sorted((max(0, a), min(self.size, b)) for a, b in spans if b > a):
            first, stop = start // BLOCK, -(-end // BLOCK)
            if runs and first <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], stop)
            else:
                runs.append([first, stop])
        digest = _digest_of_blocks(self.blocks[a * DIGEST_BYTES:b * DIGEST_BYTES] for a, b in runs)
        return PlannedBytes(self.path, tuple((a, b) for a, b in runs), digest)


class FileScan:
    """sha256 and block digests of a file fed in order, chunk by chunk."""

    def __init__(self, path: str):
        self.path, self.size = path, 0
        self.sha256, self.blocks, self.tail = hashlib.sha256(), bytearray(), b""

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        data = memoryview(self.tail + chunk if self.tail else chunk)
        whole = len(data) - len(data) % BLOCK
        for start in range(0, whole, BLOCK):
            self.blocks += _block_digest(data[start:start + BLOCK])
        self.tail = bytes(data[whole:])

    def finish(self) -> FileDigests:
        if self.tail:
            self.blocks += _block_digest(self.tail)
        return FileDigests(self.path, self.size, self.sha256.hexdigest(), bytes(self.blocks))


def scan_file(path: str | os.PathLike) -> FileDigests:
    """One streaming pass: the file's ``FileDigests``."""
    scan = FileScan(str(path))
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            scan.update(chunk)
    return scan.finish()


class CheckedFile(io.RawIOBase):
    """A read-only file of the planned blocks of ``planned.path``, read once when it opens and
    matched against the planned digest (``InputChanged`` where they differ); every byte it returns
    is one of them, so what was checked is what is used."""

    def __init__(self, planned: PlannedBytes):
        super().__init__()
        self.planned, self.position, self.blocks = planned, 0, {}
        with open(planned.path, "rb") as file:
            self.size = os.fstat(file.fileno()).st_size
            for first, stop in planned.runs:
                file.seek(first * BLOCK)
                for block in range(first, stop):
                    self.blocks[block] = file.read(BLOCK)
        if _digest_of_blocks(_block_digest(data) for data in self.blocks.values()) != planned.digest:
            raise InputChanged(f"input changed since planning: {planned.path} bytes {shown(planned)}; restore it, or "
                               f"run the job again into a new --out (this job's committed shards used the planned content)")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence] + offset
        return self.position

    def readinto(self, buffer) -> int:
        data = self.read_span(self.position, min(self.size, self.position + len(buffer)))
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

    def read_span(self, start: int, end: int) -> bytes:
        """Bytes [start, end), all of them planned (else RuntimeError: the plan missed what a reader needs)."""
        if end <= start:
            return b""
        first, stop = start // BLOCK, -(-end // BLOCK)
        missing = [block for block in range(first, stop) if block not in self.blocks]
        if missing:
            raise RuntimeError(f"{self.planned.path}: a shard read bytes {start}-{end}, beyond what its plan checked "
                               f"({shown(self.planned)})")
        data = b"".join(self.blocks[block] for block in range(first, stop))
        return data[start - first * BLOCK:end - first * BLOCK]
