"""A model's blocks as the class it built them with.

``nn.ModuleList`` types its items as ``nn.Module``, so code calling a block's own methods
(``modulation``, a fold) reads the list through ``items_of``, which checks what it claims.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

Block = TypeVar("Block", bound=nn.Module)


def items_of(modules: nn.ModuleList, kind: type[Block]) -> list[Block]:
    """The items of ``modules``, each a ``kind``, or TypeError naming the first that is not."""
    items = [module for module in modules if isinstance(module, kind)]
    if len(items) != len(modules):
        stray = next(module for module in modules if not isinstance(module, kind))
        raise TypeError(f"expected a list of {kind.__name__}, it holds a {type(stray).__name__}")
    return items
