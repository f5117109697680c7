"""ResNet-50: torchvision's layout (key names and shapes), features, weight files."""

import torch

from motionfleet.common.resnet import FEATURE_DIM, build_resnet50, normalise

# A few entries of torchvision's resnet50 state_dict (names and shapes), from its source.
TORCHVISION_KEYS = {
    "conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,), "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer2.0.conv2.weight": (128, 128, 3, 3), "layer3.5.bn3.weight": (1024,), "layer4.2.conv3.weight": (2048, 512, 1, 1),
    "layer4.0.downsample.1.num_batches_tracked": (), "fc.weight": (1000, 2048), "fc.bias": (1000,),
}


def test_layout_matches_torchvision_resnet50():
    state = build_resnet50().state_dict()
    assert len(state) == 320  # torchvision resnet50 has 320 state_dict entries
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 25_557_032
    for key, shape in TORCHVISION_KEYS.items():
        assert tuple(state[key].shape) == shape, key


def test_features_and_weight_file_round_trip(tmp_path):
    model = build_resnet50(seed=3)
    images = normalise(torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8))
    with torch.inference_mode():
        feats = model.features(images)
    assert feats.shape == (2, FEATURE_DIM) and torch.isfinite(feats).all()
    torch.save(model.state_dict(), tmp_path / "resnet50.pth")
    loaded = build_resnet50(str(tmp_path / "resnet50.pth"), seed=99)
    with torch.inference_mode():
        assert torch.equal(loaded.features(images), feats)
        assert not torch.equal(build_resnet50(seed=4).features(images), feats)
