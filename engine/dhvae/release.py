"""The DHVAE release's checkpoint as its inference code reads it (ZenGengChin/dhvae-official).

A CHMLD Lightning checkpoint holds the denoiser, the VAE (``vae.*``) and the text encoder
(``text_encoder.*``); its ``hyper_parameters`` are the CHMLD yaml. The release builds the decoder
from the VAE's own ``hparams.yaml`` (``ckpt/<vae name>/lightning_logs/<version>/hparams.yaml``),
not from the CHMLD yaml's ``vae`` section. Every setting its inference paths read is honoured here
or refused with one line naming it:

- ``mld.arch``: ``adaln`` (``parallel`` refused); ``mld.is_skip``; ``mld.is_lpe`` (learned
  positions, ``denoiser.pe.pe``); ``mld.is_ar`` (text projected by ``denoiser.text_proj``, no
  positional encoding); ``mld.is_vp`` / ``mld.is_sample`` (v / x0 prediction; ``is_sample`` wins);
  ``mld.is_dpm`` (DPM-Solver++, refused); ``mld.text_encoder.is_intergen_clip`` (``intergen``,
  ``easy``; ``transformers`` refused);
- ``NoiseScheduler``: num_train_timesteps, beta_start, beta_end, beta_schedule, set_alpha_to_one,
  steps_offset (``clip_sample: True`` refused); its ``prediction_type`` is not read by the release;
- the VAE's ``vae.do_norm``: when set, the decoder outputs raw features and the release normalizes
  them for the evaluator.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from motionfleet.common.weights import build_checked, checked_config, is_model_folder, read_state_dict, weights_description
from motionfleet.core.errors import MissingFile, RejectedInput
from motionfleet.dhvae.model import DHVAE, PRESETS, DHVAEConfig, build_dummy, map_release_keys
from motionfleet.dhvae.text import release_text_state
from motionfleet.sampling.ddim import DDIMConfig
from motionfleet.sampling.schedules import NoiseSchedule

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TEXT_MODES = ("intergen", "easy")
# Fields of the VAE config that decide the decoder; the CHMLD yaml's copy must agree with the VAE's.
DECODER_FIELDS = ("latent_dim", "latent_size", "nlayer_ind", "nlayer_top", "nhead", "dim_feedforward", "max_len",
                  "d_input", "is_learn_pe", "is_decode_cat", "is_skip", "is_two_pe", "do_norm")


@dataclass(frozen=True)
class ReleaseSettings:
    """What the release's code reads at inference besides the network sizes."""

    schedule: NoiseSchedule = NoiseSchedule()
    prediction_type: str = "epsilon"
    steps_offset: int = 1
    set_alpha_to_one: bool = False
    text_mode: str = "intergen"
    decoder_space: str = "normalized"  # "denormalized" when the VAE was trained with do_norm
    decoder_hparams: str = "preset"  # the file the decoder's hyperparameters came from

    def ddim_config(self, steps: int, eta: float) -> DDIMConfig:
        return DDIMConfig(schedule=self.schedule, steps=steps, eta=eta, prediction_type=self.prediction_type,
                          steps_offset=self.steps_offset, set_alpha_to_one=self.set_alpha_to_one)


@dataclass
class Loaded:
    model: DHVAE
    weights: str
    release: ReleaseSettings = ReleaseSettings()
    text_state: dict = field(default_factory=dict)  # the checkpoint's text_encoder.* without the prefix
    source: str = "dummy"


def refusal(source: str, setting: str, value, why: str) -> RejectedInput:
    return RejectedInput(f"{source}: {setting}: {value!r} is not supported ({why})")


def release_settings(hyper: dict, vae: dict, source: str, decoder_hparams: str) -> ReleaseSettings:
    mld, scheduler = section(hyper, "mld"), section(hyper, "NoiseScheduler")
    if mld.get("arch", "adaln") != "adaln":
        raise refusal(source, "mld.arch", mld["arch"], "only the adaln denoiser the release ships is implemented")
    if mld.get("is_dpm", False):
        raise refusal(source, "mld.is_dpm", True, "DPM-Solver++ sampling is not implemented; the release config uses DDIM")
    if scheduler.get("clip_sample", False):
        raise refusal(source, "NoiseScheduler.clip_sample", True, "x0 clipping is not implemented")
    beta_schedule = scheduler.get("beta_schedule", "scaled_linear")
    if beta_schedule not in BETA_SCHEDULES:
        raise refusal(source, "NoiseScheduler.beta_schedule", beta_schedule, f"known: {', '.join(BETA_SCHEDULES)}")
    text_mode = section(mld, "text_encoder").get("is_intergen_clip", "intergen")
    if text_mode not in TEXT_MODES:
        raise refusal(source, "mld.text_encoder.is_intergen_clip", text_mode,
                      "the Hugging Face CLIP path pads each batch to its longest prompt; known: intergen, easy")
    prediction = "sample" if mld.get("is_sample", False) else "v_prediction" if mld.get("is_vp", False) else "epsilon"
    base = NoiseSchedule()
    schedule = NoiseSchedule(num_train_timesteps=int(scheduler.get("num_train_timesteps", base.num_train_timesteps)),
                             beta_schedule=beta_schedule, beta_start=float(scheduler.get("beta_start", base.beta_start)),
                             beta_end=float(scheduler.get("beta_end", base.beta_end)))
    return ReleaseSettings(schedule=schedule, prediction_type=prediction,
                           steps_offset=int(scheduler.get("steps_offset", 1)),
                           set_alpha_to_one=bool(scheduler.get("set_alpha_to_one", False)), text_mode=text_mode,
                           decoder_space="denormalized" if vae.get("do_norm", False) else "normalized",
                           decoder_hparams=decoder_hparams)


# --- the VAE's hparams ----------------------------------------------------------------------


def read_vae_hparams(path: str | Path) -> dict:
    """The VAE's config: its ``hparams.yaml``, or the ``hyper_parameters`` of its ``last.ckpt``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"VAE hparams not found: {path}; give ckpt/<vae name>/lightning_logs/<version>/hparams.yaml")
    if path.suffix in (".yaml", ".yml"):
        hyper = read_yaml(path)
    else:
        checkpoint = read_state_dict(path)
        hyper = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hyper, dict) or not isinstance(hyper.get("vae"), dict):
        raise RejectedInput(f"{path} has no 'vae' section; expected the DHVAE VAE's hparams.yaml")
    return hyper["vae"]


MAX_HPARAMS_BYTES = 1 << 20  # the release's hparams.yaml files are a few KB


def read_yaml(path: Path):
    """``yaml.safe_load`` of a small file (no tags that build Python objects), or ValueError naming it."""
    import yaml

    if path.stat().st_size > MAX_HPARAMS_BYTES:
        raise ValueError(f"{path} has {path.stat().st_size} bytes; a VAE hparams.yaml is a few KB")
    try:
        return yaml.safe_load(path.read_bytes())
    except (yaml.YAMLError, RecursionError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a plain YAML mapping ({first}); give the VAE's hparams.yaml as "
                         f"Lightning wrote it") from err


def find_vae_hparams(checkpoint: Path, vae_name: Optional[str]) -> Optional[Path]:
    """The release's layout: ``ckpt/<chmld name>/last.ckpt`` beside ``ckpt/<vae name>/lightning_logs/*/hparams.yaml``."""
    if not vae_name:
        return None
    found = sorted(checkpoint.resolve().parent.parent.glob(f"{vae_name}/lightning_logs/*/hparams.yaml"))
    return found[0] if found else None


def decoder_section(hyper: dict, vae_hparams: Optional[str], checkpoint: Path) -> tuple[dict, str]:
    """(the VAE config the decoder is built from, the file it came from). A disagreement between
    the VAE's own config and the CHMLD yaml's copy on a decoder field is refused."""
    chmld_vae = section(hyper, "vae")
    path = Path(vae_hparams) if vae_hparams else find_vae_hparams(checkpoint, chmld_vae.get("name"))
    if path is None:
        warnings.warn(f"{checkpoint}: the VAE's hparams.yaml was not found (give --vae-hparams); the decoder is "
                      f"built from the CHMLD checkpoint's own vae section", stacklevel=2)
        return chmld_vae, "chmld vae section"
    vae = read_vae_hparams(path)
    for name in DECODER_FIELDS:
        if name in vae and name in chmld_vae and vae[name] != chmld_vae[name]:
            raise RejectedInput(f"vae.{name} disagrees: {vae[name]!r} in {path} (the VAE's own config, which the "
                                f"release builds the decoder from), {chmld_vae[name]!r} in {checkpoint}; "
                                f"give the hparams.yaml of the VAE this checkpoint was trained with")
    return vae, str(path)


def check_decoder(vae: dict, mld: dict, source: str) -> None:
    """Refuse what the release asserts (latent sizes) and the decoder variants not implemented."""
    for name in ("latent_size", "latent_dim"):
        if name in vae and name in mld and vae[name] != mld[name]:
            raise RejectedInput(f"{source}: vae.{name} {vae[name]} != mld.{name} {mld[name]} (the release asserts them equal)")
    for name, supported in (("latent_size", 1), ("is_learn_pe", True), ("is_decode_cat", False), ("is_skip", False),
                            ("is_two_pe", False)):
        if vae.get(name, supported) != supported:
            raise refusal(source, f"vae.{name}", vae[name], f"only {supported!r}, the released VAE's, is implemented")


def section(mapping: dict, key: str) -> dict:
    """``mapping[key]`` (empty if absent); a header is untrusted, so anything but a mapping is refused."""
    value = mapping.get(key, {}) if isinstance(mapping, dict) else None
    if not isinstance(value, dict):
        raise ValueError(f"the checkpoint's hyper_parameters: {key!r} is not a mapping")
    return value


def config_from_release(hyper: dict, vae: dict) -> DHVAEConfig:
    """Our config from the CHMLD ``hyper_parameters`` (``mld``) and the VAE's config, type-checked."""
    if not hyper:
        return PRESETS["official"]
    mld, base = section(hyper, "mld"), PRESETS["official"]
    return checked_config(DHVAEConfig, dict(
        latent_dim=mld.get("latent_dim", base.latent_dim),
        heads=mld.get("nhead", base.heads),
        layers=mld.get("nlayer", base.layers),
        ffn_dim=mld.get("dim_feedforward", base.ffn_dim),
        cond_dim=section(mld, "text_encoder").get("d_cond", base.cond_dim),
        z_g_scale=mld.get("z3_scale", base.z_g_scale),
        skip=bool(mld.get("is_skip", False)),
        learned_pe=bool(mld.get("is_lpe", False)),
        ar_conditioning=bool(mld.get("is_ar", False)),
        decoder_layers=vae.get("nlayer_ind", base.decoder_layers),
        interaction_layers=vae.get("nlayer_top", base.interaction_layers),
        decoder_heads=vae.get("nhead", base.decoder_heads),
        decoder_ffn_dim=vae.get("dim_feedforward", base.decoder_ffn_dim),
        max_frames=vae.get("max_len", base.max_frames),
        motion_dim=vae.get("d_input", base.motion_dim),
    ), "the checkpoint's hyper_parameters")


# --- the checkpoint ------------------------------------------------------------------------


def is_vae_checkpoint(state: dict) -> bool:
    """The VAE's own ``last.ckpt`` (CHVAE): encoder / decoder keys, no denoiser."""
    return any(k.startswith("decoder.") for k in state) and not any(k.startswith("denoiser.") for k in state)


def check_release(path: Path, vae_hparams: Optional[str] = None) -> tuple[ReleaseSettings, DHVAEConfig, dict]:
    """(settings, config, text_encoder.* tensors) with the refusals of ``load_release``, without
    building the model (the file is memory-mapped): a job's driver calls it so that a refused
    setting is one line before any worker starts."""
    state, hyper, vae, release = read_release(path, vae_hparams, mmap=True)
    return release, config_from_release(hyper, vae), release_text_state(state)


def read_release(path: Path, vae_hparams: Optional[str], mmap: bool = False):
    """(state dict, hyper_parameters, VAE config, release settings), or the refusal."""
    checkpoint = read_state_dict(path, mmap=mmap)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict'); our own format is a folder "
                         f"with model.safetensors and config.json")
    state = checkpoint["state_dict"]
    if is_vae_checkpoint(state):
        raise RejectedInput(f"{path} is the DHVAE VAE's checkpoint (encoder and decoder only); --checkpoint takes "
                            f"the CHMLD checkpoint (e.g. ckpt/chmld_l1/last.ckpt), which holds the denoiser, the text "
                            f"encoder and this VAE; the VAE's file may be given as --vae-hparams")
    hyper = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hyper, dict):
        raise ValueError(f"{path}: hyper_parameters is not a mapping")
    vae, vae_source = decoder_section(hyper, vae_hparams, path) if hyper else ({}, "preset")
    check_decoder(vae, section(hyper, "mld"), str(path))
    return state, hyper, vae, release_settings(hyper, vae, str(path), vae_source)


def load_release(path: Path, vae_hparams: Optional[str] = None) -> Loaded:
    state, hyper, vae, release = read_release(path, vae_hparams)
    config = config_from_release(hyper, vae)
    mapped = map_release_keys(state, config)
    model = build_checked(lambda: DHVAE(config), mapped, str(path), "dhvae")
    model.load_state_dict(mapped, strict=True)
    return Loaded(model.eval(), weights_description(path, 0), release, release_text_state(state), str(path))


def load_model(checkpoint: Optional[str], preset: str = "official", seed: int = 0,
               vae_hparams: Optional[str] = None) -> Loaded:
    """No checkpoint: seeded dummy weights of ``preset``. Else our folder (``model.safetensors`` +
    ``config.json``) or the release's CHMLD Lightning checkpoint (read with ``weights_only=True``)."""
    from motionfleet.common.weights import load_model_folder

    if checkpoint is None:
        return Loaded(build_dummy(PRESETS[preset], seed), weights_description(None, seed))
    path = Path(checkpoint)
    if not is_model_folder(path):
        return load_release(path, vae_hparams)
    state, saved = load_model_folder(path)
    config = folder_config(saved, str(path))
    model = build_checked(lambda: DHVAE(config), state, str(path), "dhvae")
    model.load_state_dict(state, strict=True)
    return Loaded(model.eval(), weights_description(path, seed), source=str(path))


def folder_config(saved: dict, source: str) -> DHVAEConfig:
    """The model's settings from our folder's ``config.json`` (``{"model": {...}}``), type-checked."""
    if not isinstance(saved.get("model"), dict):
        raise ValueError(f"{source}: config.json has no 'model' settings object")
    return checked_config(DHVAEConfig, saved["model"], source)
