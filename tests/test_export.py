"""ONNX export: every graph of every family against torch in ONNX Runtime (CPU), metadata, layout.

Relative error here is max |onnx - torch| / max |torch| over the whole output.
"""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from motionfleet.cli import main
from motionfleet.core import registry
from motionfleet.core.io.provenance import engine_version
from motionfleet.core.runtime import graphs as onnx_export

FP32_BOUND = 1e-4
# fp16 weights and arithmetic inside, fp32 at the edges: measured 3.5e-3 on the tiny dhvae denoiser.
FP16_BOUND = 2e-2
SMALL_PRESETS = {"dhvae": "tiny", "scorehoi": "small", "socialmirror": "small"}
LOOP_STEPS = 2
GRAPHS = ["dhvae-denoiser", "dhvae-decoder", f"dhvae-loop{LOOP_STEPS}", "scorehoi-denoiser", "scorehoi-denoiser-folded",
          "socialmirror-denoiser"]


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def run_onnx(path, spec, inputs) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: t.numpy() for name, t in zip(spec.input_names(), inputs)})[0]


def run_torch(spec, inputs) -> np.ndarray:
    with torch.inference_mode():
        return spec.module(*inputs).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{"family-graph": (spec, path)}: every family exported once through ``motionfleet export``."""
    out = tmp_path_factory.mktemp("graphs")
    graphs = {}
    for family, preset in SMALL_PRESETS.items():
        loop = ["--loop-steps", str(LOOP_STEPS)] if family == "dhvae" else []
        assert main(["export", "--family", family, "--preset", preset, "--out", str(out), *loop]) == 0
        model, _ = registry.get(family).load_model(None, preset)
        for spec in registry.get(family).graphs(model, LOOP_STEPS if family == "dhvae" else None):
            graphs[f"{family}-{spec.name}"] = (spec, out / spec.filename("fp32"))
    return graphs


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("batch", [3, 8])
def test_graph_matches_torch(exported, graph, batch):
    spec, path = exported[graph]
    inputs = onnx_export.random_inputs(spec, batch, seed=100 + batch, frames=5 * batch)
    assert relative_error(run_onnx(path, spec, inputs), run_torch(spec, inputs)) < FP32_BOUND


@pytest.mark.parametrize("graph", GRAPHS)
def test_graph_metadata(exported, graph):
    spec, path = exported[graph]
    meta = onnx_export.read_metadata(path)
    assert meta["family"] == graph.split("-")[0]
    assert meta["graph"] == spec.name
    assert json.loads(meta["config"]) == spec.config
    assert meta["weights"] == "dummy, seed 0"
    assert meta["weights_sha256"] == onnx_export.state_dict_sha256(spec.module)
    assert meta["engine_version"] == engine_version()
    assert meta["precision"] == "fp32"


@pytest.mark.parametrize("graph", GRAPHS)
def test_batch_is_dynamic_and_weights_are_inside(exported, graph):
    spec, path = exported[graph]
    model = onnx.load(str(path))
    first = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert first.dim_param and not first.dim_value
    assert not list(path.parent.glob(path.name + ".data"))
    onnx.checker.check_model(str(path), full_check=True)


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("graph", GRAPHS)
def test_inputs_and_dynamic_dimensions_have_the_specs_names(exported, graph):
    spec, path = exported[graph]
    model = onnx.load(str(path), load_external_data=False)
    assert [v.name for v in model.graph.input] == spec.input_names()
    assert [dims(v) for v in model.graph.input] == [list(i.shape) for i in spec.inputs]  # batch / frames, not s43
    named = {d for v in [*model.graph.input, *model.graph.output, *model.graph.value_info] for d in dims(v)
             if isinstance(d, str)}
    assert {"batch"} <= named and not [d for d in named if re.search(r"\bs\d+\b", d)], named
    assert dims(model.graph.output[0])[0] == "batch"


def test_the_docs_name_the_decoder_inputs_the_graph_has(exported):
    spec, _ = exported["dhvae-decoder"]
    export_page = (Path(__file__).parents[1] / "docs" / "export.md").read_text()
    export_section = export_page[export_page.index("- **export** writes"):export_page.index("- **`--backend`**")]
    decoder = export_section[export_section.index("its decoder"):]
    assert all(f"`{name}`" in decoder.split(")")[0] for name in spec.input_names()), spec.input_names()


def test_denoiser_graph_uses_fused_attention(exported):
    _, path = exported["dhvae-denoiser"]
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Attention" in ops  # opset 23's attention op, one node per block


def test_decoder_graph_decodes_any_length(exported):
    spec, path = exported["dhvae-decoder"]
    for frames in (1, 64):
        inputs = onnx_export.random_inputs(spec, 4, seed=frames, frames=frames)
        out = run_onnx(path, spec, inputs)
        assert out.shape == (4, 2, frames, 262)
        assert relative_error(out, run_torch(spec, inputs)) < FP32_BOUND


def test_official_denoiser_graph_matches_torch(tmp_path):
    model, weights = registry.get("dhvae").load_model(None, "official")
    spec = onnx_export.graph_for(model.denoiser)
    path = onnx_export.export_graph(spec, tmp_path, weights)
    for batch in (2, 9):
        inputs = onnx_export.random_inputs(spec, batch, seed=batch)
        assert relative_error(run_onnx(path, spec, inputs), run_torch(spec, inputs)) < FP32_BOUND


def test_weights_too_large_for_protobuf_go_to_one_data_file(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    model, weights = registry.get("scorehoi").load_model(None, "small")
    spec = onnx_export.graph_for(model)
    path = onnx_export.export_graph(spec, tmp_path, weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".data"]
    inputs = onnx_export.random_inputs(spec, 5, seed=1)
    assert relative_error(run_onnx(path, spec, inputs), run_torch(spec, inputs)) < FP32_BOUND


def test_fp16_graph_keeps_fp32_inputs_and_outputs(tmp_path):
    model, weights = registry.get("dhvae").load_model(None, "tiny")
    spec = onnx_export.graph_for(model.denoiser)
    path = onnx_export.export_graph(spec, tmp_path, weights, precision="fp16")
    graph = onnx.load(str(path)).graph
    assert {i.type.tensor_type.elem_type for i in graph.input if i.name != "t"} == {onnx.TensorProto.FLOAT}
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert onnx.TensorProto.FLOAT16 in {init.data_type for init in graph.initializer}
    inputs = onnx_export.random_inputs(spec, 8, seed=3)
    assert relative_error(run_onnx(path, spec, inputs), run_torch(spec, inputs)) < FP16_BOUND


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown family"):
        registry.get("mdm")


def test_export_of_a_family_without_graphs_is_a_usage_error(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from motionfleet.core.options import UsageError
    from motionfleet.export.onnx import export_family

    loaded = []
    family = SimpleNamespace(name="toy", default_preset="tiny", graphs=None, load_model=lambda *args: loaded.append(args))
    monkeypatch.setattr(registry, "get", lambda name: family)
    with pytest.raises(UsageError, match="declares no ONNX graphs"):
        export_family("toy", tmp_path)
    assert not loaded  # refused before loading a model
