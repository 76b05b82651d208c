"""Lowerings of BatchNorm, LayerNorm, RMSNorm and GroupNorm (explicit epsilon everywhere; BatchNorm
keeps the canonical running statistics itself)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rosetta.backends.torch.lowering import (CHANNELS_FIRST, CHANNELS_LAST, EITHER, lowers,
                                             native_axis, native_params, same)
from rosetta.graph import Node
from rosetta.ops.normalization import unbiased_factor


class CanonicalBatchNorm(nn.Module):
    """BatchNorm by the canonical rule (see ``rosetta.ops.REGISTRY['BatchNorm']``).

    Normalisation is ``F.batch_norm`` (batch mean and biased variance in training, running
    statistics in eval). The running statistics are updated here, not by torch, because torch
    weights the new value by ``momentum`` (canonical: by 1 - momentum) and always stores the
    *unbiased* batch variance, while the canonical rule stores the one ``running_var`` names:

        running_mean <- m * running_mean + (1 - m) * mean(x)
        running_var  <- m * running_var  + (1 - m) * var(x) [* n / (n - 1) when ``unbiased``]
                        (var biased, over the n values of every axis but C; in data-parallel
                        training mean, var and n are the global batch's)

    ``channel_dim`` is the tensor axis of the channels (1 for NCHW and (N, C)); other axes are
    moved to 1 around ``F.batch_norm``. ``update_running_stats = False`` normalises with batch
    statistics without touching the buffers (used by ``Program.gradients`` / ``forward``).
    """

    def __init__(self, channels: int, momentum: float, epsilon: float, channel_dim: int = 1,
                 unbiased: bool = False):
        super().__init__()
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.unbiased = bool(unbiased)
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
            import torch.distributed as dist

            self._update_running_stats(x, (var, mean), replicas=dist.get_world_size())
        shape = (1, -1) + (1,) * (x.ndim - 2)
        inv = torch.rsqrt(var + self.epsilon)
        return ((x - mean.view(shape)) * inv.view(shape) * self.weight.view(shape)
                + self.bias.view(shape))

    @torch.no_grad()
    def _update_running_stats(self, x, moments=None, replicas: int = 1):
        dims = [0, *range(2, x.ndim)]
        var, mean = (torch.var_mean(x.detach(), dim=dims, correction=0) if moments is None
                     else (moments[0].detach(), moments[1].detach()))
        if self.unbiased:
            var = var * unbiased_factor(x.numel() // x.shape[1] * replicas)
        m = self.momentum
        self.running_mean.mul_(m).add_(mean, alpha=1.0 - m)
        self.running_var.mul_(m).add_(var, alpha=1.0 - m)

    def extra_repr(self):
        return (f"{self.weight.shape[0]}, momentum={self.momentum} (canonical: weight of the old "
                f"value), epsilon={self.epsilon}, channel_dim={self.channel_dim}, "
                f"running_var={'unbiased' if self.unbiased else 'biased'}")


@lowers("BatchNorm", accepts=EITHER)
def batch_norm(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    rank = len(node.in_types[0].shape)
    return CanonicalBatchNorm(node.in_types[0].shape[-1], a["momentum"], a["epsilon"],
                              channel_dim=native_axis(-1, rank, layout),
                              unbiased=a["running_var"] == "unbiased")


@lowers("RMSNorm", accepts=CHANNELS_LAST)
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


@lowers("GroupNorm", accepts=EITHER)
def group_norm(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    shape = node.in_types[0].shape
    return ChannelFirstGroupNorm(a["groups"], shape[-1], a["epsilon"],
                                 native_axis(-1, len(shape), layout))


@lowers("LayerNorm", accepts=CHANNELS_LAST)
def layer_norm(node: Node, layout: str) -> nn.Module:
    """nn.LayerNorm over the last axis with the explicit epsilon (biased variance, as canonical)."""
    return nn.LayerNorm(node.in_types[0].shape[-1], eps=node.attrs["epsilon"])


class CanonicalInstanceNorm2d(CanonicalBatchNorm):
    """InstanceNorm2D by the canonical rule (``rosetta.ops.REGISTRY['InstanceNorm2D']``) with
    torch's ``F.instance_norm`` on (N, C, H, W): per-example statistics in training, the running
    ones in eval. torch's running update is the canonical one (the unbiased per-example variance,
    averaged over the batch) with momentum 1 - m. A ``CanonicalBatchNorm`` so the program's
    ``update_running_stats`` switch reaches it; ``channel_dim`` is 1 (it runs channels-first).
    Data-parallel training is refused: its running statistics would average one replica's
    batch."""

    def forward(self, x):
        if self.training and self.global_moments is not None:
            raise RuntimeError("InstanceNorm2D: data-parallel training is not supported (its "
                               "running statistics would average one replica's batch only)")
        track = not self.training or self.update_running_stats
        return F.instance_norm(x, self.running_mean if track else None,
                               self.running_var if track else None, self.weight, self.bias,
                               use_input_stats=self.training, momentum=1.0 - self.momentum,
                               eps=self.epsilon)


@lowers("InstanceNorm2D", accepts=CHANNELS_FIRST)
def instance_norm2d(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    return CanonicalInstanceNorm2d(node.in_types[0].shape[-1], a["momentum"], a["epsilon"])

native_params({
    "BatchNorm": {"scale": (CanonicalBatchNorm, "weight", same, same),
                  "bias": (CanonicalBatchNorm, "bias", same, same),
                  "mean": (CanonicalBatchNorm, "running_mean", same, same),
                  "var": (CanonicalBatchNorm, "running_var", same, same)},
    "LayerNorm": {"scale": (nn.LayerNorm, "weight", same, same),
                  "bias": (nn.LayerNorm, "bias", same, same)},
    "RMSNorm": {"scale": (nn.RMSNorm, "weight", same, same)},
    "GroupNorm": {"scale": (nn.GroupNorm, "weight", same, same),
                  "bias": (nn.GroupNorm, "bias", same, same)},
    "InstanceNorm2D": {"scale": (CanonicalInstanceNorm2d, "weight", same, same),
                       "bias": (CanonicalInstanceNorm2d, "bias", same, same),
                       "mean": (CanonicalInstanceNorm2d, "running_mean", same, same),
                       "var": (CanonicalInstanceNorm2d, "running_var", same, same)},
})
