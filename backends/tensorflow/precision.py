"""Precision policies on TensorFlow: how a mixed policy runs each node, and what the lowered step
really computes in (the precision tier, docs/guide/precision.md).

The backend builds its own graph of ``tf`` ops (no Keras layers), so the policy is lowered with
explicit casts, node by node (``node_rules``, applied by ``GraphModule``):

* a product (Dense, convolutions, MatMul, attention, recurrent): its float inputs and its
  parameters are cast to the low type (``tf.cast`` of the float32 master variable: the gradient
  of the cast brings the product's low-type gradient back to float32); attention's softmax runs
  in float32 (its scores cast up, its weights cast back: ``float32_softmax``);
* a float32 op (normalisation, softmax, reductions, average pooling): its float inputs cast to
  float32;
* any other op: its float inputs cast to the widest float type among them (float32 where one
  is float32), its parameters (PositionEmbedding's table) to that type.

``bfloat16`` needs no rule: the variables, the inputs and so every op are bf16.

``trace`` traces one training step (the program's own step body, traced again into a fresh
``ConcreteFunction``; nothing runs) and reads from that graph, in the neutral form
``rosetta.conformance.precision.check_types`` reads: the dtype of every node's output, the input
dtypes of every product kernel (MatMul, BatchMatMul, Einsum, Conv2D, ...) and every float32-family
kernel (Softmax, Mean, Rsqrt, ...) each node created, the loss's dtype, and the dtypes of the
parameters, of their gradients as the update receives them and of the optimizer slots.
``node_outputs`` is every node's output of a training forward, as float64.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import tensorflow as tf

from rosetta.precision import FLOAT32, INNER_SOFTMAX, PRODUCT, family

# TensorFlow graph op types by what the policy says of them
PRODUCT_KERNELS = {"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum",
                   "Conv2D", "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput",
                   "BlockLSTM", "BlockLSTMV2"}
FLOAT32_KERNELS = {"Softmax", "LogSoftmax", "Mean", "Sum", "Max", "Rsqrt", "Sqrt",
                   "SquaredDifference", "FusedBatchNormV3", "AvgPool", "AvgPool3D", "RealDiv"}
SOFTMAX_KERNELS = {"Softmax", "LogSoftmax"}
FLOATS = (tf.float64, tf.float32, tf.bfloat16, tf.float16)


# --- the lowering ------------------------------------------------------------------------------
def node_rules(graph, pol) -> dict[str, tuple]:
    """{node: (kind, dtype)} for a mixed policy: ``("cast", low)`` for a product (inputs and
    parameters in the low type), ``("cast", float32)`` for a float32 op (its inputs), and
    ``("widest", None)`` for every other node with float inputs; {} for any other policy."""
    if not pol.mixed:
        return {}
    low = tf.as_dtype(pol.low)
    rules = {}
    for node in graph.nodes:
        fam = family(node.op, node.attrs)
        rules[node.name] = (("cast", low) if fam == PRODUCT else
                            ("cast", tf.float32) if fam == FLOAT32 else ("widest", None))
    return rules


def widest(xs) -> tf.DType | None:
    """float32 if a float input is float32, else the first float input's type (None: none)."""
    floats = [x.dtype for x in xs if x.dtype in FLOATS]
    if not floats:
        return None
    return tf.float32 if tf.float32 in floats else floats[0]


def cast_inputs(xs, dtype):
    """The float inputs as ``dtype``; ids (ints) as they are."""
    if dtype is None:
        return xs
    return [tf.cast(x, dtype) if x.dtype in FLOATS and x.dtype != dtype else x for x in xs]


@contextmanager
def params_as(module, dtype, names=None):
    """Within the block, ``module``'s parameters (``param_names``) read as ``tf.cast(variable,
    dtype)``: the lowering's ``self.kernel`` is the low-type copy, whose gradient the cast
    carries back to the float32 master. ``object.__setattr__`` leaves tf.Module's tracking (and
    so checkpoints) on the variables."""
    names = module.param_names if names is None else names
    saved = {n: getattr(module, n) for n in names}
    try:
        for n, v in saved.items():
            if v.dtype != dtype:
                object.__setattr__(module, n, tf.cast(v, dtype))
        yield
    finally:
        for n, v in saved.items():
            object.__setattr__(module, n, v)


def run_node(module, xs, rule, **kw):
    """Call a node module under its mixed-policy ``rule`` (``node_rules``)."""
    kind, dtype = rule
    if kind == "widest":
        dtype = widest(xs)
        if dtype is None or dtype == tf.float32 or not module.param_names:
            return module(cast_inputs(xs, dtype), **kw)
        with params_as(module, dtype):
            return module(cast_inputs(xs, dtype), **kw)
    xs = cast_inputs(xs, dtype)
    if dtype == tf.float32 or not module.param_names:
        return module(xs, **kw)
    with params_as(module, dtype):
        return module(xs, **kw)


# --- what the step computes in ------------------------------------------------------------------
class Recorder:
    """Collects, while a step is traced, each node's output and the graph ops its call made
    (``GraphModule`` calls ``begin`` before and ``end`` after each node)."""

    def __init__(self):
        self.nodes, self.ops = {}, {}
        self._mark = 0

    def begin(self, node):
        self._mark = len(tf.compat.v1.get_default_graph().get_operations())

    def end(self, node, out):
        ops = tf.compat.v1.get_default_graph().get_operations()[self._mark:]
        self.ops.setdefault(node, []).extend(ops)
        self.nodes.setdefault(node, out)


def _name(dtype) -> str | None:
    return tf.as_dtype(dtype).name if tf.as_dtype(dtype) in FLOATS else None


def trace(program, x, y, masks=None) -> dict:
    """The types of one training step of ``program`` on host arrays: its step body traced into
    a fresh graph (nothing runs: the program does not move). {"nodes": {node: dtype},
    "kernels": [(node, kind, op type, [input dtypes])], "loss": dtype, "params"/"grads"/"opt":
    {path: dtype}}; grads are those the optimizer's update receives (after the loss scale's
    unscaling, under mixed_float16)."""
    graph = program.graph
    by_name = {n.name: n for n in graph.nodes}
    batch = program._native_batch(*program.check_batch(x, y))
    given = program._native_masks(program.check_masks(masks, len(y))) if masks else None
    rec = Recorder()
    seen = {}

    def body(inputs, labels, m):
        loss, grads = program._traced_step(inputs, labels, m)
        seen["loss"], seen["grads"] = loss, grads
        return loss

    args = [tf.nest.map_structure(tf.convert_to_tensor, a) for a in batch]
    if given is not None:
        args.append(tf.nest.map_structure(tf.convert_to_tensor, given))
    fn = tf.function(lambda *a: body(a[0], a[1], a[2] if len(a) > 2 else None), autograph=False)
    program.model.recorder = rec
    try:
        with tf.device(program.tf_device):
            fn.get_concrete_function(*args)
    finally:
        program.model.recorder = None
    nodes, kernels = {}, []
    for name, out in rec.nodes.items():
        outs = out if isinstance(out, (list, tuple)) else [out]
        nodes[name] = _name(outs[0].dtype)
        fam = family(by_name[name].op, by_name[name].attrs)
        for op in rec.ops.get(name, []):
            t = op.type
            if t in PRODUCT_KERNELS:
                kind = "product"
            elif t in SOFTMAX_KERNELS:
                kind = "softmax"
            elif t in FLOAT32_KERNELS and fam == FLOAT32:
                kind = "float32"
            else:
                continue
            dts = [_name(i.dtype) for i in op.inputs if tf.as_dtype(i.dtype) in FLOATS]
            kernels.append((name, kind, t, dts))
    paths = list(program.param_vars)
    opt = {}
    for slot, table in program.optimizer.slots.items():
        for key, var in table.items():
            opt[f"{slot}/{key}"] = _name(var.dtype)
    return {"nodes": nodes, "kernels": kernels, "loss": _name(seen["loss"].dtype),
            "params": {p: _name(v.dtype) for p, v in program.param_vars.items()},
            "grads": {p: _name(g.dtype) for p, g in zip(paths, seen["grads"])},
            "opt": opt}


def node_outputs(program, x, masks=None) -> dict[str, np.ndarray]:
    """{node: its output of a training forward (running statistics untouched), float64} on
    host inputs ``x`` (eagerly: the node modules are the step's)."""
    xs = program._native_inputs(program.check_inputs(x))
    batch = len(next(iter(xs.values()))) if xs else 0
    given = program._native_masks(program.check_masks(masks, batch)) if masks else None
    rec = Recorder()
    rec.begin = lambda node: None
    rec.end = lambda node, out: rec.nodes.__setitem__(node, out)
    program.model.recorder = rec
    try:
        with tf.device(program.tf_device):
            inputs = {k: tf.convert_to_tensor(v) for k, v in xs.items()}
            program._forward_training(inputs, given)
    finally:
        program.model.recorder = None
    out = {}
    for n, t in rec.nodes.items():
        if not isinstance(t, (list, tuple)) and t.dtype in FLOATS:
            out[n] = tf.cast(t, tf.float64).numpy()
    return out


def float32_softmax_nodes(graph, pol) -> tuple[str, ...]:
    """The attention nodes whose softmax a mixed policy runs in float32."""
    return tuple(n.name for n in graph.nodes if pol.mixed and n.op in INNER_SOFTMAX)
