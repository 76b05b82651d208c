"""Optimizer and schedule lowering to ``optax.GradientTransformation``s.

Canonical math (``rosetta.optim``) and the optax form that computes it:

* SGD: g += wd * p (coupled); v = mu * v + g; p -= lr * v, nesterov p -= lr * (g + mu * v).
  ``chain(add_decayed_weights(wd), sgd(lr, momentum, nesterov))``: ``add_decayed_weights`` runs
  first, so momentum sees g + wd * p; ``optax.trace`` keeps v = g + mu * v (lr not folded in) and
  its nesterov output is g + mu * v_new. momentum 0 -> ``momentum=None`` (no trace state).
* Adam: ``optax.adam(eps_root=0)``: m_hat / (sqrt(v_hat) + eps) with bias correction 1 - b^k,
  k = t + 1, eps added after the square root.
* AdamW: ``optax.adamw``: chain(scale_by_adam, add_decayed_weights(wd), -lr), i.e.
  p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p), decoupled.

* Adam/AdamW ``epsilon_mode="hat"``: optax has no such option; ``scale_by_adam_hat`` below
  (state ``ScaleByAdamState``) computes sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(v) + eps).
* RMSprop: ``chain(scale_by_rms | scale_by_stddev (eps_in_sqrt=False, initial_scale=0),
  trace(momentum), scale_by_learning_rate(lr))``. ``optax.rmsprop`` itself scales by lr before
  the trace (lr folded into the momentum buffer) and puts eps inside the square root by default.
* Adagrad: ``optax.adagrad`` puts eps inside the square root (rsqrt(a + eps)); ``scale_by_adagrad``
  below (state ``ScaleByRssState``) computes g / (sqrt(a) + eps) from a = initial_accumulator.
* Lion: ``optax.lion``: chain(scale_by_lion, add_decayed_weights(wd), -lr), i.e.
  p -= lr * (sign(b1 m + (1 - b1) g) + wd * p); sign(0) = 0.
* ``decay="kernels"``: ``add_decayed_weights`` / ``adamw`` / ``lion`` get ``mask``, a callable
  marking each leaf by ``rosetta.optim.decays`` of its canonical path.
* clipping: ``optax.clip(clip_value)`` then ``optax.clip_by_global_norm(clip_norm)`` chained
  before the rule (no epsilon in either).
* ``lr_scale``: ``scale_by_lr_factors`` chained after the rule multiplies each leaf's update
  (-lr * (direction + decoupled decay)) by ``lr_factor`` of its canonical path: the same as an
  lr of lr * factor, since every rule here is linear in lr and keeps lr out of its state.
* ``frozen``: ``optax.multi_transform`` with the labels "trainable" (clipping and the rule) and
  "frozen" (``optax.set_to_zero()``): a frozen leaf's update is 0, it has no state (its slots
  are ``optax.MaskedNode``, left out of ``slots``), and the global norm of ``clip_by_global_norm``
  runs over the trainable leaves only (the frozen ones are masked out of its tree).

Optimizer state in canonical slots (``slots``): SGD/RMSprop with momentum ``velocity`` =
``TraceState.trace`` (v of the canonical rule), Adam/AdamW ``m``/``v`` = ``ScaleByAdamState.mu``
/ ``nu``, RMSprop ``v`` = ``ScaleByRmsState.nu`` (centered: ``ScaleByRStdDevState.nu``, ``mg`` =
its ``mu``), Adagrad ``accumulator`` = ``ScaleByRssState.sum_of_squares``, Lion ``m`` =
``ScaleByLionState.mu``.

Resuming (``load_state``): the slots are written back by the same ``_SLOTS`` table, and every
``count`` field of the state (``ScaleByAdamState``, ``ScaleByScheduleState``, ``ScaleByLionState``,
the hand-written ``scale_by_adam_hat``'s, ...: optax counts updates separately in each
transformation that needs it) is set to the update count, each leaf in the dtype of the one it
replaces (int32 counts), so the jitted step sees the same structure and avals and does not
retrace.

Learning rate: optax calls the schedule with its update count, which is 0 for the first update
and incremented after each, so update number t uses lr(t) as the canonical rule says. The count
(int32) is cast to the program dtype and fed to the schedule's one formula with ``xp=jax.numpy``.
A constant learning rate is passed to optax as the plain number a user would write: the schedule
form costs a schedule count in the state and scalar ops in every step (about 0.1 ms a step on
XLA:CPU for the zoo's MLP, 20 % of its step), for the same value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rosetta import optim
from rosetta.errors import SpecError
from rosetta.schedules import Constant, Schedule


def lower_schedule(schedule: Schedule, dtype) -> optax.Schedule:
    """``count -> lr(count)`` in ``dtype``, evaluated inside the compiled step."""
    dtype = jnp.dtype(dtype)

    def learning_rate(count):
        return jnp.asarray(schedule(jnp.asarray(count).astype(dtype), xp=jnp), dtype)

    return learning_rate


def scale_by_adam_hat(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Keras's Adam direction sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(v) + eps), k = count + 1."""

    def init(params):
        # two distinct trees: the train step donates the state, a shared buffer can't be
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                      mu=jax.tree.map(jnp.zeros_like, params),
                                      nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * g * g, updates, state.nu)
        count = state.count + 1

        def direction(m, v):
            k = count.astype(m.dtype)
            c = jnp.sqrt(1 - jnp.power(jnp.asarray(b2, m.dtype), k)) / (
                1 - jnp.power(jnp.asarray(b1, m.dtype), k))
            return c * m / (jnp.sqrt(v) + eps)

        return (jax.tree.map(direction, mu, nu),
                optax.ScaleByAdamState(count=count, mu=mu, nu=nu))

    return optax.GradientTransformation(init, update)


def scale_by_adagrad(initial_accumulator: float, eps: float) -> optax.GradientTransformation:
    """a <- a + g^2 (from ``initial_accumulator``); g / (sqrt(a) + eps)."""

    def init(params):
        return optax.ScaleByRssState(sum_of_squares=jax.tree.map(
            lambda p: jnp.full_like(p, initial_accumulator), params))

    def update(updates, state, params=None):
        del params
        acc = jax.tree.map(lambda g, a: a + g * g, updates, state.sum_of_squares)
        return (jax.tree.map(lambda g, a: g / (jnp.sqrt(a) + eps), updates, acc),
                optax.ScaleByRssState(sum_of_squares=acc))

    return optax.GradientTransformation(init, update)


def _path(keys) -> str:
    return "/".join(str(k.key) for k in keys)


def scale_by_lr_factors(opt: optim.Optimizer) -> optax.GradientTransformation:
    """Each leaf's update times ``opt.lr_factor`` of its path (leaves with factor 1 untouched)."""

    def scale(keys, u):
        factor = opt.lr_factor(_path(keys))
        return u if factor == 1.0 else u * jnp.asarray(factor, u.dtype)

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def decay_mask(opt: optim.Optimizer):
    """None (decay every parameter) or the optax ``mask`` of ``opt.decay``."""
    if getattr(opt, "decay", "all") == "all":
        return None
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: opt.decays(_path(path)), params)


def _rule(opt: optim.Optimizer, lr) -> optax.GradientTransformation:
    mask = decay_mask(opt)
    if isinstance(opt, optim.SGD):
        sgd = optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov)
        if opt.weight_decay:
            return optax.chain(optax.add_decayed_weights(opt.weight_decay, mask), sgd)
        return sgd
    if isinstance(opt, (optim.Adam, optim.AdamW)) and opt.epsilon_mode == "hat":
        wd = opt.weight_decay if isinstance(opt, optim.AdamW) else 0.0
        return optax.chain(scale_by_adam_hat(opt.beta1, opt.beta2, opt.epsilon),
                           optax.add_decayed_weights(wd, mask),
                           optax.scale_by_learning_rate(lr))
    if isinstance(opt, optim.AdamW):  # before Adam: AdamW subclasses it
        return optax.adamw(lr, b1=opt.beta1, b2=opt.beta2, eps=opt.epsilon, eps_root=0.0,
                           weight_decay=opt.weight_decay, mask=mask)
    if isinstance(opt, optim.Adam):
        return optax.adam(lr, b1=opt.beta1, b2=opt.beta2, eps=opt.epsilon, eps_root=0.0)
    if isinstance(opt, optim.RMSprop):
        scale = optax.scale_by_stddev if opt.centered else optax.scale_by_rms
        return optax.chain(scale(decay=opt.rho, eps=opt.epsilon, initial_scale=0.0,
                                 eps_in_sqrt=False),
                           optax.trace(decay=opt.momentum) if opt.momentum else optax.identity(),
                           optax.scale_by_learning_rate(lr))
    if isinstance(opt, optim.Adagrad):
        return optax.chain(scale_by_adagrad(opt.initial_accumulator, opt.epsilon),
                           optax.scale_by_learning_rate(lr))
    if isinstance(opt, optim.Lion):
        return optax.lion(lr, b1=opt.beta1, b2=opt.beta2, weight_decay=opt.weight_decay,
                          mask=mask)
    raise SpecError(f"the jax backend has no lowering for optimizer {opt.kind!r}",
                    where="$.optimizer")


def lower(opt: optim.Optimizer, dtype) -> optax.GradientTransformation:
    schedule = opt.learning_rate
    lr = (float(schedule.value) if isinstance(schedule, Constant)
          else lower_schedule(schedule, dtype))
    rule = _rule(opt, lr)
    if opt.lr_scale:
        rule = optax.chain(rule, scale_by_lr_factors(opt))
    clips = []
    if getattr(opt, "clip_value", None) is not None:
        clips.append(optax.clip(opt.clip_value))
    if getattr(opt, "clip_norm", None) is not None:
        clips.append(optax.clip_by_global_norm(opt.clip_norm))
    rule = optax.chain(*clips, rule) if clips else rule
    if not getattr(opt, "frozen", None):
        return rule
    return optax.multi_transform(
        {"trainable": rule, "frozen": optax.set_to_zero()},
        lambda params: jax.tree_util.tree_map_with_path(
            lambda keys, _: "frozen" if opt.is_frozen(_path(keys)) else "trainable", params))


_SLOTS = ((optax.TraceState, (("velocity", "trace"),)),
          (optax.ScaleByAdamState, (("m", "mu"), ("v", "nu"))),
          (optax.ScaleByRmsState, (("v", "nu"),)),
          (optax.ScaleByRStdDevState, (("mg", "mu"), ("v", "nu"))),
          (optax.ScaleByRssState, (("accumulator", "sum_of_squares"),)),
          (optax.ScaleByLionState, (("m", "mu"),)))


def _unmasked(tree):
    """``tree`` ({node: {name: leaf}}) without the ``optax.MaskedNode`` leaves (frozen
    parameters) and the nodes left empty."""
    out = {}
    for node, leaves in tree.items():
        kept = {k: v for k, v in leaves.items() if not isinstance(v, optax.MaskedNode)}
        if kept:
            out[node] = kept
    return out


def slots(opt_state) -> dict:
    """{canonical slot name: params-shaped tree} found in an optax state of ``lower`` (frozen
    parameters' ``MaskedNode`` placeholders left out)."""
    out = {}

    def visit(state):
        for cls, fields in _SLOTS:
            if isinstance(state, cls):
                out.update({slot: _unmasked(getattr(state, field)) for slot, field in fields})
                return
        if isinstance(state, tuple):  # chain states and other NamedTuples
            for sub in state:
                visit(sub)
        elif isinstance(state, dict):  # multi_transform's inner states
            for sub in state.values():
                visit(sub)

    visit(opt_state)
    return out


def load_state(opt_state, slot_values: dict, step: int):
    """A copy of ``opt_state`` (same tree structure, leaf shapes and dtypes, as host NumPy
    arrays) with its slots from ``slot_values`` ({"<slot>/<parameter path>": array}, checked by
    the core's ``Optimizer.check_slots``), found by the ``_SLOTS`` table as ``slots`` finds
    them, and every ``count`` field of every optax state NamedTuple set to ``step``."""

    def slot_tree(slot, template):
        return jax.tree_util.tree_map_with_path(
            lambda keys, old: np.asarray(slot_values[f"{slot}/{_path(keys)}"],
                                         dtype=old.dtype), template)

    def visit(state):
        for cls, fields in _SLOTS:
            if isinstance(state, cls):
                state = state._replace(**{field: slot_tree(slot, getattr(state, field))
                                          for slot, field in fields})
                break
        if hasattr(state, "_fields"):  # an optax state NamedTuple
            return state._replace(**{
                f: np.asarray(step, dtype=v.dtype) if f == "count" else visit(v)
                for f, v in zip(state._fields, state)})
        if isinstance(state, tuple):  # a chain's tuple of states
            return tuple(visit(sub) for sub in state)
        if isinstance(state, dict):  # multi_transform's inner states
            return {k: visit(sub) for k, sub in state.items()}
        return state

    return visit(opt_state)

