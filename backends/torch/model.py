"""The native model: ``GraphModule``, a ``torch.nn.Module`` built from a rosetta ``Graph``.

It holds one native submodule per node in ``layers`` (an ``nn.ModuleDict`` keyed by node name)
and walks the graph in ``forward``. It takes and returns canonical (channels-last) tensors, so it
can be used without rosetta::

    y = program.model(torch.from_numpy(x_nhwc))

Inside, 4-D values are kept channels-first wherever the ops that consume them want it: a value is
permuted only when a consumer needs the other layout (once per value and layout), so a conv stack
permutes at the input edge and at its exit (Flatten, Dense, the output), not between layers. Which
layout each op runs in is decided once, at build time, by ``layers.plan_layout``.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from rosetta.graph import Graph
from rosetta.backends.torch.layers import lowering
from rosetta.backends.torch.lowering import (CHANNELS_FIRST, CHANNELS_LAST, convert_layout,
                                             plan_layout)
from rosetta.backends.torch.normalization import CanonicalBatchNorm


def _module_key(name: str, taken: nn.ModuleDict) -> str:
    """The ModuleDict key of a node: its name, with '_' appended while it clashes with an
    attribute of ``nn.ModuleDict`` (a node may be called ``train`` or ``keys``) or a key taken."""
    key = name
    while key in taken or hasattr(taken, key):
        key += "_"
    return key


class GraphModule(nn.Module):
    """A rosetta Graph as a torch module.

    ``forward(*inputs)`` takes one canonical tensor per graph input, in graph order (or a single
    dict by input name), and returns the canonical output (a tuple when the graph has several).
    ``layers[node_keys[node name]]`` is the native module of a node (the key is the node name
    unless it clashes with a ModuleDict attribute).
    """

    def __init__(self, graph: Graph):
        super().__init__()
        self.graph_name = graph.name
        self.input_names = [i.name for i in graph.inputs]
        self.output_names = list(graph.outputs)
        self.layers = nn.ModuleDict()
        self.node_keys: dict[str, str] = {}
        self._run_batch: set[str] = set()

        ranks = {name: len(t.shape) for name, t in graph.types.items()}
        produced = {name: CHANNELS_LAST for name in self.input_names}
        steps = []
        for node in graph.nodes:
            where = f"{graph.name}/{node.name}"
            low = lowering(node, where)
            in_ranks = {ranks[s] for s in node.inputs}
            # a node without inputs (Constant, Parameter) or with inputs of mixed ranks (a
            # broadcast against a lower-rank batch-broadcast value) runs channels-last
            layout = plan_layout(low.accepts, [produced[s] for s in node.inputs],
                                 in_ranks.pop() if len(in_ranks) == 1 else -1)
            key = _module_key(node.name, self.layers)
            self.layers[key] = low.build(node, layout)
            self.node_keys[node.name] = key
            produced[node.name] = layout if ranks[node.name] == 3 else CHANNELS_LAST
            steps.append((key, node.name, tuple(node.inputs), layout, produced[node.name]))
            if node.opdef.batch_broadcast == "expands" and any(
                    t.batch_broadcast for t in node.in_types):
                self._run_batch.add(key)   # Expand of a shared value: to the run's batch

        # drop each value after its last use, so eval does not hold every activation
        last_use = {}
        for i, (_, _, srcs, _, _) in enumerate(steps):
            for s in srcs:
                last_use[s] = i
        for o in self.output_names:
            last_use[o] = len(steps)
        self._steps = [(key, name, srcs, layout, out_layout,
                        tuple(s for s in dict.fromkeys(srcs) if last_use[s] == i))
                       for i, (key, name, srcs, layout, out_layout) in enumerate(steps)]
        self._chain = self._plan_chain(steps)

    def _plan_chain(self, steps):
        """For a plain chain (one input, each node consuming the one before, the last node the
        one output): [(layout conversion or None, native modules to apply in turn)], plus the
        conversion back to channels-last at the exit. ``forward`` then runs it as
        ``nn.Sequential`` would, without the general graph walk (its dict bookkeeping and the
        ``Sequential`` wrappers of fused layers cost 20-30 us a step on a CPU, 2-5 % of a small
        model's training step). None for any other graph."""
        if len(self.input_names) != 1 or len(self.output_names) != 1 or not steps:
            return None
        prev, current, plan = self.input_names[0], CHANNELS_LAST, []
        for key, name, srcs, layout, out_layout in steps:
            if srcs != (prev,):
                return None
            module = self.layers[key]
            mods = list(module) if type(module) is nn.Sequential else [module]
            plan.append(((current, layout) if layout != current else None, mods, key))
            prev, current = name, out_layout
        if self.output_names[0] != prev:
            return None
        return plan, ((current, CHANNELS_LAST) if current != CHANNELS_LAST else None)

    # {module key: (autocast dtype or None, cast float inputs to float32)}: how a mixed
    # precision policy runs each node that is not elementwise (``set_precision``)
    precision: dict = {}

    def set_precision(self, rules: dict[str, tuple]) -> None:
        """{node name: (low torch dtype, False)} for a product (run under ``torch.autocast`` to
        the low type: its matmuls and convolutions cast their inputs and weights), or (None,
        True) for a float32 op (float inputs cast to float32, autocast off). Nodes not named run
        as they are (in their inputs' type)."""
        self.precision = {self.node_keys[n]: r for n, r in rules.items()}

    def _in_precision(self, key, mods, args):
        low, up = self.precision[key]
        if up:
            args = [a.float() if a.is_floating_point() else a for a in args]
        device = args[0].device.type
        with torch.autocast(device, dtype=low, enabled=low is not None):
            x = mods[0](*args)
            for m in mods[1:]:
                x = m(x)
        return x

    def node_module(self, name: str) -> nn.Module:
        """The native module lowered from node ``name``."""
        return self.layers[self.node_keys[name]]

    def forward(self, *inputs):
        if len(inputs) == 1 and isinstance(inputs[0], dict):
            inputs = tuple(inputs[0][n] for n in self.input_names)
        if self._chain is not None:
            plan, exit_conversion = self._chain
            (x,) = inputs
            for conversion, mods, key in plan:
                if conversion is not None:
                    x = convert_layout(x, *conversion)
                if key in self.precision:
                    x = self._in_precision(key, mods, (x,))
                    continue
                for m in mods:
                    x = m(x)
            return x if exit_conversion is None else convert_layout(x, *exit_conversion)
        values = {name: {CHANNELS_LAST: x} for name, x in zip(self.input_names, inputs)}
        batch = inputs[0].shape[0]
        for key, name, srcs, layout, out_layout, done in self._steps:
            args = [_in_layout(values[s], layout) for s in srcs]
            if key in self._run_batch:
                args.append(batch)
            values[name] = {out_layout: (self._in_precision(key, [self.layers[key]], args)
                                         if key in self.precision else self.layers[key](*args))}
            for s in done:
                del values[s]
        outs = tuple(_in_layout(values[o], CHANNELS_LAST) for o in self.output_names)
        return outs[0] if len(outs) == 1 else outs


def _in_layout(versions: dict, layout: str) -> torch.Tensor:
    """A value in ``layout``, converting (and remembering the conversion) on first request."""
    x = versions.get(layout)
    if x is None:
        src = CHANNELS_FIRST if layout == CHANNELS_LAST else CHANNELS_LAST
        x = versions[layout] = convert_layout(versions[src], src, layout)
    return x


def build_model(graph: Graph, device: torch.device, dtype: torch.dtype, *,
                empty_params: bool = False) -> GraphModule:
    """The GraphModule on ``device`` in ``dtype``. Construction runs inside a forked RNG so torch's
    own initializers (overwritten by ``Program.load``) leave the global torch RNG untouched.

    ``empty_params``: every parameter is left on the meta device (no memory; buffers are made as
    usual): the FSDP2 way to build a model that is sharded before its values exist
    (``data_parallel.shard_model`` then ``materialize``)."""
    with torch.random.fork_rng(devices=[]), (parameters_on_meta() if empty_params
                                             else nullcontext()):
        model = GraphModule(graph)
    if empty_params:
        return model.to(dtype=dtype)
    return model.to(device=device, dtype=dtype)


@contextmanager
def parameters_on_meta():
    """While active, every ``nn.Parameter`` a module registers is moved to the meta device as it
    is registered (one layer's initial values exist at a time, then none); buffers (constants,
    masks, BatchNorm statistics) stay real. (``torch.device("meta")`` as a context would also
    empty the buffers a lowering computes, and ``to_empty`` would lose their values.)"""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def materialize(model: nn.Module, device: torch.device) -> None:
    """Give every meta parameter of ``model`` (sharded or not) uninitialised memory on
    ``device`` (``Module.to_empty``), keeping the buffers' values (moved to ``device``) and
    setting again the parameters a lowering holds constant (a module's ``reset_constants``);
    the caller then loads the canonical values (``Program.load``)."""
    kept = [(m, name, b) for m in model.modules() for name, b in m._buffers.items()
            if b is not None]
    model.to_empty(device=device)
    for m, name, b in kept:
        m._buffers[name] = b.to(device)
    for m in model.modules():   # parameters that are constants of a lowering, not canonical
        if hasattr(m, "reset_constants"):
            m.reset_constants()


def batch_norms(model: nn.Module) -> list[CanonicalBatchNorm]:
    return [m for m in model.modules() if isinstance(m, CanonicalBatchNorm)]


@contextmanager
def running_stats_frozen(norms: list[CanonicalBatchNorm]):
    """Training-mode BatchNorm (batch statistics) without updating the running statistics."""
    for m in norms:
        m.update_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.update_running_stats = True


__all__ = ["GraphModule", "build_model", "batch_norms", "running_stats_frozen"]
