"""OpenAI CLIP's text side, read from OpenAI's own weights file: tokenizer and text tower.

Tokenization is ``clip.tokenize(text, truncate=True)``: text cleaned as OpenAI's tokenizer does
(``ftfy.fix_text``, HTML unescaped twice, runs of whitespace collapsed, lower case), split by the
same pattern, byte-level BPE with OpenAI's merges (``data/bpe_simple_vocab_16e6.txt.gz``, MIT,
see ``data/LICENSE-openai-clip.txt``), then ``[SOT] tokens [EOT]`` zero-padded to 77 ids; a longer
prompt keeps its first 75 tokens and the EOT.

The tower (Radford et al. 2021, the text transformer): token + positional embedding, pre-norm
residual blocks with a causal mask and QuickGELU (x sigmoid(1.702 x)), ``ln_final``; computed in
float32 whatever the file's dtypes. Width, layers and heads (width / 64) come from the weights.
"""

from __future__ import annotations

import gzip
import html
import sys
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from motionfleet.common.weights import is_torchscript_archive, read_state_dict
from motionfleet.core.errors import MissingFile, RejectedInput, UnsafeCheckpoint

CONTEXT_LENGTH = 77
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # OpenAI's vocabulary: 256 bytes x 2 (word-final) + merges + SOT + EOT
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# OpenAI's split: the special tokens, English contractions, letter runs, single digits, other runs.
SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# 0-dim metadata OpenAI keeps beside the tensors; the tower reads its sizes from the weights.
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
CONVERT_HINT = ("convert it once where you trust the file: python -c \"import torch; "
                "torch.save(torch.jit.load('ViT-L-14-336px.pt', map_location='cpu').state_dict(), "
                "'ViT-L-14-336px.state_dict.pt')\" and pass the .state_dict.pt file")


# --- tokenizer ----------------------------------------------------------------------------


def byte_alphabet() -> dict[int, str]:
    """Each byte -> a printable character: printable Latin-1 bytes map to themselves, the others
    to 256 + n in order (GPT-2's byte-level BPE, so no byte is a space or control character)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {b: chr(c) for b, c in zip(printable + extra, printable + [256 + n for n in range(len(extra))])}


def clean_text(text: str) -> str:
    import ftfy
    import regex

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class ClipTokenizer:
    """OpenAI's vocabulary shipped in ``motionfleet/data``, or another merges file in its format."""

    def __init__(self, vocab_path: Optional[str | Path] = None):
        import regex

        data = Path(vocab_path).read_bytes() if vocab_path else (files("motionfleet") / "data" / VOCAB_FILE).read_bytes()
        lines = gzip.decompress(data).decode("utf-8")
        merges = [tuple(line.split()) for line in lines.split("\n")[1:NUM_MERGES + 1] if line.strip()]
        self.name = f"clip-bpe:{Path(vocab_path).name if vocab_path else VOCAB_FILE}"
        self.bytes_to_chars = byte_alphabet()
        symbols = list(self.bytes_to_chars.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.merge_rank = {merge: i for i, merge in enumerate(merges)}
        self.pattern = regex.compile(SPLIT_PATTERN, regex.IGNORECASE)
        self.sot, self.eot = self.ids[SOT], self.ids[EOT]

    @lru_cache(maxsize=65536)
    def bpe(self, word: str) -> tuple[str, ...]:
        """A word (already byte-mapped) -> its BPE symbols; the last one carries ``</w>``."""
        if word in (SOT, EOT):
            return (word,)
        symbols = (*word[:-1], word[-1] + "</w>")
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: self.merge_rank.get(pair, float("inf")))
            if best not in self.merge_rank:
                break
            symbols = merge_pair(symbols, best)
        return symbols

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without SOT / EOT."""
        ids = []
        for word in self.pattern.findall(clean_text(text)):
            mapped = "".join(self.bytes_to_chars[b] for b in word.encode("utf-8"))
            ids += [self.ids[symbol] for symbol in self.bpe(mapped)]
        return ids

    def tokenize(self, text: str) -> torch.Tensor:
        """(77,) int64 ids as ``clip.tokenize(text, truncate=True)[0]``."""
        ids = [self.sot, *self.encode(text)][: CONTEXT_LENGTH - 1] + [self.eot]
        return F.pad(torch.tensor(ids, dtype=torch.long), (0, CONTEXT_LENGTH - len(ids)))

    def tokenize_batch(self, texts: list[str]) -> torch.Tensor:
        """(B, 77) as ``clip.tokenize(texts, truncate=True)``."""
        return torch.stack([self.tokenize(text) for text in texts]) if texts else torch.zeros(0, CONTEXT_LENGTH, dtype=torch.long)


def merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Every non-overlapping occurrence of ``pair`` (left to right) joined into one symbol."""
    out, i = [], 0
    while i < len(symbols):
        if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


@lru_cache(maxsize=1)
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


# --- text tower ---------------------------------------------------------------------------


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """x += Attn(LN(x)); x += MLP(LN(x)). Key names are OpenAI's."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Resblocks(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))


class ClipTextTower(nn.Module):
    """tokens (B, 77) -> ln_final states (B, 77, width) over every position (causal mask)."""

    def __init__(self, vocab_size: int, width: int, layers: int, context_length: int = CONTEXT_LENGTH,
                 embed_dim: int | None = None):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.transformer = Resblocks(width, layers, width // 64)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(width, embed_dim)) if embed_dim else None
        causal = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)

    @property
    def width(self) -> int:
        return self.ln_final.normalized_shape[0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        for block in self.transformer.resblocks:
            x = block(x, self.causal_mask)
        return self.ln_final(x)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's text embedding: the EOT row (EOT has the largest id) times ``text_projection``."""
        states = self.forward(tokens)
        assert self.text_projection is not None, "ClipTextEncoder refuses a tower without text_projection"
        return states[torch.arange(len(tokens)), tokens.argmax(-1)] @ self.text_projection


def check_openai_keys(state: dict, source: str) -> None:
    required = ("token_embedding.weight", "positional_embedding", "ln_final.weight")
    missing = [key for key in required if key not in state]
    if missing:
        raise RejectedInput(f"{source} is not an OpenAI CLIP state dict: no {', '.join(missing)}")


def tower_from_state_dict(state: dict[str, torch.Tensor], source: str) -> ClipTextTower:
    """The text tower of an OpenAI-layout state dict (``visual.*`` and metadata ignored), float32."""
    check_openai_keys(state, source)
    vocab_size, width = state["token_embedding.weight"].shape
    layers = len({key.split(".")[2] for key in state if key.startswith("transformer.resblocks.")})
    projection = state.get("text_projection")
    tower = ClipTextTower(vocab_size, width, layers, state["positional_embedding"].shape[0],
                          None if projection is None else projection.shape[1])
    text = {key: value.float() for key, value in state.items()
            if not key.startswith("visual.") and key not in (*METADATA_KEYS, "logit_scale")}
    try:
        tower.load_state_dict(text, strict=True)
    except RuntimeError as err:
        raise RejectedInput(f"{source} does not match OpenAI's CLIP text layout: {err}") from err
    return tower.eval()


def read_openai_clip(path: str | Path, overrides: Optional[dict] = None, overrides_source: str = "") -> ClipTextTower:
    """The tower from OpenAI's weights file: a ``torch.save``d state dict (read with
    ``weights_only=True``). OpenAI's own TorchScript archive is code and is refused with the fix.
    ``overrides`` (OpenAI key names) replace the file's tensors, each of the file's shape."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFile(f"CLIP weights not found: {path}; provide OpenAI's ViT-L/14@336px weights "
                          f"(ViT-L-14-336px.pt) as a state dict")
    if is_torchscript_archive(path):
        raise UnsafeCheckpoint(f"{path} is OpenAI's TorchScript archive, which is code and is not run here; "
                               + CONVERT_HINT)
    state = read_state_dict(path)
    if not isinstance(state, dict):
        raise RejectedInput(f"{path} holds a {type(state).__name__}, not a CLIP state dict")
    check_openai_keys(state, str(path))
    for key, value in (overrides or {}).items():
        if key not in state or tuple(state[key].shape) != tuple(value.shape):
            found = "absent" if key not in state else f"of shape {tuple(state[key].shape)}"
            raise RejectedInput(f"{overrides_source}: {key} {tuple(value.shape)} does not fit the CLIP in {path} "
                                f"({found} there); give the CLIP weights this checkpoint was trained with")
    return tower_from_state_dict({**state, **(overrides or {})}, str(path))


class ClipTextEncoder:
    """``TextEncoder`` protocol over the tower: ``head(states, tokens)`` reads a feature from the
    ln_final states (DHVAE's clipTrans + clipln), or, without a head, CLIP's own pooled embedding.
    Prompts are encoded one at a time, so a prompt's feature never depends on the others in its
    batch; longer prompts are truncated as ``clip.tokenize(truncate=True)`` does, never refused."""

    name = "clip"
    max_tokens = sys.maxsize

    def __init__(self, tower: ClipTextTower, head: Optional[nn.Module] = None):
        if head is None and tower.text_projection is None:
            raise RejectedInput("these CLIP weights have no text_projection, so there is no pooled text embedding")
        self.tower, self.head = tower, head
        projection = tower.text_projection
        self.dim = projection.shape[1] if head is None and projection is not None else tower.width
        self.tokenizer = tokenizer()

    def token_count(self, text: str) -> int:
        return len(self.tokenizer.encode(text)) + 2

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.empty(0, self.dim)
        return torch.cat([self.encode_one(text) for text in texts])

    def encode_one(self, text: str) -> torch.Tensor:
        tokens = self.tokenizer.tokenize(text)[None]
        if self.head is None:
            return self.tower.pooled(tokens)
        return self.head(self.tower(tokens), tokens)
