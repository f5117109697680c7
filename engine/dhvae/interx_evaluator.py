"""The Inter-X evaluator: Guo et al.'s (CVPR 2022) text-motion matching networks as Inter-X
trains them (``evaluation/text2motion/networks/modules.py``, ``evaluator_wrapper.py``), and as
DHVAE's ``eval/interx/utils.py`` and ``cfg/eval_interx.yaml`` run them.

- motion side: (B, T, 672) features (``interx.py``) -> ``MovementConvEncoder``: two Conv1d
  (kernel 4, stride 2, padding 1; Dropout, LeakyReLU 0.2) 672 -> 512 -> 512, Linear 512 -> 512:
  T/4 movement tokens -> ``MotionEncoderBiGRUCo``: Linear 512 -> 1024, a bidirectional GRU over
  ``length // 4`` tokens from the learned initial state ``hidden``, both last states ->
  Linear 2048 -> 1024, LayerNorm, LeakyReLU 0.2, Linear 1024 -> 512;
- text side: 37 tokens, each a 300-d GloVe vector plus ``pos_emb`` (Linear 15 -> 300) of its POS
  one-hot -> ``TextEncoderBiGRUCo``: Linear 300 -> 512, a bidirectional GRU over the sentence
  length, both last states -> Linear 1024 -> 512, LayerNorm, LeakyReLU, Linear 512 -> 512;
- no normalisation of either embedding: the metrics read raw Euclidean distances.
The released ``text_mot_match/model/finest.tar`` is ``torch.save`` of a dict with the three
state dicts under ``movement_encoder``, ``text_encoder`` and ``motion_encoder`` (plus optimiser
states and the epoch).

The public wrapper sorts a batch by motion length (``pack_padded_sequence`` wants it) and
returns embeddings in that order, texts permuted alike; here each side is sorted for its GRU and
put back, so embeddings come in input order (R-precision and the distances do not see the order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from motionfleet.common.weights import assigned, check_layout, meta_layout, read_state_dict, seeded, weights_description
from motionfleet.dhvae.interx import EVALUATOR_FEATURES, POS_CLASSES, UNIT_LENGTH, WORD_DIM

PARTS = ("movement_encoder", "text_encoder", "motion_encoder")


@dataclass(frozen=True)
class InterXEvaluatorConfig:
    dim_pose: int = EVALUATOR_FEATURES
    movement_hidden: int = 512  # dim_movement_enc_hidden
    movement_latent: int = 512  # dim_movement_latent
    motion_hidden: int = 1024  # dim_motion_hidden
    text_hidden: int = 512  # dim_text_hidden
    embed_dim: int = 512  # dim_coemb_hidden
    word_dim: int = WORD_DIM
    pos_dim: int = len(POS_CLASSES)


PRESETS = {
    "official": InterXEvaluatorConfig(),
    # for tests and CI: the same architecture and inputs, narrow
    "tiny": InterXEvaluatorConfig(movement_hidden=32, movement_latent=32, motion_hidden=48, text_hidden=32, embed_dim=16),
}


class MovementConvEncoder(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2),
        )
        self.out_net = nn.Linear(output_size, output_size)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        """(B, T, dim_pose) -> (B, T / 4, latent)."""
        return self.out_net(self.main(motion.permute(0, 2, 1)).permute(0, 2, 1))


class BiGRUEncoder(nn.Module):
    """Input projection, a bidirectional GRU from the learned ``hidden``, the two last states through
    ``output_net``: ``MotionEncoderBiGRUCo`` and, with ``pos_emb``, ``TextEncoderBiGRUCo``."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, pos_size: Optional[int] = None):
        super().__init__()
        if pos_size is not None:
            self.pos_emb = nn.Linear(pos_size, input_size)
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(nn.Linear(2 * hidden_size, hidden_size), nn.LayerNorm(hidden_size),
                                        nn.LeakyReLU(0.2), nn.Linear(hidden_size, output_size))
        self.hidden = nn.Parameter(torch.randn(2, 1, hidden_size))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rows in any order of ``lengths``; returns them in input order."""
        if pos is not None:
            inputs = inputs + self.pos_emb(pos)
        order = torch.argsort(lengths, descending=True, stable=True)
        packed = pack_padded_sequence(self.input_emb(inputs[order]), lengths[order].cpu(), batch_first=True)
        _, last = self.gru(packed, self.hidden.repeat(1, len(inputs), 1))
        return self.output_net(torch.cat([last[0], last[1]], dim=-1))[torch.argsort(order)]


class InterXEvaluator(nn.Module):
    def __init__(self, config: InterXEvaluatorConfig):
        super().__init__()
        c = self.config = config
        self.movement_encoder = MovementConvEncoder(c.dim_pose, c.movement_hidden, c.movement_latent)
        self.text_encoder = BiGRUEncoder(c.word_dim, c.text_hidden, c.embed_dim, pos_size=c.pos_dim)
        self.motion_encoder = BiGRUEncoder(c.movement_latent, c.motion_hidden, c.embed_dim)

    def encode_motion(self, motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, 672) zero-padded features, (B,) frame counts (multiples of 4) -> (B, 512)."""
        return self.motion_encoder(self.movement_encoder(motion), lengths // UNIT_LENGTH)

    def encode_text(self, words: torch.Tensor, pos: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, 37, 300) word vectors, (B, 37, 15) POS one-hots, (B,) sentence lengths -> (B, 512)."""
        return self.text_encoder(words, lengths, pos)


@torch.inference_mode()
def embed_motions(model: InterXEvaluator, motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return model.encode_motion(motion, lengths)


@torch.inference_mode()
def embed_texts(model: InterXEvaluator, words: torch.Tensor, pos: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return model.encode_text(words, pos, lengths)


# --- weights ---------------------------------------------------------------------------------


def build_dummy(config: InterXEvaluatorConfig, seed: int) -> InterXEvaluator:
    with seeded(seed):
        model = InterXEvaluator(config)
    return model.eval()


def released_state_dict(checkpoint, source: str) -> dict:
    """``finest.tar``'s three state dicts as one, each key prefixed with its part."""
    if not isinstance(checkpoint, dict) or not all(isinstance(checkpoint.get(part), dict) for part in PARTS):
        raise ValueError(f"{source} is not Inter-X's text_mot_match finest.tar: it needs the state dicts "
                         f"{', '.join(PARTS)}")
    return {f"{part}.{key}": value for part in PARTS for key, value in checkpoint[part].items()}


def read_checkpoint(checkpoint: str, preset: str) -> dict:
    """The released file's tensors as one state dict, checked against ``preset``'s layout; a file in
    another layout is one DataError naming the file."""
    from motionfleet.core.errors import checkpoint_errors

    if preset not in PRESETS:
        raise ValueError(f"unknown evaluator preset {preset!r}: use {', '.join(PRESETS)}")
    with checkpoint_errors(checkpoint, "Inter-X evaluator", fix="give Inter-X's released "
                           "checkpoints/hhi/text_mot_match/model/finest.tar (--evaluator-checkpoint)"):
        state = released_state_dict(read_state_dict(checkpoint), str(checkpoint))
        state = {k: v.float() for k, v in state.items()}
        check_layout(state, meta_layout(lambda: InterXEvaluator(PRESETS[preset])), str(checkpoint),
                     f"Inter-X evaluator ({preset})")
    return state


def check_checkpoint(checkpoint: str, preset: str) -> None:
    read_checkpoint(checkpoint, preset)


def load(checkpoint: Optional[str], preset: str = "official", seed: int = 0) -> tuple[InterXEvaluator, str]:
    """(model in eval mode, weights description): Inter-X's released ``finest.tar`` (the ``official``
    preset is its architecture), or seeded dummy weights."""
    if preset not in PRESETS:
        raise ValueError(f"unknown evaluator preset {preset!r}: use {', '.join(PRESETS)}")
    config = PRESETS[preset]
    if checkpoint is None:
        return build_dummy(config, seed), f"dummy, seed {seed}, preset {preset}"
    state = read_checkpoint(checkpoint, preset)
    return assigned(lambda: InterXEvaluator(config), state).eval(), weights_description(checkpoint, seed)
