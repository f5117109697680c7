"""Backends: each against eager torch, the dhvae job on onnxruntime against torch, and the errors
for backends this machine cannot run.

Bounds (relative error = max |backend - eager| / max |eager|):
- fp32 on the CPU: 1e-4 for one call; 1e-3 on the final motion of a 50-step job.
- on the GPU (tests marked ``gpu``): fp32 1e-3 for one call (TF32 is switched off in ONNX Runtime
  and TensorRT builds, but kernels differ); fp16 2e-2 and bf16 5e-2 for one call against fp32
  eager, from their 11- and 8-bit significands over a few accumulating layers.
"""

import copy

import numpy as np
import pytest
import torch

import motionfleet
from motionfleet.core import registry
from motionfleet.core.jobfolder.sink import read_results
from motionfleet.core.runtime import backends
from motionfleet.core.runtime import graphs as onnx_export
from motionfleet.dhvae.runner import motion_array
from motionfleet.scorehoi import model as scorehoi

GPU_BACKENDS = ["torch", "torch-compile", "torch-cudagraphs", "onnxruntime", "onnxruntime-tensorrt", "tensorrt"]
PRECISION_BOUNDS = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2}
MODULES = ["dhvae-denoiser", "dhvae-decoder", "scorehoi-denoiser", "scorehoi-denoiser-folded", "socialmirror-denoiser"]
PROMPTS = ["two people hug each other warmly", "they greet each other by shaking hands",
           "one person pushes the other who stumbles backwards", "a couple dances a slow waltz",
           "two boxers trade punches in a ring"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float().cpu() - ref.float().cpu()).abs().max() / ref.abs().max()).item()


@pytest.fixture(autouse=True, scope="module")
def cache(tmp_path_factory):
    """Graphs the backends export go to a temporary cache, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTIONFLEET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def modules():
    """{name: module}: small presets of every family, and the dhvae decoder."""
    dhvae_model, _ = registry.get("dhvae").load_model(None, "tiny", 0)
    scorehoi_model, _ = registry.get("scorehoi").load_model(None, "small", 0)
    socialmirror_model, _ = registry.get("socialmirror").load_model(None, "small", 0)
    return {"dhvae-denoiser": dhvae_model.denoiser, "dhvae-decoder": dhvae_model.decoder,
            "scorehoi-denoiser": scorehoi_model, "scorehoi-denoiser-folded": scorehoi.fold_scorehoi(scorehoi_model),
            "socialmirror-denoiser": socialmirror_model}


def call_arguments(module, batch: int, seed: int, device="cpu") -> tuple:
    """The backend's call arguments: (x, t, *conditions) with an int t, or (z, num_frames)."""
    spec = onnx_export.graph_for(module)
    inputs = onnx_export.random_inputs(spec, batch, seed=seed, frames=batch + 3, device=device)
    if spec.name == "decoder":
        return inputs[0], inputs[1].shape[0]
    return inputs[0], int(inputs[1]), *inputs[2:]


def eager(module, args) -> torch.Tensor:
    spec = onnx_export.graph_for(module)
    with torch.inference_mode():
        return spec.module(*spec.call_inputs(*args))


CPU_CASES = [("onnxruntime", m) for m in MODULES] + [("torch-compile", m) for m in MODULES if m.startswith("dhvae")]


@pytest.mark.parametrize("name,module_name", CPU_CASES)
def test_backend_matches_eager_at_two_batch_sizes(modules, name, module_name):
    module = modules[module_name]
    backend = backends.make_backend(name, module, "fp32", "cpu", weights="dummy, seed 0")
    for batch in (4, 12):
        args = call_arguments(module, batch, seed=batch)
        assert relative_error(backend(*args), eager(module, args)) < 1e-4


def test_torch_backend_guided_pair_is_the_cfg_batch(modules):
    denoiser = modules["dhvae-denoiser"]
    backend = backends.make_backend("torch", denoiser, "fp32", "cpu")
    x, t, text = call_arguments(denoiser, 8, seed=0)
    null = torch.randn(1, text.shape[1])
    uncond, cond = backend.guided_pair(x, t, text, null)
    assert relative_error(uncond, backend(x, t, null.expand_as(text))) < 1e-5
    assert relative_error(cond, backend(x, t, text)) < 1e-5


def test_graph_from_onnx_dir_must_come_from_the_same_weights(modules, tmp_path):
    denoiser = modules["dhvae-denoiser"]
    other, weights = registry.get("dhvae").load_model(None, "tiny", 1)
    onnx_export.export_graph(onnx_export.graph_for(other.denoiser), tmp_path, weights)
    with pytest.raises(ValueError, match="other weights"):
        backends.make_backend("onnxruntime", denoiser, "fp32", "cpu", onnx_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="motionfleet export"):
        backends.make_backend("onnxruntime", denoiser, "fp32", "cpu", onnx_dir=tmp_path / "empty")


# --- the dhvae job on onnxruntime ------------------------------------------------------------


def generate(out_dir, prompts, backend, batch_size=8):
    motionfleet.generate(prompts, out=out_dir, preset="tiny", steps=50, guidance_scale=3.5, seed=3,
                         batch_size=batch_size, num_frames=16, backend=backend, workers=0)
    return {row["sample_id"]: motion_array(row) for row in read_results(out_dir).to_pylist()}


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return str(path)


def test_50_step_job_on_onnxruntime_matches_torch(tmp_path, prompt_file):
    on_torch = generate(tmp_path / "torch", prompt_file, "torch")
    on_onnxruntime = generate(tmp_path / "onnxruntime", prompt_file, "onnxruntime")
    assert sorted(on_torch) == sorted(on_onnxruntime) == [str(i) for i in range(len(PROMPTS))]
    motion_torch = np.stack([on_torch[k] for k in sorted(on_torch)])
    motion_ort = np.stack([on_onnxruntime[k] for k in sorted(on_torch)])
    assert np.abs(motion_ort - motion_torch).max() / np.abs(motion_torch).max() < 1e-3


def test_onnxruntime_job_bytes_do_not_depend_on_the_batch_size(tmp_path, prompt_file):
    by_four = generate(tmp_path / "four", prompt_file, "onnxruntime", batch_size=4)
    by_one = generate(tmp_path / "one", prompt_file, "onnxruntime", batch_size=1)
    assert {k: v.tobytes() for k, v in by_four.items()} == {k: v.tobytes() for k, v in by_one.items()}


# --- refusals --------------------------------------------------------------------------------


@no_cuda
@pytest.mark.parametrize("name", ["tensorrt", "onnxruntime-tensorrt", "torch-cudagraphs"])
def test_cuda_backends_are_refused_without_cuda(name):
    with pytest.raises(backends.BackendUnavailable, match="needs a CUDA GPU"):
        backends.check_backend(name, "fp32", "cuda")


@pytest.mark.skipif(backends.importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_without_the_package_names_what_to_install():
    with pytest.raises(backends.BackendUnavailable, match="pip install tensorrt"):
        backends.check_backend("tensorrt", "fp16", "cuda")


def test_onnxruntime_on_cuda_without_the_gpu_package_names_it():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(backends.BackendUnavailable, match="onnxruntime-gpu"):
        backends.check_backend("onnxruntime", "fp32", "cuda")


def test_provider_fallback_to_cpu_is_an_error(modules, tmp_path, monkeypatch):
    spec = onnx_export.graph_for(modules["dhvae-denoiser"])
    path = onnx_export.export_graph(spec, tmp_path, "dummy, seed 0")
    monkeypatch.setattr(backends, "_providers",
                        lambda *_: [("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})])
    with pytest.raises(backends.BackendUnavailable, match="fell back to CPUExecutionProvider"):
        backends.ort_session(path, "onnxruntime", "fp32", torch.device("cuda"))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_on_the_cpu_follows_its_capability(modules, precision):
    if backends.precision_supported(precision, torch.device("cpu")):
        backend = backends.make_backend("torch", modules["dhvae-denoiser"], precision, "cpu")
        args = call_arguments(modules["dhvae-denoiser"], 4, seed=0)
        assert relative_error(backend(*args), eager(modules["dhvae-denoiser"], args)) < PRECISION_BOUNDS[precision]
    else:
        with pytest.raises(backends.BackendUnavailable, match=f"no native {precision}"):
            backends.make_backend("torch", modules["dhvae-denoiser"], precision, "cpu")


def test_bf16_is_refused_on_onnxruntime():
    with pytest.raises(backends.BackendUnavailable, match="bf16 runs on the torch and tensorrt backends"):
        backends.check_backend("onnxruntime", "bf16", "cpu")


def test_unknown_backend_is_refused():
    with pytest.raises(backends.BackendUnavailable, match="unknown backend"):
        backends.check_backend("jax", "fp32", "cpu")


# --- GPU -------------------------------------------------------------------------------------


def available_on_gpu(name: str, precision: str) -> None:
    """Skip (with the reason) when this GPU machine lacks the package or the precision."""
    try:
        backends.check_backend(name, precision, "cuda")
    except backends.BackendUnavailable as err:
        pytest.skip(str(err))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", list(PRECISION_BOUNDS))
@pytest.mark.parametrize("module_name", MODULES)
@pytest.mark.parametrize("name", GPU_BACKENDS)
def test_gpu_backend_matches_fp32_eager(modules, name, module_name, precision):
    available_on_gpu(name, precision)
    module = copy.deepcopy(modules[module_name]).to("cuda")
    backend = backends.make_backend(name, module, precision, "cuda", weights="dummy, seed 0")
    for batch in (4, 12):
        args = call_arguments(module, batch, seed=batch, device="cuda")
        assert relative_error(backend(*args), eager(module, args)) < PRECISION_BOUNDS[precision]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["onnxruntime", "tensorrt", "torch-cudagraphs"])
def test_gpu_50_step_job_matches_torch(tmp_path, prompt_file, name):
    available_on_gpu(name, "fp32")
    runs = {}
    for backend in ("torch", name):
        motionfleet.generate(prompt_file, out=tmp_path / backend, preset="tiny", steps=50, seed=3, batch_size=8,
                             num_frames=16, device="cuda", backend=backend, workers=0)
        rows = read_results(tmp_path / backend).to_pylist()
        runs[backend] = np.stack([motion_array(r) for r in sorted(rows, key=lambda r: r["sample_id"])])
    assert np.abs(runs[name] - runs["torch"]).max() / np.abs(runs["torch"]).max() < 1e-3


def test_torch_backend_guided_steps_are_guided_pairs(modules):
    """The hoisted path (all steps' AdaLN modulations computed before the loop) computes the same
    pairs as one ``guided_pair`` per step, including x rows padded past the prompts."""
    denoiser = modules["dhvae-denoiser"]
    backend = backends.make_backend("torch", denoiser, "fp32", "cpu")
    x, _, text = call_arguments(denoiser, 4, seed=1)
    null = torch.randn(1, text.shape[1])
    timesteps = [981, 961, 941]
    denoise = backend.guided_steps(timesteps, text[:3], null)
    for t in timesteps:
        padded_text = torch.cat([text[:3], text[2:3]])
        for got, want in zip(denoise(x, t), backend.guided_pair(x, t, padded_text, null)):
            assert relative_error(got, want) < 1e-5
    with pytest.raises(ValueError, match="planned for t=981"):
        backend.guided_steps(timesteps, text, null)(x, 961)


@pytest.mark.parametrize("backend, device, warmed", [("torch", "cpu", False), ("onnxruntime", "cpu", True),
                                                     ("torch-compile", "cpu", True), ("torch", "cuda", True)])
def test_a_model_is_warmed_up_except_eager_torch_on_cpu(backend, device, warmed):
    """On CPU eager torch a first call costs ~0.05 s more than the next, less than the warm-up
    (0.2-0.9 s of a job's start); every other backend and every GPU pays its first calls there."""
    assert backends.first_calls_cost(backend, torch.device(device)) is warmed


def test_the_dhvae_warm_up_calls_its_model_except_on_cpu_eager_torch():
    import dataclasses

    from motionfleet.dhvae.runner import DHVAEGenerator, GenerateSettings, ModelSpec

    class Called(Exception):
        pass

    def model_call(*args):
        raise Called

    generator = DHVAEGenerator(ModelSpec(preset="tiny", text_encoder="precomputed"), GenerateSettings(default_frames=7))
    generator.denoiser = generator.decoder = model_call
    generator.warm_up()  # eager torch on CPU: nothing runs
    generator.settings = dataclasses.replace(generator.settings, backend="onnxruntime")
    with pytest.raises(Called):
        generator.warm_up()
