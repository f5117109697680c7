"""Per-sample randomness that does not depend on the batch a sample lands in.

Each (job seed, sample id, repeat) gets its own torch generator; a sample's initial noise and its
per-step noise (eta > 0) are drawn from that generator in order, on the CPU, then moved to the
device. Same inputs -> same noise, whatever the batch size, shard or worker.
"""

from __future__ import annotations

import hashlib

import torch


def sample_seed(seed: int, sample_id: str, repeat: int) -> int:
    """A 63-bit seed from (seed, sample id, repeat), stable across Python runs and machines."""
    key = f"{seed}\x1f{sample_id}\x1f{repeat}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


class SampleNoise:
    """Generators for a batch of samples; each ``draw`` gives every sample its next normal draw."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu"):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.device = device

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        """(len(seeds), *shape) standard normal, one independent stream per sample."""
        draws = [torch.randn(shape, generator=g) for g in self.generators]
        return torch.stack(draws).to(self.device)
