"""Exported ONNX graph -> TensorRT engine (TensorRT Python API), cached; and a runner over torch
CUDA tensors.

The engine gets one optimisation profile per batch range (``PROFILE_BATCHES``; a CFG pair counts
twice), the decoder's frame count ranges over 1..max_frames, and fp16 / bf16 are builder flags
over the fp32 graph (inputs and outputs stay fp32). Engines are cached under a key of the graph
files' sha256, the GPU (name and compute capability), the TensorRT version, the precision and
the profiles, so a changed graph, GPU or TensorRT builds a new one. Runs use named tensors and
``execute_async_v3`` on torch's current stream.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from motionfleet.core.runtime.backends import INSTALL_TENSORRT, BackendUnavailable
from motionfleet.core.runtime.graphs import GraphSpec

# (min, opt, max) rows of each optimisation profile.
PROFILE_BATCHES = ((1, 8, 16), (16, 128, 1024))
OPT_FRAMES = 120
WORKSPACE_BYTES = 8 << 30
PRECISION_FLAGS = {"fp16": "FP16", "bf16": "BF16"}


def require_tensorrt():
    """The ``tensorrt`` module, or BackendUnavailable saying how to install it."""
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailable(f"backend tensorrt needs the tensorrt package: {INSTALL_TENSORRT}") from err
    return tensorrt


def graph_files_sha256(onnx_path: Path) -> str:
    """sha256 over the .onnx file and its external data file, if it has one."""
    digest = hashlib.sha256()
    for path in (onnx_path, onnx_path.with_name(onnx_path.name + ".data")):
        if path.is_file():
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def profile_shapes(spec: GraphSpec, batches=PROFILE_BATCHES) -> list[dict[str, tuple[tuple[int, ...], ...]]]:
    """For each batch range, input name -> (min, opt, max) shape, for the inputs with dynamic dims;
    the ranges are cut at the graph's ``max_batch`` (a range wholly above it is dropped)."""
    frames = (1, min(OPT_FRAMES, spec.max_frames), spec.max_frames)
    profiles = []
    for rows in [tuple(min(n, spec.max_batch) for n in batch) for batch in batches if batch[0] < spec.max_batch]:
        shapes = {}
        for graph_input in spec.inputs:
            if all(isinstance(d, int) for d in graph_input.shape):
                continue
            sizes = [{"batch": rows[i], "frames": frames[i]} for i in range(3)]
            shapes[graph_input.name] = tuple(tuple(size.get(d, d) for d in graph_input.shape) for size in sizes)
        profiles.append(shapes)
    return profiles


def engine_key(onnx_path: Path, precision: str, profiles: list) -> str:
    trt = require_tensorrt()
    gpu = torch.cuda.get_device_properties(torch.cuda.current_device())
    parts = [graph_files_sha256(onnx_path), gpu.name, f"{gpu.major}.{gpu.minor}", trt.__version__, precision, profiles]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def build_engine(onnx_path: Path, spec: GraphSpec, precision: str, cache_dir: Path,
                 batches=PROFILE_BATCHES) -> Path:
    """The cached engine for this graph, GPU, TensorRT version and precision; built if missing."""
    profiles = profile_shapes(spec, batches)
    key = engine_key(onnx_path, precision, profiles)
    path = Path(cache_dir) / f"{spec.family}-{spec.name}-{precision}-{key}.engine"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        scratch.write_bytes(serialized_engine(onnx_path, precision, profiles))
        os.replace(scratch, path)
    return path


def serialized_engine(onnx_path: Path, precision: str, profiles: list) -> bytes:
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT {trt.__version__} could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision in PRECISION_FLAGS:
        config.set_flag(getattr(trt.BuilderFlag, PRECISION_FLAGS[precision]))
    else:
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32 (TF32 is on by default)
    for shapes in profiles:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} ({precision})")
    return bytes(serialized)


class TensorRTRunner:
    """Runs a deserialised engine on torch CUDA tensors: one execution context per optimisation
    profile, chosen by the batch size; output allocated by torch at the shape TensorRT infers."""

    def __init__(self, engine_path: Path, device: torch.device):
        trt = require_tensorrt()
        self.trt, self.device = trt, device
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.batch_input = next(n for n in self.inputs if self.engine.get_tensor_shape(n)[0] == -1)
        self.contexts: dict[int, object] = {}

    def torch_dtype(self, name: str) -> torch.dtype:
        dt = self.trt.DataType
        types = {dt.FLOAT: torch.float32, dt.HALF: torch.float16, dt.BF16: torch.bfloat16,
                 dt.INT32: torch.int32, dt.INT64: torch.int64}
        return types[self.engine.get_tensor_dtype(name)]

    def profile_for(self, batch: int) -> int:
        for index in range(self.engine.num_optimization_profiles):
            low, _, high = self.engine.get_tensor_profile_shape(self.batch_input, index)
            if low[0] <= batch <= high[0]:
                return index
        raise ValueError(f"batch {batch} is outside every optimisation profile of this engine")

    def context(self, batch: int, stream: torch.cuda.Stream):
        index = self.profile_for(batch)
        if index not in self.contexts:
            context = self.engine.create_execution_context()
            context.set_optimization_profile_async(index, stream.cuda_stream)
            self.contexts[index] = context
        return self.contexts[index]

    def __call__(self, named_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        stream = torch.cuda.current_stream(self.device)
        batch = named_inputs[self.batch_input].shape[0]
        context = self.context(batch, stream)
        keep = []  # the converted inputs must outlive the enqueue
        for name in self.inputs:
            tensor = named_inputs[name].to(self.torch_dtype(name)).contiguous()
            keep.append(tensor)
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        out = torch.empty(tuple(context.get_tensor_shape(self.output)), dtype=self.torch_dtype(self.output),
                          device=self.device)
        context.set_tensor_address(self.output, out.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return out
