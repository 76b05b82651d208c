"""Lowering of Dropout and StochasticDepth: modules that take an injected keep-mask (the
program draws them; conformance mode injects them)."""

from __future__ import annotations

import torch
from torch import nn

from rosetta.backends.torch.lowering import CHANNELS_LAST, EITHER, convert_layout, lowers
from rosetta.graph import Node


class InjectableDropout(nn.Dropout):
    """nn.Dropout (rate = drop probability, inverted scaling: the canonical rule) that uses an
    injected keep-mask instead of torch's RNG while ``mask`` is set (conformance mode):
    y = x * mask / (1 - rate)."""

    def __init__(self, rate: float, layout: str):
        super().__init__(rate)
        self.layout = layout
        self.mask: torch.Tensor | None = None

    def set_mask(self, canonical_mask: torch.Tensor | None):
        """Take a canonical-layout (channels-last) mask, or None to go back to the RNG."""
        if canonical_mask is not None and canonical_mask.dim() == 4:
            canonical_mask = convert_layout(canonical_mask, CHANNELS_LAST, self.layout)
        self.mask = canonical_mask

    def forward(self, x):
        if self.training and self.mask is not None:
            return x * self.mask.to(x.dtype) / (1.0 - self.p)
        return super().forward(x)


@lowers("Dropout", accepts=EITHER)
def dropout(node: Node, layout: str) -> nn.Module:
    return InjectableDropout(node.attrs["rate"], layout)


class InjectableStochasticDepth(InjectableDropout):
    """Stochastic depth (one keep-mask value per example, y = x * mask / (1 - rate)); with no
    mask set it draws one per example from torch's RNG (torchvision's ``"row"`` mode)."""

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        if self.mask is not None:
            return x * self.mask.to(x.dtype) / (1.0 - self.p)
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype,
                           device=x.device).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


@lowers("StochasticDepth", accepts=EITHER)
def stochastic_depth(node: Node, layout: str) -> nn.Module:
    return InjectableStochasticDepth(node.attrs["rate"], layout)
