"""Fused classifier-free-guidance combine + DDIM update, one elementwise pass.

    pred   = u + w * (c - u)                      (CFG, Ho & Salimans 2022, eq. 6; skipped if u is None)
    x_prev = a * x + b * pred + sigma * z + k * g  (DDIM eq. 12 in its linear form; see
                                                    motionfleet.sampling.ddim)
``g`` is an optional correction to the predicted noise (ScoreHOI's score guidance), ``k`` its
coefficient. The reference is plain torch; on CUDA tensors the Triton kernel does the same in one
read of each input and one write.
"""

from __future__ import annotations

from typing import Optional

import torch

from motionfleet.kernels.triton_loader import UNAVAILABLE, tl, triton


def ddim_update_reference(x, pred, a, b, uncond=None, guidance_scale=1.0, sigma=0.0, noise=None,
                          correction=None, correction_scale=0.0):
    if uncond is not None:
        pred = uncond + guidance_scale * (pred - uncond)
    out = a * x + b * pred
    if noise is not None and sigma != 0.0:
        out = out + sigma * noise
    if correction is not None:
        out = out + correction_scale * correction
    return out


if triton is not None:

    @triton.jit
    def _ddim_update_kernel(x_ptr, pred_ptr, uncond_ptr, noise_ptr, corr_ptr, out_ptr, n,
                            a, b, w, sigma, k,
                            HAS_UNCOND: tl.constexpr, HAS_NOISE: tl.constexpr,
                            HAS_CORR: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask)
        pred = tl.load(pred_ptr + offs, mask=mask)
        if HAS_UNCOND:
            u = tl.load(uncond_ptr + offs, mask=mask)
            pred = u + w * (pred - u)
        out = a * x + b * pred
        if HAS_NOISE:
            out += sigma * tl.load(noise_ptr + offs, mask=mask)
        if HAS_CORR:
            out += k * tl.load(corr_ptr + offs, mask=mask)
        tl.store(out_ptr + offs, out, mask=mask)


def ddim_update_triton(x, pred, a, b, uncond=None, guidance_scale=1.0, sigma=0.0, noise=None,
                       correction=None, correction_scale=0.0, block: int = 1024):
    if triton is None:
        raise ImportError(f"the Triton DDIM kernel {UNAVAILABLE}")
    tensors = [t.contiguous() for t in (x, pred)]
    x, pred = tensors
    out = torch.empty_like(x)
    n = x.numel()
    has_noise = noise is not None and sigma != 0.0
    _ddim_update_kernel[(triton.cdiv(n, block),)](
        x, pred,
        uncond.contiguous() if uncond is not None else x,
        noise.contiguous() if has_noise else x,
        correction.contiguous() if correction is not None else x,
        out, n, float(a), float(b), float(guidance_scale), float(sigma), float(correction_scale),
        HAS_UNCOND=uncond is not None, HAS_NOISE=has_noise, HAS_CORR=correction is not None,
        BLOCK=block,
    )
    return out


def ddim_update(x: torch.Tensor, pred: torch.Tensor, a: float, b: float,
                uncond: Optional[torch.Tensor] = None, guidance_scale: float = 1.0,
                sigma: float = 0.0, noise: Optional[torch.Tensor] = None,
                correction: Optional[torch.Tensor] = None, correction_scale: float = 0.0):
    """Triton on CUDA when available, the torch reference otherwise."""
    fn = ddim_update_triton if (x.is_cuda and triton is not None) else ddim_update_reference
    return fn(x, pred, a, b, uncond=uncond, guidance_scale=guidance_scale, sigma=sigma,
              noise=noise, correction=correction, correction_scale=correction_scale)
