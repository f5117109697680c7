"""Classifier-free guidance (Ho & Salimans 2022): one batched call for cond and uncond.

    pred = pred_uncond + w * (pred_cond - pred_uncond)          (eq. 6)
The combine itself happens inside the fused DDIM update; this wrapper only batches the two
halves into one model call and splits the result.
"""

from __future__ import annotations

from typing import Callable

import torch

Model = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]


def cfg_denoiser(model: Model, cond: torch.Tensor, uncond: torch.Tensor) -> Callable:
    """``model(x, t, c)`` -> ``denoise(x, t) = (pred_uncond, pred_cond)`` from one model call.

    ``cond`` and ``uncond`` are per-sample conditions of equal batch size.
    """
    both = torch.cat([uncond, cond])

    def denoise(x: torch.Tensor, t: int):
        out = model(torch.cat([x, x]), t, both)
        return out.chunk(2)

    return denoise
