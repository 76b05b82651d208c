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

Optimizer state in canonical slots (``slots``): SGD with momentum ``velocity`` =
``TraceState.trace`` (v of the canonical rule), Adam/AdamW ``m``/``v`` = ``ScaleByAdamState.mu``
/ ``nu``.

Learning rate: optax calls the schedule with its update count, which is 0 for the first update
and incremented after each, so update number t uses lr(t) as the canonical rule says. The count
(int32) is cast to the program dtype and fed to the schedule's one formula with ``xp=jax.numpy``.
A constant learning rate is passed to optax as the plain number a user would write: the schedule
form costs a schedule count in the state and scalar ops in every step (about 0.1 ms a step on
XLA:CPU for the zoo's MLP, 20 % of its step), for the same value.
"""

from __future__ import annotations

import jax.numpy as jnp
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


def lower_optimizer(opt: optim.Optimizer, dtype) -> optax.GradientTransformation:
    schedule = opt.learning_rate
    lr = (float(schedule.value) if isinstance(schedule, Constant)
          else lower_schedule(schedule, dtype))
    if isinstance(opt, optim.SGD):
        sgd = optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov)
        if opt.weight_decay:
            return optax.chain(optax.add_decayed_weights(opt.weight_decay), sgd)
        return sgd
    if isinstance(opt, optim.AdamW):  # before Adam: AdamW subclasses it
        return optax.adamw(lr, b1=opt.beta1, b2=opt.beta2, eps=opt.epsilon, eps_root=0.0,
                           weight_decay=opt.weight_decay)
    if isinstance(opt, optim.Adam):
        return optax.adam(lr, b1=opt.beta1, b2=opt.beta2, eps=opt.epsilon, eps_root=0.0)
    raise SpecError(f"the jax backend has no lowering for optimizer {opt.kind!r}",
                    where="$.optimizer")


_SLOTS = ((optax.TraceState, (("velocity", "trace"),)),
          (optax.ScaleByAdamState, (("m", "mu"), ("v", "nu"))))


def slots(opt_state) -> dict:
    """{canonical slot name: params-shaped tree} found in an optax state of ``lower_optimizer``."""
    out = {}

    def visit(state):
        for cls, fields in _SLOTS:
            if isinstance(state, cls):
                out.update({slot: getattr(state, field) for slot, field in fields})
                return
        if isinstance(state, tuple):  # chain states and other NamedTuples
            for sub in state:
                visit(sub)

    visit(opt_state)
    return out
