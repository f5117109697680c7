"""``--checkpoint`` given files that are not checkpoints, or headers and configs that lie about
their sizes: one line, exit 1, before a job folder is written, nothing allocated or executed."""

import json
import os
import struct
import subprocess
import time
import zipfile

import pytest
import torch
from safetensors.torch import save_file
from test_dhvae_release import hyper, write_chmld

from motionfleet.cli import main
from motionfleet.common.weights import checked_config, read_state_dict
from motionfleet.dhvae.model import DHVAEConfig
from motionfleet.dhvae.release import read_vae_hparams

ENV = dict(os.environ, MOTIONFLEET_PROGRESS="0")
FAMILIES = {"generate": ["--preset", "tiny"], "refine": ["--demo", "--preset", "small"],
            "reconstruct": ["--demo", "--preset", "small"]}


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def not_checkpoints(folder) -> dict:
    """name -> a file that is not a checkpoint, of each kind a user can give by mistake."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"text": folder / "notes.ckpt", "empty": folder / "empty.pth", "random": folder / "random.pth.tar",
             "zip of text": folder / "zipped.pkl"}
    files["text"].write_text("these are not the weights you want\n")
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(bytes(range(1, 256)) * 16)  # not starting with a pickle's 0x80 or a zip's PK
    with zipfile.ZipFile(files["zip of text"], "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    return files


# config.json of a model folder: dhvae's settings sit under "model", socialmirror's at the top
DEPTH = {"generate": {"model": {"layers": 60000}}, "reconstruct": {"num_layers": 60000}}


def lying_folders(folder, deep_config: dict) -> dict:
    """name -> a model folder whose safetensors header or config.json claims absurd sizes."""
    claims = {
        "header of 2^62 bytes": struct.pack("<Q", 1 << 62) + b"{}",
        "a [2^40] tensor": safetensors_bytes({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4 << 40]}}),
    }
    folders = {}
    for name, weights in claims.items():
        folders[name] = folder / name.replace(" ", "_").replace("^", "")
        folders[name].mkdir(parents=True)
        (folders[name] / "model.safetensors").write_bytes(weights)
        (folders[name] / "config.json").write_text(json.dumps({}))
    folders["config of 60000 layers"] = folder / "deep"
    save_file({"w": torch.zeros(2)}, folder / "deep.safetensors")
    folders["config of 60000 layers"].mkdir()
    (folder / "deep.safetensors").rename(folders["config of 60000 layers"] / "model.safetensors")
    (folders["config of 60000 layers"] / "config.json").write_text(json.dumps(deep_config))
    return folders


# --- the header and file checks ----------------------------------------------------------------


def test_a_safetensors_header_is_read_without_its_tensors_and_checked_against_the_file(tmp_path):
    from motionfleet.common.weights import safetensors_layout

    good = tmp_path / "good.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.int64)}, good)
    assert safetensors_layout(good) == {"a": (2, 3), "b": (4,)}
    lies = {
        "claims 4611686018427387904 bytes": struct.pack("<Q", 1 << 62) + b"{}",
        "claims 0 bytes": b"\0" * 8,
        "is not JSON": struct.pack("<Q", 4) + b"\xff\xfe{[",
        "not a JSON object": safetensors_bytes([1, 2]),
        "lie outside": safetensors_bytes({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4 << 40]}}),
        r"shape \[1099511627776\] of F32 does not fill its 16 bytes":
            safetensors_bytes({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 16]}}, b"\0" * 16),
        "known whole-byte dtype": safetensors_bytes({"w": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
        "non-negative integers": safetensors_bytes({"w": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}}, b"\0"),
    }
    for reason, data in lies.items():
        path = tmp_path / "lie.safetensors"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=reason):
            safetensors_layout(path)
        with pytest.raises(ValueError, match="unreadable safetensors file"):
            read_state_dict(path)


def test_files_that_are_not_torch_checkpoints_are_refused_before_torch_reads_them(tmp_path):
    reasons = {"text": "neither a torch.save file", "empty": "the file is empty", "random": "neither a torch.save file",
               "zip of text": "a zip archive without a torch.save data.pkl"}
    for name, path in not_checkpoints(tmp_path).items():
        with pytest.raises(ValueError, match=f"unreadable checkpoint .*{reasons[name]}"):
            read_state_dict(path)
    assert torch.equal(read_state_dict(torch_file(tmp_path / "ok.pt", {"w": torch.arange(3)}))["w"], torch.arange(3))


def torch_file(path, value, compression=zipfile.ZIP_STORED):
    torch.save(value, path)
    if compression != zipfile.ZIP_STORED:  # the same archive with its entries deflated (a zip bomb's form)
        with zipfile.ZipFile(path) as archive:
            entries = [(name, archive.read(name)) for name in archive.namelist()]
        with zipfile.ZipFile(path, "w", compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return path


def test_a_torch_archive_with_compressed_entries_is_refused_not_inflated(tmp_path):
    """torch.load inflates a deflated entry in full: 64 MB of zeros fit in a 66 KB file."""
    path = torch_file(tmp_path / "bomb.pt", {"w": torch.zeros(1 << 24)}, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match="compressed entries"):
        read_state_dict(path)


def test_a_config_cannot_claim_a_depth_that_takes_minutes_to_lay_out():
    with pytest.raises(ValueError, match=r"layers='60000' is not a valid int in \[0, 256\]"):
        checked_config(DHVAEConfig, {"layers": 60000}, "config.json")
    assert checked_config(DHVAEConfig, {"layers": 12}, "config.json").layers == 12


def test_a_release_hparams_yaml_that_builds_python_objects_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "hparams.yaml"
    path.write_text(f"vae: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValueError, match="hparams.yaml is not a plain YAML mapping"):
        read_vae_hparams(path)
    assert not marker.exists()


# --- through the command line ------------------------------------------------------------------


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("motionfleet: error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", FAMILIES)
def test_a_file_that_is_not_a_checkpoint_is_one_line_and_writes_no_job_folder(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOTIONFLEET_PROGRESS", "0")
    for name, path in not_checkpoints(tmp_path / "files").items():
        out = tmp_path / f"out-{len(name)}"
        assert main([command, *FAMILIES[command], "--out", str(out), "--workers", "0", "--checkpoint", str(path)]) == 1
        assert "unreadable checkpoint" in one_line_error(capsys), name
        assert not out.exists(), name


@pytest.mark.parametrize("command", ["generate", "reconstruct"])  # refine takes ScoreHOI's released file only
def test_a_model_folder_that_lies_about_its_sizes_is_one_line_and_writes_no_job_folder(command, tmp_path, capsys,
                                                                                        monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOTIONFLEET_PROGRESS", "0")
    reasons = {"header of 2^62 bytes": "claims 4611686018427387904 bytes", "a [2^40] tensor": "lie outside",
               "config of 60000 layers": "60000"}
    for name, folder in lying_folders(tmp_path / "folders", DEPTH[command]).items():
        out = tmp_path / f"out-{len(name)}"
        assert main([command, *FAMILIES[command], "--out", str(out), "--workers", "0", "--checkpoint", str(folder)]) == 1
        assert reasons[name] in one_line_error(capsys), name
        assert not out.exists(), name


def test_refine_given_a_folder_says_it_takes_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    folder = lying_folders(tmp_path / "folders", {})["a [2^40] tensor"]
    assert main(["refine", *FAMILIES["refine"], "--out", str(tmp_path / "o"), "--workers", "0",
                 "--checkpoint", str(folder)]) == 1
    assert "is a folder; give the checkpoint file itself" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", FAMILIES)
def test_the_console_command_fails_in_bounded_time_on_a_lying_header(command, tmp_path):
    """As a user runs it: a separate process, a 1 KB file claiming a 4 TB tensor (fails within
    120 s, generous on a loaded machine, instead of allocating or hanging)."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(safetensors_bytes({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4 << 40]}}))
    (tmp_path / "config.json").write_text(json.dumps({"model": {}}))
    checkpoint = tmp_path if command != "refine" else weights.rename(tmp_path / "diffusion.pth.tar")
    out = tmp_path / "out"
    started = time.monotonic()
    result = subprocess.run(["motionfleet", command, *FAMILIES[command], "--out", str(out), "--workers", "0",
                             "--checkpoint", str(checkpoint)], capture_output=True, text=True,
                            env=dict(ENV, MOTIONFLEET_CACHE=str(tmp_path / "cache")), timeout=600)
    assert time.monotonic() - started < 120
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_generate_with_a_release_whose_vae_hparams_builds_python_objects(tmp_path, capsys):
    marker = tmp_path / "ran"
    checkpoint = write_chmld(tmp_path, hyper())
    for hparams in tmp_path.glob("ckpt/*/lightning_logs/*/hparams.yaml"):
        hparams.write_text(f"vae: !!python/object/apply:os.system ['touch {marker}']\n")
    out = tmp_path / "out"
    assert main(["generate", "--checkpoint", str(checkpoint), "--out", str(out), "--workers", "0"]) == 1
    assert "not a plain YAML mapping" in one_line_error(capsys)
    assert not marker.exists() and not out.exists()


def test_a_model_filled_by_assignment_holds_the_files_tensors_and_refuses_a_buffer_it_never_filled():
    from motionfleet.common.weights import assigned

    class Positions(torch.nn.Module):
        def __init__(self, persistent: bool):
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)
            self.register_buffer("table", torch.arange(4.0), persistent=persistent)

    state = {"linear.weight": torch.ones(2, 3), "linear.bias": torch.zeros(2), "table": torch.arange(4.0)}
    model = assigned(lambda: Positions(persistent=True), state)
    assert model.linear.weight.data_ptr() == state["linear.weight"].data_ptr()  # no copy
    with pytest.raises(ValueError, match="table not in the state dict"):
        assigned(lambda: Positions(persistent=False), {k: v for k, v in state.items() if k != "table"})
    with pytest.raises(RuntimeError, match="Missing key"):
        assigned(lambda: Positions(persistent=True), {k: v for k, v in state.items() if k != "linear.bias"})
