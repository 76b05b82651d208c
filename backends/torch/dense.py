"""Lowerings of Dense and Embedding: nn.Linear (weight = kernel.T) and nn.Embedding."""

from __future__ import annotations

from torch import nn

from rosetta.backends.torch.lowering import (CHANNELS_LAST, activation, fused, lowers,
                                             native_params, same)
from rosetta.graph import Node


@lowers("Dense", accepts=CHANNELS_LAST)
def dense(node: Node, layout: str) -> nn.Module:
    """nn.Linear on the last axis (weight is kernel.T, see params.py), then the activation."""
    a = node.attrs
    linear = nn.Linear(node.in_types[0].shape[-1], a["units"], bias=a["use_bias"])
    return fused("dense", linear, activation(a["activation"], dim=-1))


@lowers("Embedding", accepts=CHANNELS_LAST)
def embedding(node: Node, layout: str) -> nn.Module:
    """nn.Embedding: weight is the canonical (vocab_size, dim) table; ``padding_idx`` is torch's
    own (row padding_idx gets no gradient)."""
    a = node.attrs
    return nn.Embedding(a["vocab_size"], a["dim"], padding_idx=a["padding_idx"])


def _swap_last_two(a):
    """Dense kernel (in, out) <-> Linear weight (out, in)."""
    return a.T


native_params({
    "Dense": {"kernel": (nn.Linear, "weight", _swap_last_two, _swap_last_two),
              "bias": (nn.Linear, "bias", same, same)},
    "Embedding": {"embedding": (nn.Embedding, "weight", same, same)},
})
