"""Narrow linear layers computed without GEMM, so a row's bits do not depend on its place in the batch.

``batching.pad_rows`` makes GEMMs batch-invariant for wide layers. For narrow ones it is not
enough: on this project's CPU (MKL sgemm, AVX2) a layer with 3-10 inputs or outputs rounds rows
1 and 3 of each 4-row block differently from rows 0 and 2 (12 or more agree; measured with
torch 2.13). ScoreHOI's betas branch is 10 wide and the body model's shape blend has 10 inputs,
so a sample's result would change with the batch it lands in. Such layers compute here as a
broadcast multiply and a sum over inputs, the same arithmetic for every row; their cost is
negligible beside the wide layers.
"""

from __future__ import annotations

import torch
from torch import nn

NARROW = 16  # layers with fewer inputs or outputs than this avoid GEMM


def rowwise_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias), each output element a sum over its own row's inputs."""
    out = (x[..., None, :] * weight).sum(-1)
    return out if bias is None else out + bias


class RowwiseLinear(nn.Module):
    """An ``nn.Linear``'s function (and parameters) without GEMM."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rowwise_linear(x, self.weight, self.bias)


def rowwise_narrow_linears(module: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` narrower than ``NARROW`` by a ``RowwiseLinear``."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and min(child.in_features, child.out_features) < NARROW:
            setattr(module, name, RowwiseLinear(child))
        else:
            rowwise_narrow_linears(child)
    return module
