"""The refine job (scorehoi): body points and guidance gradients, rejection, determinism,
exactly-once after a kill, and the demo's guided / unguided comparison."""

import http.server
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import trimesh
from killed_job import kill_after_commits, result_mtimes

import motionfleet
from motionfleet import cli
from motionfleet.common.bodies import load_body_model, sample_vertex_ids
from motionfleet.common.body_points import BodyPoints
from motionfleet.common.rotations import axis_angle_to_matrix
from motionfleet.core.errors import RejectedInput
from motionfleet.core.jobfolder.sink import JobMismatch, read_results
from motionfleet.demo.body_models import write_synthetic_body_model
from motionfleet.demo.scenes import demo_scenes
from motionfleet.scorehoi.hoi import (
    DistanceContactPredictor,
    GuidanceWeights,
    PhysicalGuidance,
    object_batch,
    pose_scene,
    surface_samples,
)
from motionfleet.scorehoi.objects import get_object
from motionfleet.scorehoi.runner import TIMING_COLUMNS, ScoreHOIRefiner
from motionfleet.scorehoi.source import record_from_row, validate

SMALL_CONDITION_DIM = 32
TINY = dict(preset="small", rounds=2, tau=10, ddim_stride=5, guidance_scale=1.0, batch_size=4)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def body_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("body_models")
    write_synthetic_body_model(folder, "smplh")
    return str(folder)


@pytest.fixture(scope="module")
def spec(body_dir) -> dict:
    return {"body_models": body_dir}


def scene_rows() -> list[dict]:
    return [{"id": r.sample_id, **dict(r.values)} for r in demo_scenes(SMALL_CONDITION_DIM).records]


def write_parquet(path: Path, rows: list[dict]) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@pytest.fixture(scope="module")
def estimates(tmp_path_factory) -> str:
    return write_parquet(tmp_path_factory.mktemp("estimates") / "scenes.parquet", scene_rows())


def rows_by_key(out_dir) -> dict:
    """Every result column but the batch timings, keyed by (sample id, variant)."""
    table = read_results(out_dir).drop_columns(list(TIMING_COLUMNS))
    return {(r["sample_id"], r["variant"]): r for r in table.to_pylist()}


def run(out_dir, spec, estimates, batch_size=4, shard_size=256, workers=0, control=True, **settings):
    return motionfleet.refine(estimates, out=out_dir, **{**TINY, **spec, "batch_size": batch_size, **settings},
                              control=control, shard_size=shard_size, workers=workers)


# --- body points and guidance gradients --------------------------------------------------------


def test_body_points_equal_smplx_vertices_and_their_gradients(body_dir):
    body = load_body_model("smplh", body_dir)
    ids = sample_vertex_ids(body.template_vertices, 431)
    points = BodyPoints(body, ids)
    g = torch.Generator().manual_seed(0)
    rotations = axis_angle_to_matrix(0.4 * torch.randn(3, 52, 3, generator=g)).requires_grad_(True)
    betas = torch.randn(3, 10, generator=g).requires_grad_(True)
    weights = torch.randn(3, 431, 3, generator=g)
    full = body.forward_rotmats(rotations, betas).vertices[:, ids]
    ours = points(rotations, betas)
    torch.testing.assert_close(ours, full, rtol=0, atol=1e-5)
    expected = torch.autograd.grad((full * weights).sum(), (rotations, betas))
    for got, want in zip(torch.autograd.grad((ours * weights).sum(), (rotations, betas)), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_guidance_gradient_matches_finite_differences(body_dir):
    """dL/dx through the body model, the 6D maps and o = R p + t, against central differences."""
    body = load_body_model("smplh", body_dir)
    points = BodyPoints(body, sample_vertex_ids(body.template_vertices, 431)).double()
    names = ["box_belly_penetrating", "ball_hand_missed"]
    records = {r.sample_id: r for r in demo_scenes(SMALL_CONDITION_DIM).records}
    x = torch.stack([validate(records[n], SMALL_CONDITION_DIM).x for n in names]).double()
    objects_of = [validate(records[n], SMALL_CONDITION_DIM).object for n in names]
    library = {name: (get_object(name), surface_samples(get_object(name))) for name in objects_of}
    objects = object_batch(objects_of, library, "cpu")
    objects = replace(objects, **{k: getattr(objects, k).double() for k in ("points", "sdf", "grid_min", "grid_max",
                                                                             "surface")})
    masks = DistanceContactPredictor()(pose_scene(x, points, objects), objects)
    guidance = PhysicalGuidance(points, objects, masks, GuidanceWeights(contact=0.7, floor=1.3, penetration=4.0))
    loss, grad = guidance(x)
    assert (loss > 0).all() and masks.human.sum() > 0
    coordinates = [16 * 6 + 2, 20 * 6 + 4, 312, 315, 318, 319, 320, 321, 325]  # pose, rotation, translation, betas
    step = 1e-6
    for k in coordinates:
        shift = torch.zeros_like(x)
        shift[:, k] = step
        numeric = (guidance.loss(x + shift) - guidance.loss(x - shift)) / (2 * step)
        torch.testing.assert_close(grad[:, k], numeric, rtol=1e-4, atol=1e-5)


# --- the job ---------------------------------------------------------------------------------


def test_bad_rows_are_rejected_with_reasons_and_the_rest_completes(tmp_path, spec):
    good = {**scene_rows()[0], "image_path": None}  # from_pylist takes its columns from the first row
    image = tmp_path / "crop.png"
    from PIL import Image

    Image.fromarray(np.zeros((40, 30, 3), dtype=np.uint8)).save(image)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    features = {"image_features": None}
    rows = [
        {**good, "id": "ok"},
        {**good, "id": "ok_image", **features, "image_path": str(image)},
        {**good, "id": "nan_pose", "pose": [float("nan")] + good["pose"][1:]},
        {**good, "id": "big_betas", "betas": [9.0] * 10},
        {**good, "id": "far_object", "object_translation": [0.0, 0.0, 50.0]},
        {**good, "id": "unknown_object", "object": "teapot"},
        {**good, "id": "short_pose", "pose": good["pose"][:100]},
        {**good, "id": "flat_rotation", "object_rotation": [0.0] * 6},
        {**good, "id": "not_rotation", "object_rotation": [2.0, 0, 0, 0, 1, 0, 0, 0, 1]},
        {**good, "id": "broken_image", **features, "image_path": str(tmp_path / "broken.png")},
        {**good, "id": "missing_image", **features, "image_path": str(tmp_path / "missing.png")},
        {**good, "id": "no_image", **features},
        {**good, "id": "short_features", "image_features": [0.0] * 5},
        {**good, "id": "partial_truth", "gt_pose": None},
        {**good, "id": "ok"},
    ]
    report = run(tmp_path / "out", spec, write_parquet(tmp_path / "bad.parquet", rows))
    results = read_results(tmp_path / "out").to_pylist()
    rejected = read_results(tmp_path / "out", "rejected").to_pylist()
    assert {r["sample_id"] for r in results} == {"ok", "ok_image"}
    reasons = {r["sample_id"]: r["reason"] for r in rejected if r["repeat"] == 0}
    assert "NaN" in reasons["nan_pose"]
    assert "betas out of range" in reasons["big_betas"]
    assert "object_translation out of range" in reasons["far_object"]
    assert "unknown object 'teapot'" in reasons["unknown_object"]
    assert "pose has 100 numbers" in reasons["short_pose"]
    assert "degenerate 6D" in reasons["flat_rotation"]
    assert "not rotations" in reasons["not_rotation"]
    assert "unreadable image" in reasons["broken_image"] and "does not exist" in reasons["missing_image"]
    assert "image_features or image_path" in reasons["no_image"]
    assert "image_features has 5 numbers" in reasons["short_features"]
    assert "ground truth needs all" in reasons["partial_truth"]
    assert any("duplicate id 'ok'" in reason for reason in reasons.values())
    assert len(results) + len(rejected) == len(rows) * 2  # every (row, variant) exactly once
    assert report["rows"]["rejected"] == len(rejected)


class CountingHandler(http.server.BaseHTTPRequestHandler):
    requests: list = []

    def do_GET(self):  # noqa: N802 - the http.server API
        CountingHandler.requests.append(self.path)
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), CountingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def gltf_pointing_at(path: Path, uri: str) -> str:
    """A one-triangle glTF whose vertex buffer lives at ``uri``."""
    path.write_text(json.dumps({
        "asset": {"version": "2.0"}, "buffers": [{"uri": uri, "byteLength": 36}],
        "bufferViews": [{"buffer": 0, "byteLength": 36}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}], "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}], "scene": 0}))
    return str(path)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def nan_for(sample_id: str, refine_batch):
    """``ScoreHOIRefiner.refine_batch`` whose refined state is NaN for ``sample_id`` (a denoiser
    that overflows, as the public model's does on features of 3e38)."""
    def poisoned(self, estimates, rho, clock):
        x, log, objects = refine_batch(self, estimates, rho, clock)
        return x.masked_fill(torch.tensor([e.sample_id == sample_id for e in estimates])[:, None], float("nan")), log, objects
    return poisoned


def test_poisoned_rows_are_rejected_and_nothing_is_fetched(tmp_path, spec, http_server, monkeypatch):
    """Issue 10, cases 7-9 and 11: URLs, protocols, FIFOs, float32 overflow, glTF buffers outside the
    file and an image header claiming 144 M pixels each reject their row and no request is made; a
    row refined to NaN is rejected, not written."""
    monkeypatch.setattr(ScoreHOIRefiner, "refine_batch", nan_for("nan_out", ScoreHOIRefiner.refine_batch))
    good = {**scene_rows()[0], "image_path": None}
    fifo = tmp_path / "crop.png"
    os.mkfifo(fifo)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(12000, 12000))
    no_features = {"image_features": None}
    rows = [
        {**good, "id": "ok"},
        {**good, "id": "url", **no_features, "image_path": f"{http_server}/x.png"},
        {**good, "id": "concat", **no_features, "image_path": f"concat:{fifo}|{fifo}"},
        {**good, "id": "fifo", **no_features, "image_path": str(fifo)},
        {**good, "id": "bomb", **no_features, "image_path": str(bomb)},
        {**good, "id": "huge_pose", "pose": [1e39] + good["pose"][1:]},
        {**good, "id": "passwd_gltf", "object": gltf_pointing_at(tmp_path / "a.gltf", "file:///etc/passwd")},
        {**good, "id": "relative_gltf", "object": gltf_pointing_at(tmp_path / "b.gltf", "../../etc/passwd")},
        {**good, "id": "nan_out"},
    ]
    run(tmp_path / "out", spec, write_parquet(tmp_path / "bad.parquet", rows), control=False)
    assert CountingHandler.requests == []
    results = read_results(tmp_path / "out").to_pylist()
    assert [r["sample_id"] for r in results] == ["ok"]
    assert all(np.isfinite(r["pose_6d"]).all() for r in results)
    reasons = {r["sample_id"]: r["reason"] for r in read_results(tmp_path / "out", "rejected").to_pylist()}
    expected = {"url": "URL or protocol", "concat": "URL or protocol", "fifo": "not a regular file",
                "bomb": "12000x12000: over the limit", "huge_pose": "beyond float32", "passwd_gltf": "external file",
                "relative_gltf": "external file", "nan_out": "not finite"}
    assert {key: text in reasons[key] for key, text in expected.items()} == dict.fromkeys(expected, True), reasons
    assert "Not Found" not in reasons["url"]  # refused before any request (not a 404 from the server)


def test_fields_are_type_checked():
    """Issue 10, case 10: a string of digits is not a translation, a float is not an id."""
    row = {**scene_rows()[0], "object_translation": "000"}
    with pytest.raises(RejectedInput, match="object_translation must be a list of numbers, got str"):
        validate(record_from_row(0, row), SMALL_CONDITION_DIM)
    with pytest.raises(RejectedInput, match="id must be a string or an integer, got float"):
        validate(record_from_row(0, {**scene_rows()[0], "id": 1.5}), SMALL_CONDITION_DIM)


def test_same_bytes_whatever_the_batch_size_and_shard_count(tmp_path, spec, estimates):
    reference = None
    for i, (batch, shard_size) in enumerate([(1, 256), (3, 5), (16, 4)]):
        run(tmp_path / str(i), spec, estimates, batch_size=batch, shard_size=shard_size, control=i == 0)
        rows = {key: row for key, row in rows_by_key(tmp_path / str(i)).items() if key[1] == "guided"}
        assert len(rows) == 8
        reference = reference or rows
        assert rows == reference


def test_onnxruntime_backend_matches_torch(tmp_path, monkeypatch, spec, estimates):
    """The folded denoiser through its exported graph in ONNX Runtime (CPU) refines as torch does."""
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    run(tmp_path / "torch", spec, estimates, control=False)
    run(tmp_path / "ort", spec, estimates, control=False, backend="onnxruntime")
    ref, got = rows_by_key(tmp_path / "torch"), rows_by_key(tmp_path / "ort")
    assert set(ref) == set(got) and len(ref) == 8
    for column in ("pose_6d", "betas", "object_rotation_6d", "object_translation"):
        a = np.array([ref[k][column] for k in sorted(ref)])
        b = np.array([got[k][column] for k in sorted(ref)])
        assert np.abs(b - a).max() <= 1e-3 * np.abs(a).max(), column
    assert {r["backend"] for r in got.values()} == {"onnxruntime"}
    assert list((tmp_path / "cache" / "onnx").rglob("scorehoi-denoiser-folded-fp32.onnx"))  # the graph ran


def test_same_bytes_with_two_ray_workers(tmp_path, spec, estimates):
    run(tmp_path / "local", spec, estimates, batch_size=4, control=False)
    report = run(tmp_path / "ray", spec, estimates, batch_size=2, shard_size=3, workers=2, control=False)
    assert report["workers"]["requested"] == 2 and report["shards"]["total"] == 3
    assert rows_by_key(tmp_path / "ray") == rows_by_key(tmp_path / "local")


def test_rerun_writes_nothing_and_other_jobs_are_refused(tmp_path, spec, estimates):
    out = tmp_path / "out"
    first = run(out, spec, estimates, control=False)
    assert first is not None
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert run(out, spec, estimates, batch_size=3, control=False) == first  # batch size is not part of the job: its report
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(JobMismatch):
        run(out, spec, estimates, control=False, guidance_scale=2.0)



def test_killed_driver_then_rerun_gives_every_row_exactly_once(tmp_path, estimates, body_dir):
    out = tmp_path / "job"
    cmd = [sys.executable, "-m", "motionfleet.cli", "refine", "--out", str(out), "--estimates", estimates,
           "--preset", "small", "--body-models", body_dir, "--rounds", "2", "--tau", "10", "--ddim-stride", "5",
           "--shard-size", "2", "--batch-size", "2", "--control", "--workers", "0"]
    env = dict(os.environ, MOTIONFLEET_PROGRESS="0", OMP_NUM_THREADS="1")
    before_kill = kill_after_commits(cmd, out, env)
    assert 2 <= len(before_kill) < 8, "the kill should land mid-job (16 items, 8 shards)"
    mtimes = result_mtimes(out, before_kill)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    keys = [(r["sample_id"], r["variant"]) for r in read_results(out).to_pylist()]
    assert len(keys) == len(set(keys)) == 16
    assert not list(out.rglob(".*.tmp-*"))
    assert result_mtimes(out, before_kill) == mtimes


def test_demo_guidance_beats_the_estimate_and_the_unguided_control(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MOTIONFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOTIONFLEET_PROGRESS", "0")
    out = tmp_path / "demo"
    code = cli.main(["refine", "--demo", "--out", str(out), "--preset", "small", "--sampler-preset", "fast",
                     "--workers", "0", "--batch-size", "16"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    rows = read_results(out).to_pylist()
    assert len(rows) == 16 and {r["variant"] for r in rows} == {"guided", "control"}
    assert all("synthetic SMPL-H" in r["body_model"] and r["rounds"] == 2 and r["stride"] == 2 for r in rows)
    assert (tmp_path / "cache" / "body_models" / "smplh" / "SMPLH_NEUTRAL.npz").is_file()
    for metric in ("penetration_depth_m", "contact_distance_m"):
        q = report["quality"][metric]
        assert q["guided"] < 0.8 * q["before"] and q["guided"] < 0.8 * q["control"], (metric, q)
    assert report["timing"]["variants"]["guided"]["images"] == 8
    assert "images/s" in capsys.readouterr().out


class FilesOpened:
    """Every path the job reads a mesh, an image or a digest from (planning and the in-process worker)."""

    def __init__(self, monkeypatch):
        from motionfleet.core.io import digests
        from motionfleet.scorehoi import objects, runner

        self.paths = []
        for module, name in ((objects, "_read_mesh"), (runner, "open_media"), (digests, "many")):
            monkeypatch.setattr(module, name, self.spy(getattr(module, name)))

    def spy(self, function):
        def recorded(paths, *args, **kwargs):
            self.paths += [os.path.realpath(p) for p in (paths if isinstance(paths, list) else [paths])]
            return function(paths, *args, **kwargs)
        return recorded


def test_rows_naming_files_outside_their_folder_or_bad_meshes_and_poses_are_rejected(tmp_path, spec, monkeypatch):
    """Issue 23: an image at /dev/zero, an .obj linked to /etc/passwd (it was parsed and digested),
    absolute and ../ names of a good mesh outside the estimates file's folder (they were refined),
    meshes with NaN (refined, the vertex dropped) or 1e30 vertices (refined), a translation of 1e30
    and poses that are scaled or reflected matrices: each rejected with its reason, nothing outside
    the folder opened, and relative names read from the folder whatever the working directory."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "objects").mkdir(parents=True)
    outside.mkdir()
    trimesh.creation.box(extents=(0.3, 0.2, 0.1)).export(outside / "crate.obj")
    trimesh.creation.box(extents=(0.3, 0.2, 0.1)).export(data / "objects" / "crate.obj")
    (data / "objects" / "passwd.obj").symlink_to("/etc/passwd")
    (data / "objects" / "linked.obj").symlink_to(outside / "crate.obj")
    (data / "zero.png").symlink_to("/dev/zero")
    from PIL import Image

    Image.fromarray(np.zeros((40, 30, 3), dtype=np.uint8)).save(outside / "crop.png")
    for name, value in (("nan.obj", float("nan")), ("huge.obj", 1e30)):
        box = trimesh.creation.box(extents=(0.3, 0.2, 0.1))
        box.vertices[0, 0] = value
        trimesh.Trimesh(box.vertices, box.faces, process=False).export(data / "objects" / name)
    good = {**scene_rows()[0], "image_path": None}
    no_features = {"image_features": None}
    scaled, reflected = np.tile(2 * np.eye(3), (52, 1, 1)), np.tile(np.diag([1.0, 1.0, -1.0]), (52, 1, 1))
    rows = [
        {**good, "id": "ok"},
        {**good, "id": "crate", "object": "objects/crate.obj"},
        {**good, "id": "dev_zero", **no_features, "image_path": "/dev/zero"},
        {**good, "id": "linked_dev_zero", **no_features, "image_path": "zero.png"},
        {**good, "id": "outside_image", **no_features, "image_path": "../outside/crop.png"},
        {**good, "id": "linked_passwd", "object": "objects/passwd.obj"},
        {**good, "id": "linked_outside", "object": "objects/linked.obj"},
        {**good, "id": "absolute", "object": str(outside / "crate.obj")},
        {**good, "id": "dotdot", "object": "../outside/crate.obj"},
        {**good, "id": "nan_mesh", "object": "objects/nan.obj"},
        {**good, "id": "huge_mesh", "object": "objects/huge.obj"},
        {**good, "id": "huge_translation", "object_translation": [1e30, 0.0, 0.0]},
        {**good, "id": "scaled_pose", "pose": scaled.ravel().tolist()},
        {**good, "id": "reflected_pose", "pose": reflected.ravel().tolist()},
    ]
    estimates = write_parquet(data / "estimates.parquet", rows)
    monkeypatch.chdir(tmp_path)  # relative names are the estimates file's, not the working directory's
    opened = FilesOpened(monkeypatch)
    run(tmp_path / "out", spec, estimates, control=False)
    assert sorted(r["sample_id"] for r in read_results(tmp_path / "out").to_pylist()) == ["crate", "ok"]
    reasons = {r["sample_id"]: r["reason"] for r in read_results(tmp_path / "out", "rejected").to_pylist()}
    leaves = "leads outside " + os.path.realpath(data)
    expected = {"dev_zero": leaves, "linked_dev_zero": leaves, "outside_image": leaves, "linked_passwd": leaves,
                "linked_outside": leaves, "absolute": leaves, "dotdot": leaves,
                "nan_mesh": "nan.obj has NaN or infinite vertices", "huge_mesh": "huge.obj has a vertex 1e+30 m",
                "huge_translation": "object_translation out of range", "scaled_pose": "pose has matrices that are not rotations",
                "reflected_pose": "pose has matrices that are not rotations"}
    assert {key: text in reasons.get(key, "") for key, text in expected.items()} == dict.fromkeys(expected, True), reasons
    never = {os.path.realpath(p) for p in (outside / "crate.obj", outside / "crop.png", "/etc/passwd", "/dev/zero")}
    assert os.path.realpath(data / "objects" / "crate.obj") in opened.paths and not never & set(opened.paths)


PEAK_RSS_SCRIPT = """import sys
from motionfleet import cli
from motionfleet.core.execution.worker import peak_rss_mb
code = cli.main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    out.write(str(peak_rss_mb() * 1024))  # KiB; VmHWM: ru_maxrss would hold pytest's own peak (vfork + exec)
sys.exit(code)
"""


def test_sixteen_rows_sharing_a_large_mesh_refine_in_bounded_driver_memory(tmp_path, body_dir):
    """Issue 23: the SDF grid of a shared 5,120-face sphere took the driver (in process, --workers 0)
    to 3.6 GiB (trimesh measured every face in a box around each grid point, all at once; 327,680
    faces passed 13 GB). Now 0.74 GiB; the bound is generous."""
    trimesh.creation.icosphere(subdivisions=4, radius=0.12).export(tmp_path / "sphere.obj")
    rows = [{**scene_rows()[0], "image_path": None, "id": f"row{i}", "object": "sphere.obj"} for i in range(16)]
    estimates = write_parquet(tmp_path / "estimates.parquet", rows)
    peak = tmp_path / "peak_kib"
    cmd = [sys.executable, "-c", PEAK_RSS_SCRIPT, str(peak), "refine", "--out", str(tmp_path / "out"), "--estimates",
           estimates, "--preset", "small", "--body-models", body_dir, "--rounds", "2", "--tau", "10", "--ddim-stride", "5",
           "--batch-size", "16", "--workers", "0"]
    env = dict(os.environ, MOTIONFLEET_PROGRESS="0", OMP_NUM_THREADS="1", MOTIONFLEET_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(read_results(tmp_path / "out")) == 16
    assert float(peak.read_text()) < 2.5 * 2**20, f"driver peak RSS {float(peak.read_text()) / 2**20:.2f} GiB"
