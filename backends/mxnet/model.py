"""The native model: Gluon ``HybridBlock``s built from a rosetta ``Graph``.

``NodeBlock`` is one node: a HybridBlock that owns the node's parameters (Gluon ``Parameter``s
named ``<node>_<name>``, in canonical layout) and runs its lowering. ``GraphBlock`` walks the
graph over the node blocks; the program builds two of them over the SAME node blocks (so the same
parameters): ``train`` (batch statistics, dropout) and ``eval`` (running statistics, no dropout),
each hybridized (``HybridBlock.hybridize()``: MXNet's compiled mode, one cached graph per
block) in mode ``hybrid``, run as is in mode ``imperative``. Not ``static_alloc=True``: with it,
MXNet 1.9.1 returns wrong gradients when one operator takes the same value twice
(``Concatenate([c, c])``: measured on tests/cases.py's ``dag_residual_concat_reshape``, a
gradient of the wrong sign, while the imperative run and the plain hybridized one match the
finite differences). They are ordinary Gluon blocks, usable without rosetta::

    y = program.model(mx.nd.array(x_nhwc, dtype="float64"))      # eval, canonical layout

Calling convention: one canonical array per graph input, in graph order (integer inputs such as
token ids and lengths in the model's float dtype), then for ``train`` one dropout scale
(keep-mask / (1 - rate), per example) per node that draws one. ``eval`` returns the output;
``train`` returns (output, mean_1, var_1, mean_2, var_2, ...): the batch statistics of each
node whose op keeps running statistics (``OpDef.running_stats``: BatchNorm, ...; ``stat_nodes``),
which the program folds into the running statistics.
"""

from __future__ import annotations

import warnings

import mxnet as mx
from mxnet.gluon import HybridBlock

from rosetta.errors import BackendUnavailable
from rosetta.graph import Graph
from rosetta.backends.mxnet.layers import LOWERINGS, Context

# the training block does not read BatchNorm's running statistics (the program folds them), and
# Gluon notes every parameter a cached graph leaves unused
warnings.filterwarnings("ignore", message="Parameter .* is not used by any computation",
                        category=UserWarning)


class NodeBlock(HybridBlock):
    """One graph node: its parameters (attribute = canonical name) and its lowering."""

    def __init__(self, node, dtype: str, key: str):
        super().__init__(prefix=f"{key}_")
        self.node = node
        self.ctx = Context(training=False, dtype=dtype)
        with self.name_scope():
            for defs, grad in ((node.params, "write"), (node.state, "null")):
                for name, d in defs.items():
                    setattr(self, name, self.params.get(
                        name, shape=tuple(d.shape), dtype=dtype, init=mx.init.Zero(),
                        grad_req=grad, differentiable=grad != "null",
                        allow_deferred_init=False))
            if node.op == "Constant":   # a Gluon constant in the program dtype (never trained)
                value = node.attrs["value"][None]
                self.value = self.params.get_constant(
                    "value", mx.nd.array(value, dtype=dtype))

    def hybrid_forward(self, F, *xs, **params):
        return LOWERINGS[self.node.op](F, self.node, list(xs), params, self.ctx)


def _key(name: str, taken: set) -> str:
    """A Gluon-safe prefix for a node: its name with '/' and '.' made '_' (unique)."""
    key = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    while key in taken:
        key += "_"
    taken.add(key)
    return key


class GraphBlock(HybridBlock):
    """A rosetta Graph over shared ``NodeBlock``s, traced in training or eval mode."""

    def __init__(self, graph: Graph, nodes: dict, training: bool, dtype: str):
        super().__init__(prefix=f"{graph.name}_{'train' if training else 'eval'}_")
        self.training = training
        self.dtype = dtype
        self.input_names = [i.name for i in graph.inputs]
        self.output_names = list(graph.outputs)
        self._nodes = [(node, nodes[node.name]) for node in graph.nodes]
        # nodes called with the first model input after their inputs, for the batch of the run:
        # those without inputs (a HybridBlock takes at least one) and Expand of a shared value
        self._run_batch = {n.name for n in graph.nodes if not n.inputs or (
            n.opdef.batch_broadcast == "expands" and any(t.batch_broadcast
                                                         for t in n.in_types))}
        for node, block in self._nodes:
            self.register_child(block, node.name)
        self.mask_nodes = [n.name for n in graph.nodes if training and
                           n.opdef.dropout_mask_shape(n.attrs, n.in_types, n.out_type)
                           is not None] if training else []
        self.stat_nodes = [n.name for n in graph.nodes if n.opdef.running_stats] if training \
            else []

    def hybrid_forward(self, F, *args):
        n_in = len(self.input_names)
        values = dict(zip(self.input_names, args[:n_in]))
        scales = dict(zip(self.mask_nodes, args[n_in:]))
        stats: list = []
        for node, block in self._nodes:
            block.ctx = Context(self.training, self.dtype, scales.get(node.name), stats)
            args = [values[s] for s in node.inputs]
            if node.name in self._run_batch:
                args.append(values[self.input_names[0]])
            values[node.name] = block(*args)
        outs = [values[o] for o in self.output_names]
        flat = [t for _, mean, var in stats for t in (mean, var)]
        if len(outs) == 1 and not flat:
            return outs[0]
        return tuple(outs + flat)


def build_model(graph: Graph, dtype: str, context, hybridize: bool):
    """(node blocks by name, train GraphBlock, eval GraphBlock), parameters initialised to zero
    on ``context`` (``Program.load`` sets them). An op without a lowering is a
    ``BackendUnavailable`` naming the node and the op here, at compile time."""
    taken: set = set()
    nodes = {}
    for node in graph.nodes:
        where = f"{graph.name}/{node.name}"
        if node.op not in LOWERINGS:
            raise BackendUnavailable(f"{where}: the mxnet backend cannot lower op {node.op!r} "
                                     f"(it lowers {', '.join(sorted(LOWERINGS))})")
        nodes[node.name] = NodeBlock(node, dtype, _key(node.name, taken))
    train = GraphBlock(graph, nodes, True, dtype)
    evaluate = GraphBlock(graph, nodes, False, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gluon's "initialised to zero" notes
        train.collect_params().initialize(ctx=context)
    if hybridize:
        for block in (train, evaluate):
            block.hybridize()
    return nodes, train, evaluate


__all__ = ["NodeBlock", "GraphBlock", "build_model"]
