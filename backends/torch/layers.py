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
BatchNorm (torch stores the unbiased running variance and uses momentum 1 - m).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rosetta.errors import SpecError
from rosetta.graph import Node
from rosetta.ops.elementwise import key as activation_key
from rosetta.ops.windows import spatial_plan
from rosetta.ops.windows import time_plan

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

ACTIVATIONS: dict[str, Callable[[dict, int], nn.Module]] = {
    "identity": lambda kw, dim: nn.Identity(),
    "relu": lambda kw, dim: nn.ReLU(),
    "tanh": lambda kw, dim: nn.Tanh(),
    "sigmoid": lambda kw, dim: nn.Sigmoid(),
    "silu": lambda kw, dim: nn.SiLU(),
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


def _fused(core_name: str, core: nn.Module, act: nn.Module, pad: nn.Module | None = None):
    """The native layer alone, or ``Sequential(pad?, core, activation?)`` when it needs more."""
    if pad is None and isinstance(act, nn.Identity):
        return core
    parts = ([("pad", pad)] if pad is not None else []) + [(core_name, core)]
    if not isinstance(act, nn.Identity):
        parts.append(("activation", act))
    return nn.Sequential(OrderedDict(parts))


# --- padding ----------------------------------------------------------------------------------

def _pad_arg(pads) -> tuple[int, int, int, int]:
    """((top, bottom), (left, right)) -> F.pad's (left, right, top, bottom)."""
    (top, bottom), (left, right) = pads
    return (left, right, top, bottom)


def _symmetric(pads) -> tuple[int, int] | None:
    """(pad_h, pad_w) when both axes pad the same before and after, else None."""
    if all(lo == hi for lo, hi in pads):
        return pads[0][0], pads[1][0]
    return None


def _native_pool_padding(a: dict, pads) -> tuple[int, int] | None:
    """torch pools pad symmetrically and by at most half the window; None where that cannot
    express the canonical pads."""
    sym = _symmetric(pads)
    if sym is not None and all(p <= k // 2 for p, k in zip(sym, a["kernel_size"])):
        return sym
    return None


# --- dense and convolution -------------------------------------------------------------------

def dense(node: Node, layout: str) -> nn.Module:
    """nn.Linear on the last axis (weight is kernel.T, see params.py), then the activation."""
    a = node.attrs
    linear = nn.Linear(node.in_types[0].shape[-1], a["units"], bias=a["use_bias"])
    return _fused("dense", linear, activation(a["activation"], dim=-1))


def conv2d(node: Node, layout: str) -> nn.Module:
    """nn.Conv2d on NCHW. Padding comes from ``spatial_plan`` (the canonical rule): symmetric
    pads go to Conv2d's ``padding``; asymmetric ones (``same`` with stride > 1 or an even
    window, explicit (lo, hi)) are applied first with ``nn.ZeroPad2d``, since torch's own
    ``padding="same"`` refuses strides > 1 and puts the odd cell before."""
    a = node.attrs
    h, w, c = node.in_types[0].shape
    _, pads = spatial_plan(a, (h, w), a["dilation"])
    sym = _symmetric(pads)
    conv = nn.Conv2d(c, a["filters"], a["kernel_size"], stride=a["strides"],
                     padding=sym if sym is not None else 0, dilation=a["dilation"],
                     groups=a["groups"], bias=a["use_bias"])
    pad = None if sym is not None else nn.ZeroPad2d(_pad_arg(pads))
    return _fused("conv", conv, activation(a["activation"], dim=1), pad)


def conv1d(node: Node, layout: str) -> nn.Module:
    """nn.Conv1d on (N, C, T) inside ``ChannelsFirst1d``. Padding from the shared rule
    (``time_plan``): symmetric pads go to Conv1d's ``padding``, asymmetric ones to a
    ``ConstantPad1d(0)`` first (torch pads symmetrically, and ``padding="same"`` refuses
    strides > 1)."""
    a = node.attrs
    t, c = node.in_types[0].shape
    _, (lo, hi) = time_plan(a, t, a["dilation"][0])
    conv = nn.Conv1d(c, a["filters"], a["kernel_size"][0], stride=a["strides"][0],
                     padding=lo if lo == hi else 0, dilation=a["dilation"][0],
                     groups=a["groups"], bias=a["use_bias"])
    parts = [] if lo == hi else [("pad", nn.ConstantPad1d((lo, hi), 0.0))]
    parts.append(("conv", conv))
    act = activation(a["activation"], dim=1)
    if not isinstance(act, nn.Identity):
        parts.append(("activation", act))
    return ChannelsFirst1d(OrderedDict(parts))


def embedding(node: Node, layout: str) -> nn.Module:
    """nn.Embedding: weight is the canonical (vocab_size, dim) table."""
    return nn.Embedding(node.attrs["vocab_size"], node.attrs["dim"])


# --- pooling ----------------------------------------------------------------------------------

def max_pool2d(node: Node, layout: str) -> nn.Module:
    """nn.MaxPool2d (it pads with -inf). Pads it cannot take (asymmetric, or more than half the
    window) are applied first with ``ConstantPad2d(-inf)``: padded cells are never chosen."""
    a = node.attrs
    _, pads = spatial_plan(a, node.in_types[0].shape[:2])
    native = _native_pool_padding(a, pads)
    if native is not None:
        return nn.MaxPool2d(a["kernel_size"], a["strides"], padding=native)
    return nn.Sequential(OrderedDict([
        ("pad", nn.ConstantPad2d(_pad_arg(pads), float("-inf"))),
        ("pool", nn.MaxPool2d(a["kernel_size"], a["strides"]))]))


class ExcludePadAvgPool2d(nn.Module):
    """Average pooling that excludes padded cells for any padding (NCHW).

    y = window_sum(zero_pad(x)) / count, count[h, w] = number of real cells in the window.
    torch's ``count_include_pad=False`` does this only for symmetric pads of at most half the
    window, so other pads are lowered here: a sum-pool (``divisor_override=1``) divided by a
    count map fixed by the input size (a non-persistent buffer).
    """

    def __init__(self, kernel_size, stride, pads, in_hw):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.pad = _pad_arg(pads)
        ones = F.pad(torch.ones(1, 1, *in_hw, dtype=torch.get_default_dtype()), self.pad)
        count = F.avg_pool2d(ones, self.kernel_size, self.stride, divisor_override=1)
        self.register_buffer("count", count, persistent=False)

    def forward(self, x):
        total = F.avg_pool2d(F.pad(x, self.pad), self.kernel_size, self.stride,
                             divisor_override=1)
        return total / self.count

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pad={self.pad}"


def avg_pool2d(node: Node, layout: str) -> nn.Module:
    """nn.AvgPool2d(count_include_pad=False) where torch can take the pads, else
    ``ExcludePadAvgPool2d``. Both divide by the number of real cells (torch's default counts
    the padding)."""
    a = node.attrs
    hw = node.in_types[0].shape[:2]
    _, pads = spatial_plan(a, hw)
    native = _native_pool_padding(a, pads)
    if native is not None:
        return nn.AvgPool2d(a["kernel_size"], a["strides"], padding=native,
                            count_include_pad=False)
    return ExcludePadAvgPool2d(a["kernel_size"], a["strides"], pads, hw)


def max_pool1d(node: Node, layout: str) -> nn.Module:
    """nn.MaxPool1d on (N, C, T) inside ``ChannelsFirst1d``; pads it cannot take (asymmetric,
    or more than half the window) go to a ``ConstantPad1d(-inf)`` first."""
    a = node.attrs
    k, s = a["kernel_size"][0], a["strides"][0]
    _, (lo, hi) = time_plan(a, node.in_types[0].shape[0])
    if lo == hi and lo <= k // 2:
        return ChannelsFirst1d(OrderedDict([("pool", nn.MaxPool1d(k, s, padding=lo))]))
    return ChannelsFirst1d(OrderedDict([("pad", nn.ConstantPad1d((lo, hi), float("-inf"))),
                                        ("pool", nn.MaxPool1d(k, s))]))


class ExcludePadAvgPool1d(nn.Module):
    """Average pooling over (N, C, T) that excludes padded cells for any (lo, hi) pads:
    y = avg_pool1d(zero_pad(x)) * (k / count), count[t] = real cells in the window (a
    non-persistent buffer fixed by the input length)."""

    def __init__(self, kernel_size: int, stride: int, pads, length: int):
        super().__init__()
        self.kernel_size, self.stride, self.pad = kernel_size, stride, tuple(pads)
        ones = F.pad(torch.ones(1, 1, length, dtype=torch.get_default_dtype()), self.pad)
        count = F.avg_pool1d(ones, kernel_size, stride) * kernel_size
        self.register_buffer("rescale", kernel_size / count, persistent=False)

    def forward(self, x):
        return F.avg_pool1d(F.pad(x, self.pad), self.kernel_size, self.stride) * self.rescale

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pad={self.pad}"


def avg_pool1d(node: Node, layout: str) -> nn.Module:
    """nn.AvgPool1d(count_include_pad=False) where torch can take the pads, else
    ``ExcludePadAvgPool1d``; both inside ``ChannelsFirst1d`` and both divide by the number of
    real cells."""
    a = node.attrs
    k, s = a["kernel_size"][0], a["strides"][0]
    t = node.in_types[0].shape[0]
    _, (lo, hi) = time_plan(a, t)
    if lo == hi and lo <= k // 2:
        pool = nn.AvgPool1d(k, s, padding=lo, count_include_pad=False)
    else:
        pool = ExcludePadAvgPool1d(k, s, (lo, hi), t)
    return ChannelsFirst1d(OrderedDict([("pool", pool)]))


def zero_padding2d(node: Node, layout: str) -> nn.Module:
    return nn.ZeroPad2d(_pad_arg(node.attrs["padding"]))


class RepeatUpsample(nn.Module):
    """Nearest upsampling by integer factors: y = x repeated ``factors[i]`` times along tensor
    axis ``dims[i]`` (exact; nn.Upsample's nearest index floor(i * (1/f)) is computed in float
    and can round to the wrong source cell)."""

    def __init__(self, factors, dims):
        super().__init__()
        self.factors, self.dims = tuple(factors), tuple(dims)

    def forward(self, x):
        for f, d in zip(self.factors, self.dims):
            if f != 1:
                x = x.repeat_interleave(f, dim=d)
        return x

    def extra_repr(self):
        return f"factors={self.factors}, dims={self.dims}"


def upsampling2d(node: Node, layout: str) -> nn.Module:
    return RepeatUpsample(node.attrs["size"],
                          (native_axis(0, 3, layout), native_axis(1, 3, layout)))


class GlobalMaxPool2d(nn.Module):
    """y[n, c] = max over the two spatial axes ``dims`` (they depend on the layout)."""

    def __init__(self, dims: tuple[int, int]):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.amax(dim=self.dims)

    def extra_repr(self):
        return f"dims={self.dims}"


def global_max_pool2d(node: Node, layout: str) -> nn.Module:
    return GlobalMaxPool2d((native_axis(0, 3, layout), native_axis(1, 3, layout)))


class GlobalAvgPool2d(nn.Module):
    """y[n, c] = mean over the two spatial axes ``dims`` (they depend on the layout)."""

    def __init__(self, dims: tuple[int, int]):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.mean(dim=self.dims)

    def extra_repr(self):
        return f"dims={self.dims}"


def global_avg_pool2d(node: Node, layout: str) -> nn.Module:
    return GlobalAvgPool2d((native_axis(0, 3, layout), native_axis(1, 3, layout)))


class SequencePool(nn.Module):
    """Mean or max over the real steps t < length of (N, T, C) (every step without lengths);
    max puts -inf on padded steps."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x, lengths=None):
        if lengths is None:
            return x.mean(dim=1) if self.mode == "mean" else x.amax(dim=1)
        real = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[..., None]
        if self.mode == "mean":
            return (x * real).sum(dim=1) / lengths[:, None].to(x.dtype)
        return x.masked_fill(~real, float("-inf")).amax(dim=1)

    def extra_repr(self):
        return f"mode={self.mode}"


def sequence_pool(node: Node, layout: str) -> nn.Module:
    return SequencePool(node.attrs["mode"])


# --- normalization ----------------------------------------------------------------------------

class CanonicalBatchNorm(nn.Module):
    """BatchNorm by the canonical rule (see ``rosetta.ops.REGISTRY['BatchNorm']``).

    Normalisation is ``F.batch_norm`` (batch mean and biased variance in training, running
    statistics in eval). The running statistics are updated here, not by torch, because torch
    weights the new value by ``momentum`` (canonical: by 1 - momentum) and stores the *unbiased*
    batch variance, while the canonical rule stores the biased one:

        running_mean <- m * running_mean + (1 - m) * mean(x)
        running_var  <- m * running_var  + (1 - m) * var(x)      (biased, over every axis but C)

    ``channel_dim`` is the tensor axis of the channels (1 for NCHW and (N, C)); other axes are
    moved to 1 around ``F.batch_norm``. ``update_running_stats = False`` normalises with batch
    statistics without touching the buffers (used by ``Program.gradients`` / ``forward``).
    """

    def __init__(self, channels: int, momentum: float, epsilon: float, channel_dim: int = 1):
        super().__init__()
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.channel_dim = channel_dim
        self.update_running_stats = True
        # data parallel (distributed.py): (x) -> (mean, var) over every replica's batch; None
        # normalises with this process's batch alone
        self.global_moments = None
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        moved = self.channel_dim != 1
        if moved:
            x = x.movedim(self.channel_dim, 1)
        if self.training and self.global_moments is not None:
            y = self._global_batch_norm(x)
        elif self.training:
            if self.update_running_stats:
                self._update_running_stats(x)
            y = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.epsilon)
        else:
            y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                             False, 0.0, self.epsilon)
        return y.movedim(1, self.channel_dim) if moved else y

    def _global_batch_norm(self, x):
        """(x - mean) / sqrt(var + eps) * weight + bias with the statistics of the global batch
        (``global_moments``, differentiable through the collective)."""
        mean, var = self.global_moments(x)
        if self.update_running_stats:
            self._update_running_stats(x, (var, mean))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        inv = torch.rsqrt(var + self.epsilon)
        return ((x - mean.view(shape)) * inv.view(shape) * self.weight.view(shape)
                + self.bias.view(shape))

    @torch.no_grad()
    def _update_running_stats(self, x, moments=None):
        dims = [0, *range(2, x.ndim)]
        var, mean = (torch.var_mean(x.detach(), dim=dims, correction=0) if moments is None
                     else (moments[0].detach(), moments[1].detach()))
        m = self.momentum
        self.running_mean.mul_(m).add_(mean, alpha=1.0 - m)
        self.running_var.mul_(m).add_(var, alpha=1.0 - m)

    def extra_repr(self):
        return (f"{self.weight.shape[0]}, momentum={self.momentum} (canonical: weight of the old "
                f"value), epsilon={self.epsilon}, channel_dim={self.channel_dim}")


def batch_norm(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    rank = len(node.in_types[0].shape)
    return CanonicalBatchNorm(node.in_types[0].shape[-1], a["momentum"], a["epsilon"],
                              channel_dim=native_axis(-1, rank, layout))


def rms_norm(node: Node, layout: str) -> nn.Module:
    """nn.RMSNorm over the last axis with the explicit epsilon (torch's default is the dtype's
    machine epsilon): y = x * rsqrt(mean(x^2) + eps) * weight."""
    return nn.RMSNorm(node.in_types[0].shape[-1], eps=node.attrs["epsilon"])


class ChannelFirstGroupNorm(nn.GroupNorm):
    """nn.GroupNorm (biased variance per (example, group), explicit eps), which wants channels
    on tensor axis 1: ``channel_dim`` (from the layout) is moved there and back."""

    def __init__(self, groups: int, channels: int, eps: float, channel_dim: int):
        super().__init__(groups, channels, eps=eps)
        self.channel_dim = channel_dim

    def forward(self, x):
        if self.channel_dim == 1:
            return super().forward(x)
        return super().forward(x.movedim(self.channel_dim, 1)).movedim(1, self.channel_dim)


def group_norm(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    shape = node.in_types[0].shape
    return ChannelFirstGroupNorm(a["groups"], shape[-1], a["epsilon"],
                                 native_axis(-1, len(shape), layout))


def layer_norm(node: Node, layout: str) -> nn.Module:
    """nn.LayerNorm over the last axis with the explicit epsilon (biased variance, as canonical)."""
    return nn.LayerNorm(node.in_types[0].shape[-1], eps=node.attrs["epsilon"])


# --- elementwise, shape and combination ops ---------------------------------------------------

def activation_op(node: Node, layout: str) -> nn.Module:
    name, kwargs = activation_key(node.attrs)
    dim = native_axis(kwargs.get("axis", -1), len(node.in_types[0].shape), layout)
    return activation(name, kwargs, dim=dim)


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
            return x * self.mask / (1.0 - self.p)
        return super().forward(x)


def dropout(node: Node, layout: str) -> nn.Module:
    return InjectableDropout(node.attrs["rate"], layout)


def flatten(node: Node, layout: str) -> nn.Module:
    """nn.Flatten on the canonical layout, so (H, W, C) flattens in H*W*C order."""
    return nn.Flatten()


class Reshape(nn.Module):
    """y[n] = x[n].reshape(shape), row-major on the canonical layout."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return f"shape={self.shape}"


def reshape(node: Node, layout: str) -> nn.Module:
    return Reshape(node.attrs["shape"])


class Add(nn.Module):
    """y = x_1 + x_2 + ... + x_k, summed left to right."""

    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


def add(node: Node, layout: str) -> nn.Module:
    return Add()


class Concatenate(nn.Module):
    """torch.cat along ``dim`` (the tensor axis of the canonical axis in the chosen layout)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs):
        return torch.cat(xs, dim=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


def concatenate(node: Node, layout: str) -> nn.Module:
    return Concatenate(native_axis(node.attrs["axis"], len(node.in_types[0].shape), layout))


# --- the table --------------------------------------------------------------------------------

LOWERINGS: dict[str, Lowering] = {
    "Dense": Lowering(CHANNELS_LAST, dense),
    "Conv2D": Lowering(CHANNELS_FIRST, conv2d),
    "MaxPool2D": Lowering(CHANNELS_FIRST, max_pool2d),
    "AvgPool2D": Lowering(CHANNELS_FIRST, avg_pool2d),
    "GlobalAvgPool2D": Lowering(EITHER, global_avg_pool2d),
    "Flatten": Lowering(CHANNELS_LAST, flatten),
    "Reshape": Lowering(CHANNELS_LAST, reshape),
    "Add": Lowering(EITHER, add),
    "Concatenate": Lowering(EITHER, concatenate),
    "Activation": Lowering(EITHER, activation_op),
    "Dropout": Lowering(EITHER, dropout),
    "BatchNorm": Lowering(EITHER, batch_norm),
    "LayerNorm": Lowering(CHANNELS_LAST, layer_norm),
    "Embedding": Lowering(CHANNELS_LAST, embedding),
    "ZeroPadding2D": Lowering(CHANNELS_FIRST, zero_padding2d),
    "UpSampling2D": Lowering(EITHER, upsampling2d),
    "GlobalMaxPool2D": Lowering(EITHER, global_max_pool2d),
    "RMSNorm": Lowering(CHANNELS_LAST, rms_norm),
    "GroupNorm": Lowering(EITHER, group_norm),
    "Conv1D": Lowering(CHANNELS_LAST, conv1d),
    "MaxPool1D": Lowering(CHANNELS_LAST, max_pool1d),
    "AvgPool1D": Lowering(CHANNELS_LAST, avg_pool1d),
    "SequencePool": Lowering(CHANNELS_LAST, sequence_pool),
}


# The op families kept in their own modules (same file names in every backend) join the table here;
# they may import from this module, whose names above are defined by now.
from rosetta.backends.torch import attention as _attention  # noqa: E402
from rosetta.backends.torch import conv_variants as _conv_variants  # noqa: E402
from rosetta.backends.torch import recurrent as _recurrent  # noqa: E402

for _family in (_attention, _conv_variants, _recurrent):
    LOWERINGS.update(_family.LOWERINGS)


def lowering(node: Node, where: str) -> Lowering:
    """The lowering of a node's op; a clear SpecError for an op this backend does not know."""
    try:
        return LOWERINGS[node.op]
    except KeyError:
        raise SpecError(f"the torch backend has no lowering for op {node.op!r} (it lowers "
                        f"{', '.join(sorted(LOWERINGS))})", where=where, op=node.op) from None
