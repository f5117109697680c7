"""all-MiniLM-L6-v2's sentence embedding in plain torch: a 6-layer BERT (Devlin et al. 2019;
MiniLM, Wang et al. 2020), the mean of its token states over the attention mask, L2-normalised
(sentence-transformers' ``Transformer -> Pooling(mean) -> Normalize``), read from the bundled
``model.safetensors``, ``config.json`` and ``tokenizer.json`` with the ``tokenizers`` library.

The arithmetic is transformers' ``BertModel`` (SDPA attention) and sentence-transformers' pooling
op for op, so the features are the libraries' bit for bit (tests/test_minilm.py). Written here
because importing those two libraries was the largest part of a generate job's start on a 2-core
CPU (benchmarks/test_job_path.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def read(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only BERT with exact GELU and absolute positions is supported")
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor, token_types: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1])[None]
        x = self.word_embeddings(ids) + self.token_type_embeddings(token_types)
        return self.LayerNorm(x + self.position_embeddings(positions))


class SelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], self.heads, -1)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=q.shape[-1] ** -0.5)
        return out.transpose(1, 2).contiguous().reshape(*x.shape[:-1], -1).contiguous()


class DenseNorm(nn.Module):
    """``LayerNorm(dense(h) + residual)``: BERT's attention output and feed-forward output."""

    def __init__(self, c: BertConfig, width: int):
        super().__init__()
        self.dense = nn.Linear(width, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.add_module("self", SelfAttention(c))  # the released key names: attention.self.query...
        self.output = DenseNorm(c, c.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(cast(SelfAttention, self._modules["self"])(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = DenseNorm(c, c.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))


class SentenceBert(nn.Module):
    """Token ids and attention mask (B, T) -> the L2-normalised mean of the last token states (B, hidden)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor, token_types: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids, token_types)
        mask = attention_mask_4d(attention_mask)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return F.normalize(mean_pool(x, attention_mask), p=2, dim=-1)


def attention_mask_4d(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 -> (B, 1, T, T) booleans: every query attends to the real tokens only."""
    return attention_mask.bool()[:, None, None, :].expand(-1, 1, attention_mask.shape[1], -1)


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean over real tokens (a row always has [CLS] and [SEP], so the count is never 0)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(dim=1) / mask.sum(dim=1)


def load_sentence_bert(model_dir: Path) -> SentenceBert:
    model = SentenceBert(BertConfig.read(model_dir / "config.json"))
    state = load_file(model_dir / "model.safetensors")
    unused = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}  # the pooler is not in the mean
    # Built and copied into, not built on the meta device: that device's first use in a process
    # imports torch's reference ops, 1.2 s on the 2-core CPU, against 0.02 s for the copy.
    model.load_state_dict({k: v for k, v in state.items() if k not in unused})
    return model.float().eval()


class WordPieces:
    """``tokenizer.json`` through the ``tokenizers`` library, set as transformers' fast BERT tokenizer
    is by ``tokenizer(texts, padding=True, truncation=True, max_length=..., pad_to_multiple_of=...)``."""

    def __init__(self, path: Path, max_length: int, pad_to_multiple_of: int):
        from tokenizers import Tokenizer

        self._counting = Tokenizer.from_file(str(path))  # the file's own truncation / padding removed
        self._counting.no_truncation()
        self._counting.no_padding()
        self._batching = Tokenizer.from_file(str(path))
        self._batching.enable_truncation(max_length)
        self._batching.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]", pad_to_multiple_of=pad_to_multiple_of)

    def count(self, text: str) -> int:
        """Tokens of ``text``, [CLS] and [SEP] included, without truncation."""
        return len(self._counting.encode(text).ids)

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, attention mask, token types), each (len(texts), T) int64."""
        encoded = self._batching.encode_batch(texts)
        return tuple(torch.tensor([getattr(e, name) for e in encoded], dtype=torch.long)  # type: ignore[return-value]
                     for name in ("ids", "attention_mask", "type_ids"))


def max_seq_length(model_dir: Path) -> int:
    """sentence-transformers' token limit for the model (``sentence_bert_config.json``)."""
    return int(json.loads((model_dir / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
