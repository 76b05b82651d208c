"""The native model: a ``tf.Module`` built from a ``Graph``, one node module per graph node.

``GraphModule(inputs, training=False, update_state=None)`` runs the nodes in topological order on a
dict ``{input name: tensor}`` (batch first, canonical layout) and returns the output (a list when
the graph has several). Under a mixed precision policy each node casts its inputs (and a
product its parameters) as ``precision.node_rules`` says. It is plain TensorFlow: variables are
tracked, so ``tf.train.Checkpoint`` and ``tf.saved_model.save`` work on it without rosetta.
"""

from __future__ import annotations

import tensorflow as tf

from rosetta.backends.tensorflow.layers import LOWERINGS, LoweringContext
from rosetta.backends.tensorflow.precision import float32_softmax_nodes, node_rules, run_node
from rosetta.errors import SpecError


class GraphModule(tf.Module):
    """A lowered ``Graph``. ``layers`` maps node name -> node module (graph order)."""

    def __init__(self, graph, dtype: tf.DType, seed: int, policy=None, frozen=()):
        """``policy``: the precision policy (``rosetta.precision``; None: the program dtype
        throughout); ``frozen``: glob patterns (``rosetta.optim.is_frozen``) of the parameters
        whose variables are made with ``trainable=False``."""
        super().__init__(name=graph.name)
        self.dtype = dtype
        # One generator for every Dropout node: each call draws a fresh seed from it.
        self.rng = tf.random.Generator.from_seed(seed)
        ctx = LoweringContext(dtype=dtype, rng=self.rng, frozen=tuple(frozen))
        self.layers = {}
        for node in graph.nodes:
            lowering = LOWERINGS.get(node.op)
            if lowering is None:
                raise SpecError(f"the tensorflow backend has no lowering for op {node.op!r}",
                                where=f"{graph.name}/{node.name}", op=node.op)
            self.layers[node.name] = lowering(node, ctx)
        self.wiring = tuple((n.name, tuple(n.inputs)) for n in graph.nodes)
        # Expand of a batch-broadcast value: called with the batch size of the run
        self.run_batch = frozenset(n.name for n in graph.nodes
                                   if n.opdef.batch_broadcast == "expands"
                                   and any(t.batch_broadcast for t in n.in_types))
        self.input_names = tuple(i.name for i in graph.inputs)
        self.input_dtypes = tuple(dtype if i.kind == "float" else tf.int64 for i in graph.inputs)
        self.output_names = tuple(graph.outputs)
        # a mixed precision policy: how each node casts (backends/tensorflow/precision.py);
        # ``recorder``: set while the precision tier traces a step
        self.precision = node_rules(graph, policy) if policy is not None else {}
        for name in float32_softmax_nodes(graph, policy) if policy is not None else ():
            self.layers[name].float32_softmax = True
        self.recorder = None

    def __call__(self, inputs: dict, training: bool = False, update_state: bool | None = None,
                 masks: dict | None = None):
        """Run the graph on ``{input name: tensor}`` (or one tensor / a list, in input order).
        ``training`` picks batch statistics and dropout; ``update_state`` (default: ``training``)
        lets BatchNorm assign its running statistics; ``masks`` ({Dropout node: keep-mask}) replaces
        the dropout RNG."""
        if not isinstance(inputs, dict):
            inputs = dict(zip(self.input_names,
                              inputs if isinstance(inputs, (list, tuple)) else [inputs]))
        update = training if update_state is None else update_state
        # float inputs in the model dtype, ids as int64 (a no-op for tensors that already are)
        values = {name: tf.cast(inputs[name], dt)
                  for name, dt in zip(self.input_names, self.input_dtypes)}
        masks = masks or {}
        for name, sources in self.wiring:
            extra = {"mask": masks[name]} if name in masks else {}
            if name in self.run_batch:
                extra["batch"] = tf.shape(values[self.input_names[0]])[0]
            args = [values[s] for s in sources]
            if self.recorder is not None:
                self.recorder.begin(name)
            rule = self.precision.get(name)
            if rule is None:
                values[name] = self.layers[name](args, training=training, update_state=update,
                                                 **extra)
            else:
                values[name] = run_node(self.layers[name], args, rule, training=training,
                                        update_state=update, **extra)
            if self.recorder is not None:
                self.recorder.end(name, values[name])
        outs = [values[o] for o in self.output_names]
        return outs[0] if len(outs) == 1 else outs

    # --- variables by canonical path --------------------------------------------------------------
    def param_variables(self) -> dict[str, tf.Variable]:
        """Trainable variables by canonical path ``node/param``, in graph order."""
        return {f"{node}/{p}": getattr(self.layers[node], p)
                for node, _ in self.wiring for p in self.layers[node].param_names}

    def state_variables(self) -> dict[str, tf.Variable]:
        """Non-trainable model state (BatchNorm running statistics) by canonical path."""
        return {f"{node}/{s}": getattr(self.layers[node], s)
                for node, _ in self.wiring for s in self.layers[node].state_names}
