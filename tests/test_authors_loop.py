"""The re-created DHVAE release loop (benchmarks/authors_loop.py), which the latency benchmarks
time beside the engine, computes what the engine computes: same weights, same noise, same text."""

import pytest
import torch

from motionfleet.dhvae import model as dhvae
from motionfleet.dhvae.runner import DHVAEGenerator, GenerateSettings, ModelSpec

authors_loop = pytest.importorskip("benchmarks.authors_loop", reason="needs diffusers (the test extra)")


def test_authors_loop_matches_the_engine():
    frames, steps = 7, 4
    generator = DHVAEGenerator(ModelSpec(preset="tiny", text_encoder="precomputed"),
                               GenerateSettings(steps=steps, guidance_scale=3.5, default_frames=frames))
    release = authors_loop.load_engine_weights(authors_loop.ReleaseModel(generator.model.config), generator.model)
    text = torch.randn(2, 768, generator=torch.Generator().manual_seed(3))
    null = torch.randn(1, 768, generator=torch.Generator().manual_seed(4))
    generator.null_text = null
    noise = torch.randn(2, dhvae.NUM_TOKENS, generator.model.config.latent_dim, generator=torch.Generator().manual_seed(5))

    class GivenNoise:
        def draw(self, shape):
            return noise

    with torch.inference_mode():
        ours = generator.decode(generator.sample_latents(text, GivenNoise()), [frames, 3])
    x1, x2 = authors_loop.generate(release, authors_loop.release_scheduler(), text, null, torch.tensor([frames, 3]),
                                   steps=steps, latents=noise)
    torch.testing.assert_close(ours[0], torch.stack([x1[0, :frames], x2[0, :frames]]), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ours[1], torch.stack([x1[1, :3], x2[1, :3]]), atol=2e-5, rtol=1e-4)
    assert (x1[1, 3:] == 0).all()  # the release zeroes frames past the length
