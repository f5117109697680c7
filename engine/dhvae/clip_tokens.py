"""CLIP's byte-level BPE tokenizer (Radford et al. 2021), read from its vocabulary file on disk.

InterCLIP's text side takes OpenAI CLIP token ids (``clip.tokenize(text, truncate=True)``: start
token, BPE tokens of the lower-cased text, end token, zeros to 77; the end token kept last when
truncated). The vocabulary file ``bpe_simple_vocab_16e6.txt.gz`` ships with OpenAI's ``clip`` and
with ``open_clip``; ``clip_vocab_path`` finds the latter without importing it. The text is not
passed through ``ftfy`` (which the public tokenizer uses to repair broken Unicode): clean prompts
tokenize the same.

``ByteTokens`` stands in for dummy evaluator weights when no vocabulary file is at hand: a
deterministic id per UTF-8 byte, meaningless to released weights, which refuse it.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Optional

import regex
import torch

from motionfleet.core.errors import MissingFile

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CONTEXT = 77
START, END = "<|startoftext|>", "<|endoftext|>"
MERGES = 49152 - 256 - 2  # merge lines CLIP uses (vocabulary 49408 = 2 x 256 bytes + merges + 2)
PATTERN = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                        regex.IGNORECASE)


def byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, in CLIP's vocabulary order: the
    printable bytes (as themselves) first, then the others as 256, 257, ... in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def clip_vocab_path(explicit: Optional[str] = None) -> Optional[Path]:
    """The vocabulary file: ``explicit``, else the one inside an installed ``open_clip`` or
    ``clip`` package, else None."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise MissingFile(f"CLIP vocabulary not found: {path} (give the {VOCAB_FILE} of OpenAI clip or open_clip)")
        return path
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                if (Path(folder) / VOCAB_FILE).is_file():
                    return Path(folder) / VOCAB_FILE
    return None


class ClipTokens:
    def __init__(self, vocab_path: str | Path):
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1 : MERGES + 1]
        merges = [tuple(line.split()) for line in lines if line.strip()]
        alphabet = list(byte_alphabet().values())
        vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [START, END]
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.rank = {merge: i for i, merge in enumerate(merges)}
        self.bytes = byte_alphabet()
        self.name = f"clip-bpe:{Path(vocab_path).name}"
        self.bpe = lru_cache(maxsize=65536)(self._bpe)

    def _bpe(self, word: str) -> tuple[str, ...]:
        """Merge the lowest-ranked adjacent pair until none is in the merge table."""
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(self.rank.get((a, b), MERGES), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, _ = min(pairs)
            if best == MERGES:
                break
            first, second = next((parts[i], parts[i + 1]) for r, i in pairs if r == best)
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def encode(self, text: str) -> list[int]:
        text = " ".join(html.unescape(html.unescape(text)).split()).lower()
        out = []
        for word in PATTERN.findall(text):
            printable = "".join(self.bytes[b] for b in word.encode("utf-8"))
            out += [self.ids[piece] for piece in self.bpe(printable)]
        return out

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return token_rows([self.encode(t) for t in texts], self.ids[START], self.ids[END])


class ByteTokens:
    """Dummy-weights stand-in: byte b of the lower-cased text -> id 1 + b (start 49406, end 49407)."""

    name = "bytes (dummy evaluator)"

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return token_rows([[1 + b for b in " ".join(t.split()).lower().encode("utf-8")] for t in texts], 49406, 49407)


def token_rows(encoded: list[list[int]], start: int, end: int) -> torch.Tensor:
    """(B, 77) ids: start, tokens, end, zeros; truncated to keep the end token last."""
    out = torch.zeros(len(encoded), CONTEXT, dtype=torch.long)
    for i, ids in enumerate(encoded):
        row = ([start] + ids)[: CONTEXT - 1] + [end]
        out[i, : len(row)] = torch.tensor(row)
    return out


def tokenizer(vocab: Optional[str], released_weights: bool):
    """The BPE tokenizer when a vocabulary file is found; dummy weights may fall back to bytes."""
    path = clip_vocab_path(vocab)
    if path is not None:
        return ClipTokens(path)
    if released_weights:
        raise MissingFile(f"the released InterCLIP needs CLIP's BPE vocabulary: pass --evaluator-vocab {VOCAB_FILE} "
                          "(it ships with OpenAI clip and open_clip; pip install -e '.[clip]')")
    return ByteTokens()
