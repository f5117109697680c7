"""The InterHuman protocol's cost per sentence: the engine's way against the public way, one run.

- generation, public way: one sentence per call (InterGen's evaluation loop generates the test
  set at batch 1);
- generation, engine way: the generate job's batches (``--batch-size``, 64 by default);
- evaluator: InterCLIP (released size, dummy weights) embedding each generated motion and its
  text, in the embed job's batches, padded to the split's longest motion.
Sentences per second = sentences / median seconds (``extra_info``). The official dhvae preset,
50 steps, 120 frames; the text encoder is warmed so its cache serves every timed call.
Run: ``python -m pytest benchmarks/test_evaluation.py --benchmark-enable
--benchmark-json=benchmarks/results/evaluation_cpu.json``.
"""

import pytest
import torch

from motionfleet.common.text import builtin_prompts
from motionfleet.dhvae import interclip
from motionfleet.dhvae.clip_tokens import evaluator_tokens
from motionfleet.dhvae.runner import DHVAEGenerator, GenerateSettings, ModelSpec, motion_array
from motionfleet.dhvae.source import PromptItem, PromptRecord

SENTENCES = 16
FRAMES = 120


@pytest.fixture(scope="module")
def items():
    prompts = builtin_prompts()[:SENTENCES]
    return tuple(PromptItem(PromptRecord(str(i), text, FRAMES), 0) for i, text in enumerate(prompts))


def generator(batch_size: int, items) -> DHVAEGenerator:
    g = DHVAEGenerator(ModelSpec(preset="official"), GenerateSettings(batch_size=batch_size, default_frames=FRAMES))
    g.warm_up()
    for item in items:
        g._feature(item.record.text)  # text features cached: both ways time the diffusion and decoder only
    return g


def record_sentences(benchmark, sentences: int, **extra) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({"sentences": sentences, "median_s": median, "sentences_per_s": sentences / median,
                                 "threads": torch.get_num_threads(), **extra})


@pytest.mark.parametrize("batch", [1, SENTENCES])
def test_generation(benchmark, items, batch):
    g = generator(batch, items)
    benchmark.pedantic(g.run, (items,), rounds=3, warmup_rounds=0)
    record_sentences(benchmark, len(items), way="public (batch 1)" if batch == 1 else "engine", batch=batch)


def test_evaluator(benchmark, items):
    model = interclip.build_dummy(interclip.PRESETS["official"], seed=0)
    mean, std = torch.zeros(262), torch.ones(262)
    results, _, _ = generator(SENTENCES, items).run(items)
    motions = [torch.from_numpy(motion_array(r)) for r in results.to_pylist()]
    features = interclip.pad_frames([interclip.evaluator_input(m, mean, std) for m in motions], FRAMES)
    lengths = torch.full((len(motions),), FRAMES)
    tokens = evaluator_tokens().tokenize([item.record.text for item in items])

    def embed():
        interclip.embed_motions(model, features, lengths)
        interclip.embed_texts(model, tokens)

    benchmark.pedantic(embed, rounds=3, warmup_rounds=1)
    record_sentences(benchmark, len(items), way="evaluator (motion + text)", batch=len(items))
