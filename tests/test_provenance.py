"""What produced a result (``core.io.provenance``): the engine's source revision, the CUDA stack and
the numerics flags, recorded whatever the install and never an error."""

import subprocess

import pytest
import torch

from motionfleet.core.io import provenance


def git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    repo = tmp_path / "src"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return repo


@pytest.fixture
def fresh_revision():
    provenance.engine_revision.cache_clear()
    yield
    provenance.engine_revision.cache_clear()


def test_git_describe_names_the_commit_and_a_dirty_tree(checkout, tmp_path):
    head = git(checkout, "rev-parse", "--short", "HEAD")
    assert provenance.git_describe(checkout / "pkg") == head
    (checkout / "pkg" / "a.py").write_text("x = 2\n")
    assert provenance.git_describe(checkout / "pkg") == f"{head}-dirty"
    ignored = checkout / ".venv" / "site-packages"  # an install inside some checkout is not its source
    ignored.mkdir(parents=True)
    assert provenance.git_describe(ignored) is None
    assert provenance.git_describe(tmp_path / "missing") is None


def test_engine_revision_prefers_the_recorded_commit_then_the_checkout_then_unknown(checkout, tmp_path, monkeypatch,
                                                                                   fresh_revision):
    monkeypatch.setattr(provenance, "install_origin", lambda: {"url": "https://x", "vcs_info": {"commit_id": "c0ffee"}})
    assert provenance.engine_revision() == "c0ffee"
    provenance.engine_revision.cache_clear()
    monkeypatch.setattr(provenance, "install_origin", lambda: {"url": f"file://{checkout}", "dir_info": {}})
    monkeypatch.setattr(provenance, "source_folders", lambda origin: [tmp_path / "nowhere", checkout])
    assert provenance.engine_revision() == git(checkout, "rev-parse", "--short", "HEAD")
    provenance.engine_revision.cache_clear()
    monkeypatch.setattr(provenance, "source_folders", lambda origin: [tmp_path])
    assert provenance.engine_revision() == "unknown"
    assert provenance.software_versions()["motionfleet_revision"] == "unknown"


def test_source_folders_follow_a_local_install(monkeypatch, tmp_path):
    folders = provenance.source_folders({"url": f"file://{tmp_path}", "dir_info": {"editable": True}})
    assert folders[-1] == tmp_path and (folders[0] / "core" / "io" / "provenance.py").is_file()


def test_accelerator_is_null_on_cpu_and_named_on_cuda():
    found = provenance.accelerator()
    assert set(found) == {"gpu", "cuda", "cudnn", "driver"}
    if torch.cuda.is_available():
        assert found["gpu"] == torch.cuda.get_device_name(0) and found["cuda"] == torch.version.cuda
    else:
        assert all(value is None for value in found.values())


def test_numerics_follow_the_torch_flags():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.matmul.allow_tf32,
              torch.backends.cudnn.allow_tf32)
    try:
        for flag in (True, False):
            torch.use_deterministic_algorithms(flag)
            torch.backends.cuda.matmul.allow_tf32 = flag
            torch.backends.cudnn.allow_tf32 = not flag
            found = provenance.numerics()
            assert (found["deterministic_algorithms"], found["cuda_matmul_allow_tf32"], found["cudnn_allow_tf32"]) == \
                (flag, flag, not flag)
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[1:]


def test_the_record_holds_every_part():
    record = provenance.record()
    assert set(record) == {"host", "versions", "accelerator", "numerics"}
    assert record["versions"]["motionfleet_revision"] and record["host"]["cpus"]
