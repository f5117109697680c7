"""Body models: synthetic files load through the safe reader, forward is batched and differentiable,
untrusted pickles are refused, vertex subsampling covers the body."""

import os
import pickle

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch

from motionfleet.common import bodies
from motionfleet.common.rotations import axis_angle_to_matrix, matrix_to_rotation_6d
from motionfleet.core.errors import MissingFile, RejectedInput, UnsafeCheckpoint
from motionfleet.demo import body_models

EXPECTED = {  # kind: (joints, vertices, file name)
    "smpl": (24, 6890, "SMPL_NEUTRAL.pkl"),
    "smplh": (52, 6890, "SMPLH_NEUTRAL.npz"),
    "smplx": (55, 10475, "SMPLX_NEUTRAL.npz"),
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("body_models")
    for kind in bodies.KINDS:
        body_models.write_synthetic_body_model(folder, kind)
    return folder


@pytest.fixture(scope="module")
def models(model_dir):
    return {kind: bodies.load_body_model(kind, model_dir) for kind in bodies.KINDS}


def random_pose_6d(batch: int, joints: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    axis_angle = 0.4 * torch.randn(batch, joints, 3, generator=g)
    return matrix_to_rotation_6d(axis_angle_to_matrix(axis_angle))


def identity_pose_6d(batch: int, joints: int) -> torch.Tensor:
    return matrix_to_rotation_6d(torch.eye(3).expand(batch, joints, 3, 3))


@pytest.mark.parametrize("kind", bodies.KINDS)
def test_synthetic_file_has_smplx_name_and_layout(model_dir, kind):
    assert (model_dir / kind / EXPECTED[kind][2]).is_file()
    ext = EXPECTED[kind][2].rsplit(".", 1)[1]
    plain = smplx.create(str(model_dir), model_type=kind, ext=ext, use_pca=False)  # our own file: plain load is fine
    assert plain.v_template.shape == (EXPECTED[kind][1], 3)


@pytest.mark.parametrize("kind", bodies.KINDS)
def test_forward_shapes_and_rest_pose_skeleton(models, kind):
    model = models[kind]
    num_joints, num_vertices, _ = EXPECTED[kind]
    assert model.num_joints == num_joints
    out = model(identity_pose_6d(2, num_joints), torch.zeros(2, 10))
    assert out.vertices.shape == (2, num_vertices, 3)
    assert out.joints.shape == (2, num_joints, 3)
    assert out.keypoints.shape[1] > num_joints

    positions, parents = body_models.synthetic_skeleton(kind)
    assert np.all(parents[1:] < np.arange(1, num_joints))  # parents come before children
    torch.testing.assert_close(model.parents, torch.from_numpy(parents))
    torch.testing.assert_close(out.joints[1], torch.from_numpy(positions), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", bodies.KINDS)
def test_synthetic_body_stands_on_the_floor_and_is_human_sized(models, kind):
    template = models[kind].template_vertices
    assert abs(float(template[:, 1].min())) < 0.02
    assert 1.6 < float(template[:, 1].max()) < 1.8
    assert int(models[kind].faces.max()) < template.shape[0]


@pytest.mark.parametrize("kind", bodies.KINDS)
def test_gradients_reach_pose_betas_and_translation(models, kind):
    model = models[kind]
    pose = random_pose_6d(3, model.num_joints).requires_grad_(True)
    betas = (0.5 * torch.randn(3, 10, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    transl = torch.zeros(3, 3, requires_grad=True)
    out = model(pose, betas, transl)
    (out.vertices.square().sum() + out.joints.square().sum()).backward()
    for grad in (pose.grad, betas.grad, transl.grad):
        assert torch.isfinite(grad).all()
        assert grad.abs().sum(dim=tuple(range(1, grad.dim()))).min() > 0  # every sample gets gradient


def test_batch_matches_single_samples_and_translation_shifts(models):
    model = models["smplh"]
    pose, betas = random_pose_6d(4, model.num_joints, seed=3), torch.randn(4, 10)
    transl = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-1.0, 0.5, 0.0], [0.0, 0.0, 0.2]])
    batched = model(pose, betas, transl)
    for i in range(4):
        single = model(pose[i:i + 1], betas[i:i + 1])
        torch.testing.assert_close(batched.vertices[i], single.vertices[0] + transl[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.joints[i], single.joints[0] + transl[i], atol=1e-5, rtol=0)


def test_missing_file_names_file_and_folder(tmp_path):
    with pytest.raises(MissingFile) as caught:
        bodies.load_body_model("smplx", tmp_path, gender="female")
    assert "SMPLX_FEMALE.npz" in str(caught.value)
    assert str(tmp_path / "smplx") in str(caught.value)


def test_unknown_kind_is_rejected(tmp_path):
    with pytest.raises(RejectedInput):
        bodies.load_body_model("star", tmp_path)


class _RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "smpl"
    folder.mkdir()
    (folder / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps({"v_template": _RunsCommand(f"touch {marker}")}))
    with pytest.raises(UnsafeCheckpoint, match="system"):
        bodies.load_body_model("smpl", tmp_path)
    assert not marker.exists()


def test_chumpy_pickle_is_refused_with_advice_to_convert(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(b"\x80\x02}X\t\x00\x00\x00shapedirscchumpy.ch\nCh\n)\x81s.")  # {'shapedirs': chumpy.ch.Ch()}
    with pytest.raises(UnsafeCheckpoint, match=r"chumpy\.ch\.Ch.*npz"):
        bodies.read_model_arrays(path, "smpl")


def tiny_model_arrays(num_vertices: int = 5, num_joints: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {
        "v_template": rng.normal(size=(num_vertices, 3)),
        "shapedirs": rng.normal(size=(num_vertices, 3, 10)),
        "posedirs": rng.normal(size=(num_vertices, 3, 9 * (num_joints - 1))),
        "J_regressor": rng.random((num_joints, num_vertices)),
        "kintree_table": np.array([[-1, 0, 1], [0, 1, 2]]),
        "weights": rng.random((num_vertices, num_joints)),
        "f": np.array([[0, 1, 2], [2, 3, 4]]),
    }


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_pickle_with_sparse_regressor_reads_as_dense_arrays(tmp_path, protocol):
    arrays = tiny_model_arrays()
    stored = dict(arrays, J_regressor=scipy.sparse.csc_matrix(arrays["J_regressor"]), bs_style="lbs")
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(stored, protocol=protocol))
    read = bodies.read_model_arrays(path, "smpl")
    assert set(read) == set(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(read[key], value)


def test_npz_object_arrays_are_refused_when_needed_and_never_read_otherwise(tmp_path):
    arrays = tiny_model_arrays()
    unused_object = np.array([{"pelvis": 0}], dtype=object)  # like SMPL-X's joint2num
    np.savez(tmp_path / "ok.npz", joint2num=unused_object, **arrays)
    assert set(bodies.read_model_arrays(tmp_path / "ok.npz", "smplh")) >= set(arrays)
    np.savez(tmp_path / "bad.npz", **dict(arrays, f=unused_object))
    with pytest.raises(UnsafeCheckpoint):
        bodies.read_model_arrays(tmp_path / "bad.npz", "smpl")


def test_smplh_without_hand_pca_reads_with_zero_stand_ins(tmp_path):
    np.savez(tmp_path / "SMPLH_NEUTRAL.npz", **tiny_model_arrays())
    read = bodies.read_model_arrays(tmp_path / "SMPLH_NEUTRAL.npz", "smplh")
    assert read["hands_componentsl"].shape == (45, 45) and not read["hands_meanr"].any()


def test_file_missing_required_keys_is_rejected(tmp_path):
    arrays = tiny_model_arrays()
    del arrays["weights"]
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(RejectedInput, match="weights"):
        bodies.read_model_arrays(tmp_path / "m.npz", "smpl")


def test_sample_vertex_ids_is_a_farthest_point_cover(models):
    model = models["smpl"]
    ids = bodies.sample_vertex_ids(model.template_vertices, 431, seed=0)
    assert ids.dtype == torch.long and len(set(ids.tolist())) == 431
    torch.testing.assert_close(ids, bodies.sample_vertex_ids(model.template_vertices, 431, seed=0))

    chosen = model.template_vertices[ids]
    covering = torch.cdist(model.template_vertices, chosen).min(dim=1).values.max()
    spacing = torch.cdist(chosen, chosen).fill_diagonal_(float("inf")).min()
    assert covering <= spacing + 1e-6  # greedy FPS: every vertex is closer to the set than set points are to each other

    out = model(identity_pose_6d(2, model.num_joints), torch.zeros(2, 10))
    assert out.vertices[:, ids].shape == (2, 431, 3)
