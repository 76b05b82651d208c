"""What a torch program really computes in (the precision tier, docs/guide/precision.md).

``trace`` runs one training step under a ``TorchDispatchMode`` and forward hooks on every node's
module and reports, in the neutral form ``rosetta.conformance.precision.check_types`` reads:
the dtype of every node's output, the dtypes of the float inputs of every product (matmul,
convolution) and every float32-family kernel (softmax, normalisation) ATen ran inside each node,
the loss's dtype, and the dtypes of the parameters, their gradients and the optimizer slots.
``node_outputs`` is every node's output of a training forward, in canonical layout, as float64.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rosetta.backends.torch.lowering import CHANNELS_LAST, convert_layout
from rosetta.backends.torch.model import running_stats_frozen

# ATen kernels by what the policy says of them (the overload packet's name)
PRODUCT_KERNELS = {"mm", "addmm", "bmm", "baddbmm", "convolution", "_convolution",
                   "mkldnn_rnn_layer", "_scaled_dot_product_flash_attention_for_cpu",
                   "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention"}
FLOAT32_KERNELS = {"_softmax", "_log_softmax", "native_layer_norm", "native_batch_norm",
                   "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
                   "native_group_norm", "_fused_rms_norm", "var_mean", "mean", "avg_pool2d",
                   "_adaptive_avg_pool2d", "avg_pool1d"}
SOFTMAX_KERNELS = {"_softmax", "_log_softmax"}
DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32", torch.bfloat16: "bfloat16",
               torch.float16: "float16"}


class _Kernels(TorchDispatchMode):
    """Records (current node, kernel kind, float input dtypes) for the kernels of the tables."""

    def __init__(self, where):
        super().__init__()
        self.where, self.seen = where, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        node = self.where[-1] if self.where else None
        if node is not None and (name in PRODUCT_KERNELS or name in FLOAT32_KERNELS):
            dts = [DTYPE_NAMES[a.dtype] for a in args
                   if isinstance(a, torch.Tensor) and a.dtype in DTYPE_NAMES]
            kind = "product" if name in PRODUCT_KERNELS else (
                "softmax" if name in SOFTMAX_KERNELS else "float32")
            self.seen.append((node, kind, name, dts))
        return func(*args, **(kwargs or {}))


@contextmanager
def _hooked(program, on_output):
    """Forward hooks on every node's module (the graph walk, not the chain shortcut): ``where``
    the stack of nodes running, ``on_output(node, output, out_layout)`` after each."""
    model, where, handles = program.model, [], []
    chain, model._chain = model._chain, None
    layouts = {name: out_layout for _, name, _, _, out_layout, _ in model._steps}
    try:
        for node in program.graph.nodes:
            m = model.node_module(node.name)
            handles.append(m.register_forward_pre_hook(
                lambda mod, args, n=node.name: where.append(n)))
            handles.append(m.register_forward_hook(
                lambda mod, args, out, n=node.name: _after(where, on_output, n, out,
                                                           layouts[n])))
        yield where
    finally:
        for h in handles:
            h.remove()
        model._chain = chain


def _after(where, on_output, node, out, layout) -> None:
    """A forward hook's body: leave ``node`` and report its output (returns None: a hook that
    returns something replaces the module's output)."""
    where.pop()
    on_output(node, out, layout)


def trace(program, x, y, masks=None) -> dict:
    """One ``train_step`` of ``program`` on host arrays, traced (it moves the program: reload
    it after). {"nodes": {node: dtype}, "kernels": [(node, kind, kernel, [input dtypes])],
    "loss": dtype, "params"/"grads"/"opt": {path: dtype}}."""
    nodes = {}
    with _hooked(program, lambda n, out, _: nodes.__setitem__(n, DTYPE_NAMES.get(out.dtype))) \
            as where:
        losses = []
        h = program.loss_fn.register_forward_hook(
            lambda mod, args, out: losses.append(DTYPE_NAMES.get(out.dtype)))
        mode = _Kernels(where)
        try:
            with mode:
                program.train_step(x, y, masks=masks)
        finally:
            h.remove()
    slots = program._params
    opt = {}
    for path, s in slots.items():
        for native, slot in (program.optimizer.state.get(s.tensor, {}) or {}).items():
            if isinstance(slot, torch.Tensor) and slot.dim() > 0:
                opt[f"{native}/{path}"] = DTYPE_NAMES.get(slot.dtype)
    return {"nodes": nodes, "kernels": mode.seen, "loss": losses[0] if losses else None,
            "params": {p: DTYPE_NAMES.get(s.tensor.dtype) for p, s in slots.items()},
            "grads": {p: DTYPE_NAMES.get(s.tensor.grad.dtype) for p, s in slots.items()
                      if s.tensor.grad is not None},
            "opt": opt}


def node_outputs(program, x, masks=None) -> dict[str, np.ndarray]:
    """{node: its output of a training forward (running statistics untouched), canonical
    layout, float64} on host inputs ``x``."""
    out = {}

    def keep(n, t, layout):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            t = t.detach()
            if t.dim() == 4 and layout != CHANNELS_LAST:
                t = convert_layout(t, layout, CHANNELS_LAST)
            out[n] = t.to(torch.float64).cpu().numpy()

    xs = program._native_inputs(program.check_inputs(x))
    batch = len(xs[0]) if xs else 0
    program._mode(training=True)
    with _hooked(program, keep), torch.no_grad(), running_stats_frozen(program._norms), \
            program._dropout(batch, advance=False, masks=program.check_masks(masks, batch)):
        program._run(*xs)
    return out
