"""The DHVAE release's text condition (``models/hmld/textenc.py``, 'intergen' mode), from a prompt.

    tokens  = clip.tokenize(prompt, truncate=True)                       (77 ids)
    states  = CLIP ViT-L/14@336px text tower up to ln_final, all 77 positions, float32
    feature = clipln(clipTrans(states))[EOT position]                    (768)
``clipTrans`` is a trained 2-layer post-norm ``nn.TransformerEncoder`` (8 heads, GELU, no padding
mask) and ``clipln`` a LayerNorm; both sit in the CHMLD checkpoint under ``text_encoder.*``, beside
the frozen CLIP tensors when the checkpoint carries them. The release's 'easy' mode conditions on
CLIP's own pooled, projected embedding instead. The classifier-free null condition is this encoder
on "" (the release's ``forward_test`` feeds "" for the unconditional half).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from motionfleet.common.clip import ClipTextEncoder, ClipTextTower, read_openai_clip, tower_from_state_dict
from motionfleet.common.weights import seeded
from motionfleet.core.errors import MissingFile, RejectedInput

HEAD_HEADS = 8  # textenc.py: nhead=8
HEAD_LAYERS = 2
HEAD_FFN = 2048
MODES = ("intergen", "easy")  # 'transformers' (Hugging Face CLIP, padded per batch) is refused
# CHMLD ``text_encoder.*`` names of the frozen CLIP tensors ('intergen' mode) -> OpenAI's names.
RELEASE_CLIP_NAMES = {"clip_token_embedding.": "token_embedding.", "clip_positional_embedding": "positional_embedding",
                      "clip_transformer.": "transformer.", "clip_ln_final.": "ln_final."}
EASY_PREFIX = "clip_model."  # 'easy' mode keeps the whole OpenAI model under this name


class TextHead(nn.Module):
    """clipTrans + clipln (key names as the release's, under ``text_encoder.``)."""

    def __init__(self, width: int, ffn_dim: int = HEAD_FFN):
        super().__init__()
        layer = nn.TransformerEncoderLayer(width, HEAD_HEADS, ffn_dim, dropout=0.0, activation="gelu", batch_first=True)
        self.clipTrans = nn.TransformerEncoder(layer, HEAD_LAYERS, enable_nested_tensor=False)
        self.clipln = nn.LayerNorm(width)

    def forward(self, states: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        out = self.clipln(self.clipTrans(states))
        return out[torch.arange(len(tokens)), tokens.argmax(-1)]  # EOT has the largest id


def release_text_state(release_state: dict) -> dict:
    """The CHMLD checkpoint's ``text_encoder.*`` tensors without the prefix."""
    prefix = "text_encoder."
    return {key[len(prefix):]: value for key, value in release_state.items() if key.startswith(prefix)}


def clip_state_from_release(text_state: dict, mode: str) -> dict:
    """The frozen CLIP tensors the checkpoint carries, in OpenAI's key layout (empty if none)."""
    if mode == "easy":
        return {key[len(EASY_PREFIX):]: v for key, v in text_state.items() if key.startswith(EASY_PREFIX)}
    out = {}
    for key, value in text_state.items():
        for release, openai in RELEASE_CLIP_NAMES.items():
            if key.startswith(release):
                out[openai + key[len(release):]] = value
    return out


# What the text tower needs from CLIP: 'intergen' keeps these four of ``clip.load``'s model
# (textenc.py), 'easy' the whole model, whose pooled embedding also needs text_projection.
TOWER_PARTS = ("token_embedding.", "positional_embedding", "transformer.resblocks.", "ln_final.")


def missing_tower_parts(carried: dict, mode: str) -> list[str]:
    """The parts of CLIP's text tower the checkpoint does not carry (empty: it carries the tower)."""
    parts = TOWER_PARTS + (("text_projection",) if mode == "easy" else ())
    return [part.rstrip(".") for part in parts if not any(key.startswith(part) for key in carried)]


def build_tower(text_state: dict, mode: str, weights_path: Optional[str], source: str) -> ClipTextTower:
    """CLIP's text tower as the release builds it: ``clip.load``'s weights (the OpenAI file the user
    gives), then the checkpoint's ``text_encoder.*`` tensors loaded over them, so each tensor the
    checkpoint carries (the trained positional embedding, ln_final, ...) comes from it and the rest
    from the file. A checkpoint carrying the whole tower needs no file."""
    carried = clip_state_from_release(text_state, mode)
    missing = missing_tower_parts(carried, mode)
    if not missing:
        return tower_from_state_dict(carried, f"{source} (text_encoder.*)")
    if weights_path is None:
        raise MissingFile("the dhvae clip text encoder needs OpenAI's CLIP ViT-L/14@336px weights: "
                          "--text-encoder-weights ViT-L-14-336px.pt (a torch.save'd state dict); the checkpoint "
                          f"does not carry CLIP's {', '.join(missing)}")
    return read_openai_clip(weights_path, overrides=carried, overrides_source=f"{source} (text_encoder.*)")


def build_head(text_state: dict, width: int, dummy_seed: int, source: str) -> TextHead:
    """clipTrans + clipln from the checkpoint, or seeded dummy weights when the model is dummy."""
    head_state = {k: v.float() for k, v in text_state.items() if k.startswith(("clipTrans.", "clipln."))}
    if not head_state:
        if source != "dummy":
            raise RejectedInput(f"{source} has no text_encoder.clipTrans / clipln (the release's trained text head); "
                                f"--text-encoder clip needs the release's CHMLD checkpoint")
        with seeded(dummy_seed):
            return TextHead(width).eval()
    ffn = head_state["clipTrans.layers.0.linear1.weight"].shape[0] if "clipTrans.layers.0.linear1.weight" in head_state else HEAD_FFN
    head = TextHead(width, ffn)
    try:
        head.load_state_dict(head_state, strict=True)
    except RuntimeError as err:
        raise RejectedInput(f"{source}: text_encoder.clipTrans / clipln do not fit a {width}-wide CLIP: {err}") from err
    return head.eval()


def build_release_text_encoder(text_state: dict, mode: str, weights_path: Optional[str], dummy_seed: int,
                               source: str) -> ClipTextEncoder:
    if mode not in MODES:
        raise RejectedInput(f"{source}: mld.text_encoder.is_intergen_clip: {mode!r} is not supported "
                            f"(supported: {', '.join(MODES)})")
    tower = build_tower(text_state, mode, str(weights_path) if weights_path else None, source)
    if mode == "easy":  # CLIP's own pooled, projected embedding (``clip_model.encode_text``)
        return ClipTextEncoder(tower)
    return ClipTextEncoder(tower, build_head(text_state, tower.width, dummy_seed, source))


def read_null_feature(path: str | Path, dim: int) -> torch.Tensor:
    """(1, dim) null condition from a .npy file (the encoder's feature of "")."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"null text feature not found: {path}; give a .npy of the text encoder's feature of \"\"")
    value = np.load(path, allow_pickle=False)
    feature = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(-1)
    if feature.shape != (dim,) or not torch.isfinite(feature).all():
        raise ValueError(f"{path}: the null text feature must be {dim} finite floats, got shape {tuple(value.shape)}")
    return feature[None]
