"""The InterHuman-layout reader and the synthetic dataset written in that layout."""

import numpy as np
import pytest

from motionfleet.dhvae.interhuman import read_split, write_synthetic


@pytest.fixture
def dataset(tmp_path):
    return write_synthetic(tmp_path / "ih", count=6, frames=(16, 20), seed=1)


def test_synthetic_set_reads_back(dataset):
    split = read_split(dataset)
    assert [m.name for m in split.motions] == [f"{i:05d}" for i in range(6)]
    assert all(len(m.texts) == 2 and 16 <= m.frames <= 20 for m in split.motions)
    motion = split.motion("00003")
    assert motion.shape == (2, split.motions[3].frames, 262) and motion.dtype == np.float32
    mean, std = split.normalization()
    assert mean.shape == std.shape == (262,) and (std > 0).all()
    assert read_split(write_synthetic(dataset.parent / "again", count=6, frames=(16, 20), seed=1)).digest == split.digest


def test_unusable_motions_are_left_out_with_a_reason(dataset):
    (dataset / "annots" / "00001.txt").unlink()
    np.save(dataset / "motions_processed" / "person1" / "00002.npy", np.zeros((10, 262), np.float32))
    np.save(dataset / "motions_processed" / "person2" / "00002.npy", np.zeros((10, 262), np.float32))
    np.save(dataset / "motions_processed" / "person2" / "00004.npy", np.zeros((18, 100), np.float32))
    (dataset / "split" / "ignore_list.txt").write_text("00005\n")
    split = read_split(dataset)
    assert [m.name for m in split.motions] == ["00000", "00003"]
    reasons = dict(split.left_out)
    assert reasons["00001"] == "missing annots/00001.txt"
    assert "fewer than 15" in reasons["00002"]
    assert "not two (T, 262)" in reasons["00004"] or "columns" in reasons["00004"]


def test_raw_capture_files_and_missing_folders_are_refused_with_the_fix(dataset, tmp_path):
    for person in ("person1", "person2"):
        np.save(dataset / "motions_processed" / person / "00000.npy", np.zeros((30, 492), np.float32))
    with pytest.raises(ValueError, match="raw InterHuman capture .*262-d global features"):
        read_split(dataset)
    with pytest.raises(FileNotFoundError, match="split/test.txt is missing"):
        read_split(tmp_path / "nothing")
