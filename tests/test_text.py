import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from motionfleet.common.text import (
    MiniLMEncoder,
    PrecomputedFeatures,
    build_text_encoder,
    builtin_prompts,
    projection_from_state_dict,
    validate_prompt,
)
from motionfleet.core.errors import MissingFile, RejectedInput

PROMPTS = [
    "two people greet each other by shaking hands",
    "one person pushes the other, who stumbles backwards",
    "two people dance a slow waltz together",
]


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder(projection_seed=0)


def test_minilm_encodes_to_finite_float32_condition(minilm):
    features = minilm.encode(PROMPTS)
    assert features.shape == (3, 768)
    assert features.dtype == torch.float32
    assert features.device.type == "cpu"
    assert torch.isfinite(features).all()


def test_minilm_is_deterministic_across_calls(minilm):
    assert torch.equal(minilm.encode(PROMPTS), minilm.encode(PROMPTS))


def test_minilm_does_not_depend_on_batch_composition(minilm):
    batched = minilm.encode(PROMPTS)
    one_by_one = torch.cat([minilm.encode([prompt]) for prompt in PROMPTS])
    reordered = minilm.encode(PROMPTS[::-1]).flip(0)
    torch.testing.assert_close(one_by_one, batched, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(reordered, batched, atol=1e-5, rtol=1e-4)


def test_different_prompts_give_different_features(minilm):
    features = minilm.encode(PROMPTS)
    for i in range(len(PROMPTS)):
        for j in range(i + 1, len(PROMPTS)):
            assert not torch.allclose(features[i], features[j], atol=1e-3)


def test_empty_batch_encodes_to_no_rows(minilm):
    assert minilm.encode([]).shape == (0, 768)


def test_projection_seed_changes_output(minilm):
    other = MiniLMEncoder(projection_seed=1)
    assert not torch.allclose(minilm.encode(PROMPTS), other.encode(PROMPTS), atol=1e-3)


def test_saved_projection_reproduces_outputs(minilm, tmp_path):
    path = tmp_path / "projection.safetensors"
    save_file(minilm.projection_state_dict(), path)
    reloaded = MiniLMEncoder(projection=projection_from_state_dict(load_file(path)))
    torch.testing.assert_close(reloaded.encode(PROMPTS), minilm.encode(PROMPTS))


def test_factory_loads_minilm_projection_from_file(minilm, tmp_path):
    path = tmp_path / "projection.safetensors"
    save_file(minilm.projection_state_dict(), path)
    built = build_text_encoder("minilm", weights_path=path)
    torch.testing.assert_close(built.encode(PROMPTS), minilm.encode(PROMPTS))


def test_projection_with_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="384 -> 768"):
        MiniLMEncoder(projection=torch.nn.Linear(384, 512))


def test_minilm_limits_and_counts_tokens(minilm):
    assert minilm.max_tokens == 256
    assert minilm.token_count("hello world") == 4  # [CLS] hello world [SEP]


def test_validate_prompt_returns_stripped_text(minilm):
    assert validate_prompt("  two people hug\n", minilm) == "two people hug"


@pytest.mark.parametrize(
    ("prompt", "reason"),
    [("", "empty"), ("   \t\n", "empty"), (None, "string"), (42, "string"), (["hug"], "string")],
)
def test_validate_prompt_rejects_non_text(minilm, prompt, reason):
    with pytest.raises(RejectedInput, match=reason) as caught:
        validate_prompt(prompt, minilm)
    assert reason in caught.value.reason


def test_validate_prompt_rejects_too_long_with_counts(minilm):
    prompt = " ".join(["hug"] * 300)
    with pytest.raises(RejectedInput) as caught:
        validate_prompt(prompt, minilm)
    assert "302 tokens" in caught.value.reason
    assert "256" in caught.value.reason


def test_builtin_prompts_are_many_unique_short_ascii_lines():
    prompts = builtin_prompts()
    assert len(prompts) >= 120
    assert len(set(prompts)) == len(prompts)
    assert all(prompt.isascii() for prompt in prompts)
    assert all(len(prompt.split()) < 40 for prompt in prompts)


def test_builtin_prompts_pass_validation(minilm):
    assert all(validate_prompt(prompt, minilm) == prompt for prompt in builtin_prompts())


def test_clip_with_missing_weights_names_the_file(tmp_path):
    missing = tmp_path / "ViT-L-14-336px.pt"
    with pytest.raises(MissingFile) as caught:
        build_text_encoder("clip", missing)
    assert str(missing) in str(caught.value)
    assert "ViT-L-14-336px.pt" in str(caught.value)


def test_clip_factory_without_weights_path_says_what_to_provide():
    with pytest.raises(MissingFile, match="OpenAI's CLIP weights file"):
        build_text_encoder("clip")


def test_clip_factory_gives_clips_pooled_embedding(tmp_path):
    from test_dhvae_release import PROMPTS, openai_clip_state, reference_tower

    from motionfleet.common.clip import tokenizer

    state = openai_clip_state()
    torch.save(state, tmp_path / "clip.pt")
    encoder = build_text_encoder("clip", tmp_path / "clip.pt")
    tokens = tokenizer().tokenize(PROMPTS[1])
    expected = reference_tower(state, tokens[None])[0, int(tokens.argmax())] @ state["text_projection"].float()
    torch.testing.assert_close(encoder.encode([PROMPTS[1]])[0], expected, rtol=1e-4, atol=1e-5)
    assert encoder.dim == 32 and encoder.name == "clip"


def test_precomputed_passes_valid_features_through():
    encoder = PrecomputedFeatures()
    rows = [[0.5] * 768, torch.arange(768, dtype=torch.float64)]
    features = encoder.features_from_column(rows)
    assert features.shape == (2, 768)
    assert features.dtype == torch.float32
    assert torch.equal(features[1], torch.arange(768, dtype=torch.float32))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing"),
        ([0.0] * 767, "shape (767,)"),
        ([[0.0] * 768], "shape (1, 768)"),
        ("not a feature", "not numeric"),
        ([math.nan] + [0.0] * 767, "1 non-finite"),
        ([math.inf, -math.inf] + [0.0] * 766, "2 non-finite"),
    ],
)
def test_precomputed_rejects_bad_features(value, reason):
    with pytest.raises(RejectedInput) as caught:
        PrecomputedFeatures().features_from_column([[0.0] * 768, value])
    assert caught.value.reason.startswith("row 1:")
    assert reason in caught.value.reason


def test_precomputed_refuses_to_encode_text():
    with pytest.raises(TypeError, match="features_from_column"):
        PrecomputedFeatures().encode(["two people hug"])


def test_factory_rejects_unknown_name():
    with pytest.raises(ValueError, match="known: minilm, clip, precomputed"):
        build_text_encoder("t5")
