"""Precision policies on JAX (docs/guide/precision.md): the pieces of the lowering the program
uses, and what a JAX program really computes in (the precision tier).

The lowering (``rosetta.precision``'s table; JAX has no autocast, so the policy is explicit):

* the parameters, batch statistics and optimizer state are kept in the policy's ``param`` type
  (float32 masters under a mixed policy, bf16 under ``bfloat16``); float inputs are cast to it
  inside the compiled step (``cast_floats``);
* under a mixed policy every product node's parameters are cast to the low type before the
  model runs (``product_caster``): the transpose of that cast returns their gradients in
  float32, the masters' type, before clipping and the update; the node's float inputs are cast
  by ``GraphModule`` (``model.precision_rules``), whose flax modules run with ``dtype`` = the
  node's type and ``param_dtype`` = the masters';
* the loss is computed in float32 under a mixed policy (``loss``), float targets in the loss's
  type;
* ``mixed_float16``: the gradients of loss * scale are divided by scale in float32; the update
  is applied only where every element is finite (``all_finite``, ``select``); the rule's state
  (``rosetta.precision.LossScale``) is kept on the host, which is told whether the step was
  finite;
* the steps of a low precision are compiled with ``xla_allow_excess_precision`` off
  (``jit_for``): XLA's CPU backend computes bf16 / float16 elementwise ops in float32 and by
  default may drop the rounding between fused ops; off, each op's result is rounded to the type
  it is written in, so the type the policy names is the type computed.

The tier (``trace``, ``node_outputs``; ``rosetta.conformance.precision``): ``trace`` reads the
jaxpr of one training step: the input types of every product primitive (``dot_general``,
``conv_general_dilated``) by the node whose ``jax.named_scope`` it runs in (forward and
backward), the types of the scores entering the softmax inside attention, the types a
float32-family node (normalisation, softmax, reductions) takes its inputs in, the type of every
node's output, of the loss, the parameters, their gradients and the optimizer slots.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rosetta.precision import PRODUCT, Policy, family

# XLA keeps bf16 / float16 intermediates in float32 across fused ops unless this is off
COMPILER_OPTIONS = {"xla_allow_excess_precision": False}
PRODUCT_PRIMITIVES = ("dot_general", "conv_general_dilated")


# --- the lowering ------------------------------------------------------------------------------
def jit_for(pol: Policy):
    """``jax.jit`` for the steps of ``pol``: excess precision off for the low precisions."""
    if pol.low in ("bfloat16", "float16"):
        return functools.partial(jax.jit, compiler_options=COMPILER_OPTIONS)
    return jax.jit


def cast_floats(tree, dtype):
    """Every floating leaf of ``tree`` in ``dtype`` (integer leaves, ids and lengths, kept)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating)
                        else a, tree)


def product_caster(graph, pol: Policy):
    """params -> params with every product node's parameters in ``pol.low`` (a mixed policy);
    the identity otherwise."""
    if not pol.mixed:
        return lambda params: params
    low = jnp.dtype(pol.low)
    products = {n.name for n in graph.nodes if family(n.op, n.attrs) == PRODUCT}

    def cast(params):
        return {node: (cast_floats(leaves, low) if node in products else leaves)
                for node, leaves in params.items()}
    return cast


def loss(loss_fn, out, labels, pol: Policy):
    """The loss of the model output ``out``: in float32 under a mixed policy (the output of a
    product arrives in the low type), else in the parameters' type; float targets in it too."""
    t = jnp.dtype("float32" if pol.mixed else pol.param)
    out = [o.astype(t) for o in out] if isinstance(out, list) else out.astype(t)
    if jnp.issubdtype(labels.dtype, jnp.floating):
        labels = labels.astype(t)
    return loss_fn(out, labels)


def all_finite(tree):
    """True (a device bool) when every element of every leaf is finite."""
    leaves = [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def select(finite, new, old):
    """``new`` where ``finite``, else ``old``, leaf by leaf (the skipped update)."""
    return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)


# --- the tier ------------------------------------------------------------------------------------
def _name(dtype) -> str:
    return jnp.dtype(dtype).name


def _sub_jaxprs(value):
    from jax.extend import core as jcore

    for v in (value if isinstance(value, (list, tuple)) else (value,)):
        if isinstance(v, jcore.ClosedJaxpr):
            yield v.jaxpr
        elif isinstance(v, jcore.Jaxpr):
            yield v


def _eqns(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs inside it (jit, scan, custom_jvp, ...)."""
    for e in jaxpr.eqns:
        yield e
        for v in e.params.values():
            for sub in _sub_jaxprs(v):
                yield from _eqns(sub)


def _scopes(eqn) -> list[str]:
    """The named scopes an equation runs in, outermost first, without the autodiff wrappers
    (``jvp(...)``, ``transpose(...)``)."""
    out = []
    for part in str(eqn.source_info.name_stack).split("/"):
        while "(" in part and part.endswith(")"):
            part = part[part.index("(") + 1:-1]
        if part:
            out.append(part)
    return out


def _step_args(program, x, y, masks):
    """The raw train step function and its arguments for host batch ``x``, ``y``."""
    xs, ys = program.check_batch(x, y)
    nx, ny = program._native_batch(xs, ys)
    scale = program._scale()
    if not program._mask_draws:
        return program._raw["train_step_plain"], (program.params, program.batch_stats,
                                                   program.opt_state, nx, ny, scale), 3
    m = program._native_masks(program.check_masks(masks, len(ys)))
    return program._raw["train_step"], (program.params, program.batch_stats, program.opt_state,
                                        program._step, program.rng, nx, ny, m, scale), 4


def trace(program, x, y, masks=None) -> dict:
    """What one ``train_step`` of ``program`` on host arrays computes in, read from its jaxpr
    (nothing runs): {"nodes": {node: dtype}, "kernels": [(node, kind, primitive, [input
    dtypes])], "loss": dtype, "params"/"grads"/"opt": {path: dtype}}, as
    ``rosetta.conformance.precision.check_types`` reads it."""
    from rosetta.backends.jax import model as model_mod
    from rosetta.backends.jax.optimizers import slots

    fn, args, loss_at = _step_args(program, x, y, masks)
    names = {n.name for n in program.graph.nodes}
    model_mod.RECORD = []
    try:
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        kernels = list(model_mod.RECORD)
    finally:
        model_mod.RECORD = None
    for e in _eqns(closed.jaxpr):
        scopes = _scopes(e)
        node = next((s for s in scopes if s in names), None)
        if node is None:
            continue
        dts = [_name(v.aval.dtype) for v in e.invars
               if hasattr(v.aval, "dtype") and jnp.issubdtype(v.aval.dtype, jnp.floating)]
        if e.primitive.name in PRODUCT_PRIMITIVES:
            kernels.append((node, "product", e.primitive.name, dts))
        elif e.primitive.name == "exp" and "softmax" in scopes[scopes.index(node) + 1:]:
            kernels.append((node, "softmax", "softmax exp", dts))
    loss = _name(out_shape[loss_at].dtype)   # the step's outputs are trees: the loss's own
    xs, ys = program.check_batch(x, y)
    nx, _ = program._native_batch(xs, ys)
    m = program._cast_masks(program.check_masks(masks, len(ys)))
    outs = jax.eval_shape(lambda p, s, i: program._apply(p, s, i, True, None if m else
                                                         program.rng, m, every=True)[0],
                          program.params, program.batch_stats, nx)
    gshape = jax.eval_shape(lambda p: jax.grad(lambda q: sum(
        jnp.sum(v.astype(jnp.float32)) for v in jax.tree.leaves(q)))(p), program.params)
    flat = lambda tree: {f"{n}/{k}": _name(a.dtype) for n, leaves in tree.items()
                         for k, a in leaves.items()}
    opt = {f"{slot}/{path}": d for slot, tree in slots(program.opt_state).items()
           for path, d in flat(tree).items()}
    return {"nodes": {k: _name(v.dtype) for k, v in outs.items()}, "kernels": kernels,
            "loss": loss, "params": flat(program.params), "grads": flat(gshape), "opt": opt}


def node_outputs(program, x, masks=None) -> dict[str, np.ndarray]:
    """{node: its output of a training forward (batch statistics untouched), float64} on host
    inputs ``x`` with the keep-masks ``masks`` (else those the next step draws)."""
    xs = program._native_inputs(program.check_inputs(x))
    batch = len(next(iter(xs.values())))
    m = program._cast_masks(program.check_masks(masks, batch))
    rng = None if not program._mask_draws else jax.random.fold_in(program.rng, program._step)
    if getattr(program, "_every_node", None) is None:   # compiled once per program
        program._every_node = jax.jit(
            lambda p, s, i, r, mm: program._apply(p, s, i, True, r, mm, every=True)[0])
    outs = program._every_node(program.params, program.batch_stats, xs, rng, m)
    return {k: np.asarray(jax.device_get(v)).astype(np.float64) for k, v in outs.items()
            if jnp.issubdtype(v.dtype, jnp.floating)}
