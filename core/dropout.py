"""Which graph nodes draw a dropout keep-mask in training, at what rate and of what shape.

A node with dropout (Dropout with rate > 0, attention weights with dropout > 0) keeps an
element with probability 1 − rate and scales it by 1 / (1 − rate): y = x · mask / (1 − rate)
with mask ∈ {0, 1} of shape (batch, *shape) (``OpDef.dropout_mask_shape``, canonical layout).
Backends that draw their own masks draw them in graph order, one per node of this list, for the
whole (global) batch, so that N data-parallel devices use the rows of the one-device masks
(docs/design.md section 10).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rosetta.errors import DataError


class MaskDraw(NamedTuple):
    node: str
    rate: float
    shape: tuple  # per example, canonical layout


def drop_rate(node) -> float:
    """The drop probability of a node with dropout (``rate`` or ``dropout`` attribute)."""
    return float(node.attrs["rate"] if "rate" in node.attrs else node.attrs["dropout"])


def mask_draws(graph) -> tuple[MaskDraw, ...]:
    """One ``MaskDraw`` per node that draws a keep-mask in training, in graph order."""
    out = []
    for n in graph.nodes:
        shape = n.opdef.dropout_mask_shape(n.attrs, n.in_types, n.out_type)
        if shape is not None:
            out.append(MaskDraw(n.name, drop_rate(n), tuple(shape)))
    return tuple(out)


def check_masks(draws: tuple[MaskDraw, ...], masks: dict, batch: int) -> dict:
    """Injected keep-masks checked against ``draws`` (``mask_draws``): exactly one per node that
    draws one, each of shape (batch, *shape); returned by node in graph order, values as given
    (host arrays or framework tensors). A ``DataError`` names what is wrong otherwise."""
    if not draws:
        raise DataError(f"masks: this model has no dropout, found {sorted(masks)}")
    nodes = [d.node for d in draws]
    unknown = sorted(set(masks) - set(nodes))
    missing = [n for n in nodes if n not in masks]
    if unknown or missing:
        raise DataError(f"masks: one keep-mask per node with dropout > 0 {nodes}; "
                        f"missing {missing}, unknown {unknown}")
    out = {}
    for d in draws:
        shape = tuple(np.shape(masks[d.node]))
        if shape != (batch, *d.shape):
            raise DataError(f"masks: {d.node!r} must have shape {(batch, *d.shape)}, "
                            f"found {shape}")
        out[d.node] = masks[d.node]
    return out
