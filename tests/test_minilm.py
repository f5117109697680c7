"""Our all-MiniLM-L6-v2 (``motionfleet.common.minilm``) against the libraries it replaces:
sentence-transformers' ``SentenceTransformer`` on the same bundled files gives the same tokens and
the same embedding bits, whatever the batch, the padding and the truncation."""

import pytest
import torch

from motionfleet.common.minilm import WordPieces, load_sentence_bert, max_seq_length
from motionfleet.common.text import MiniLMEncoder, minilm_model_dir
from motionfleet.core.runtime.batching import ROW_QUANTUM

TEXTS = [
    "two people greet each other by shaking hands",
    "a",
    "one person pushes the other, who stumbles backwards and falls while the other laughs",
    "Ünïcödé  ACCENTS and 中文 mixed, with   spaces\tand tabs!!",
    "word " * 300,  # past the 256-token limit: truncated
]


@pytest.fixture(scope="module")
def reference():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    return sentence_transformers.SentenceTransformer(str(minilm_model_dir()), device="cpu").eval()


@pytest.fixture(scope="module")
def ours():
    model_dir = minilm_model_dir()
    limit = max_seq_length(model_dir)
    return load_sentence_bert(model_dir), WordPieces(model_dir / "tokenizer.json", limit, ROW_QUANTUM), limit


def reference_tokens(reference, texts, limit):
    return reference.tokenizer(list(texts), padding=True, truncation=True, max_length=limit,
                               pad_to_multiple_of=ROW_QUANTUM, return_tensors="pt")


@pytest.mark.parametrize("texts", [TEXTS, TEXTS[:1], TEXTS[1:2], TEXTS[2:4], TEXTS[::-1]])
def test_tokens_and_embedding_bits_equal_sentence_transformers(reference, ours, texts):
    model, pieces, limit = ours
    expected = reference_tokens(reference, texts, limit)
    ids, mask, types = pieces.batch(list(texts))
    assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])
    assert torch.equal(types, expected["token_type_ids"])
    with torch.inference_mode():
        assert torch.equal(model(ids, mask, types), reference(dict(expected))["sentence_embedding"])


def test_token_count_is_untruncated_and_counts_the_special_tokens(reference, ours):
    _, pieces, limit = ours
    for text in TEXTS:
        assert pieces.count(text) == len(reference.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
    assert pieces.count(TEXTS[-1]) > limit == reference.max_seq_length


def test_the_encoder_does_not_import_transformers():
    """The point of the module: a job's start does not pay for transformers' import."""
    import subprocess
    import sys

    code = ("import sys; from motionfleet.common.text import MiniLMEncoder; MiniLMEncoder().encode(['hi']); "
            "print(sorted(m for m in ('transformers', 'sentence_transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_a_padded_row_embeds_as_it_does_alone(ours):
    """Padding to the batch's longest text is masked out of attention and out of the mean."""
    encoder = MiniLMEncoder()
    alone = encoder.encode([TEXTS[1]])
    beside_a_long_text = encoder.encode([TEXTS[1], TEXTS[2]])[:1]
    torch.testing.assert_close(beside_a_long_text, alone, atol=1e-5, rtol=1e-4)
