"""Content digests for job fingerprints (issue 10, case 5): what they see, what they cache."""

import os

import pytest

from motionfleet.core.io import digests


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))


def rewrite_same_size(path, data: bytes) -> None:
    """New bytes, same size, and the old mtime put back (only ctime says it changed)."""
    info = os.stat(path)
    path.write_bytes(data)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def test_whole_digest_sees_content_and_is_read_once(tmp_path, monkeypatch):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"a" * 1000)
    first = digests.content_sha256(weights)
    monkeypatch.setattr(digests, "file_sha256", lambda path: pytest.fail("an unchanged file was read again"))
    assert digests.content_sha256(weights) == first
    monkeypatch.undo()
    rewrite_same_size(weights, b"b" * 1000)
    assert digests.content_sha256(weights) != first


def test_sampled_digest_sees_both_ends_and_the_mtime(tmp_path):
    video = tmp_path / "v.mp4"
    data = bytes(range(256)) * 2048  # 512 KiB
    video.write_bytes(data)
    first = digests.many([video], sampled=True)[0]
    rewrite_same_size(video, b"x" + data[1:])
    head = digests.many([video], sampled=True)[0]
    rewrite_same_size(video, data[:-1] + b"x")
    tail = digests.many([video], sampled=True)[0]
    assert len({first, head, tail}) == 3
    os.utime(video, ns=(0, 10 ** 18))
    assert digests.many([video], sampled=True)[0] != tail


def test_fifos_and_missing_files_are_named_not_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    assert digests.many([tmp_path / "pipe.mp4", tmp_path / "gone.mp4"], sampled=True) == [
        digests.NOT_A_FILE, digests.MISSING]


def test_a_weights_folder_digest_covers_every_file(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.txt").write_text("a b c")
    (tmp_path / "model.bin").write_bytes(b"1234")
    first = digests.weights_digest(tmp_path)
    rewrite_same_size(tmp_path / "tok" / "vocab.txt", b"a b d")
    assert digests.weights_digest(tmp_path) != first
    assert digests.weights_digest(None) is None
