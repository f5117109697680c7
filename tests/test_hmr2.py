"""HMR 2.0: the released key layout, fidelity to the public forward and CloseInt's demo inputs on a
tiny seeded model written as 4D-Humans' Lightning checkpoint, bad files, batch invariance, and the
backends (onnxruntime against torch; on a GPU, TensorRT too)."""

import sys
import types
import zipfile

import numpy as np
import pytest
import torch
from layout import Layout
from public_hmr2 import BBOX_SHAPE, MEAN, STD, closeint_data, prepare_human4d_data
from public_hmr2 import HMR2 as PublicHMR2
from scipy.spatial.transform import Rotation

from motionfleet.core.errors import DataError, UnsafeCheckpoint
from motionfleet.core.runtime import backends
from motionfleet.core.runtime.batching import pad_rows
from motionfleet.socialmirror import hmr2, hmr2_estimate
from motionfleet.socialmirror.hmr2_estimate import HMR2Estimator, crop_boxes, crop_person, demo_crops, demo_estimates
from motionfleet.socialmirror.initial_estimate import cam_crop_to_full

TINY = hmr2.PRESETS["tiny"]
TINY_VIT = dict(img_size=(256, 192), patch_size=16, embed_dim=64, depth=2, num_heads=2)
TINY_DECODER = dict(dim=48, depth=2, heads=2, dim_head=16, mlp_dim=64, context_dim=64)


@pytest.fixture(autouse=True, scope="module")
def cache(tmp_path_factory):
    """Graphs the backends export go to a temporary cache, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTIONFLEET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def public_hmr2_layout(embed=1280, depth=32, dim=1024, decoder_depth=6, heads=8, dim_head=64, mlp=1024):
    """Key -> shape of the ``backbone.`` and ``smpl_head.`` keys of ``epoch=35-step=1000000.ckpt``,
    written out from 4D-Humans' vit.py (``vit()``: 256 x 192, patch 16, qkv_bias, mlp_ratio 4),
    pose_transformer.py, smpl_head.py and hmr_vit_transformer.yaml."""
    shapes = Layout({
        "backbone.patch_embed.proj.weight": (embed, 3, 16, 16), "backbone.patch_embed.proj.bias": (embed,),
        "backbone.pos_embed": (1, 16 * 12 + 1, embed),
    })
    linear, layer_norm = shapes.linear, shapes.layer_norm
    for i in range(depth):
        block = f"backbone.blocks.{i}"
        layer_norm(f"{block}.norm1", embed)
        linear(f"{block}.attn.qkv", embed, 3 * embed)
        linear(f"{block}.attn.proj", embed, embed)
        layer_norm(f"{block}.norm2", embed)
        linear(f"{block}.mlp.fc1", embed, 4 * embed)
        linear(f"{block}.mlp.fc2", 4 * embed, embed)
    layer_norm("backbone.last_norm", embed)
    decoder = "smpl_head.transformer"
    linear(f"{decoder}.to_token_embedding", 1, dim)
    shapes[f"{decoder}.pos_embedding"] = (1, 1, dim)
    inner = heads * dim_head
    for i in range(decoder_depth):
        layer = f"{decoder}.transformer.layers.{i}"
        for part in range(3):
            layer_norm(f"{layer}.{part}.norm", dim)
        shapes[f"{layer}.0.fn.to_qkv.weight"] = (3 * inner, dim)
        linear(f"{layer}.0.fn.to_out.0", inner, dim)
        shapes[f"{layer}.1.fn.to_kv.weight"] = (2 * inner, embed)
        shapes[f"{layer}.1.fn.to_q.weight"] = (inner, dim)
        linear(f"{layer}.1.fn.to_out.0", inner, dim)
        linear(f"{layer}.2.fn.net.0", dim, mlp)
        linear(f"{layer}.2.fn.net.3", mlp, dim)
    linear("smpl_head.decpose", dim, 144)
    linear("smpl_head.decshape", dim, 10)
    linear("smpl_head.deccam", dim, 3)
    shapes.update({"smpl_head.init_body_pose": (1, 144), "smpl_head.init_betas": (1, 10), "smpl_head.init_cam": (1, 3)})
    return shapes


def test_released_layout_matches_the_public_code():
    assert hmr2.expected_layout(hmr2.PRESETS["released"]) == public_hmr2_layout()


def test_tiny_layout_matches_the_public_code_at_tiny_sizes():
    assert hmr2.expected_layout(TINY) == public_hmr2_layout(64, 2, 48, 2, 2, 16, 64)


# --- a released-layout file of a seeded public model ----------------------------------------------


class CfgNode(dict):
    """Pickles as yacs' CfgNode does (a dict subclass with its flags in __dict__)."""

    def __init__(self, init_dict=None):
        super().__init__(init_dict or {})
        self.__dict__.update({"__immutable__": True, "__deprecated_keys__": set(), "__renamed_keys__": {},
                              "__new_allowed__": True})


def public_model(seed=3) -> PublicHMR2:
    """The public model at tiny sizes, every weight and buffer random (mean parameters included)."""
    torch.manual_seed(seed)
    model = PublicHMR2(TINY_VIT, TINY_DECODER).eval()
    with torch.no_grad():
        model.backbone.pos_embed.normal_(0, 0.02)
        head = model.smpl_head
        head.init_body_pose.copy_(torch.tensor([1.0, 0, 0, 0, -1, 0] + [1, 0, 0, 0, 1, 0] * 23) + 0.1 * torch.randn(1, 144))
        head.init_betas.normal_()
        head.init_cam.copy_(torch.tensor([[0.9, 0.05, -0.02]]))
    return model


def write_lightning_checkpoint(path, model: PublicHMR2, monkeypatch) -> None:
    """As Lightning saves HMR2: state_dict (with keys we ignore), the yacs config as hyper_parameters."""
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config)
    state = dict(model.state_dict())
    state.update({"smpl.shapedirs": torch.zeros(6890, 3, 10), "smpl.body_pose": torch.zeros(1, 69),
                  "discriminator.D_conv1.weight": torch.zeros(32, 9, 1, 1), "initialized": torch.tensor(True)})
    cfg = CfgNode({"MODEL": CfgNode({"IMAGE_SIZE": 256, "IMAGE_MEAN": [0.485, 0.456, 0.406]}),
                   "EXTRA": CfgNode({"FOCAL_LENGTH": 5000})})
    torch.save({"epoch": 35, "global_step": 1000000, "pytorch-lightning_version": "2.0.0", "state_dict": state,
                "hyper_parameters": {"cfg": cfg}, "optimizer_states": [], "lr_schedulers": []}, path)


def moving_figures(frames=3, height=480, width=800, seed=0):
    """Frames of moving figures on a smooth background, and boxes: one wide and small (no blur),
    one just over the blur threshold whose crop is inside the frame's width, one far taller than
    the frame (blurred, mostly outside)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    video, boxes = [], []
    for t in range(frames):
        frame = np.stack([(xx * 0.3 + t * 7) % 256, (yy * 0.4) % 256, (xx + yy) * 0.2 % 256], -1)
        frame = frame + rng.normal(0, 20, frame.shape)
        small = np.array([40 + 9 * t, 200, 260 + 9 * t, 330], dtype=np.float32)
        medium = np.array([280 - 5 * t, -60, 520 - 5 * t, 600 + 2 * t], dtype=np.float32)
        huge = np.array([200 + 4 * t, -300, 500 + 4 * t, 800], dtype=np.float32)
        for x0, y0, x1, y1 in (small, medium, huge):
            frame[max(int(y0), 0):int(y1), int(x0):int(x1)] *= 0.5
        video.append(np.clip(frame, 0, 255).astype(np.uint8))
        boxes.append([small, medium, huge])
    return np.stack(video), np.array(boxes, dtype=np.float32)


def test_the_example_blurs_two_crops_and_not_the_other():
    _, sides = crop_boxes(torch.as_tensor(moving_figures()[1].reshape(-1, 4)))
    factors = (sides / 256 / 2).reshape(-1, 3)
    assert (factors[:, 0] < 1.1).all() and (factors[:, 1] > 1.25).all() and (factors[:, 1] < 1.3).all()
    assert (factors[:, 2] > 2).all()  # sigma > 0.5: a kernel of radius 2


@pytest.fixture(scope="module")
def released_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hmr2") / "epoch=35-step=1000000.ckpt"
    with pytest.MonkeyPatch.context() as monkeypatch:
        write_lightning_checkpoint(path, public_model(), monkeypatch)
    return path


@pytest.fixture(scope="module")
def reference():
    """The public demo's outputs per frame; it reads frames as cv2 does, BGR."""
    model = public_model()
    return [closeint_data(model, frame[:, :, ::-1].copy(), frame_boxes) for frame, frame_boxes in zip(*moving_figures())]


def close(ours, public, atol=2e-4):
    public = torch.as_tensor(np.asarray(public), dtype=torch.float64)
    torch.testing.assert_close(ours.double().reshape(public.shape), public, atol=atol, rtol=1e-4)


def test_crops_match_the_demo_preprocessing(reference):
    frames, boxes = moving_figures()
    centres, sides = crop_boxes(torch.as_tensor(boxes.reshape(-1, 4)))
    ours = torch.stack([crop_person(torch.as_tensor(frames[i // 3]), centres[i], float(sides[i])) for i in range(len(sides))])
    public = torch.cat([r["img"] for r in reference])
    # exact bilinear in float32 against float64: a rounded uint8 pixel may land one level apart
    assert (ours - public).abs().max() < 1.01 / (0.225 * 255)
    assert ((ours - public).abs() > 1e-3).float().mean() < 1e-2


def test_a_strongly_blurred_crop_inside_a_large_frame_matches_the_demo():
    """sigma 0.6 (radius 2) on a crop away from the frame's edges: the blur sees pixels outside the crop."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (1150, 1300, 3), dtype=np.uint8)
    box = np.array([[520, 50, 780, 1100]], dtype=np.float32)
    public = prepare_human4d_data(frame[:, :, ::-1].copy(), box, BBOX_SHAPE, 256, MEAN, STD)[0][0]
    centres, sides = crop_boxes(torch.as_tensor(box))
    assert 2.0 < float(sides[0]) / 512 < 2.1
    ours = crop_person(torch.as_tensor(frame), centres[0], float(sides[0]))
    torch.testing.assert_close(ours, torch.as_tensor(public), atol=1e-3, rtol=0)  # float32 blur vs float64


def test_estimates_match_the_public_forward_and_demo(released_file, reference):
    frames, boxes = moving_figures()
    ours = demo_estimates(hmr2.load_model(str(released_file), preset="tiny"), frames, boxes)
    gather = lambda key: np.concatenate([np.asarray(r[key]).reshape(len(r["pose"]), -1) for r in reference])
    close(ours.features, gather("features"))
    close(ours.rotations, gather("rotmats"))
    close(ours.init_pose, gather("pose"))
    close(ours.betas, gather("betas"))
    close(ours.camera, gather("pred_cam"))
    close(ours.translation, gather("trans"), atol=1e-3)
    close(ours.box_center, gather("centers"))
    close(ours.scale, gather("scales"))
    close(ours.focal_length, np.full(len(ours.focal_length), reference[0]["focal_length"]))


def test_estimator_gives_closeint_inputs_per_person_and_frame(released_file, reference):
    frames, boxes = moving_figures()
    out = HMR2Estimator(hmr2.load_model(str(released_file), preset="tiny"))(frames, boxes)
    assert out.image_features.shape == (3, 3, 48) and out.x_init.shape == (3, 3, 157)
    for t, r in enumerate(reference):
        for person in range(3):
            # CloseInt_Predictor.prepare_data: axis_angle_to_matrix, then matrix_to_rotation_6d (first two rows)
            rows = Rotation.from_rotvec(r["pose"][person].reshape(24, 3)).as_matrix()[:, :2, :].reshape(144)
            close(out.x_init[person, t, :144], rows)
            close(out.x_init[person, t, 144:154], r["betas"][person])
            close(out.image_features[person, t], r["features"][person])
            side = r["scales"][person] * 200
            centre = r["centers"][person]
            close(out.squares[person, t], [centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2])
    # the crop camera is HMR 2.0's translation seen from CloseInt's square and focal length
    translation = cam_crop_to_full(out.x_init[..., 154:], out.squares, 800, 480)
    close(translation.transpose(0, 1), np.stack([r["trans"].numpy() for r in reference]), atol=1e-3)


# --- bad files ------------------------------------------------------------------------------------


def one_line_error(path, error=DataError) -> str:
    with pytest.raises(error) as raised:
        hmr2.load_model(str(path), preset="tiny")
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    return message


def test_wrong_layouts_are_one_line_errors(tmp_path, released_file):
    yolox = tmp_path / "bytetrack_x_mot17.pth.tar"
    torch.save({"model": {"backbone.backbone.stem.conv.conv.weight": torch.zeros(80, 12, 3, 3)}}, yolox)
    assert "no 'state_dict' entry" in one_line_error(yolox)
    closeint = tmp_path / "checkpoint_non_phys.pkl"
    torch.save({"model": {"motion_embed.weight": torch.zeros(256, 157)}}, closeint)
    assert "no 'state_dict' entry" in one_line_error(closeint)
    state = hmr2.build_model(TINY).state_dict()
    missing = tmp_path / "missing.ckpt"
    torch.save({"state_dict": {k: v for k, v in state.items() if k != "smpl_head.deccam.weight"}}, missing)
    assert "missing (1): smpl_head.deccam.weight" in one_line_error(missing)
    released = tmp_path / "released_for_tiny.ckpt"
    torch.save({"state_dict": hmr2.build_model(hmr2.PRESETS["tiny"]).state_dict()}, released)
    with pytest.raises(DataError, match="wrong shape"):
        hmr2.load_model(str(released), preset="released")


def test_truncated_and_foreign_pickles_are_refused(tmp_path, released_file):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(released_file.read_bytes()[:5000])
    one_line_error(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"cfg": zipfile.ZipInfo("x")}}, foreign)
    assert "torch.save" in one_line_error(foreign, UnsafeCheckpoint)


def test_the_config_is_read_without_yacs(released_file):
    assert "yacs" not in sys.modules  # the stand-in, not the library, read the CfgNode
    model = hmr2.load_model(str(released_file), preset="tiny")
    assert torch.equal(model.smpl_head.init_betas, public_model().smpl_head.init_betas)


# --- batch invariance -----------------------------------------------------------------------------


def test_crops_give_the_same_bits_in_any_batch():
    frames, boxes = moving_figures(frames=4)
    model = hmr2.build_model(TINY, seed=5)
    together = HMR2Estimator(model, chunk=4)(frames, boxes)
    alone = [HMR2Estimator(model, chunk=4)(frames[t:t + 1], boxes[t:t + 1]) for t in range(4)]
    assert torch.equal(together.image_features, torch.cat([a.image_features for a in alone], dim=1))
    assert torch.equal(together.x_init, torch.cat([a.x_init for a in alone], dim=1))
    eight = HMR2Estimator(model, chunk=8)(frames, boxes)
    assert torch.equal(together.x_init, eight.x_init)


# --- backends -------------------------------------------------------------------------------------


def test_the_torch_backend_gives_the_forwards_bits(released_file):
    """What a backend runs (one joined tensor, the rotations made outside) is the eager forward, bit for bit."""
    model = hmr2.load_model(str(released_file), preset="tiny")
    crops = demo_crops(*moving_figures()).crops
    got = HMR2Estimator(model, chunk=4).outputs(crops)
    with torch.no_grad():
        want = [model(pad_rows(crops[i:i + 4], 4)) for i in range(0, len(crops), 4)]
    for name in ("feature", "rotations", "betas", "camera"):
        assert torch.equal(getattr(got, name), torch.cat([getattr(w, name) for w in want])[:len(crops)]), name


@pytest.fixture(scope="module")
def onnxruntime_estimator(released_file):
    return HMR2Estimator(hmr2.load_model(str(released_file), preset="tiny"), backend="onnxruntime", weights="test file")


def test_onnxruntime_gives_torchs_outputs(released_file, onnxruntime_estimator):
    """The exported graph's outputs match torch's within 1e-5 (values up to ~3): ONNX Runtime's
    fused Attention and GEMMs sum in another order, measured 7e-7 apart on this model (a few float32
    ulps), while a changed step (the ViT's columns, a position embedding, the mean parameters) moves
    them by 1e-2 or more. The estimator's outputs (through axis-angle, the camera, the squares) likewise."""
    eager = HMR2Estimator(hmr2.load_model(str(released_file), preset="tiny"))
    frames, boxes = moving_figures()
    crops = demo_crops(frames, boxes).crops
    with torch.inference_mode():
        torch.testing.assert_close(onnxruntime_estimator.run(crops), eager.run(crops), atol=1e-5, rtol=1e-5)
    got, want = onnxruntime_estimator(frames, boxes), eager(frames, boxes)
    for name in ("image_features", "x_init", "squares"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=1e-4, rtol=1e-5)


def test_onnxruntime_gives_a_crop_the_same_bits_in_any_batch(onnxruntime_estimator):
    crops = demo_crops(*moving_figures(frames=4)).crops
    together = onnxruntime_estimator.outputs(crops)
    alone = [onnxruntime_estimator.outputs(crops[i:i + 3]) for i in range(0, len(crops), 3)]
    for name in ("feature", "rotations", "betas", "camera"):
        assert torch.equal(getattr(together, name), torch.cat([getattr(a, name) for a in alone])), name


def test_tensorrt_profiles_stop_at_the_estimators_largest_batch():
    from motionfleet.core.runtime.tensorrt import profile_shapes

    spec = hmr2_estimate.HMR2Graph(hmr2.build_model(TINY)).graph_spec()
    batches = [shapes["crops"] for shapes in profile_shapes(spec)]
    crop = (3, 256, 256)
    assert batches == [((1, *crop), (8, *crop), (16, *crop)),
                       ((16, *crop), (hmr2_estimate.MAX_BATCH, *crop), (hmr2_estimate.MAX_BATCH, *crop))]


@pytest.mark.parametrize("chunk", [6, hmr2_estimate.MAX_BATCH + 4])
def test_a_chunk_the_graph_cannot_take_is_refused(chunk):
    with pytest.raises(ValueError, match=f"chunk {chunk} must be"):
        HMR2Estimator(hmr2.build_model(TINY), chunk=chunk)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_tensorrt_without_a_gpu_says_so():
    with pytest.raises(backends.BackendUnavailable, match="needs a CUDA GPU"):
        HMR2Estimator(hmr2.build_model(TINY), backend="tensorrt", device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["torch", "onnxruntime", "tensorrt"])
def test_gpu_backend_gives_the_cpu_outputs(released_file, name):
    """fp32 on the GPU (TF32 off) against the CPU within 1e-4: other kernels sum in other orders
    (onnxruntime on the CPU is 7e-7 apart, test_onnxruntime_gives_torchs_outputs), and a changed
    step moves the outputs by 1e-2 or more."""
    try:
        backends.check_backend(name, "fp32", "cuda")
    except backends.BackendUnavailable as err:
        pytest.skip(str(err))
    frames, boxes = moving_figures()
    cpu = HMR2Estimator(hmr2.load_model(str(released_file), preset="tiny"))(frames, boxes)
    gpu = HMR2Estimator(hmr2.load_model(str(released_file), preset="tiny"), backend=name, device="cuda",
                        weights="test file")(frames, boxes)
    for field in ("image_features", "x_init", "squares"):
        torch.testing.assert_close(getattr(gpu, field).cpu(), getattr(cpu, field), atol=1e-4, rtol=1e-4)
