"""The native model: a ``flax.linen.Module`` that runs a rosetta ``Graph``.

``GraphModule(graph, dtype)`` creates one flax submodule per node that has parameters or state
(``nn.Dense``, ``nn.Conv``, ``nn.BatchNorm``, ``nn.LayerNorm``, ``nn.Embed``, ``nn.Dropout``),
named by the node name; parameter-free ops are plain ``jax.numpy`` / ``flax.linen`` functions.
It is an ordinary flax module: ``model.apply({"params": ..., "batch_stats": ...}, inputs,
train=False)`` works without rosetta. ``inputs`` is a dict {input name: batch array};
``masks`` ({Dropout node: keep-mask}, optional) replaces the dropout RNG in training.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from rosetta.errors import SpecError
from rosetta.graph import Graph

from rosetta.backends.jax.layers import LOWERINGS, Context


class GraphModule(nn.Module):
    graph: Graph
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: dict, train: bool = False, masks: dict | None = None):
        batch = next(iter(inputs.values())).shape[0]
        ctx = Context(jnp.dtype(self.dtype), train, masks, batch)
        values = dict(inputs)
        for node in self.graph.nodes:
            values[node.name] = LOWERINGS[node.op](node, [values[s] for s in node.inputs], ctx)
        outs = [values[o] for o in self.graph.outputs]
        return outs[0] if len(outs) == 1 else outs


def build_model(graph: Graph, dtype: str) -> GraphModule:
    """The flax module for ``graph``. What flax cannot run is a ``SpecError`` here, at compile
    time, not a traceback at the first step."""
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
    return GraphModule(graph=graph, dtype=jnp.dtype(dtype), name=graph.name)
