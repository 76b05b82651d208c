"""Canonical <-> native parameters and state.

Every canonical path ``node/name`` has a ``Slot``: the native tensor (a parameter or buffer of
the node's module) and the layout conversions both ways:

==============  ========================  ===================================================
op / name       canonical                 native
==============  ========================  ===================================================
Dense kernel    (in, out)                 nn.Linear.weight (out, in) = kernel.T
Conv2D kernel   (kH, kW, in/groups, out)  nn.Conv2d.weight (out, in/groups, kH, kW)
bias, scale     (n,)                      bias / weight (n,)
BatchNorm       mean, var (biased)        running_mean, running_var (normalization.py)
Embedding       (vocab, dim)              nn.Embedding.weight (vocab, dim)
Conv1D kernel   (k, in/groups, out)       nn.Conv1d.weight (out, in/groups, k)
RMSNorm scale   (n,)                      nn.RMSNorm.weight (n,)
GroupNorm       scale, bias (C,)          nn.GroupNorm.weight, bias (C,)
LSTM/GRU/RNN    kernel (C, G*H)           weight_ih_l0 (G*H, C) = kernel.T (G gates: 4, 3, 1)
                recurrent_kernel (H, G*H) weight_hh_l0 = recurrent_kernel.T
                bias (G*H)                bias_ih_l0; LSTM/RNN bias_hh_l0 frozen at 0,
                                          recurrent_bias = bias_hh_l0 (GRU; LSTM/RNN
                                          with ``recurrent_bias=True``)
                backward_*                the same on the ``*_l0_reverse`` tensors
others          see the family modules    their ``native_params`` declarations
==============  ========================  ===================================================

Sharded parameters (``--shard-params``: FSDP2 makes each parameter a ``DTensor`` whose rank
holds one shard) are read whole (``full_tensor``, a gather every rank takes part in) and
written from the whole canonical array, each rank keeping its own shard (``native_like``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from torch.distributed.tensor import DTensor, distribute_tensor

from rosetta.errors import CheckpointError
from rosetta.graph import Graph
from rosetta.backends.torch.layers import NATIVE  # op -> name -> native home (registered)
from rosetta.backends.torch.model import GraphModule


@dataclass(frozen=True)
class Slot:
    """A canonical array's native home."""

    tensor: torch.Tensor
    to_native: Callable[[np.ndarray], np.ndarray]
    to_canonical: Callable[[np.ndarray], np.ndarray]
    shape: tuple

    def canonical(self, t: torch.Tensor | None = None) -> np.ndarray:
        """``t`` (default: the slot's tensor) as a fresh canonical NumPy array."""
        t = (self.tensor if t is None else t).detach()
        if isinstance(t, DTensor):  # a shard on each rank: the whole tensor (a collective)
            t = t.full_tensor()
        t = t.cpu()
        if t.dtype in (torch.bfloat16, torch.float16):  # NumPy has no bf16: exact in float32
            t = t.float()
        return np.array(self.to_canonical(t.numpy()), order="C")


def _native_layer(module: nn.Module, cls):
    """The node's module itself, or its one child of type ``cls`` (behind padding/activation)."""
    if isinstance(module, cls):
        return module
    found = [m for m in module.children() if isinstance(m, cls)]
    if len(found) != 1:  # pragma: no cover - a lowering bug
        raise AssertionError(f"expected one {cls.__name__} in {module}")
    return found[0]


def slots(graph: Graph, model: GraphModule) -> tuple[dict[str, Slot], dict[str, Slot]]:
    """(parameter slots, state slots) by canonical path, in graph order."""
    params, state = {}, {}
    for node in graph.nodes:
        table = NATIVE.get(node.op, {})
        module = model.node_module(node.name)
        for defs, out in ((node.params, params), (node.state, state)):
            for name, d in defs.items():
                cls, attr, to_native, to_canonical = table[name]
                tensor = getattr(_native_layer(module, cls), attr)
                out[f"{node.name}/{name}"] = Slot(tensor, to_native, to_canonical, tuple(d.shape))
    covered = {id(s.tensor) for s in params.values()}
    # a frozen native parameter (requires_grad False) is a constant of the lowering, not a
    # canonical parameter: e.g. nn.LSTM's second bias, held at zero (see recurrent.py)
    extra = [n for n, p in model.named_parameters() if id(p) not in covered and p.requires_grad]
    if extra:  # pragma: no cover - a lowering bug
        raise AssertionError(f"native parameters without a canonical path: {extra}")
    return params, state


@torch.no_grad()
def load(slot_map: dict[str, Slot], arrays: dict[str, np.ndarray], what: str) -> None:
    """Copy canonical arrays into the native tensors (cast to their dtype and device)."""
    missing = [p for p in slot_map if p not in arrays]
    if missing:
        raise CheckpointError(f"{what}: missing {', '.join(missing)}")
    unknown = [p for p in arrays if p not in slot_map]
    if unknown:
        raise CheckpointError(f"{what}: unknown path(s) {', '.join(unknown)}; this model has "
                              f"{', '.join(slot_map) or 'none'}")
    for path, slot in slot_map.items():
        a = np.asarray(arrays[path])
        if a.shape != slot.shape:
            raise CheckpointError(f"{what}: {path} has shape {a.shape}, the model expects "
                                  f"{slot.shape}")
        native = np.ascontiguousarray(slot.to_native(a))
        slot.tensor.copy_(native_like(slot.tensor, native))


def native_like(like: torch.Tensor, native: np.ndarray) -> torch.Tensor:
    """The whole native-layout array ``native`` as a tensor placed as ``like`` is: its dtype and
    device, and for a sharded ``like`` (a ``DTensor``) the same mesh and placements, each rank
    keeping its own shard of the values it holds (every rank holds the same whole array; no
    communication)."""
    t = torch.tensor(np.asarray(native), dtype=like.dtype, device=like.device)  # a copy
    if isinstance(like, DTensor):
        return distribute_tensor(t, like.device_mesh, like.placements, src_data_rank=None)
    return t


def export(slot_map: dict[str, Slot]) -> dict[str, np.ndarray]:
    """Canonical copies of the native tensors."""
    return {path: slot.canonical() for path, slot in slot_map.items()}
