"""YOLOX person detection (issue 20, points 1, 5 and 6): the released key layout, sizes read from
shapes, the detector against a transcription of the public code (tests/public_yolox.py) on
frames with two moving figures, batch invariance, the onnxruntime (and, on a GPU, TensorRT)
backends against torch, and bad checkpoint files as one-line errors.

Dummy weights have their BatchNorm statistics measured on images (``calibrated``), so that the
signal reaches the head: with PyTorch's default init every anchor predicts nearly the same box
whatever the frame, and the comparison would not see a changed pre-processing step.
"""

import pickle
from dataclasses import replace

import numpy as np
import public_yolox  # needs cv2: opencv-python-headless, in the test extra
import pytest
import torch
from layout import Layout

from motionfleet.common import yolox
from motionfleet.common.weights import meta_layout
from motionfleet.core.errors import DataError, UnsafeCheckpoint
from motionfleet.core.exit_codes import exit_code_and_message
from motionfleet.core.options import UsageError
from motionfleet.core.runtime import backends
from motionfleet.socialmirror import detect
from motionfleet.socialmirror.detect import Detector, DetectorSettings

TEST_SIZE = (128, 192)
CONFIDENCE = 0.05  # far below the demo's 0.23, so that hundreds of boxes reach NMS


@pytest.fixture(autouse=True, scope="module")
def single_thread(one_thread):
    yield


@pytest.fixture(autouse=True, scope="module")
def cache(tmp_path_factory):
    """Graphs the backends export go to a temporary cache, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTIONFLEET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


# --- the released layout -------------------------------------------------------------------


def public_yolox_layout(depth: float, width: float, num_classes: int) -> Layout:
    """Key -> shape of the public YOLOX(YOLOPAFPN(depth, width), YOLOXHead(num_classes, width)),
    written out from its constructors (Megvii-BaseDetection/YOLOX, yolox/models/*.py)."""
    shapes = Layout()

    def base_conv(name, n_in, n_out, kernel):
        shapes.conv(f"{name}.conv", n_in, n_out, kernel, bias=False)
        shapes.batch_norm(f"{name}.bn", n_out)

    def csp_layer(name, n_in, n_out, n):
        hidden = int(n_out * 0.5)
        base_conv(f"{name}.conv1", n_in, hidden, 1)
        base_conv(f"{name}.conv2", n_in, hidden, 1)
        base_conv(f"{name}.conv3", 2 * hidden, n_out, 1)
        for k in range(n):
            base_conv(f"{name}.m.{k}.conv1", hidden, hidden, 1)
            base_conv(f"{name}.m.{k}.conv2", hidden, hidden, 3)

    c, n = int(width * 64), max(round(depth * 3), 1)
    dark = "backbone.backbone"
    base_conv(f"{dark}.stem.conv", 12, c, 3)
    for stage, (n_in, n_out, blocks) in {"dark2": (c, 2 * c, n), "dark3": (2 * c, 4 * c, 3 * n), "dark4": (4 * c, 8 * c, 3 * n)}.items():
        base_conv(f"{dark}.{stage}.0", n_in, n_out, 3)
        csp_layer(f"{dark}.{stage}.1", n_out, n_out, blocks)
    base_conv(f"{dark}.dark5.0", 8 * c, 16 * c, 3)
    base_conv(f"{dark}.dark5.1.conv1", 16 * c, 8 * c, 1)
    base_conv(f"{dark}.dark5.1.conv2", 4 * 8 * c, 16 * c, 1)
    csp_layer(f"{dark}.dark5.2", 16 * c, 16 * c, n)
    c3, c4, c5 = int(256 * width), int(512 * width), int(1024 * width)
    fpn_n = round(3 * depth)
    base_conv("backbone.lateral_conv0", c5, c4, 1)
    csp_layer("backbone.C3_p4", 2 * c4, c4, fpn_n)
    base_conv("backbone.reduce_conv1", c4, c3, 1)
    csp_layer("backbone.C3_p3", 2 * c3, c3, fpn_n)
    base_conv("backbone.bu_conv2", c3, c3, 3)
    csp_layer("backbone.C3_n3", 2 * c3, c4, fpn_n)
    base_conv("backbone.bu_conv1", c4, c4, 3)
    csp_layer("backbone.C3_n4", 2 * c4, c5, fpn_n)
    head = int(256 * width)
    for level, n_in in enumerate((c3, c4, c5)):
        base_conv(f"head.stems.{level}", n_in, head, 1)
        for branch in ("cls_convs", "reg_convs"):
            base_conv(f"head.{branch}.{level}.0", head, head, 3)
            base_conv(f"head.{branch}.{level}.1", head, head, 3)
        shapes.conv(f"head.cls_preds.{level}", head, num_classes, 1)
        shapes.conv(f"head.reg_preds.{level}", head, 4, 1)
        shapes.conv(f"head.obj_preds.{level}", head, 1, 1)
    return shapes


def test_released_x_layout_is_the_public_one():
    """ByteTrack's bytetrack_x_mot17: depth 1.33, width 1.25, one class."""
    ours = meta_layout(lambda: yolox.YOLOX(yolox.PRESETS["x"]))
    assert ours == public_yolox_layout(1.33, 1.25, 1)
    assert len(ours) == 894
    assert ours == meta_layout(lambda: public_yolox.get_model(1.33, 1.25, 1))


@pytest.mark.parametrize("size,millions", [("s", 9.0), ("m", 25.3), ("l", 54.2), ("x", 99.1)])
def test_parameter_counts_are_the_published_ones(size, millions):
    """YOLOX's README table (COCO, 80 classes): 9.0M, 25.3M, 54.2M, 99.1M parameters."""
    with torch.device("meta"):
        model = yolox.YOLOX(replace(yolox.PRESETS[size], num_classes=80))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


@pytest.mark.parametrize("num_classes", [1, 80])
@pytest.mark.parametrize("size", ["s", "m", "l", "x"])
def test_size_and_classes_are_read_from_the_shapes(size, num_classes):
    preset = yolox.PRESETS[size]
    shapes = public_yolox_layout(preset.depth, preset.width, num_classes)
    state_dict = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    assert yolox.infer_config(state_dict, "file") == replace(preset, num_classes=num_classes)


# --- files ---------------------------------------------------------------------------------


def calibrated(model: yolox.YOLOX, seed: int) -> yolox.YOLOX:
    """BatchNorm running statistics measured on random images (a forward in training mode with a
    cumulative average), weights and biases drawn around 1 and 0: activations keep unit scale."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
        model.train()
        model(torch.randn(8, 3, *TEST_SIZE, generator=generator))
    return model.eval()


def write_released(path, model: yolox.YOLOX):
    """A file as ByteTrack releases them: {'model': state_dict} plus training state."""
    torch.save({"start_epoch": 80, "model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


@pytest.fixture(scope="module")
def released_file(tmp_path_factory):
    return write_released(tmp_path_factory.mktemp("yolox") / "bytetrack_test.pth.tar",
                          calibrated(yolox.build_yolox(yolox.PRESETS["test"], seed=3), seed=4))


@pytest.fixture(scope="module")
def model(released_file):
    return yolox.load_yolox(released_file)


class InABatch(torch.nn.Module):
    """The public model run on the image repeated 4 times, first row kept: the detector pads its
    batches to 4 frames, and oneDNN convolves a lone image with other bits than a batch (1e-4
    apart), which would leave the comparison at float noise instead of equality."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.expand(4, -1, -1, -1).contiguous())[:1]


@pytest.fixture(scope="module")
def public_model(released_file):
    model = public_yolox.get_model(0.33, 0.125, 1)
    model.load_state_dict(torch.load(released_file, map_location="cpu")["model"])
    return InABatch(model).eval()


def test_load_yolox_loads_every_tensor(released_file, model):
    saved = torch.load(released_file)["model"]
    assert model.config == yolox.PRESETS["test"]
    assert all(torch.equal(value, saved[key]) for key, value in model.state_dict().items())


def two_figures(height: int, width: int, count: int, seed: int) -> list[np.ndarray]:
    """RGB frames: a colour gradient, two rectangles of different colours walking towards each
    other, and noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack((255 * xs / width, 255 * ys / height, 60 + 0 * xs), axis=-1)
    frames = []
    for t in range(count):
        frame = background.copy()
        for colour, x0 in (((230, 40, 40), width // 8 + 6 * t), ((40, 60, 230), 5 * width // 8 - 6 * t)):
            frame[height // 4: 7 * height // 8, x0: x0 + width // 6] = colour
        frame += rng.normal(0, 12, frame.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def tie_order(boxes: np.ndarray) -> np.ndarray:
    """Boxes by descending score, equal scores by their corners: the public NMS orders equal
    scores by an unstable sort (over another candidate set than ours), the detector by anchor.
    Dummy weights give equal scores wherever the canvas is uniform grey."""
    return boxes[np.lexsort((*boxes[:, 3::-1].T, -boxes[:, 4]))]


# Ratios 1/2 (padded right, then below) and 1: where cv2.resize is exact (see test_letterbox_*).
EXACT_FRAME_SIZES = [(256, 320), (192, 384), (128, 160)]


def public_boxes(public_model, frames, confidence, test_size=TEST_SIZE):
    predictor = public_yolox.Predictor(public_model, confidence, num_classes=1, test_size=test_size)
    results = []
    for frame in frames:
        boxes, scores = predictor.predict(np.ascontiguousarray(frame[:, :, ::-1]))  # the demo reads BGR with cv2
        results.append(np.zeros((0, 5), np.float32) if boxes is None else np.concatenate((boxes, scores[:, None]), axis=1))
    return results


@pytest.mark.parametrize("height,width", EXACT_FRAME_SIZES)
def test_detector_gives_the_public_codes_boxes(model, public_model, height, width):
    frames = two_figures(height, width, count=3, seed=height)
    ours = Detector(model, DetectorSettings(test_size=TEST_SIZE, confidence=CONFIDENCE, batch_size=3))(frames)
    public = public_boxes(public_model, frames, CONFIDENCE)
    anchors = detect.DetectorGraph(model, TEST_SIZE).anchors()
    for got, want in zip(ours, public):
        assert got.dtype == np.float32 and got.shape[1] == 5
        assert 20 <= len(want) < anchors  # many boxes, and NMS dropped some
        np.testing.assert_allclose(tie_order(got), tie_order(want), rtol=0, atol=1e-4)
    assert not all(np.array_equal(ours[0], other) for other in ours[1:])  # the figures move


def test_demo_threshold_keeps_the_boxes_of_nms_at_the_lower_threshold(model, public_model):
    """The demo runs NMS at 0.001 and drops scores under 0.23 afterwards; the detector drops them
    first: the same boxes. (The demo keeps every score >= 0.46 whatever its threshold, so a
    threshold under 0.46 is the comparable one.)"""
    frames = two_figures(256, 320, count=2, seed=7)
    ours = Detector(model, DetectorSettings(test_size=TEST_SIZE, confidence=0.3))(frames)
    for got, want in zip(ours, public_boxes(public_model, frames, 0.3)):
        assert 0 < len(want) < len(public_boxes(public_model, frames[:1], CONFIDENCE)[0])
        np.testing.assert_allclose(tie_order(got), tie_order(want), rtol=0, atol=1e-4)


def test_letterbox_is_the_public_preproc(released_file):
    """Exactly equal where cv2.resize is (ratio 1/2 and 1); within one grey level (over the
    normalising std) elsewhere, the rounding of OpenCV's fixed-point bilinear weights."""
    settings = DetectorSettings(test_size=TEST_SIZE)
    for height, width, exact in [*((h, w, True) for h, w in EXACT_FRAME_SIZES), (300, 500, False), (90, 100, False)]:
        frame = two_figures(height, width, count=1, seed=1)[0]
        ours, ratio = detect.letterbox([frame], settings.test_size, torch.device("cpu"))
        public, public_ratio = public_yolox.preproc(frame[:, :, ::-1], TEST_SIZE, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        assert ratio == [public_ratio]
        difference = np.abs(ours[0].numpy() - public)
        assert difference.max() == 0 if exact else difference.max() <= 1 / 255 / 0.224 + 1e-6


def test_batches_of_one_and_four_give_the_same_boxes(model):
    frames = [frame for size in EXACT_FRAME_SIZES for frame in two_figures(*size, count=2, seed=5)]
    settings = DetectorSettings(test_size=TEST_SIZE, confidence=CONFIDENCE)
    one = Detector(model, replace(settings, batch_size=1))(frames)
    four = Detector(model, replace(settings, batch_size=4))(frames)
    assert len(one) == len(four) == len(frames)
    assert all(np.array_equal(a, b) for a, b in zip(one, four))


def test_frames_of_another_kind_are_refused(model):
    detector = Detector(model, DetectorSettings(test_size=TEST_SIZE))
    with pytest.raises(ValueError, match=r"frame 1 is a float32 array .* \(H, W, 3\) uint8 RGB"):
        detector([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.float32)])
    assert detector([]) == []


@pytest.mark.parametrize("settings,message", [
    (dict(test_size=(800, 1430)), "multiples of 32"),
    (dict(confidence=1.5), "confidence 1.5"),
    (dict(nms_threshold=0.0), "NMS threshold"),
    (dict(batch_size=0), "batch size 0"),
    (dict(batch_size=detect.MAX_BATCH + 1), "batch size"),
])
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(UsageError, match=message):
        DetectorSettings(**settings)


# --- NMS -----------------------------------------------------------------------------------


def random_boxes(count: int, seed: int, tied: bool) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=generator) * 200
    sizes = 10 + torch.rand(count, 2, generator=generator) * 40
    boxes = torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1)
    scores = torch.rand(count, generator=generator)
    if tied:
        scores = (scores * 8).floor() / 8  # eight score values: ties everywhere
    return boxes, scores


@pytest.mark.parametrize("count", [0, 1, 300, detect.NMS_BLOCK * 2 + 77])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_nms_is_torchvisions(count, tied, threshold):
    """Equal scores rank by index: the reference is given scores lowered by index x 1e-7 (a
    strict order that keeps every other one), so any sort ranks them so."""
    boxes, scores = random_boxes(count, seed=count, tied=tied)
    ranked = scores - torch.arange(count) * 1e-7 if tied else scores
    want = public_yolox.nms(boxes, ranked, threshold) if count else torch.empty(0, dtype=torch.int64)
    got = detect.nms(boxes, scores, threshold)
    assert torch.equal(got, want)
    assert count < 300 or 0 < len(got) < count


def test_nms_keeps_a_box_whose_iou_is_the_threshold():
    """torchvision drops a box when IoU > threshold, not >=: IoU exactly 0.5 survives 0.5."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 4.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert detect.nms(boxes, scores, 0.5).tolist() == [0, 1]  # IoU 0.5 and 0.4 with box 0; 0.8 with box 1
    assert public_yolox.nms(boxes, scores, 0.5).tolist() == [0, 1]


# --- backends ------------------------------------------------------------------------------


def test_onnxruntime_gives_torchs_predictions_and_boxes(model):
    """The exported graph's predictions match torch's (relative 1e-3, as exp() of dummy box sizes
    reaches 1e4 px, and 0.01 px: ONNX Runtime's kernels move raw offsets by 1e-4 of a stride of up
    to 32 px); the boxes match on frames where no box sits at the NMS threshold (with
    dummy weights, a 1e-5 change in one IoU near 0.7 changes what the rest of NMS keeps)."""
    settings = DetectorSettings(test_size=TEST_SIZE, confidence=CONFIDENCE, batch_size=4)
    eager = Detector(model, settings)
    graph = Detector(model, settings, backend="onnxruntime", weights="dummy, seed 3")
    frames = [frame for size in EXACT_FRAME_SIZES for frame in two_figures(*size, count=2, seed=9)]
    images, _ = detect.letterbox(frames[:4], TEST_SIZE, torch.device("cpu"))
    with torch.inference_mode():
        np.testing.assert_allclose(graph.run(images).numpy(), eager.run(images).numpy(), rtol=1e-3, atol=1e-2)
    for got, want in zip(graph(frames[:2]), eager(frames[:2])):
        assert_same_boxes(got, want)


def assert_same_boxes(got: np.ndarray, want: np.ndarray) -> None:
    """The same boxes from another backend: as many, each within 2e-4 of the largest coordinate
    (other kernels put 1000 px dummy boxes up to 0.1 px apart) and its score within 1e-4 of
    one of ``want``'s; scores that close may swap places."""
    assert len(got) == len(want)
    scale = np.array([2e-4 * np.abs(want[:, :4]).max()] * 4 + [1e-4])
    closest = (np.abs(got[:, None, :] - want[None, :, :]) <= scale).all(axis=2)
    assert closest.any(axis=1).all() and closest.any(axis=0).all()


def test_tensorrt_profiles_stop_at_the_detectors_largest_batch(model):
    from motionfleet.core.runtime.tensorrt import profile_shapes

    spec = detect.DetectorGraph(model, TEST_SIZE).graph_spec()
    batches = [shapes["images"] for shapes in profile_shapes(spec)]
    assert batches == [((1, 3, *TEST_SIZE), (8, 3, *TEST_SIZE), (16, 3, *TEST_SIZE)),
                       ((16, 3, *TEST_SIZE), (detect.MAX_BATCH, 3, *TEST_SIZE), (detect.MAX_BATCH, 3, *TEST_SIZE))]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_tensorrt_without_a_gpu_says_so(model):
    with pytest.raises(backends.BackendUnavailable, match="needs a CUDA GPU"):
        Detector(model, DetectorSettings(test_size=TEST_SIZE), backend="tensorrt", device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["torch", "onnxruntime", "tensorrt"])
def test_gpu_backend_gives_the_cpu_boxes(model, name):
    try:
        backends.check_backend(name, "fp32", "cuda")
    except backends.BackendUnavailable as err:
        pytest.skip(str(err))
    frames = [frame for size in EXACT_FRAME_SIZES for frame in two_figures(*size, count=2, seed=11)]
    settings = DetectorSettings(test_size=TEST_SIZE, confidence=CONFIDENCE, batch_size=4)
    cpu = Detector(model, settings)(frames)
    gpu = Detector(yolox.load_yolox(detect_file(model)), settings, backend=name, device="cuda", weights="dummy")(frames)
    for got, want in zip(gpu, cpu):
        assert_same_boxes(got, want)


def detect_file(model, _files={}):
    """A released-layout copy of ``model`` (the GPU test moves its own copy to the device)."""
    import tempfile

    if "path" not in _files:
        _files["path"] = write_released(tempfile.mkdtemp() + "/yolox.pth.tar", model)
    return _files["path"]


# --- bad files -----------------------------------------------------------------------------


class NeedsCode:
    pass


def bad_files(folder, model):
    """name -> (file, what the one-line error says)."""
    state = model.state_dict()
    files = {}

    def save(name, obj):
        torch.save(obj, folder / name)
        return folder / name

    files["hmr2"] = (save("epoch=35-step=1000000.ckpt", {"state_dict": {"backbone.patch_embed.proj.weight": torch.zeros(2, 3, 16, 16)}}),
                     r"has no 'model' state dict")
    files["closeint"] = (save("checkpoint_non_phys.pkl", {"model": {"motion_embed.weight": torch.zeros(256, 157)}}),
                         r"does not match the YOLOX layout: no 4-d tensor backbone\.backbone\.stem")
    files["missing"] = (save("missing.pth", {"model": {k: v for k, v in state.items() if "cls_preds.2" not in k}}),
                        r"missing \(2\): head\.cls_preds\.2\.bias, head\.cls_preds\.2\.weight")
    files["extra"] = (save("extra.pth", {"model": {**state, "head.ema.weight": torch.zeros(1)}}), r"unexpected \(1\): head\.ema\.weight")
    files["misshaped"] = (save("misshaped.pth", {"model": {**state, "head.reg_preds.0.bias": torch.zeros(5)}}),
                          r"wrong shape \(1\): head\.reg_preds\.0\.bias \(5,\) != \(4,\)")
    truncated = save("truncated.pth.tar", {"model": state})
    truncated.write_bytes(truncated.read_bytes()[:4096])
    files["truncated"] = (truncated, "unreadable checkpoint")
    (folder / "empty.pth").write_bytes(b"")
    files["empty"] = (folder / "empty.pth", "the file is empty")
    return files


@pytest.mark.parametrize("name", ["hmr2", "closeint", "missing", "extra", "misshaped", "truncated", "empty"])
def test_a_file_in_another_layout_is_one_line(model, tmp_path, name):
    path, message = bad_files(tmp_path, model)[name]
    with pytest.raises(DataError, match=message) as caught:
        yolox.load_yolox(path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{path}: not a usable YOLOX checkpoint")
    assert text.endswith("bytetrack_x_mot17.pth.tar)")


def test_a_pickle_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "yolox_x.pth"
    path.write_bytes(pickle.dumps({"model": NeedsCode()}, protocol=2))
    with pytest.raises(UnsafeCheckpoint) as caught:
        yolox.load_yolox(path)
    code, line = exit_code_and_message(caught.value)  # the line the command line shows
    assert code == 1 and line.startswith(f"{path} needs arbitrary code to unpickle and was refused (torch.load weights_only=True)")
