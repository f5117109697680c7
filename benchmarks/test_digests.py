"""Fingerprint digests of a corpus (issue 10, case 5): a sampled digest (size, mtime, 128 KiB)
against the whole-file SHA-256, cold (computed) and cached (stat + sqlite lookup, a resume).

500 files of 1 MiB; the page cache is warm in every case, so the cold numbers are hashing and
syscalls, not the disk: on a real corpus the whole-file digest also reads every byte from storage.
"""

import os

import pytest

from benchmarks.conftest import record
from motionfleet.core.io import digests

FILES, SIZE = 500, 1 << 20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("digest-corpus")
    paths = [folder / f"v{i:04d}.mp4" for i in range(FILES)]
    for i, path in enumerate(paths):
        path.write_bytes(os.urandom(SIZE))
    return paths


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path))
    return lambda: digests.cache_path().unlink(missing_ok=True)


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "whole"])
def test_cold(benchmark, corpus, empty_cache, sampled):
    benchmark.pedantic(digests.many, (corpus,), {"sampled": sampled}, setup=empty_cache, rounds=3)
    record(benchmark, 0, FILES, threads=digests._THREADS, file_bytes=SIZE)


def test_cached(benchmark, corpus, empty_cache):
    digests.many(corpus, sampled=True)
    benchmark.pedantic(digests.many, (corpus,), {"sampled": True}, rounds=3)
    record(benchmark, 0, FILES, threads=digests._THREADS, file_bytes=SIZE)
