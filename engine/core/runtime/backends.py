"""Backends: what runs a denoiser (or the DHVAE decoder) for the sampler.

A backend is a callable over torch tensors on the runner's device, with the module's own call
arguments: ``denoise(x, t, *conditions) -> prediction`` (``t`` an int step), or for the DHVAE
decoder ``decode(z, num_frames) -> motion``. The sampler cannot tell which one it calls.

    torch                  eager PyTorch (autocast for fp16 / bf16)
    torch-compile          torch.compile (Inductor); on CUDA in "reduce-overhead" mode (CUDA graphs)
    torch-cudagraphs       eager kernels captured in one CUDA graph per input shape (CUDA)
    onnxruntime            the exported graph in ONNX Runtime: CPU provider on cpu, CUDA provider
                           with IO binding on cuda
    onnxruntime-tensorrt   ONNX Runtime's TensorRT provider (CUDA)
    tensorrt               a TensorRT engine built from the exported graph (CUDA)

A backend runs what the module declares (``graph_spec()``, ``guided_pair``); it names no family.
Graphs come from ``onnx_dir`` when given (checked against the module's weights), else they are
exported once into a cache folder keyed by family, config, weights and precision
(``core.io.cache``). A backend that cannot run here (no
CUDA, a missing package, a provider that fell back to the CPU, a precision the device lacks) is a
``BackendUnavailable`` error that says what to install or choose instead; nothing falls back
silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, cast

import numpy as np
import torch
from torch import nn

from motionfleet.core.io.cache import cache_dir
from motionfleet.core.runtime import graphs
from motionfleet.core.runtime.batching import pad_rows

PRECISIONS = ("fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BACKEND_PRECISIONS = {
    "torch": PRECISIONS,
    "torch-compile": PRECISIONS,
    "torch-cudagraphs": PRECISIONS,
    "onnxruntime": ("fp32", "fp16"),
    "onnxruntime-tensorrt": ("fp32", "fp16"),
    "tensorrt": PRECISIONS,
}
BACKENDS = tuple(BACKEND_PRECISIONS)
CUDA_ONLY = ("torch-cudagraphs", "onnxruntime-tensorrt", "tensorrt")
GRAPH_BACKENDS = tuple(name for name in BACKENDS if not name.startswith("torch"))  # those that run an exported graph
INSTALL_ORT_GPU = ("pip uninstall -y onnxruntime && pip install onnxruntime-gpu "
                   "(the 'gpu' extra; it replaces the onnxruntime package)")
INSTALL_TENSORRT = "pip install tensorrt --extra-index-url https://pypi.nvidia.com (or the 'gpu' extra)"


class BackendUnavailable(RuntimeError):
    """The backend / precision / device asked for cannot run on this machine."""


# --- what can run here ---------------------------------------------------------------------


def precision_supported(precision: str, device: torch.device) -> bool:
    """fp32 everywhere; fp16 / bf16 where the device computes in them natively."""
    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    if precision == "fp16":
        return torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_backend(name: str, precision: str, device: torch.device | str) -> None:
    """Raise ``BackendUnavailable`` (saying what to install or choose) unless this can run here."""
    device = torch.device(device)
    if name not in BACKEND_PRECISIONS:
        raise BackendUnavailable(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; precisions: {', '.join(PRECISIONS)}")
    problems = _device_problems(name, device) + _package_problems(name, device)
    if not problems:
        problems = _precision_problems(name, precision, device)
    if problems:
        raise BackendUnavailable(f"backend {name} ({precision} on {device.type}): " + "; ".join(problems))


def _device_problems(name: str, device: torch.device) -> list[str]:
    if (name in CUDA_ONLY or device.type == "cuda") and not torch.cuda.is_available():
        return [f"needs a CUDA GPU and a CUDA build of torch, and torch {torch.__version__} sees none "
                f"(torch.cuda.is_available() is False)"]
    if name in CUDA_ONLY and device.type != "cuda":
        return ["runs on CUDA only; pass --device cuda"]
    return []


def _package_problems(name: str, device: torch.device) -> list[str]:
    if name == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
        return [f"needs the tensorrt package: {INSTALL_TENSORRT}"]
    if not name.startswith("onnxruntime"):
        return []
    if importlib.util.find_spec("onnxruntime") is None:
        return [f"needs onnxruntime: pip install onnxruntime (CPU) or {INSTALL_ORT_GPU}"]
    import onnxruntime

    wanted = "CPUExecutionProvider" if name == "onnxruntime" and device.type == "cpu" else "CUDAExecutionProvider"
    wanted = "TensorrtExecutionProvider" if name == "onnxruntime-tensorrt" else wanted
    available = onnxruntime.get_available_providers()
    if wanted in available:
        return []
    hint = INSTALL_ORT_GPU if wanted == "CUDAExecutionProvider" else f"{INSTALL_ORT_GPU} and {INSTALL_TENSORRT}"
    return [f"onnxruntime {onnxruntime.__version__} has no {wanted} (it has {', '.join(available)}): {hint}"]


def _precision_problems(name: str, precision: str, device: torch.device) -> list[str]:
    if precision not in BACKEND_PRECISIONS[name]:
        return [f"runs {', '.join(BACKEND_PRECISIONS[name])} only; bf16 runs on the torch and tensorrt backends"]
    if not precision_supported(precision, device):
        return [f"this {device.type} ({_device_name(device)}) has no native {precision}; "
                f"use --precision fp32 or a device with {precision}"]
    return []


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU capability {torch.backends.cpu.get_cpu_capability()}"


# --- the factory ---------------------------------------------------------------------------


def make_backend(name: str, model: nn.Module, precision: str = "fp32", device: torch.device | str = "cpu",
                 onnx_dir: Optional[str | Path] = None, weights: Optional[str] = None) -> Callable:
    """A callable running ``model`` (a denoiser or the DHVAE decoder, already on ``device``).

    ``weights`` (the weights description) is recorded in graphs this exports.
    """
    device = torch.device(device)
    check_backend(name, precision, device)
    spec = graphs.graph_for(model)
    if name == "torch" and hasattr(model, "guided_pair"):
        return GuidedTorchBackend(spec, cast(GuidedDenoiser, model), precision, device)
    if name not in GRAPH_BACKENDS:
        return TorchBackend(spec, _torch_runner(name, spec.module, device), precision, device)
    graph_precision = "fp32" if name != "onnxruntime" else precision  # TensorRT lowers precision itself
    path = graph_path(spec, graph_precision, onnx_dir, weights)
    if name == "tensorrt":
        return TensorRTBackend(spec, path, precision, device)
    return OnnxRuntimeBackend(spec, path, name, precision, device)


# --- torch ---------------------------------------------------------------------------------


def first_calls_cost(name: str, device: torch.device) -> bool:
    """Whether a model on backend ``name`` is warmed up before a job's first shard: on a GPU (the
    CUDA context, cuDNN's algorithm search, graph capture, engine builds) and on every backend but
    eager torch. Not eager torch on CPU: there a first call at the job's shapes cost 0.02-0.1 s more
    than the next (dhvae, socialmirror; 2-core CPU) and the warm-up itself 0.2-0.9 s of the start."""
    return device.type != "cpu" or name != "torch"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision], cache_enabled=False)


def _torch_runner(name: str, module: nn.Module, device: torch.device) -> Callable:
    if name == "torch":
        return module
    if name == "torch-compile":
        mode = "reduce-overhead" if device.type == "cuda" else None  # reduce-overhead = CUDA graphs
        return torch.compile(module, mode=mode, dynamic=True)
    return CUDAGraphRunner(module)


class TorchBackend:
    """Runs the module (eager, compiled, or CUDA-graph replayed) under the precision's autocast;
    the prediction comes back in the input's dtype."""

    def __init__(self, spec: graphs.GraphSpec, run: Callable, precision: str, device: torch.device):
        self.spec, self.run, self.precision, self.device = spec, run, precision, device

    @torch.inference_mode()
    def __call__(self, *args) -> torch.Tensor:
        inputs = self.spec.call_inputs(*args)
        with autocast(self.precision, self.device):
            out = self.run(*inputs)
        return out.to(inputs[0].dtype)


class GuidedDenoiser(Protocol):
    """The guided calls an eager denoiser declares (``GuidedTorchBackend`` below)."""

    def __call__(self, *args: Any) -> Any: ...

    def guided_pair(self, x: torch.Tensor, t: int, text: torch.Tensor, null_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step_modulations(self, timesteps: list[int], text: torch.Tensor) -> Iterator[list[torch.Tensor]]: ...

    def guided_pair_modulated(self, x: torch.Tensor, mods_null: list[torch.Tensor],
                              mods_cond: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]: ...


class GuidedTorchBackend(TorchBackend):
    """Eager denoiser that declares a cheaper classifier-free-guidance pair than a doubled batch:
    ``guided_pair(x, t, text, null_text) -> (uncond, cond)``, and, where it also declares
    ``step_modulations(timesteps, text)`` and ``guided_pair_modulated(x, null_mods, cond_mods)``,
    ``guided_steps``: pairs whose conditioning is computed outside the per-step call (DHVAE: the
    null text's AdaLN modulations once per timestep plan, the prompts' once per run in chunks of
    steps). The sampler prefers them; the backend names no family."""

    def __init__(self, spec: graphs.GraphSpec, denoiser: GuidedDenoiser, precision: str, device: torch.device):
        super().__init__(spec, denoiser, precision, device)
        self.denoiser = denoiser
        self._null_mods: dict[tuple, list[list[torch.Tensor]]] = {}

    @torch.inference_mode()
    def guided_pair(self, x: torch.Tensor, t: int, text: torch.Tensor, null_text: torch.Tensor):
        with autocast(self.precision, self.device):
            uncond, cond = self.denoiser.guided_pair(x, t, text, null_text)
        return uncond.to(x.dtype), cond.to(x.dtype)

    @torch.inference_mode()
    def guided_steps(self, timesteps: list[int], text: torch.Tensor, null_text: torch.Tensor) -> Callable:
        """denoise(x_t, t) -> (eps_uncond, eps_cond) for ``timesteps`` called in order. ``x_t`` may
        have more rows than ``text`` (batch padding); those rows repeat the last prompt."""
        null_mods = self._null_modulations(timesteps, null_text)
        cond_mods = self.denoiser.step_modulations(timesteps, text)  # computed lazily, chunk by chunk
        step = iter(range(len(timesteps)))

        @torch.inference_mode()
        def denoise(x: torch.Tensor, t: int):
            i = next(step)
            if timesteps[i] != t:
                raise ValueError(f"guided_steps was planned for t={timesteps[i]} at step {i}, called with t={t}")
            with autocast(self.precision, self.device):
                mods = [pad_rows(m, len(x)) for m in next(cond_mods)]  # to x's rows (len(text) <= len(x))
                uncond, cond = self.denoiser.guided_pair_modulated(x, null_mods[i], mods)
            return uncond.to(x.dtype), cond.to(x.dtype)

        return denoise

    def _null_modulations(self, timesteps: list[int], null_text: torch.Tensor) -> list[list[torch.Tensor]]:
        key = (tuple(timesteps), null_text.cpu().numpy().tobytes())
        if key not in self._null_mods:
            with autocast(self.precision, self.device):
                self._null_mods[key] = list(self.denoiser.step_modulations(timesteps, null_text[:1]))
        return self._null_mods[key]


class CUDAGraphRunner:
    """One CUDA graph per input signature: inputs are copied into the graph's static buffers, the
    graph is replayed, and a copy of its static output is returned."""

    WARMUP_CALLS = 3

    def __init__(self, module: nn.Module):
        self.module = module
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]] = {}

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs)
        graph, static_inputs, static_output = self.graphs[key]
        for static, value in zip(static_inputs, inputs):
            static.copy_(value)
        graph.replay()
        return static_output.clone()

    def _capture(self, inputs: tuple[torch.Tensor, ...]):
        static_inputs = tuple(t.clone() for t in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP_CALLS):
                self.module(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.module(*static_inputs)
        return graph, static_inputs, static_output


# --- graphs on disk ------------------------------------------------------------------------


def graph_path(spec: graphs.GraphSpec, precision: str, onnx_dir: Optional[str | Path],
               weights: Optional[str]) -> Path:
    """The exported graph for ``spec``: from ``onnx_dir`` (checked), else exported into the cache."""
    digest = graphs.state_dict_sha256(spec.module)
    if onnx_dir is not None:
        return graph_in_folder(spec, precision, Path(onnx_dir), digest)
    key = json.dumps([spec.family, spec.name, spec.config, digest, precision, graphs.OPSET,
                      torch.__version__], sort_keys=True)
    folder = cache_dir("onnx") / hashlib.sha256(key.encode()).hexdigest()[:20]
    path = folder / spec.filename(precision)
    if not path.is_file():
        graphs.export_graph(spec, folder, weights or "unrecorded", precision)
    return path


def graph_in_folder(spec: graphs.GraphSpec, precision: str, onnx_dir: Path, digest: str) -> Path:
    """``spec``'s graph in a folder of exported graphs (untrusted files): present, readable, its weights
    data inside the folder, exported from the module's weights and at its config."""
    path = onnx_dir / spec.filename(precision)
    export = f"motionfleet export {spec.export_flags or f'--family {spec.family}'} --precision {precision} --out {onnx_dir}"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; write it with: {export}")
    metadata = graphs.read_metadata(path)
    exported = metadata.get("weights_sha256")
    if exported != digest:
        raise ValueError(f"{path} was exported from other weights (weights_sha256 {exported}, the model's is "
                         f"{digest}); export it again from this model: {export}")
    differing = config_differences(metadata.get("config"), spec.config)
    if differing:
        raise ValueError(f"{path} was exported at another config ({differing}); export it again: {export}")
    return path


def config_differences(exported: Optional[str], config: dict) -> str:
    """What differs between an exported graph's recorded config and the module's, in words."""
    try:
        recorded = json.loads(exported) if exported else {}
    except json.JSONDecodeError:
        recorded = {}
    wanted = json.loads(json.dumps(config, sort_keys=True))  # tuples as the metadata holds them: lists
    keys = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
    return "; ".join(f"{k} {recorded.get(k)} there, {wanted.get(k)} here" for k in keys)


# --- ONNX Runtime --------------------------------------------------------------------------


def _providers(name: str, device: torch.device, precision: str) -> list[tuple[str, dict]]:
    """Execution providers in priority order; the first is the one asked for."""
    if device.type == "cpu":
        return [("CPUExecutionProvider", {})]
    cuda = {"device_id": device.index or 0, "user_compute_stream": str(torch.cuda.current_stream(device).cuda_stream),
            "use_tf32": int(precision != "fp32")}  # fp32 means fp32 (TF32 keeps 10 mantissa bits)
    providers = [("CUDAExecutionProvider", cuda), ("CPUExecutionProvider", {})]
    if name == "onnxruntime-tensorrt":
        trt = {"device_id": device.index or 0, "trt_fp16_enable": precision == "fp16",
               "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir("ort-trt")),
               "user_compute_stream": cuda["user_compute_stream"]}
        providers.insert(0, ("TensorrtExecutionProvider", trt))
    return providers


def ort_session(path: Path, name: str, precision: str, device: torch.device, spin: bool = False):
    """An InferenceSession whose first provider is the one asked for, or BackendUnavailable.

    ``spin``: let idle intra-op threads spin (ONNX Runtime's default). Off here: between calls
    torch runs the DDIM update (and other backends) on the same cores, and spinning threads slow
    it (``benchmarks/test_backends.py::test_eager_step_after_an_onnxruntime_call``)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same threads torch uses here
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    providers = _providers(name, device, precision)
    session = onnxruntime.InferenceSession(str(path), options, providers=[p for p, _ in providers],
                                           provider_options=[o for _, o in providers])
    wanted, running = providers[0][0], session.get_providers()
    if running[0] != wanted:
        raise BackendUnavailable(f"onnxruntime could not start {wanted} and fell back to {running[0]} "
                                 f"(check the CUDA / cuDNN / TensorRT libraries onnxruntime-gpu "
                                 f"{onnxruntime.__version__} was built for)")
    return session


NUMPY_TYPES = {torch.float32: np.float32, torch.int64: np.int64, torch.float16: np.float16}


class OnnxRuntimeBackend:
    """ONNX Runtime over an exported graph: numpy in and out on the CPU, IO binding to torch's
    CUDA tensors (and torch's stream) on the GPU."""

    def __init__(self, spec: graphs.GraphSpec, path: Path, name: str, precision: str, device: torch.device):
        self.spec, self.path, self.device = spec, path, device
        self.session = ort_session(path, name, precision, device)
        self.input_names = spec.input_names()

    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, *args) -> torch.Tensor:
        inputs = tuple(t.detach().contiguous() for t in self.spec.call_inputs(*args))
        if self.device.type == "cuda":
            return self._run_bound(inputs)
        feeds = {name: t.cpu().numpy() for name, t in zip(self.input_names, inputs)}
        return torch.from_numpy(self.session.run([self.spec.output], feeds)[0])

    def _run_bound(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        binding = self.session.io_binding()
        index = self.device.index or 0
        for name, tensor in zip(self.input_names, inputs):
            binding.bind_input(name, "cuda", index, NUMPY_TYPES[tensor.dtype], tuple(tensor.shape), tensor.data_ptr())
        out = torch.empty(self.spec.output_shape(*inputs), dtype=torch.float32, device=self.device)
        binding.bind_output(self.spec.output, "cuda", index, np.float32, tuple(out.shape), out.data_ptr())
        self.session.run_with_iobinding(binding)
        return out


# --- TensorRT ------------------------------------------------------------------------------


class TensorRTBackend:
    """A TensorRT engine built from the exported graph (cached by graph hash, GPU and TensorRT
    version), run with ``execute_async_v3`` on torch's current stream."""

    def __init__(self, spec: graphs.GraphSpec, path: Path, precision: str, device: torch.device):
        from motionfleet.core.runtime import tensorrt as trt_export

        self.spec = spec
        engine = trt_export.build_engine(path, spec, precision, cache_dir("tensorrt"))
        self.runner = trt_export.TensorRTRunner(engine, device)

    def __call__(self, *args) -> torch.Tensor:
        return self.runner(dict(zip(self.spec.input_names(), self.spec.call_inputs(*args))))
