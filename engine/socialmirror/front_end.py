"""reconstruct's front end files: the detector (YOLOX) and the estimator (HMR 2.0, or our projection +
regression head). Their one-line checks before any work, which the job (``family.plan``) and
``motionfleet export`` share, and the graphs ``export`` writes of them: the ones the job's
``Detector`` and ``HMR2Estimator`` run on the onnxruntime and tensorrt backends (``--onnx-dir``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from motionfleet.common import yolox
from motionfleet.common.weights import weights_description
from motionfleet.core.errors import checkpoint_errors
from motionfleet.core.options import UsageError
from motionfleet.core.runtime.graphs import GraphSpec
from motionfleet.socialmirror import hmr2
from motionfleet.socialmirror.detect import DetectorGraph
from motionfleet.socialmirror.hmr2_estimate import HMR2Graph
from motionfleet.socialmirror.initial_estimate import build_initial_estimator


def probe_detector(path: str) -> None:
    """One line for a detector file that cannot be used (the tensors memory-mapped, not loaded)."""
    with checkpoint_errors(path, yolox.LAYOUT, yolox.EXPECTED_FILE):
        yolox.released_state_dict(path)


def probe_estimator(path: str, image_feature_dim: int) -> None:
    """One line for an estimator file that cannot feed a denoiser of ``image_feature_dim``-d features."""
    fix = f"give 4D-Humans' released {hmr2.RELEASED_FILE} (HMR 2.0) or a projection + regression head file"
    with checkpoint_errors(path, "estimator", fix):
        if hmr2.is_released_file(path):
            hmr2.released_state_dict(path, hmr2.PRESETS[hmr2.preset_feeding(image_feature_dim)], mmap=True)
        else:
            build_initial_estimator(image_feature_dim, path)


def front_end_graphs(image_feature_dim: int, detector_weights: Optional[str], detector_size: tuple[int, int],
                     estimator_weights: Optional[str]) -> list[GraphSpec]:
    """The detector's graph at ``detector_size`` and HMR 2.0's (the preset feeding the denoiser), each
    from its file through the loader the job uses; a file not given: no graph."""
    specs = []
    if detector_weights is not None:
        probe_detector(detector_weights)
        spec = DetectorGraph(yolox.load_yolox(detector_weights), detector_size).graph_spec()
        specs.append(replace(spec, weights=weights_description(detector_weights, 0)))
    if estimator_weights is not None:
        probe_estimator(estimator_weights, image_feature_dim)
        if not hmr2.is_released_file(estimator_weights):
            raise UsageError(f"--estimator-weights {estimator_weights}: a projection + regression head runs in torch on "
                             f"every backend, it has no graph; give 4D-Humans' released {hmr2.RELEASED_FILE} to export HMR 2.0's")
        model = hmr2.load_model(estimator_weights, hmr2.preset_feeding(image_feature_dim))
        specs.append(replace(HMR2Graph(model).graph_spec(), weights=weights_description(estimator_weights, 0)))
    return specs
