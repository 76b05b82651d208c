"""The native model: a ``flax.linen.Module`` that runs a rosetta ``Graph``.

``GraphModule(graph, dtype)`` creates one flax submodule per node that has parameters or state
(``nn.Dense``, ``nn.Conv``, ``nn.BatchNorm``, ``nn.LayerNorm``, ``nn.Embed``, ``nn.Dropout``),
named by the node name; parameter-free ops are plain ``jax.numpy`` / ``flax.linen`` functions.
It is an ordinary flax module: ``model.apply({"params": ..., "batch_stats": ...}, inputs,
train=False)`` works without rosetta. ``inputs`` is a dict {input name: batch array};
``masks`` ({Dropout node: keep-mask}, optional) replaces the dropout RNG in training.

Precision (``rosetta.precision``, docs/guide/precision.md): ``dtype`` is the parameters' type
and ``types`` says, per node, the type it computes in and whether its float inputs are cast to
it first (the products and the float32 family under a mixed policy); the flax modules get
``dtype`` = that type and ``param_dtype`` = the parameters' (flax's own machinery: ``nn.Dense``
with ``dtype=bfloat16, param_dtype=float32`` casts its kernel and computes in bf16). Each node
runs in a ``jax.named_scope`` of its name, so the jaxpr says which node every primitive is of.
``every=True`` returns {node: output} instead of the outputs (the precision tier's view).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta.errors import SpecError
from rosetta.graph import Graph
from rosetta.precision import ELEMENTWISE, FLOAT32, family, node_types, policy

from rosetta.backends.jax.layers import LOWERINGS, Context

# (node, kind, op, [input dtypes]) of every float32-family node while a trace records
# (``rosetta.backends.jax.precision.trace``); None otherwise
RECORD: list | None = None


class GraphModule(nn.Module):
    graph: Graph
    dtype: Any = jnp.float32
    # ((node, type it computes in, cast its float inputs to it), ...); () : every node in dtype
    types: tuple = ()
    float32_softmax: bool = False   # attention's inner softmax in float32 (mixed policies)
    # None, or (f, the node's parameters, its inputs) -> its output, where f(parameters,
    # inputs) is the node as a pure function (``node_function``): runs each node that
    # ``runs_alone`` (sharded parameters gathered where the node runs:
    # ``rosetta.backends.jax.data_parallel``); not at init
    run_node: Any = None

    @nn.compact
    def __call__(self, inputs: dict, train: bool = False, masks: dict | None = None,
                 every: bool = False):
        batch = next(iter(inputs.values())).shape[0]
        ctx = Context(jnp.dtype(self.dtype), train, masks, batch, jnp.dtype(self.dtype),
                      self.float32_softmax)
        rules = {n: (jnp.dtype(t), cast) for n, t, cast in self.types}
        values = dict(inputs)
        for node in self.graph.nodes:
            xs = [values[s] for s in node.inputs]
            nctx = ctx
            if node.name in rules:
                t, cast = rules[node.name]
                if cast:
                    xs = [x.astype(t) if jnp.issubdtype(x.dtype, jnp.floating) else x
                          for x in xs]
                nctx = replace(ctx, dtype=t)
            if RECORD is not None and family(node.op, node.attrs) == FLOAT32:
                RECORD.append((node.name, "float32", node.op,
                               [jnp.dtype(x.dtype).name for x in xs
                                if jnp.issubdtype(x.dtype, jnp.floating)]))
            with jax.named_scope(node.name):
                if (self.run_node is not None and not self.is_initializing()
                        and runs_alone(node, nctx)):
                    values[node.name] = self.run_node(node_function(node, nctx),
                                                      self.variables["params"][node.name], xs)
                else:
                    values[node.name] = LOWERINGS[node.op](node, xs, nctx)
        if every:
            return {n.name: values[n.name] for n in self.graph.nodes}
        outs = [values[o] for o in self.graph.outputs]
        return outs[0] if len(outs) == 1 else outs


def runs_alone(node, ctx) -> bool:
    """True when the node is a pure function of its parameters and inputs here
    (``node_function``): it has parameters, no state (BatchNorm statistics), and draws nothing
    at random (a node with dropout in training runs alone only with its keep-mask injected;
    its own draw comes from the graph module's rng stream)."""
    if not node.params or node.state:
        return False
    draws = node.opdef.dropout_mask_shape(node.attrs, node.in_types, node.out_type) is not None
    return not (ctx.train and draws and not (ctx.masks and node.name in ctx.masks))


class _Node(nn.Module):
    """One node of a graph as a flax module: its lowering, whose flax submodules are named by
    the node as in ``GraphModule``."""
    node: Any
    ctx: Any

    @nn.compact
    def __call__(self, xs):
        return LOWERINGS[self.node.op](self.node, xs, self.ctx)


def node_function(node, ctx):
    """The node as a pure function ``f(its parameters {name: array}, its inputs [...])``."""
    module = _Node(node=node, ctx=ctx, name=None)

    def f(params, xs):
        return module.apply({"params": {node.name: params}}, list(xs))

    return f


def precision_rules(graph: Graph, precision: str) -> tuple:
    """``GraphModule.types`` for a policy: under a mixed one every node with the type of
    ``rosetta.precision.node_types``, the products' and the float32 family's inputs cast to it;
    () otherwise (every node in the parameters' type)."""
    pol = policy(precision)
    if not pol.mixed:
        return ()
    types = node_types(graph, pol)
    return tuple((n.name, types[n.name], family(n.op, n.attrs) != ELEMENTWISE)
                 for n in graph.nodes)


def build_model(graph: Graph, dtype: str) -> GraphModule:
    """The flax module for ``graph`` under precision ``dtype`` (a policy name). What flax
    cannot run is a ``SpecError`` here, at compile time, not a traceback at the first step."""
    for node in graph.nodes:
        where = f"{graph.name}/{node.name}"
        if node.op not in LOWERINGS:
            raise SpecError(f"the jax backend has no lowering for op {node.op!r}",
                            where=where, op=node.op)
        if node.name == "params" and node.params:
            # variables["params"]["params"] is what flax's apply() takes for a user mistake
            # (a doubly nested variables dict) and refuses.
            raise SpecError("a node with parameters cannot be named 'params' on the jax backend "
                            "(flax refuses variables['params']['params']); rename the node",
                            where=where, op=node.op)
    pol = policy(dtype)
    return GraphModule(graph=graph, dtype=jnp.dtype(pol.param), name=graph.name,
                       types=precision_rules(graph, dtype), float32_softmax=pol.mixed)
