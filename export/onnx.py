"""Models -> ONNX graphs: one denoiser step per graph, the DHVAE decoder, and optionally a DDIM loop.

Every graph has a dynamic batch dimension (a classifier-free-guidance pair is a batch twice as
large) and takes the timestep as an int64 input of shape (1,), shared by the batch, as the
samplers call the denoiser. Exported with the dynamo exporter at opset 23 (ONNX Runtime runs the
attention as one fused ``Attention`` op), checked with ``onnx.checker``, weights inside the .onnx
file unless they would pass protobuf's 2 GB limit (then all in one ``.onnx.data`` file beside it).
Each graph carries its metadata: family, graph, config, weights, weights digest, engine version,
precision.

A ``GraphSpec`` is what a backend needs to run a module: the module with graph inputs, their names
and shapes, and the conversion from the backend's call arguments (``x, t, *conditions`` for a
denoiser, ``z, num_frames`` for the decoder) to graph inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import onnx
import onnx_ir as ir
import torch
from torch import nn

from motionfleet.common.weights import weights_description
from motionfleet.core.provenance import engine_version
from motionfleet.dhvae import model as dhvae
from motionfleet.sampling import ddim
from motionfleet.scorehoi import model as scorehoi
from motionfleet.socialmirror import model as socialmirror

OPSET = 23
MAX_BATCH = 8192
# Weights above this many bytes go to one external data file (protobuf refuses messages >= 2 GiB).
EXTERNAL_DATA_BYTES = 1_800_000_000
GRAPH_PRECISIONS = ("fp32", "fp16")
FAMILIES = ("dhvae", "scorehoi", "socialmirror")
DEFAULT_PRESETS = {"dhvae": "official", "scorehoi": "released", "socialmirror": "released"}


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


def decoder_call_inputs(z: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    return z, torch.arange(num_frames, device=z.device)


def same_shape_as_first(x: torch.Tensor, *rest) -> tuple[int, ...]:
    return tuple(x.shape)


class DecoderGraph(nn.Module):
    """The DHVAE decoder with the frame count carried by the length of ``frame_index`` (0..T-1),
    so one graph decodes any length up to ``max_frames``."""

    def __init__(self, decoder: dhvae.DHVAEDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor, frame_index: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, frame_index.shape[0])


class DDIMLoopGraph(nn.Module):
    """The whole deterministic DDIM loop (eta 0) for a fixed step count, unrolled into one graph:
    (x_T, text, null_text) -> x_0, each step one classifier-free-guidance batch, as the per-step
    backends run it."""

    def __init__(self, denoiser: dhvae.DHVAEDenoiser, steps: int, guidance: float):
        super().__init__()
        self.denoiser = denoiser
        self.plan = ddim.plan(ddim.DDIMConfig(steps=steps, eta=0.0))
        self.guidance = guidance

    def forward(self, x: torch.Tensor, text: torch.Tensor, null_text: torch.Tensor) -> torch.Tensor:
        both = torch.cat([null_text.expand_as(text), text])
        n = x.shape[0]

        def denoise(x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            # cfg_denoiser's batching, split by slicing: the exporter cannot prove chunk(2)'s
            # size guard for a symbolic batch
            out = self.denoiser(torch.cat([x_t, x_t]), t, both)
            return out[:n], out[n:]

        return ddim.sample(denoise, x, self.plan, self.guidance)


# --- specs per module ----------------------------------------------------------------------


def dhvae_denoiser_graph(denoiser: dhvae.DHVAEDenoiser) -> GraphSpec:
    c = denoiser.config
    inputs = (GraphInput("x", ("batch", dhvae.NUM_TOKENS, c.latent_dim)), GraphInput("t", (1,), "timestep", 1000),
              GraphInput("text", ("batch", c.cond_dim)))
    return GraphSpec("dhvae", "denoiser", denoiser, inputs, "eps", c.to_dict(), denoiser_call_inputs,
                     same_shape_as_first)


def dhvae_decoder_graph(decoder: dhvae.DHVAEDecoder) -> GraphSpec:
    c = decoder.config

    def output_shape(z, frame_index):
        return (z.shape[0], 2, frame_index.shape[0], c.motion_dim)

    inputs = (GraphInput("z", ("batch", dhvae.NUM_TOKENS, c.latent_dim)),
              GraphInput("frame_index", ("frames",), "frame_index"))
    return GraphSpec("dhvae", "decoder", DecoderGraph(decoder).eval(), inputs, "motion", c.to_dict(),
                     decoder_call_inputs, output_shape, max_frames=c.max_frames)


def dhvae_loop_graph(denoiser: dhvae.DHVAEDenoiser, steps: int, guidance: float) -> GraphSpec:
    c = denoiser.config
    inputs = (GraphInput("x", ("batch", dhvae.NUM_TOKENS, c.latent_dim)), GraphInput("text", ("batch", c.cond_dim)),
              GraphInput("null_text", (1, c.cond_dim)))
    config = {**c.to_dict(), "steps": steps, "guidance": guidance, "eta": 0.0}

    def call_inputs(x, text, null_text):
        return x, text, null_text

    # The exporter's optimizer takes superlinear time on the unrolled loop (official preset: 2 steps
    # 21 s, 5 steps 76 s, against 38 s for 5 steps without it); ONNX Runtime optimises on load.
    return GraphSpec("dhvae", f"loop{steps}", DDIMLoopGraph(denoiser, steps, guidance).eval(), inputs, "x0",
                     config, call_inputs, same_shape_as_first, optimize=False)


def scorehoi_config_of(model: scorehoi.ScoreHOIDenoiser) -> scorehoi.ScoreHOIConfig:
    """The config a ScoreHOI denoiser was built with, read from its layer sizes."""
    block = model.blocks[0]
    geometry = model.geo_cond_embedding_feat
    return scorehoi.ScoreHOIConfig(
        hidden_dim=block.block.linear_layer1.out_features, condition_dim=block.align_ip_cond.in_features,
        geometry_input_dim=geometry.fc1.in_features, geometry_hidden_dim=geometry.fc1.out_features,
        geometry_mid_dim=geometry.fc2.out_features, num_pose_blocks=len(model.blocks),
        num_shape_blocks=len(model.blocks_betas), num_heads=block.block.attn_cond_emb.attn.num_heads)


def scorehoi_graph(model: scorehoi.ScoreHOIDenoiser) -> GraphSpec:
    c = scorehoi_config_of(model)
    inputs = (GraphInput("x_t", ("batch", scorehoi.STATE_DIM)), GraphInput("t", (1,), "timestep", 1000),
              GraphInput("image_features", ("batch", c.condition_dim)),
              GraphInput("geometry_features", ("batch", c.geometry_input_dim)))
    return GraphSpec("scorehoi", "denoiser", model, inputs, "eps", asdict(c), denoiser_call_inputs,
                     same_shape_as_first)


def folded_call_inputs(x: torch.Tensor, t, *conditions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded ScoreHOI denoiser's graph reads x_t and t only (the conditions do not change its output)."""
    return x, timestep_tensor(t, x.device)


def scorehoi_folded_graph(model: scorehoi.FoldedScoreHOIDenoiser) -> GraphSpec:
    inputs = (GraphInput("x_t", ("batch", scorehoi.STATE_DIM)), GraphInput("t", (1,), "timestep", 1000))
    config = {"folded": True, "pose_blocks": len(model.blocks), "shape_blocks": len(model.blocks_betas)}
    return GraphSpec("scorehoi", "denoiser-folded", model, inputs, "eps", config, folded_call_inputs,
                     same_shape_as_first)


def socialmirror_graph(model: socialmirror.SocialMirrorDenoiser) -> GraphSpec:
    c = model.config
    per_frame = ("batch", socialmirror.NUM_PEOPLE, c.frames)
    inputs = (GraphInput("x_t", (*per_frame, socialmirror.MOTION_DIM)), GraphInput("t", (1,), "timestep", 100),
              GraphInput("image_features", (*per_frame, c.image_feature_dim)),
              GraphInput("bbox", (*per_frame, socialmirror.BBOX_DIM)),
              GraphInput("text_features", ("batch", socialmirror.NUM_PEOPLE, c.text_feature_dim)))
    return GraphSpec("socialmirror", "denoiser", model, inputs, "x0", asdict(c), denoiser_call_inputs,
                     same_shape_as_first)


GRAPH_BUILDERS = {
    dhvae.DHVAEDenoiser: dhvae_denoiser_graph,
    dhvae.DHVAEDecoder: dhvae_decoder_graph,
    scorehoi.ScoreHOIDenoiser: scorehoi_graph,
    scorehoi.FoldedScoreHOIDenoiser: scorehoi_folded_graph,
    socialmirror.SocialMirrorDenoiser: socialmirror_graph,
}


def graph_for(module: nn.Module) -> GraphSpec:
    """The graph spec of a denoiser (or the DHVAE decoder)."""
    builder = GRAPH_BUILDERS.get(type(module))
    if builder is None:
        known = ", ".join(cls.__name__ for cls in GRAPH_BUILDERS)
        raise ValueError(f"no graph for {type(module).__name__}; exportable modules: {known}")
    return builder(module)


# --- families ------------------------------------------------------------------------------


def load_family(family: str, checkpoint: Optional[str] = None, preset: Optional[str] = None,
                seed: int = 0) -> tuple[nn.Module, str]:
    """(model, weights description): the checkpoint, or seeded dummy weights of ``preset``."""
    preset = preset or DEFAULT_PRESETS.get(family)
    if family == "dhvae":
        return dhvae.load(checkpoint, preset, seed)
    modules = {"scorehoi": scorehoi, "socialmirror": socialmirror}
    if family not in modules:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    module = modules[family]
    if preset not in module.PRESETS:
        raise ValueError(f"unknown {family} preset {preset!r}; presets: {', '.join(module.PRESETS)}")
    if checkpoint is None:
        model = module.build_model(module.PRESETS[preset], seed)
    else:
        model, _ = module.load_released_checkpoint(checkpoint)
    return model, weights_description(checkpoint, seed)


def family_graphs(family: str, model: nn.Module, loop_steps: Optional[int] = None,
                  guidance: float = 3.5) -> list[GraphSpec]:
    """The graphs a family exports: dhvae's denoiser and decoder (and its DDIM loop if asked),
    the other families' denoisers (scorehoi's also folded, the form refine runs by default)."""
    if family != "dhvae":
        if loop_steps:
            raise ValueError("the whole-loop graph exists for dhvae only")
        if family == "scorehoi":
            return [graph_for(model), graph_for(scorehoi.fold_scorehoi(model))]
        return [graph_for(model)]
    graphs = [graph_for(model.denoiser), graph_for(model.decoder)]
    if loop_steps:
        graphs.append(dhvae_loop_graph(model.denoiser, loop_steps, guidance))
    return graphs


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
    dims = {"batch": torch.export.Dim("batch", min=1, max=MAX_BATCH)}
    if spec.max_frames:
        dims["frames"] = torch.export.Dim("frames", min=1, max=spec.max_frames)
    return {graph_input.name: {axis: dims[d] for axis, d in enumerate(graph_input.shape) if isinstance(d, str)} or None
            for graph_input in spec.inputs}


def weights_digest(module: nn.Module) -> str:
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
    """The metadata of an exported graph (reads the graph structure, not external weights)."""
    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def parameter_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


# --- export --------------------------------------------------------------------------------


def to_fp16(model: ir.Model) -> ir.Model:
    """fp16 weights and arithmetic, fp32 inputs and outputs (casts at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = ir.from_proto(convert_float_to_float16(ir.to_proto(model), keep_io_types=True))
    converted.graph.sort()  # the converter appends its input casts after their users
    return converted


def trace(spec: GraphSpec, opset: int) -> ir.Model:
    """Strict (TorchDynamo) tracing: it keeps ``len(x)`` symbolic where non-strict tracing would
    fix the batch size; the exporter would then fall back to a static graph without an error.
    Traced with autograd on, so PyTorch's fused inference-only encoder layer (which has no ONNX
    translation) is not taken."""
    device = next(spec.module.parameters()).device
    exported = torch.export.export(spec.module, random_inputs(spec, batch=4, device=device),
                                   dynamic_shapes=dynamic_shapes(spec), strict=True)
    program = torch.onnx.export(exported, dynamo=True, opset_version=opset, input_names=spec.input_names(),
                                output_names=[spec.output], verbose=False, optimize=spec.optimize)
    check_dynamic(spec, program.model)
    return program.model


def check_dynamic(spec: GraphSpec, model: ir.Model) -> None:
    """Raise if a dimension the spec names (batch, frames) came out of export as a fixed size."""
    for graph_input, value in zip(spec.inputs, model.graph.inputs):
        for axis, dim in enumerate(graph_input.shape):
            if isinstance(dim, str) and isinstance(value.shape[axis], int):
                raise RuntimeError(f"{spec.family} {spec.name}: input {graph_input.name} axis {axis} ({dim}) "
                                   f"was exported as the fixed size {value.shape[axis]}")


def export_graph(spec: GraphSpec, out_dir: str | Path, weights: str, precision: str = "fp32",
                 opset: int = OPSET) -> Path:
    """Export ``spec`` to ``out_dir/<family>-<graph>-<precision>.onnx``, checked; returns its path.

    Written in a scratch folder and moved in, so a reader never sees a half-written graph.
    """
    if precision not in GRAPH_PRECISIONS:
        raise ValueError(f"graphs are exported in {', '.join(GRAPH_PRECISIONS)} (bf16 is a TensorRT build flag)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = trace(spec, opset)
    if precision == "fp16":
        model = to_fp16(model)
    model.metadata_props.update(graph_metadata(spec, weights, weights_digest(spec.module), precision, opset))
    name = spec.filename(precision)
    external = parameter_bytes(spec.module) > EXTERNAL_DATA_BYTES
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as scratch:
        ir.save(model, Path(scratch, name), external_data=f"{name}.data" if external else None)
        onnx.checker.check_model(str(Path(scratch, name)), full_check=True)
        for produced in sorted(Path(scratch).iterdir()):
            os.replace(produced, out_dir / produced.name)
    return out_dir / name


def export_family(family: str, out_dir: str | Path, checkpoint: Optional[str] = None,
                  preset: Optional[str] = None, seed: int = 0, precision: str = "fp32",
                  loop_steps: Optional[int] = None, guidance: float = 3.5, opset: int = OPSET) -> list[Path]:
    """Export every graph of ``family``; returns the written paths."""
    model, weights = load_family(family, checkpoint, preset, seed)
    return [export_graph(spec, out_dir, weights, precision, opset)
            for spec in family_graphs(family, model, loop_steps, guidance)]
