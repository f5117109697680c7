"""Text -> two-person motion for one shard on one device (no Ray here).

``DHVAEGenerator`` holds the model, the text encoder and the planned DDIM steps; ``run`` turns a
shard's work items into a results table and a rejected table, and times what it did.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import pyarrow as pa
import torch

from motionfleet.common.text import PrecomputedFeatures, TextEncoder, build_text_encoder, validate_prompt
from motionfleet.core.errors import RejectedInput, checkpoint_errors
from motionfleet.core.execution.batcher import key_of
from motionfleet.core.io import progress, provenance, rejections
from motionfleet.core.io.columns import people_frames_column, people_frames_type
from motionfleet.core.io.inputs import check_text, non_finite_rows
from motionfleet.core.options import UsageError
from motionfleet.core.runtime import backends
from motionfleet.core.runtime.batching import ROW_QUANTUM, fixed_thread_pool, pad_rows, pool_size, samples_quantum
from motionfleet.core.runtime.seeding import SampleNoise, sample_seed
from motionfleet.core.runtime.stopwatch import Timings, synchronize
from motionfleet.dhvae import model as dhvae
from motionfleet.dhvae import motion_space
from motionfleet.dhvae.release import load_model
from motionfleet.dhvae.settings import GenerateSettings, ModelSpec
from motionfleet.dhvae.source import PromptItem
from motionfleet.dhvae.text import build_release_text_encoder, read_null_feature
from motionfleet.sampling import ddim
from motionfleet.sampling.cfg import cfg_denoiser


def check_options(spec: ModelSpec, settings: GenerateSettings) -> None:
    """What a user must fix, refused before any worker starts: a release setting we do not run,
    a missing CLIP weights file or null feature, a motion space without statistics."""
    from pathlib import Path

    from motionfleet.common.weights import is_model_folder, probe_checkpoint
    from motionfleet.dhvae.release import ReleaseSettings, check_release, folder_config
    from motionfleet.dhvae.text import clip_state_from_release, missing_tower_parts

    release, config = ReleaseSettings(), dhvae.PRESETS[spec.preset]
    text_state: dict = {}
    path = None if spec.checkpoint is None else Path(spec.checkpoint)
    if path is not None and is_model_folder(path):
        with checkpoint_errors(path, "dhvae"):
            probe_checkpoint(path, lambda saved: folder_config(saved, str(path)))
    elif path is not None:
        with checkpoint_errors(path, "dhvae"):
            release, config, text_state = check_release(path, spec.vae_hparams)
    if spec.text_encoder == "clip" and path is not None and release.text_mode == "intergen" and not any(
            key.startswith("clipTrans.") for key in text_state):
        raise ValueError(f"{path} has no text_encoder.clipTrans (the release's trained text head); --text-encoder "
                         f"clip needs the release's CHMLD checkpoint")
    missing = missing_tower_parts(clip_state_from_release(text_state, release.text_mode), release.text_mode)
    if spec.text_encoder == "clip" and missing and spec.text_encoder_weights is None:
        raise UsageError("--text-encoder clip needs OpenAI's CLIP ViT-L/14@336px weights: --text-encoder-weights "
                         f"ViT-L-14-336px.pt (the checkpoint does not carry CLIP's {', '.join(missing)})")
    if spec.text_encoder == "precomputed" and path is not None and spec.null_text_feature is None:
        raise UsageError(NULL_FEATURE_NEEDED)
    if spec.text_encoder != "precomputed" and spec.null_text_feature is not None:
        raise UsageError("--null-text-feature is for --text-encoder precomputed; other encoders encode \"\" themselves")
    motion_space.MotionSpaces(release.decoder_space, settings.motion_space, spec.motion_stats, config.motion_dim)
    try:
        ddim.timesteps(release.ddim_config(settings.steps, settings.eta))
    except ValueError as err:
        raise UsageError(f"--steps: {err}") from None


def release_input_digests(spec: ModelSpec) -> dict:
    """Content digests of the files besides the checkpoint that decide the output bytes."""
    from motionfleet.core.io.digests import weights_digest

    stats = None if spec.motion_stats is None else motion_space.stats_digest(spec.motion_stats)
    return {"vae_hparams_sha256": weights_digest(spec.vae_hparams), "motion_stats_sha256": stats,
            "null_text_feature_sha256": weights_digest(spec.null_text_feature)}


# Torch threads of one CPU decode, in every process (a 1-CPU Ray actor too, which then runs two
# threads on its CPU): the thread count decides a lone sample's bits. Two, not one: the decode is
# most of batch 1's AITS (benchmarks/test_dhvae.py::test_lone_decode times it on one and two threads).
DECODE_THREADS = 2

NULL_FEATURE_NEEDED = ("--text-encoder precomputed with a checkpoint needs --null-text-feature: a .npy of the text "
                       "encoder's feature of the empty prompt (the classifier-free null condition)")


class DHVAEGenerator:
    def __init__(self, spec: ModelSpec, settings: GenerateSettings):
        self.spec, self.settings = spec, settings
        self.device = torch.device(settings.device)
        with checkpoint_errors(spec.checkpoint, "dhvae"):
            self.loaded = load_model(spec.checkpoint, spec.preset, spec.dummy_seed, spec.vae_hparams)
        self.weights = self.loaded.weights
        self.model = self.loaded.model.to(self.device)
        self.denoiser = self._backend(self.model.denoiser)
        self.decoder = self._backend(self.model.decoder)
        self.decode_pool = (fixed_thread_pool(torch.get_num_threads(), DECODE_THREADS) if self.device.type == "cpu"
                            else None)
        self.text_encoder = self._text_encoder()
        # scalars hoisted out of the loop; schedule and prediction type as the checkpoint trained them
        self.steps = ddim.plan(self.loaded.release.ddim_config(settings.steps, settings.eta))
        self._features_cache: dict[str, torch.Tensor] = {}
        self.null_text = self._null_text().to(self.device)  # CFG's unconditional text
        self.max_frames = self.model.config.max_frames
        self.spaces = motion_space.MotionSpaces(self.loaded.release.decoder_space, settings.motion_space,
                                                spec.motion_stats, self.model.config.motion_dim)

    def _backend(self, module: torch.nn.Module):
        s = self.settings
        return backends.make_backend(s.backend, module, s.precision, self.device, weights=self.weights)

    def _text_encoder(self):
        spec, cond_dim = self.spec, self.model.config.cond_dim
        if spec.text_encoder == "precomputed":
            return PrecomputedFeatures(cond_dim)
        encoder: TextEncoder
        if spec.text_encoder == "clip":  # the release's own text path (dhvae.text)
            encoder = build_release_text_encoder(self.loaded.text_state, self.loaded.release.text_mode,
                                                 spec.text_encoder_weights, spec.dummy_seed, self.loaded.source)
        else:
            encoder = build_text_encoder(spec.text_encoder, spec.text_encoder_weights, projection_seed=spec.dummy_seed)
        if encoder.dim != cond_dim:
            raise ValueError(f"the {encoder.name} text encoder gives {encoder.dim}-dim features; the denoiser "
                             f"takes {cond_dim}")
        return encoder

    def _null_text(self) -> torch.Tensor:
        """The CFG null condition: the text encoder on "" (the release's unconditional half). With
        precomputed features it is read from ``null_text_feature``; zeros only for dummy weights."""
        spec = self.spec
        if not isinstance(self.text_encoder, PrecomputedFeatures):
            return self.text_encoder.encode([""])
        if spec.null_text_feature is not None:
            return read_null_feature(spec.null_text_feature, self.text_encoder.dim)
        if spec.checkpoint is not None:
            raise UsageError(NULL_FEATURE_NEEDED)
        return torch.zeros(1, self.text_encoder.dim)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        return self.text_encoder.encode(texts)

    # -- validation --------------------------------------------------------------------------
    def check(self, item: PromptItem) -> tuple[str, int, Optional[torch.Tensor]]:
        """(prompt, num_frames, precomputed feature or None), or raises RejectedInput."""
        record = item.record
        if record.error:
            raise RejectedInput(record.error)
        num_frames = self.settings.default_frames if record.num_frames is None else record.num_frames
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or not 1 <= num_frames <= self.max_frames:
            raise RejectedInput(f"num_frames must be an integer in [1, {self.max_frames}], got {num_frames!r}")
        if isinstance(self.text_encoder, PrecomputedFeatures):
            text = check_text(record.text, "prompt") if isinstance(record.text, str) else ""
            return text, num_frames, self.text_encoder.feature_from_value(record.text_features)
        return validate_prompt(check_text(record.text, "prompt"), self.text_encoder), num_frames, None

    # -- batching across shards (core.execution.batcher) ---------------------------------------
    @property
    def batch_items(self) -> int:
        return self.settings.batch_size

    @staticmethod
    def item_key(item: PromptItem) -> tuple[str, int]:
        return item.record.sample_id, item.repeat

    row_keys = staticmethod(key_of("sample_id", "repeat"))  # results and rejected rows alike

    # -- generation --------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, items: tuple[PromptItem, ...]) -> tuple[pa.Table, pa.Table, Timings]:
        accepted, rejected = [], []
        for item in items:
            try:
                accepted.append((item, *self.check(item)))
            except RejectedInput as err:
                rejected.append(rejected_row(item, err.reason))
        rows, timings = [], Timings()
        size = self.settings.batch_size
        for start in range(0, len(accepted), size):
            batch_rows, batch_rejected, batch_timings = self._run_batch(accepted[start : start + size])
            rows += batch_rows
            rejected += batch_rejected
            timings.add(batch_timings)
            progress.items_done(len(accepted[start : start + size]))
        return results_table(rows, self.model.config.motion_dim), rejections.rejected_table(rejected, "sample_id"), timings

    def _features(self, batch) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        if isinstance(self.text_encoder, PrecomputedFeatures):
            features = torch.stack([feature for *_, feature in batch])
        else:
            features = torch.stack([self._feature(prompt) for _, prompt, _, _ in batch])
        return features.to(self.device), time.perf_counter() - start

    def _feature(self, prompt: str) -> torch.Tensor:
        """One prompt at a time: a batched tokenizer pads to the longest prompt in the batch,
        which changes the feature's last bits with the batch's other prompts."""
        if prompt not in self._features_cache:
            self._features_cache[prompt] = self._encode([prompt])[0]
        return self._features_cache[prompt]

    def _run_batch(self, batch) -> tuple[list[dict], list[dict], Timings]:
        """(result rows, rejected rows: motions that are not finite, timings) of a batch."""
        started, began = time.time(), time.perf_counter()
        text, text_s = self._features(batch)
        seeds = [sample_seed(self.settings.seed, item.record.sample_id, item.repeat) for item, *_ in batch]
        synchronize(self.device)
        start = time.perf_counter()
        latents = self.sample_latents(text, SampleNoise(seeds, self.device))
        synchronize(self.device)
        denoise_s = time.perf_counter() - start
        motions = self.decode(latents, [frames for _, _, frames, _ in batch])
        synchronize(self.device)
        decode_s = time.perf_counter() - start - denoise_s
        not_finite = set(non_finite_rows(motions))  # e.g. features of 3e38: finite in, NaN out
        rows = [self._row(item, prompt, frames, seed, motion)
                for i, ((item, prompt, frames, _), seed, motion) in enumerate(zip(batch, seeds, motions))
                if i not in not_finite]
        rejected = [rejected_row(batch[i][0], "generated motion is not finite (NaN or infinite values)")
                    for i in sorted(not_finite)]
        seconds = {"text_encoder": text_s, "denoise": denoise_s, "decode": decode_s}
        record = {"size": len(batch), "start": started, "seconds": time.perf_counter() - began, **seconds}
        return rows, rejected, Timings(seconds, {"samples": len(batch)}, [record])

    def sample_latents(self, text: torch.Tensor, noise: SampleNoise) -> torch.Tensor:
        """CFG DDIM from per-sample noise; returns (B, 3, D) latents."""
        n = len(text)
        x = pad_rows(noise.draw(self.model.latent_shape), self.sample_quantum)
        denoise = self.guided_denoiser(text)

        def step_noise(_):
            return pad_rows(noise.draw(self.model.latent_shape), self.sample_quantum)

        return ddim.sample(denoise, x, self.steps, self.settings.guidance_scale, step_noise)[:n]

    @property
    def sample_quantum(self) -> int:
        """Samples per denoiser call: the eager path's GEMMs see 2 x 3 rows per sample (CFG pair x
        latent tokens), so 2 samples make a multiple of ROW_QUANTUM; a backend's whole graph also
        runs the per-sample modulation GEMMs, so it takes ROW_QUANTUM samples."""
        return samples_quantum(2 * dhvae.NUM_TOKENS) if self._hoisted else ROW_QUANTUM

    @property
    def _hoisted(self) -> bool:
        return hasattr(self.denoiser, "guided_steps")

    def guided_denoiser(self, text: torch.Tensor):
        """denoise(x_t, t) -> (uncond, cond) for this run's timesteps in order: the eager torch
        backend's ``guided_steps`` (AdaLN modulations computed outside the loop), else one CFG
        batch through the backend."""
        if self._hoisted:
            return self.denoiser.guided_steps([step.t for step in self.steps], text, self.null_text)
        text = pad_rows(text)
        return cfg_denoiser(self.denoiser, text, self.null_text.expand(len(text), -1))

    def decode(self, latents: torch.Tensor, frames: list[int]) -> list[torch.Tensor]:
        """(2, T, 262) per sample, input order. On the CPU each sample is decoded alone on exactly
        ``DECODE_THREADS`` torch threads, samples side by side (``fixed_thread_pool``): a row's bits
        then depend neither on its batch nor on the worker's thread count (a lone sample's GEMMs
        have T + 1 rows, which a team of threads splits by its size), without padding a lone
        sample to ROW_QUANTUM rows (the decoder is most of a sentence's FLOPs). On other devices
        equal lengths are decoded together."""
        if self.decode_pool is not None:
            return list(self.decode_pool.map(self._decode_alone, latents.split(1), frames))
        motions: dict[int, torch.Tensor] = {}
        for length in sorted(set(frames)):
            index = [i for i, f in enumerate(frames) if f == length]
            out = self.decoder(pad_rows(latents[index]), length)
            for i, motion in zip(index, out):
                motions[i] = motion
        return [motions[i] for i in range(len(frames))]

    def _decode_alone(self, latent: torch.Tensor, length: int) -> torch.Tensor:
        with torch.inference_mode():  # grad mode is per thread
            return self.decoder(latent, length)[0]

    def warm_up(self) -> None:
        """One denoiser call at the run's batch shape and one decode on each decoding thread,
        outside any timing. One decode a thread, not a batch's worth: on a 2-core CPU the pool has
        one thread, where eight decodes ran one after another at every job's start."""
        if not backends.first_calls_cost(self.settings.backend, self.device):
            return
        with torch.inference_mode():
            n = min(self.settings.batch_size, 8)
            x = torch.zeros(pad_rows(torch.zeros(n), self.sample_quantum).shape[0], *self.model.latent_shape,
                            device=self.device)
            self.guided_denoiser(self.null_text.expand(n, -1))(x, self.steps[0].t)
            decoded = x[:pool_size(torch.get_num_threads(), DECODE_THREADS)] if self.decode_pool is not None else x
            self.decode(decoded, [min(self.settings.default_frames, self.max_frames)] * len(decoded))
            synchronize(self.device)

    # -- output ------------------------------------------------------------------------------
    def _row(self, item: PromptItem, prompt: str, frames: int, seed: int, motion: torch.Tensor) -> dict:
        s = self.settings
        return {
            "sample_id": item.record.sample_id, "repeat": item.repeat, "seed": seed, "job_seed": s.seed,
            "prompt": prompt, "num_frames": frames, **self.spaces.columns(motion.float().cpu()),
            **self.provenance(),
        }

    def provenance(self) -> dict:
        s = self.settings
        return {
            "model": f"dhvae/{self.spec.preset}" if self.spec.checkpoint is None else "dhvae",
            "weights": self.weights, "text_encoder": self.text_encoder.name, "backend": s.backend,
            "precision": s.precision, "device": self.device.type, "sampler": "ddim", "steps": s.steps,
            "guidance_scale": s.guidance_scale, "eta": s.eta, "engine_version": provenance.engine_version(),
            "motion_space": self.spaces.space, "motion_stats": self.spaces.stats_digest,
        }


def rejected_row(item: PromptItem, reason: str) -> dict:
    """The prompt as given (its JSON value: a string, or whatever a bad line held)."""
    return rejections.rejected_row("sample_id", item.record.sample_id, item.repeat, item.record.text, reason)


def results_schema(motion_dim: int = dhvae.MOTION_DIM) -> pa.Schema:
    """The results' columns; ``motion_dim`` features a person and frame: 262 (InterHuman's), or 336
    from a model in Inter-X's layout (``interx.py``)."""
    return pa.schema([
        ("sample_id", pa.string()), ("repeat", pa.int32()), ("seed", pa.int64()), ("job_seed", pa.int64()),
        ("prompt", pa.string()), ("num_frames", pa.int32()),
        ("motion", people_frames_type(2, motion_dim)),  # (person, frame, feature)
        ("motion_denormalized", people_frames_type(2, motion_dim)),  # null unless motion_space is "both"
        ("model", pa.string()), ("weights", pa.string()), ("text_encoder", pa.string()),
        ("backend", pa.string()), ("precision", pa.string()), ("device", pa.string()),
        ("sampler", pa.string()), ("steps", pa.int32()), ("guidance_scale", pa.float32()), ("eta", pa.float32()),
        ("engine_version", pa.string()), ("motion_space", pa.string()), ("motion_stats", pa.string()),
    ])


RESULTS_SCHEMA = results_schema()


MOTION_COLUMNS = ("motion", "motion_denormalized")


def results_table(rows: list[dict], motion_dim: int = dhvae.MOTION_DIM) -> pa.Table:
    """The rows with the motions as (person, frame, motion_dim) nested columns (``core.io.columns``);
    ``motion_denormalized`` is all null unless the job writes both spaces."""
    motions = {name: motion_column([row.pop(name) for row in rows], motion_dim) for name in MOTION_COLUMNS}
    full = results_schema(motion_dim)
    schema = full
    for name in MOTION_COLUMNS:
        schema = schema.remove(schema.get_field_index(name))
    table = pa.Table.from_pylist(rows, schema=schema)
    for name in MOTION_COLUMNS:
        table = table.add_column(full.get_field_index(name), full.field(name), motions[name])
    return table


def motion_column(values: list, motion_dim: int) -> pa.Array:
    """Arrays of one job are all given or (``motion_denormalized`` outside "both") all None."""
    if values and all(v is None for v in values):
        return pa.nulls(len(values), people_frames_type(2, motion_dim))
    return people_frames_column(values, 2, motion_dim)


def motion_array(row: dict) -> np.ndarray:
    """(2, num_frames, 262) float32 motion of one result row (as a dict from ``to_pylist``)."""
    return np.asarray(row["motion"], np.float32)
