"""CLIP token ids for InterCLIP's text side: ``clip.tokenize(texts, truncate=True)`` (start token,
BPE tokens of the cleaned, lower-cased text, end token, zeros to 77; the end token kept last when
truncated), by the one CLIP tokenizer of ``motionfleet.common.clip``. OpenAI's vocabulary ships
with motionfleet; ``--evaluator-vocab`` may name another merges file in its format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from motionfleet.common.clip import ClipTokenizer, tokenizer
from motionfleet.core.errors import MissingFile


class ClipTokens:
    """Batches of prompts -> (B, 77) ids."""

    def __init__(self, vocab_path: Optional[str | Path] = None):
        self.bpe = ClipTokenizer(vocab_path) if vocab_path else tokenizer()
        self.name = self.bpe.name

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.bpe.tokenize_batch(texts)


def evaluator_tokens(vocab: Optional[str] = None) -> ClipTokens:
    """The evaluator's tokenizer: OpenAI's shipped vocabulary, or the merges file ``vocab``."""
    if vocab and not Path(vocab).is_file():
        raise MissingFile(f"CLIP vocabulary not found: {vocab} (a bpe_simple_vocab_16e6.txt.gz-format merges file; "
                          f"without --evaluator-vocab, OpenAI's shipped with motionfleet is used)")
    return ClipTokens(vocab)
