"""Graphs: what a backend needs to run a module, and the export of one graph to ONNX.

A model declares what it can run as: its ``graph_spec()`` method returns a ``GraphSpec`` (the module
with graph inputs, their names and shapes, and the conversion from the backend's call arguments
-- ``x, t, *conditions`` for a denoiser -- to graph inputs). The engine core never names a family:
each family's specs live in its own ``graphs`` module.

Every graph has a dynamic batch dimension (a classifier-free-guidance pair is a batch twice as
large) and takes the timestep as an int64 input of shape (1,), shared by the batch, as the
samplers call the denoiser. Exported with the dynamo exporter at opset 23 (ONNX Runtime runs the
attention as one fused ``Attention`` op), checked with ``onnx.checker``, weights inside the .onnx
file unless they would pass protobuf's 2 GB limit (then all in one ``.onnx.data`` file beside it).
Each graph carries its metadata: family, graph, config, weights, weights digest, engine version,
precision.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from motionfleet.core.errors import DataError
from motionfleet.core.io.provenance import engine_version

OPSET = 23
MAX_BATCH = 8192
# Weights above this many bytes go to one external data file (protobuf refuses messages >= 2 GiB).
EXTERNAL_DATA_BYTES = 1_800_000_000
GRAPH_PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class GraphInput:
    """One graph input. ``shape`` holds sizes and dimension names ("batch", "frames");
    ``kind`` is "float", "timestep" (int64, values in [0, high)) or "frame_index" (int64 arange)."""

    name: str
    shape: tuple
    kind: str = "float"
    high: int = 0


@dataclass(frozen=True)
class GraphSpec:
    family: str
    name: str
    module: nn.Module
    inputs: tuple[GraphInput, ...]
    output: str
    config: dict
    call_inputs: Callable[..., tuple[torch.Tensor, ...]]  # backend call arguments -> graph inputs
    output_shape: Callable[..., tuple[int, ...]]  # graph inputs -> output shape
    max_frames: int = 0
    optimize: bool = True  # run the exporter's graph optimizer
    max_batch: int = MAX_BATCH  # the largest batch the graph (and a TensorRT engine) is built for
    export_flags: str = ""  # the flags of ``motionfleet export`` that write it (default: --family <family>)
    weights: str = ""  # ``export`` records these as its weights where they are not the family model's (a front-end file)

    def filename(self, precision: str) -> str:
        return f"{self.family}-{self.name}-{precision}.onnx"

    def input_names(self) -> list[str]:
        return [graph_input.name for graph_input in self.inputs]


# --- call arguments -> graph inputs --------------------------------------------------------


def timestep_tensor(t, device: torch.device) -> torch.Tensor:
    """An int step or a one-element tensor -> int64 tensor of shape (1,)."""
    t = torch.as_tensor(t, device=device).reshape(-1)
    if t.numel() != 1:
        raise ValueError(f"the graphs take one timestep per call, got {t.numel()}")
    return t.to(torch.int64)


def denoiser_call_inputs(x: torch.Tensor, t, *conditions: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (x, timestep_tensor(t, x.device), *conditions)


def same_shape_as_first(x: torch.Tensor, *rest) -> tuple[int, ...]:
    return tuple(x.shape)


def graph_for(module: nn.Module) -> GraphSpec:
    """The graph spec a module declares (its ``graph_spec()``), or ValueError."""
    declare = getattr(module, "graph_spec", None)
    if declare is None:
        raise ValueError(f"{type(module).__name__} declares no graph (it has no graph_spec() method)")
    return declare()


# --- inputs, digests, metadata -------------------------------------------------------------


def random_inputs(spec: GraphSpec, batch: int, seed: int = 0, frames: int = 0,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """Seeded random graph inputs at ``batch`` (and ``frames`` for the decoder; default 7)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = {"batch": batch, "frames": frames or min(7, spec.max_frames)}
    tensors = []
    for graph_input in spec.inputs:
        shape = tuple(sizes.get(d, d) for d in graph_input.shape)
        if graph_input.kind == "timestep":
            tensor = torch.randint(0, graph_input.high, shape, generator=generator)
        elif graph_input.kind == "frame_index":
            tensor = torch.arange(shape[0])
        else:
            tensor = torch.randn(shape, generator=generator)
        tensors.append(tensor.to(device))
    return tuple(tensors)


def dynamic_shapes(spec: GraphSpec) -> dict:
    dims = {"batch": torch.export.Dim("batch", min=1, max=spec.max_batch)}
    if spec.max_frames:
        dims["frames"] = torch.export.Dim("frames", min=1, max=spec.max_frames)
    return {graph_input.name: {axis: dims[d] for axis, d in enumerate(graph_input.shape) if isinstance(d, str)} or None
            for graph_input in spec.inputs}


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over the module's state dict (names, dtypes, shapes and bytes, in key order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def graph_metadata(spec: GraphSpec, weights: str, digest: str, precision: str, opset: int) -> dict[str, str]:
    return {
        "family": spec.family, "graph": spec.name, "config": json.dumps(spec.config, sort_keys=True),
        "weights": weights, "weights_sha256": digest, "engine_version": engine_version(),
        "precision": precision, "opset": str(opset), "torch_version": torch.__version__,
    }


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an exported graph, an untrusted file (the graph structure is read, not its
    external weights); DataError for a file that is not an ONNX graph or whose external weights
    data lies outside its folder (``..``, an absolute path)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise DataError(f"{path} is not a readable ONNX graph ({str(err).strip()[:200] or type(err).__name__}); "
                        f"export it again") from err
    for location in external_locations(model):
        if Path(location).is_absolute() or Path(location).name != location:
            raise DataError(f"{path} names external weights data {location!r} outside its folder; export it again")
    return {prop.key: prop.value for prop in model.metadata_props}


def external_locations(model) -> set[str]:
    """The ``location`` of every tensor whose data is outside the graph file (initializers and
    tensor attributes, subgraphs included)."""
    import onnx

    def tensors(graph):
        yield from graph.initializer
        for node in graph.node:
            for attribute in node.attribute:
                yield from ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors)
                for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    yield from tensors(subgraph)

    return {entry.value for tensor in tensors(model.graph) if tensor.data_location == onnx.TensorProto.EXTERNAL
            for entry in tensor.external_data if entry.key == "location"}


def parameter_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


# --- export --------------------------------------------------------------------------------


def to_fp16(model):
    """fp16 weights and arithmetic, fp32 inputs and outputs (casts at the edges)."""
    import onnx_ir as ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = ir.from_proto(convert_float_to_float16(ir.to_proto(model), keep_io_types=True))
    converted.graph.sort()  # the converter appends its input casts after their users
    return converted


def trace(spec: GraphSpec, opset: int):
    """Strict (TorchDynamo) tracing: it keeps ``len(x)`` symbolic where non-strict tracing would
    fix the batch size; the exporter would then fall back to a static graph without an error.
    Traced with autograd on, so PyTorch's fused inference-only encoder layer (which has no ONNX
    translation) is not taken."""
    device = next(spec.module.parameters()).device
    exported = torch.export.export(spec.module, random_inputs(spec, batch=4, device=device),
                                   dynamic_shapes=dynamic_shapes(spec), strict=True)
    program = torch.onnx.export(exported, dynamo=True, opset_version=opset, input_names=spec.input_names(),
                                output_names=[spec.output], verbose=False, optimize=spec.optimize)
    assert program is not None, "dynamo=True returns an ONNXProgram"
    check_dynamic(spec, program.model)
    name_dynamic_dims(spec, program.model)
    return program.model


def check_dynamic(spec: GraphSpec, model) -> None:
    """Raise if a dimension the spec names (batch, frames) came out of export as a fixed size."""
    for graph_input, value in zip(spec.inputs, model.graph.inputs):
        for axis, dim in enumerate(graph_input.shape):
            if isinstance(dim, str) and isinstance(value.shape[axis], int):
                raise RuntimeError(f"{spec.family} {spec.name}: input {graph_input.name} axis {axis} ({dim}) "
                                   f"was exported as the fixed size {value.shape[axis]}")


def name_dynamic_dims(spec: GraphSpec, model) -> None:
    """The exporter names a dynamic dimension after its tracing symbol (``s43``, ``2*s43``); name it
    as the spec does (``batch``, ``2*batch``) wherever it appears in the graph, inputs and outputs
    included."""
    import onnx_ir as ir

    names = {}
    for graph_input, value in zip(spec.inputs, model.graph.inputs):
        for axis, dim in enumerate(graph_input.shape):
            if isinstance(dim, str):
                names[str(value.shape[axis])] = dim
    symbol = re.compile("|".join(rf"\b{re.escape(name)}\b" for name in names)) if names else None

    def renamed(dim):
        if symbol is None or not isinstance(dim, ir.SymbolicDim) or dim.value is None:
            return dim
        return symbol.sub(lambda match: names[match.group(0)], dim.value)  # "2*s6" -> "2*batch"

    values = [*model.graph.inputs, *model.graph.outputs, *(v for node in model.graph.all_nodes() for v in node.outputs)]
    for value in values:
        if value.shape is not None:
            value.shape = ir.Shape([renamed(d) for d in value.shape])


def export_graph(spec: GraphSpec, out_dir: str | Path, weights: str, precision: str = "fp32",
                 opset: int = OPSET) -> Path:
    """Export ``spec`` to ``out_dir/<family>-<graph>-<precision>.onnx``, checked; returns its path.

    Written in a scratch folder and moved in, so a reader never sees a half-written graph.
    """
    if precision not in GRAPH_PRECISIONS:
        raise ValueError(f"graphs are exported in {', '.join(GRAPH_PRECISIONS)} (bf16 is a TensorRT build flag)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import onnx
    import onnx_ir as ir

    model = trace(spec, opset)
    if precision == "fp16":
        model = to_fp16(model)
    model.metadata_props.update(graph_metadata(spec, weights, state_dict_sha256(spec.module), precision, opset))
    name = spec.filename(precision)
    external = parameter_bytes(spec.module) > EXTERNAL_DATA_BYTES
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as scratch:
        ir.save(model, Path(scratch, name), external_data=f"{name}.data" if external else None)
        onnx.checker.check_model(str(Path(scratch, name)), full_check=True)
        for produced in sorted(Path(scratch).iterdir()):
            os.replace(produced, out_dir / produced.name)
    return out_dir / name
