"""``motionfleet convert``: each family's results to .npz, .bvh and .glb, read back with readers that
share no code with the writers (numpy.load, the ``bvh`` package, pygltflib and trimesh) and checked
against the job's own values: joint and frame counts, frame rates, and the joint positions that
the BVH's offsets and channels give against the body model's (``smplx``) for the same pose."""

import json
from pathlib import Path

import bvh
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pygltflib
import pytest
import torch
import trimesh
from pygltflib import validator

import motionfleet
from motionfleet import cli
from motionfleet.common.bodies import load_body_model
from motionfleet.common.rotations import axis_angle_to_matrix, rotation_6d_to_matrix
from motionfleet.convert import interhuman, smpl
from motionfleet.convert.bvh import bvh_text
from motionfleet.convert.names import file_stem, output_path
from motionfleet.convert.skeleton import PersonMotion, Skeleton, forward_kinematics
from motionfleet.core.jobfolder.sink import iter_results, read_results
from motionfleet.demo.body_models import cached_synthetic_body_models, synthetic_skeleton, write_synthetic_body_model
from motionfleet.demo.scenes import demo_scenes
from motionfleet.demo.videos import write_demo_tracks, write_demo_video

PROMPTS = [{"id": "hug/1 ü", "text": "two people hug", "num_frames": 12},
           {"id": "hug_1 ü", "text": "a couple dances a slow waltz", "num_frames": 9}]  # sanitise to the same text
VIDEO_FRAMES, VIDEO_FPS = 20, 30


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def write_stats(folder: Path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    np.save(folder / "global_mean.npy", rng.normal(0, 0.5, 262).astype(np.float32))
    np.save(folder / "global_std.npy", rng.uniform(0.2, 1.5, 262).astype(np.float32))
    return str(folder)


@pytest.fixture(scope="module")
def generate_job(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("generate")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    stats = write_stats(root / "stats", 0)
    motionfleet.generate(str(prompts), out=str(root / "job"), preset="tiny", steps=2, num_frames=12, repeats=1, workers=0,
                         batch_size=2, motion_stats=stats, motion_space="normalized")
    return {"job": str(root / "job"), "stats": stats, "other_stats": write_stats(root / "other", 1), "root": root}


@pytest.fixture(scope="module")
def reconstruct_job(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reconstruct")
    (root / "videos").mkdir()
    write_demo_video(root / "videos" / "walk.mp4", VIDEO_FRAMES, VIDEO_FPS, (160, 120), seed=1)
    write_demo_tracks(root / "videos" / "walk.tracks.csv", VIDEO_FRAMES, (160, 120))
    motionfleet.reconstruct(str(root / "videos"), out=str(root / "job"), workers=0, preset="small", crop_size=32,
                            max_frame_size=160, steps=2, seed=5, batch_size=2)
    return {"job": str(root / "job"), "root": root}


@pytest.fixture(scope="module")
def refine_job(tmp_path_factory) -> dict:
    """Run with a body model folder of its own: the job records its sha256, as with a licensed model."""
    root = tmp_path_factory.mktemp("refine")
    write_synthetic_body_model(root / "bodies", "smplh")
    write_synthetic_body_model(root / "other_bodies", "smplh", seed=3)
    rows = [{"id": r.sample_id, **dict(r.values)} for r in demo_scenes(32).records][:2]
    pq.write_table(pa.Table.from_pylist(rows), root / "scenes.parquet")
    motionfleet.refine(str(root / "scenes.parquet"), out=str(root / "job"), preset="small", rounds=2, tau=10, ddim_stride=5,
                       guidance_scale=1.0, batch_size=4, control=True, workers=0, body_models=str(root / "bodies"))
    return {"job": str(root / "job"), "bodies": str(root / "bodies"), "other": str(root / "other_bodies"), "root": root}


def convert(job: dict, to: str, out: Path, *flags: str) -> list[Path]:
    assert cli.main(["convert", job["job"], "--to", to, "--out", str(out), *flags]) == 0
    return sorted(out.iterdir())


# --- reading BVH independently ----------------------------------------------------------------


def axis_rotation(axis: str, degrees: np.ndarray) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    one, zero = np.ones_like(c), np.zeros_like(c)
    rows = {"X": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
            "Y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
            "Z": [[c, -s, zero], [s, c, zero], [zero, zero, one]]}[axis]
    return np.moveaxis(np.array(rows), (0, 1), (-2, -1))


def bvh_local_rotations(mocap: bvh.Bvh, joint: str) -> np.ndarray:
    """(T, 3, 3) local rotation of ``joint``: the product of its rotation channels in the listed order."""
    channels = [c for c in mocap.joint_channels(joint) if c.endswith("rotation")]
    values = np.array(mocap.frames_joint_channels(joint, channels))
    rotation = np.broadcast_to(np.eye(3), (mocap.nframes, 3, 3))
    for k, channel in enumerate(channels):
        rotation = rotation @ axis_rotation(channel[0], values[:, k])
    return rotation


def bvh_positions(mocap: bvh.Bvh, order=None) -> np.ndarray:
    """(T, J, 3) world joint positions, in the order of the names ``order`` (default: the file's)."""
    names = mocap.get_joints_names()
    world, positions = {}, {}
    for name in names:
        parent = mocap.joint_parent(name)
        local = bvh_local_rotations(mocap, name)
        offset = np.array(mocap.joint_offset(name))
        if parent is None:
            positions[name] = np.array(mocap.frames_joint_channels(name, ["Xposition", "Yposition", "Zposition"])) + offset
            world[name] = local
        else:
            positions[name] = positions[parent.name] + world[parent.name] @ offset
            world[name] = world[parent.name] @ local
    return np.stack([positions[n] for n in order or names], axis=1)


def read_bvh(path: Path) -> bvh.Bvh:
    return bvh.Bvh(path.read_text())


# --- the body model's own joints for the job's poses ---------------------------------------------


def body_joints(kind: str, folder, rotmats: np.ndarray, betas: np.ndarray, trans: np.ndarray) -> np.ndarray:
    model = load_body_model(kind, folder)
    frames = len(rotmats)
    with torch.no_grad():
        out = model.forward_rotmats(torch.as_tensor(rotmats, dtype=torch.float32),
                                    torch.as_tensor(betas, dtype=torch.float32).expand(frames, -1),
                                    torch.as_tensor(trans, dtype=torch.float32))
    return out.joints.double().numpy()


def reconstruct_person(job: dict, person: int) -> dict:
    rows = sorted((r for r in read_results(job["job"]).to_pylist() if r["person"] == person), key=lambda r: r["frame_index"])
    assert [r["frame_index"] for r in rows] == list(range(VIDEO_FRAMES))
    return {"aa": np.array([r["pose_axis_angle"] for r in rows]).reshape(VIDEO_FRAMES, 24, 3),
            "trans": np.array([r["translation"] for r in rows]), "betas": np.array([r["betas"] for r in rows]).mean(0)}


# --- npz ---------------------------------------------------------------------------------------


def test_reconstruct_npz_is_amass_layout_with_the_job_values(reconstruct_job, tmp_path):
    files = convert(reconstruct_job, "npz", tmp_path)
    assert [f.name.rsplit(".", 2)[1:] for f in files] == [["p0", "npz"], ["p1", "npz"]]
    for person, path in enumerate(files):
        expected = reconstruct_person(reconstruct_job, person)
        with np.load(path, allow_pickle=False) as npz:
            assert set(npz.files) == {"poses", "trans", "betas", "gender", "mocap_framerate"}
            assert npz["poses"].shape == (VIDEO_FRAMES, 156) and float(npz["mocap_framerate"]) == VIDEO_FPS
            poses = npz["poses"].reshape(VIDEO_FRAMES, 52, 3)
            np.testing.assert_allclose(poses[:, :22], expected["aa"][:, :22], atol=1e-6)
            assert not poses[:, 22:].any()  # SMPL has no finger joints
            np.testing.assert_allclose(npz["trans"], expected["trans"], atol=1e-6)
            np.testing.assert_allclose(npz["betas"], expected["betas"], atol=1e-6)
            assert str(npz["gender"]) == "neutral"


def test_refine_npz_holds_the_smplh_pose_as_axis_angles(refine_job, tmp_path):
    files = convert(refine_job, "npz", tmp_path, "--body-models", refine_job["bodies"])
    rows = {f"{r['sample_id']}#{r['variant']}": r for r in read_results(refine_job["job"]).to_pylist()}
    assert len(files) == len(rows) == 4
    for key, row in rows.items():
        with np.load(output_path(tmp_path, key, ".p0.npz"), allow_pickle=False) as npz:
            assert npz["poses"].shape == (1, 156) and npz["trans"].shape == (1, 3)
            rotations = axis_angle_to_matrix(torch.from_numpy(npz["poses"].reshape(52, 3)))
            expected = rotation_6d_to_matrix(torch.tensor(row["pose_6d"], dtype=torch.float64).reshape(52, 6))
            np.testing.assert_allclose(rotations.numpy(), expected.numpy(), atol=1e-6)
            np.testing.assert_allclose(npz["betas"], row["betas"], atol=1e-6)


def test_generate_npz_holds_the_denormalised_positions(generate_job, tmp_path):
    files = convert(generate_job, "npz", tmp_path, "--motion-stats", generate_job["stats"])
    mean, std = (np.load(Path(generate_job["stats"]) / n).astype(np.float64) for n in ("global_mean.npy", "global_std.npy"))
    rows = read_results(generate_job["job"]).to_pylist()
    assert len(files) == 2 * len(rows) == 4  # both prompt ids sanitise alike and still get files of their own
    for row in rows:
        raw = np.asarray(row["motion"], np.float64) * std + mean
        for person in range(2):
            with np.load(output_path(tmp_path, f"{row['sample_id']}#{row['repeat']}", f".p{person}.npz"), allow_pickle=False) as npz:
                assert npz["positions"].shape == (row["num_frames"], 22, 3) and float(npz["mocap_framerate"]) == 30
                np.testing.assert_allclose(npz["positions"], raw[person, :, :66].reshape(-1, 22, 3), atol=1e-5)
                np.testing.assert_allclose(npz["foot_contacts"], raw[person, :, 258:], atol=1e-5)
                assert npz["parents"].tolist() == list(interhuman.PARENTS)


# --- BVH ---------------------------------------------------------------------------------------


def test_reconstruct_bvh_gives_the_body_models_joints(reconstruct_job, tmp_path):
    files = convert(reconstruct_job, "bvh", tmp_path)
    for person, path in enumerate(files):
        mocap, expected = read_bvh(path), reconstruct_person(reconstruct_job, person)
        assert len(mocap.get_joints_names()) == 24 and mocap.nframes == VIDEO_FRAMES
        assert mocap.frame_time == pytest.approx(1 / VIDEO_FPS)
        joints = body_joints("smpl", cached_synthetic_body_models("smpl"), axis_angle_to_matrix(torch.from_numpy(expected["aa"])).numpy(),
                             expected["betas"], expected["trans"])
        np.testing.assert_allclose(bvh_positions(mocap, smpl.joint_names("smpl")), joints, atol=2e-4)


def test_refine_bvh_gives_the_body_models_joints(refine_job, tmp_path):
    convert(refine_job, "bvh", tmp_path, "--body-models", refine_job["bodies"])
    for row in read_results(refine_job["job"]).to_pylist():
        mocap = read_bvh(output_path(tmp_path, f"{row['sample_id']}#{row['variant']}", ".p0.bvh"))
        assert len(mocap.get_joints_names()) == 52 and mocap.nframes == 1
        rotmats = rotation_6d_to_matrix(torch.tensor(row["pose_6d"]).reshape(1, 52, 6)).numpy()
        joints = body_joints("smplh", refine_job["bodies"], rotmats, np.array(row["betas"]), np.zeros((1, 3)))
        np.testing.assert_allclose(bvh_positions(mocap, smpl.joint_names("smplh")), joints, atol=2e-4)


def test_generate_bvh_carries_the_root_positions_and_joint_rotations(generate_job, tmp_path):
    convert(generate_job, "bvh", tmp_path, "--motion-stats", generate_job["stats"])
    mean, std = (np.load(Path(generate_job["stats"]) / n).astype(np.float64) for n in ("global_mean.npy", "global_std.npy"))
    for row in read_results(generate_job["job"]).to_pylist():
        raw = np.asarray(row["motion"], np.float64) * std + mean
        for person in range(2):
            mocap = read_bvh(output_path(tmp_path, f"{row['sample_id']}#{row['repeat']}", f".p{person}.bvh"))
            names = mocap.get_joints_names()
            assert len(names) == 22 and mocap.nframes == row["num_frames"] and mocap.frame_time == pytest.approx(1 / 30)
            root = np.array(mocap.frames_joint_channels(names[0], ["Xposition", "Yposition", "Zposition"]))
            np.testing.assert_allclose(root, raw[person, :, :3], atol=1e-5)
            expected = rotation_6d_to_matrix(torch.from_numpy(raw[person, :, 132:258].reshape(-1, 21, 6))).numpy()
            for joint in range(1, 22):
                np.testing.assert_allclose(bvh_local_rotations(mocap, interhuman.NAMES[joint]), expected[:, joint - 1], atol=1e-4)


def test_interhuman_skeleton_reproduces_positions_made_by_its_own_kinematics():
    """Frames whose positions come from SMPL's rest bones and the frames' rotations: the BVH skeleton
    (bone lengths from frame 0, root rotation fitted) gives those positions back."""
    rng = np.random.default_rng(0)
    rest = synthetic_skeleton("smpl")[0][:22].astype(np.float64) * 1.1
    skeleton = Skeleton(interhuman.NAMES, interhuman.PARENTS, rest - rest[list(np.maximum(interhuman.PARENTS, 0))])
    rotations = axis_angle_to_matrix(torch.from_numpy(rng.normal(0, 0.5, (6, 22, 3)))).numpy()
    truth = forward_kinematics(PersonMotion(skeleton, rng.normal(0, 1, (6, 3)), rotations, 30.0))
    frames = np.zeros((6, 262))
    frames[:, :66] = truth.reshape(6, -1)
    frames[:, 132:258] = rotations[:, 1:, :2, :].reshape(6, -1)  # 6D: the first two rows
    np.testing.assert_allclose(forward_kinematics(interhuman.person_motion(frames)), truth, atol=1e-6)


@pytest.mark.parametrize("turns, channels", [
    ([("Z", 90.0)], (90.0, 0.0, 0.0)), ([("X", 90.0)], (0.0, 90.0, 0.0)), ([("Y", 90.0)], (0.0, 0.0, 90.0)),
    ([("Y", -45.0)], (0.0, 0.0, -45.0)),
    ([("Z", 30.0), ("X", 45.0), ("Y", 60.0)], (30.0, 45.0, 60.0)),  # Rz Rx Ry: the channels in their listed order
])
def test_bvh_channels_of_a_known_rotation(tmp_path, turns, channels):
    """One joint turned in frame 1: its channels (Z, X, Y) hold the angles, the other joints stay at zero."""
    skeleton = Skeleton(("hips", "spine", "head"), (-1, 0, 1), np.array([[0.0, 0, 0], [0, 0.5, 0], [0, 0.3, 0]]))
    turn = np.eye(3)
    for axis, degrees in turns:
        turn = turn @ axis_rotation(axis, np.array(degrees))
    rotations = np.broadcast_to(np.eye(3), (2, 3, 3, 3)).copy()
    rotations[1, 1] = turn
    path = tmp_path / "known.bvh"
    path.write_text(bvh_text(PersonMotion(skeleton, np.array([[0.0, 1, 0], [0, 1, 0]]), rotations, 25.0)))
    mocap = read_bvh(path)
    assert mocap.joint_channels("spine") == ["Zrotation", "Xrotation", "Yrotation"] and mocap.frame_time == pytest.approx(0.04)
    np.testing.assert_allclose(mocap.frames_joint_channels("spine", ["Zrotation", "Xrotation", "Yrotation"]), [(0, 0, 0), channels],
                               atol=1e-6)
    np.testing.assert_allclose(mocap.frames_joint_channels("head", ["Zrotation", "Xrotation", "Yrotation"]), [(0, 0, 0)] * 2, atol=1e-9)
    np.testing.assert_allclose(bvh_positions(mocap)[1, 2], [0, 1.5, 0] + turn @ [0, 0.3, 0], atol=1e-6)


# --- glTF --------------------------------------------------------------------------------------


def accessor_values(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[accessor.type]
    data = gltf.binary_blob()[view.byteOffset + (accessor.byteOffset or 0):][: accessor.count * width * 4]
    return np.frombuffer(data, np.float32).reshape(accessor.count, width)


def check_glb(path: Path, people: int, joints: int, frames: int, fps: float) -> pygltflib.GLTF2:
    gltf = pygltflib.GLTF2.load_binary(str(path))
    validator.validate(gltf)
    assert len(gltf.nodes) == people * joints and len(gltf.scenes[0].nodes) == people
    animation = gltf.animations[0]
    assert len(animation.channels) == people * (joints + 1)
    times = accessor_values(gltf, animation.samplers[0].input)[:, 0]
    assert len(times) == frames
    np.testing.assert_allclose(np.diff(times), 1 / fps, atol=1e-6)
    scene = trimesh.load(str(path), force="scene")  # a second reader: the node tree
    assert {n.name for n in gltf.nodes} <= set(scene.graph.nodes)
    return gltf


def root_translations(gltf: pygltflib.GLTF2, person: int) -> np.ndarray:
    root = gltf.scenes[0].nodes[person]
    channel = next(c for c in gltf.animations[0].channels if c.target.node == root and c.target.path == "translation")
    return accessor_values(gltf, gltf.animations[0].samplers[channel.sampler].output)


@pytest.mark.filterwarnings("ignore:pygltf.utils.validator is a provisional function")
def test_gltf_of_each_family(generate_job, reconstruct_job, refine_job, tmp_path):
    [glb] = convert(reconstruct_job, "gltf", tmp_path / "r")
    gltf = check_glb(glb, 2, 24, VIDEO_FRAMES, VIDEO_FPS)
    bvh_files = convert(reconstruct_job, "bvh", tmp_path / "rb")
    for person in range(2):
        np.testing.assert_allclose(root_translations(gltf, person), bvh_positions(read_bvh(bvh_files[person]))[:, 0], atol=1e-5)
    for path in convert(refine_job, "gltf", tmp_path / "s", "--body-models", refine_job["bodies"]):
        check_glb(path, 1, 52, 1, smpl.STILL_FPS)
    row = read_results(generate_job["job"]).to_pylist()[0]
    convert(generate_job, "gltf", tmp_path / "g", "--motion-stats", generate_job["stats"])
    gltf = check_glb(output_path(tmp_path / "g", f"{row['sample_id']}#{row['repeat']}", ".glb"), 2, 22, row["num_frames"], 30)
    mean, std = (np.load(Path(generate_job["stats"]) / n).astype(np.float64) for n in ("global_mean.npy", "global_std.npy"))
    raw = np.asarray(row["motion"], np.float64) * std + mean
    np.testing.assert_allclose(root_translations(gltf, 1), raw[1, :, :3], atol=1e-5)


# --- what the user gets wrong: one line, nothing written -------------------------------------------


def one_line_error(capsys, argv: list[str], code: int, *words: str) -> None:
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("motionfleet: error:"), err
    assert all(w in err for w in words), err


def test_mistakes_are_one_line(generate_job, reconstruct_job, refine_job, tmp_path, capsys):
    out = str(tmp_path / "out")
    one_line_error(capsys, ["convert", generate_job["job"], "--to", "bvh", "--out", out], 2, "--motion-stats")
    one_line_error(capsys, ["convert", generate_job["job"], "--to", "bvh", "--out", out, "--motion-stats", generate_job["other_stats"]],
                   2, "not the statistics the job used")
    one_line_error(capsys, ["convert", refine_job["job"], "--to", "npz", "--out", out], 2, "--body-models")
    one_line_error(capsys, ["convert", refine_job["job"], "--to", "npz", "--out", out, "--body-models", refine_job["other"]], 2, "sha256")
    one_line_error(capsys, ["convert", reconstruct_job["job"], "--to", "npz", "--out", out, "--body-models", refine_job["bodies"]],
                   2, "synthetic")
    one_line_error(capsys, ["convert", reconstruct_job["job"], "--to", "npz", "--out", out, "--motion-stats", generate_job["stats"]],
                   2, "--motion-stats")
    one_line_error(capsys, ["convert", reconstruct_job["job"], "--to", "fbx", "--out", out], 2, "--to")
    one_line_error(capsys, ["convert", str(tmp_path), "--to", "npz", "--out", out], 2, "not a motionfleet job folder")
    assert not list(Path(out).glob("*")) if Path(out).exists() else True


def test_file_names_are_unique_per_id_and_stay_in_the_folder(tmp_path):
    ids = ["a/b", "a b", "a_b", "../../etc/passwd", "..", "", "ü" * 200, "x\\y:z"]
    stems = [file_stem(i) for i in ids]
    assert len(set(stems)) == len(ids)
    for key in ids:
        path = output_path(tmp_path, key, ".p0.bvh")
        assert path.parent == tmp_path and path.name.count(".") == 2 and len(path.name) < 100
    assert file_stem("hug/1 ü").startswith("hug_1-")


def test_results_are_read_in_batches(reconstruct_job, monkeypatch):
    """``iter_results`` never yields more than ``batch_rows`` rows and yields every row once; a video
    whose rows span many batches converts to the same sample as from one batch."""
    batches = list(iter_results(reconstruct_job["job"], ["frame_index", "person"], batch_rows=7))
    assert max(b.num_rows for b in batches) == 7 and len(batches) > 2
    assert pa.Table.from_batches(batches).equals(read_results(reconstruct_job["job"]).select(["frame_index", "person"]))
    [whole] = smpl.reconstruct_samples(reconstruct_job["job"], json.loads((Path(reconstruct_job["job"]) / "job.json").read_text())["job"], None)
    monkeypatch.setattr(smpl, "iter_results", lambda *a, **k: iter_results(*a, **{**k, "batch_rows": 3}))
    [pieces] = smpl.reconstruct_samples(reconstruct_job["job"], json.loads((Path(reconstruct_job["job"]) / "job.json").read_text())["job"], None)
    for a, b in zip(whole.arrays, pieces.arrays):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
