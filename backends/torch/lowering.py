"""One lowering per registered op: the table ``LOWERINGS`` (op name -> ``Lowering``).

Layout
------
Canonical activations are channels-last; torch convolutions and pools want NCHW. A 4-D value
(rank 3 per example) therefore lives in one of two layouts, ``CHANNELS_LAST`` (N, H, W, C) or
``CHANNELS_FIRST`` (N, C, H, W); values of any other rank are always canonical (channels-last).
Each lowering declares the layout it accepts for 4-D inputs (channels-first, channels-last or
either); ``plan_layout`` picks the layout a node runs in, the lowering is built for it,
``native_axis`` maps a canonical axis into it and ``convert_layout`` permutes between the two.
This section is the one place the layout rule lives; ``model.py`` applies it.

Sequences (N, T, C) (rank 2 per example) stay canonical between nodes; the 1-D window ops that
torch runs channels-first (Conv1d, MaxPool1d, AvgPool1d want (N, C, T)) are built inside
``ChannelsFirst1d``, which takes and returns (N, T, C) and runs its parts on the transposed view.

Native layers are used wherever they can be configured to the canonical rule; the exceptions,
each documented where it is built: asymmetric padding (explicit ``F.pad``, torch pads
symmetrically), average pooling whose padding torch cannot exclude (sum-pool / count), and
BatchNorm (torch stores the unbiased running variance and uses momentum 1 - m)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from rosetta.ops.registry import LoweringTable
from rosetta.errors import SpecError
from rosetta.graph import Node


# --- layout -----------------------------------------------------------------------------------
CHANNELS_LAST = "channels_last"     # canonical: (N, H, W, C)


CHANNELS_FIRST = "channels_first"   # torch conv/pool order: (N, C, H, W)


EITHER = "either"                   # the lowering adapts to the layout it is given


# canonical per-example axis (H, W, C) -> tensor axis in (N, C, H, W)
_CHANNELS_FIRST_AXIS = (2, 3, 1)


def native_axis(axis: int, rank: int, layout: str) -> int:
    """The tensor axis (batch axis included) holding canonical per-example ``axis`` of a value
    with ``rank`` per-example axes stored in ``layout``."""
    a = axis + rank if axis < 0 else axis
    if layout == CHANNELS_FIRST:
        return _CHANNELS_FIRST_AXIS[a]
    return a + 1


def convert_layout(x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    """Permute a 4-D tensor between channels-last and channels-first. A view, no copy: the
    channels-first view of an NHWC tensor is torch's ``channels_last`` memory format, which its
    CPU and cuDNN convolutions take directly (measured faster than a contiguous NCHW copy)."""
    if src == dst:
        return x
    return x.permute(0, 3, 1, 2) if dst == CHANNELS_FIRST else x.permute(0, 2, 3, 1)


def plan_layout(accepts: str, input_layouts: list[str], input_rank: int) -> str:
    """The layout a node runs in. Only 4-D values (rank 3 per example) have a choice: the op's
    own layout, or for an op that takes either, its first input's layout (other inputs are
    converted to it)."""
    if input_rank != 3:
        return CHANNELS_LAST
    return input_layouts[0] if accepts == EITHER else accepts


class ChannelsFirst1d(nn.Sequential):
    """The rank-2 (sequence) half of the layout rule: (N, T, C) in and out, the parts run in turn
    on (N, C, T) (a transposed view, no copy). A ``Sequential`` so the native layer inside is a
    direct child (``params.py`` finds it there)."""

    def forward(self, x):
        x = x.transpose(1, 2)
        for m in self:
            x = m(x)
        return x.transpose(1, 2)


@dataclass(frozen=True)
class Lowering:
    """``accepts``: the layout of 4-D inputs this op runs on; ``build(node, layout)`` makes the
    native module for the layout chosen (always ``CHANNELS_LAST`` for inputs of other ranks)."""

    accepts: str
    build: Callable[[Node, str], nn.Module]


# --- activations: one table for the Activation op and the fused ``activation`` attribute --------
class HardSigmoid(nn.Module):
    """relu6(x + 3) / 6 written out: ``nn.Hardsigmoid``'s backward multiplies by the float32
    constant 1.0f / 6.0f (0.1666666716...) even in float64, a 3e-8 relative gradient error."""

    def forward(self, x):
        return nn.functional.relu6(x + 3.0) / 6.0


ACTIVATIONS: dict[str, Callable[[dict, int], nn.Module]] = {
    "identity": lambda kw, dim: nn.Identity(),
    "relu": lambda kw, dim: nn.ReLU(),
    "tanh": lambda kw, dim: nn.Tanh(),
    "sigmoid": lambda kw, dim: nn.Sigmoid(),
    "silu": lambda kw, dim: nn.SiLU(),
    "relu6": lambda kw, dim: nn.ReLU6(),
    "hard_sigmoid": lambda kw, dim: HardSigmoid(),
    "gelu_exact": lambda kw, dim: nn.GELU(approximate="none"),
    "gelu_tanh": lambda kw, dim: nn.GELU(approximate="tanh"),
    "softmax": lambda kw, dim: nn.Softmax(dim=dim),
    "leaky_relu": lambda kw, dim: nn.LeakyReLU(negative_slope=kw["slope"]),
}


def activation(name: str, kwargs: dict | None = None, dim: int = -1) -> nn.Module:
    """The native module for a canonical activation name; ``dim`` is the tensor axis softmax
    normalises over."""
    try:
        make = ACTIVATIONS[name]
    except KeyError:
        raise SpecError(f"the torch backend has no activation {name!r} (it lowers "
                        f"{', '.join(sorted(ACTIVATIONS))})") from None
    return make(kwargs or {}, dim)


def fused(core_name: str, core: nn.Module, act: nn.Module, pad: nn.Module | None = None):
    """The native layer alone, or ``Sequential(pad?, core, activation?)`` when it needs more."""
    if pad is None and isinstance(act, nn.Identity):
        return core
    parts = ([("pad", pad)] if pad is not None else []) + [(core_name, core)]
    if not isinstance(act, nn.Identity):
        parts.append(("activation", act))
    return nn.Sequential(OrderedDict(parts))


# --- padding ----------------------------------------------------------------------------------
def pad_arg(pads) -> tuple[int, int, int, int]:
    """((top, bottom), (left, right)) -> F.pad's (left, right, top, bottom)."""
    (top, bottom), (left, right) = pads
    return (left, right, top, bottom)


def symmetric_pads(pads) -> tuple[int, int] | None:
    """(pad_h, pad_w) when both axes pad the same before and after, else None."""
    if all(lo == hi for lo, hi in pads):
        return pads[0][0], pads[1][0]
    return None


def native_pool_padding(a: dict, pads) -> tuple[int, int] | None:
    """torch pools pad symmetrically and by at most half the window; None where that cannot
    express the canonical pads."""
    sym = symmetric_pads(pads)
    if sym is not None and all(p <= k // 2 for p, k in zip(sym, a["kernel_size"])):
        return sym
    return None


# --- the table: every lowering registers itself ------------------------------------------------

LOWERINGS = LoweringTable("the torch backend")  # op -> Lowering
# op -> canonical parameter/state name -> (native layer class, its attribute, to native,
# to canonical): where ``params.py`` finds each canonical array in the node's module
NATIVE: dict[str, dict] = {}


def lowers(*ops: str, accepts: str):
    """Decorator: register ``build(node, layout) -> nn.Module`` as the torch lowering of ``ops``,
    run on 4-D inputs in layout ``accepts`` (``CHANNELS_FIRST``, ``CHANNELS_LAST`` or
    ``EITHER``)::

        @lowers("HardSwish", accepts=EITHER)
        def hard_swish(node, layout):
            return nn.Hardswish()
    """
    return LOWERINGS.register(ops, lambda build: Lowering(accepts, build))


def same(a):
    """The identity layout conversion (the native array is the canonical one)."""
    return a


def native_params(table: dict[str, dict]) -> None:
    """Declare where each canonical parameter of an op lives in its native module:
    ``{op: {name: (layer class, attribute, to_native, to_canonical)}}`` (see ``NATIVE``). An op
    without parameters or state declares nothing."""
    for op, names in table.items():
        if op in NATIVE:
            raise ValueError(f"the torch backend already declares the parameters of op {op!r}")
        NATIVE[op] = names
