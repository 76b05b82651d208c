"""Lowerings of BatchNorm, LayerNorm, RMSNorm and GroupNorm (biased variance, explicit epsilon)."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import lowers


def _moments(F, x, axes):
    """Mean and biased variance mean((x - mean)^2) over ``axes`` (kept)."""
    mean = F.mean(x, axis=axes, keepdims=True)
    centred = F.broadcast_sub(x, mean)
    return mean, F.mean(centred * centred, axis=axes, keepdims=True), centred


@lowers("BatchNorm")
def batch_norm(F, node, xs, p, ctx):
    """Training: normalise with the batch mean and biased variance over every axis but the last,
    and hand both to the program (``ctx.stats``) for the running update, the variance times
    n / (n - 1) when ``running_var == "unbiased"`` (n = the values per channel, counted in the
    graph: the hybridized block does not know the batch size; n == 1 is refused by the program
    before the step); eval: the running statistics."""
    a = node.attrs
    x = xs[0]
    rank = len(node.in_types[0].shape) + 1
    axes = tuple(range(rank - 1))
    if ctx.training:
        mean, var, centred = _moments(F, x, axes)
        stored = var
        if a["running_var"] == "unbiased":
            n = F.sum(F.ones_like(x), axis=axes, keepdims=True)
            stored = var * n / (n - 1)
        ctx.stats.append((node.name, F.reshape(mean, shape=(-1,)),
                          F.reshape(stored, shape=(-1,))))
    else:
        mean, var = p["mean"], p["var"]
        centred = F.broadcast_sub(x, mean)
    y = F.broadcast_div(centred, F.sqrt(var + a["epsilon"]))
    return F.broadcast_add(F.broadcast_mul(y, p["scale"]), p["bias"])


@lowers("InstanceNorm2D")
def instance_norm2d(F, node, xs, p, ctx):
    """Training: normalise with each example's mean and biased variance over H, W, and hand the
    program (``ctx.stats``) their batch averages, the variance unbiased (x HW / (HW - 1)), for
    the running update; eval: the running statistics."""
    a = node.attrs
    x = xs[0]
    if ctx.training:
        mean, var, centred = _moments(F, x, (1, 2))
        h, w, _ = node.in_types[0].shape
        ctx.stats.append((node.name, F.reshape(F.mean(mean, axis=(0, 1, 2)), shape=(-1,)),
                          F.reshape(F.mean(var, axis=(0, 1, 2)), shape=(-1,))
                          * (h * w / (h * w - 1))))
    else:
        mean, var = p["mean"], p["var"]
        centred = F.broadcast_sub(x, mean)
    y = F.broadcast_div(centred, F.sqrt(var + a["epsilon"]))
    return F.broadcast_add(F.broadcast_mul(y, p["scale"]), p["bias"])


@lowers("LayerNorm")
def layer_norm(F, node, xs, p, ctx):
    _, var, centred = _moments(F, xs[0], (-1,))
    y = F.broadcast_div(centred, F.sqrt(var + node.attrs["epsilon"]))
    return F.broadcast_add(F.broadcast_mul(y, p["scale"]), p["bias"])


@lowers("RMSNorm")
def rms_norm(F, node, xs, p, ctx):
    """y = x * rsqrt(mean(x^2) + eps) * scale over the last axis."""
    x = xs[0]
    ms = F.mean(x * x, axis=-1, keepdims=True)
    return F.broadcast_mul(F.broadcast_div(x, F.sqrt(ms + node.attrs["epsilon"])), p["scale"])


@lowers("GroupNorm")
def group_norm(F, node, xs, p, ctx):
    """Channels last, contiguous groups: statistics over every non-batch axis of a group."""
    a = node.attrs
    shape = node.in_types[0].shape
    c, g = shape[-1], a["groups"]
    x = F.reshape(xs[0], shape=(0, -1, g, c // g))                  # (N, S, G, C/G)
    _, var, centred = _moments(F, x, (1, 3))
    y = F.broadcast_div(centred, F.sqrt(var + a["epsilon"]))
    y = F.reshape(y, shape=(-1, *shape))
    return F.broadcast_add(F.broadcast_mul(y, p["scale"]), p["bias"])
