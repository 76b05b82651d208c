"""The window geometry shared by convolutions and pools: one padding rule (``resolve_padding``)
for every window op, 2-D (``spatial_plan``) and 1-D (``time_plan``, ``as_2d``: a 1-D op is the
2-D op on (N, 1, T, C) with a window of height 1), and the rank checks of spatial inputs."""

from __future__ import annotations

import math

import numpy as np


def resolve_padding(size: int, kernel: int, stride: int, dilation: int, padding, axis: int):
    """(output size, (lo, hi)) for one spatial axis. The one place the padding rule lives.

    valid: no padding, out = floor((size - eff) / stride) + 1, eff = dilation * (kernel - 1) + 1.
    same: out = ceil(size / stride); total = max((out - 1) * stride + eff - size, 0);
          lo = total // 2, hi = total - lo (the extra cell goes after, as in TF and XLA).
    explicit: padding[axis] = (lo, hi); out = floor((size + lo + hi - eff) / stride) + 1.
    """
    eff = dilation * (kernel - 1) + 1
    if padding == "valid":
        lo = hi = 0
    elif padding == "same":
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + eff - size, 0)
        lo, hi = total // 2, total - total // 2
    else:
        lo, hi = padding[axis]
    out = (size + lo + hi - eff) // stride + 1
    return out, (lo, hi)


def windows(xp: np.ndarray, kernel, strides, dilation, out):
    """Yield ((i, j), slice of xp) for each kernel tap: xp[:, i*d0 :: s0, j*d1 :: s1, :] (out long)."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            h0, w0 = i * dilation[0], j * dilation[1]
            yield (i, j), xp[:, h0:h0 + strides[0] * (out[0] - 1) + 1:strides[0],
                             w0:w0 + strides[1] * (out[1] - 1) + 1:strides[1], :]


def spatial_plan(a: dict, hw: tuple[int, int], dilation=(1, 1)):
    """Output (H, W) and explicit ((lo, hi), (lo, hi)) pads for a 2-D window op."""
    outs, pads = [], []
    for ax in range(2):
        o, p = resolve_padding(hw[ax], a["kernel_size"][ax], a["strides"][ax], dilation[ax],
                               a["padding"], ax)
        outs.append(o)
        pads.append(p)
    return tuple(outs), tuple(pads)


def pair_as_list(given: dict) -> dict:
    """Accept a bare (lo, hi) pair for the one time axis."""
    pad = given.get("padding")
    if (isinstance(pad, (list, tuple)) and len(pad) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pad)):
        given = {**given, "padding": (tuple(pad),)}
    return given


def time_plan(a: dict, size: int, dilation: int = 1):
    """(output length, (lo, hi)) of a 1-D window op, by the shared padding rule."""
    return resolve_padding(size, a["kernel_size"][0], a["strides"][0], dilation, a["padding"], 0)


def as_2d(a: dict) -> dict:
    """The attributes of the equivalent 2-D op on (N, 1, T, C): a window of height 1."""
    b = dict(a)
    for k in ("kernel_size", "strides", "dilation"):
        if k in a:
            b[k] = (1, a[k][0])
    if not isinstance(a["padding"], str):
        b["padding"] = ((0, 0), a["padding"][0])
    return b


def check_rank2(op, x, where):
    if len(x.shape) != 2:
        raise op.fail(where, "an input of rank 2 per example (T, C)", f"shape {x.shape}")


def resolve_window_strides(resolve, given: dict, where: str) -> dict:
    """Resolve a pooling op's attributes with ``resolve``; unset strides default to the window
    (flax defaults to 1: the backends always lower strides explicitly)."""
    a = dict(given)
    if a.get("strides") is None:
        a.pop("strides", None)
        a = resolve(a, where)
        a["strides"] = a["kernel_size"]
        return a
    return resolve(a, where)


def check_rank3(op, x, where):
    if len(x.shape) != 3:
        raise op.fail(where, "an input of rank 3 per example (H, W, C)", f"shape {x.shape}")
