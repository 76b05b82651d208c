"""The canonical optimizers (``rosetta.optim``) on MXNet NDArrays, updated in place.

Every rule is written by hand with NDArray arithmetic, because MXNet's own optimizers cannot be
configured to the canonical rule in float64, and most not even in float32:

* the fused update operators (``sgd_update``, ``sgd_mom_update``, ``adam_update``,
  ``rmsprop_update``, ...) take lr, wd, the betas and eps as C ``float`` attributes, so a float64
  update with lr = 0.01 is off by lr's float32 rounding: measured 2.2e-8 relative on the zoo
  ``linear`` model's first plain-SGD update (``sgd_update``), against the exact tier's 1e-10;
* and beyond precision: ``sgd_mom_update`` folds lr into the velocity (state = mu * state -
  lr * g), ``Adam`` adds eps to sqrt(v) before bias correction (the "epsilon hat" form),
  ``RMSProp`` and ``AdaGrad`` put eps inside the square root, ``RMSPropAlex`` folds lr into its
  momentum, and MXNet 1.9 has no Lion.

Every rule takes lr(step) * lr_factor(path) from the spec's schedule, evaluated in float64 on the
host (``Optimizer.learning_rates``): update number t uses lr(t). Clipping (``clip_gradients``:
values first, then the global norm, no epsilon) runs on the gradients before the rule.
Frozen parameters (``frozen``) are left out of the state, the clipping norm and the update: the
model still computes their gradients (``gradients`` reports them), nothing applies them.

Optimizer state (``state``: slot -> path -> NDArray) carries the canonical slot names: SGD
``velocity``, Adam/AdamW ``m``, ``v``, RMSprop ``v``, ``mg``, ``velocity``, Adagrad
``accumulator``, Lion ``m`` (``export_optimizer_state`` = ``<slot>/<path>``).
"""

from __future__ import annotations

import math

from mxnet import nd

from rosetta import optim
from rosetta.errors import SpecError


def slot_names(opt: optim.Optimizer) -> tuple[str, ...]:
    """The canonical slots of ``opt``'s state (what ``state_names`` gives, without paths)."""
    return tuple(dict.fromkeys(n.split("/", 1)[0] for n in opt.state_names(["p"])))


def lower(opt: optim.Optimizer, params: dict) -> dict:
    """The optimizer's state on ``params``, {slot: {path: NDArray}} (the canonical rule itself is
    ``update``): zeros, Adagrad's accumulator at ``initial_accumulator``."""
    fill = getattr(opt, "initial_accumulator", 0.0) if opt.kind == "adagrad" else 0.0
    return {slot: {k: nd.full(p.shape, fill, ctx=p.context, dtype=p.dtype)
                   for k, p in opt.trainable(params).items()} for slot in slot_names(opt)}


def clip(opt: optim.Optimizer, grads: dict) -> dict:
    """``rosetta.optim.clip_gradients`` on NDArrays."""
    if opt.clip_value is not None:
        c = opt.clip_value  # nd.clip's bounds are float32 attributes: clip with double scalars
        grads = {k: nd.minimum(nd.maximum(g, -c), c) for k, g in grads.items()}
    if opt.clip_norm is not None:
        norm = math.sqrt(sum(float(nd.sum(g * g).asscalar()) for g in grads.values()))
        if norm > opt.clip_norm:
            grads = {k: g * (opt.clip_norm / norm) for k, g in grads.items()}
    return grads


def update(opt: optim.Optimizer, params: dict, grads: dict, state: dict, step: int) -> None:
    """Apply update number ``step`` to ``params`` ({path: NDArray}, in place), ``state`` too;
    frozen parameters are left as they are."""
    params = opt.trainable(params)
    grads = clip(opt, {k: grads[k] for k in params})
    lrs = opt.learning_rates(params, step)
    rule = RULES.get(opt.kind)
    if rule is None:
        raise SpecError(f"the mxnet backend has no optimizer {opt.kind!r}", where="optimizer")
    for k, p in params.items():
        rule(opt, k, p, grads[k], {s: state[s][k] for s in state}, lrs[k], step)


def _sgd(opt, k, p, g, s, lr, step):
    wd = opt.weight_decay if opt.decays(k) else 0.0
    if wd:
        g = g + wd * p
    if not opt.momentum:
        p[:] = p - lr * g
        return
    v = s["velocity"]
    v[:] = opt.momentum * v + g
    d = g + opt.momentum * v if opt.nesterov else v
    p[:] = p - lr * d


def _adam(opt, k, p, g, s, lr, step):
    b1, b2, kk = opt.beta1, opt.beta2, step + 1
    m, v = s["m"], s["v"]
    wd = opt._decay(k)
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    if opt.epsilon_mode == "hat":
        d = math.sqrt(1 - b2 ** kk) / (1 - b1 ** kk) * m / (nd.sqrt(v) + opt.epsilon)
    else:
        d = (m / (1 - b1 ** kk)) / (nd.sqrt(v / (1 - b2 ** kk)) + opt.epsilon)
    p[:] = p - lr * (d + wd * p) if wd else p - lr * d


def _rmsprop(opt, k, p, g, s, lr, step):
    rho, v = opt.rho, s["v"]
    v[:] = rho * v + (1 - rho) * g * g
    if opt.centered:
        mg = s["mg"]
        mg[:] = rho * mg + (1 - rho) * g
        denom = nd.sqrt(v - mg * mg) + opt.epsilon
    else:
        denom = nd.sqrt(v) + opt.epsilon
    if opt.momentum:
        b = s["velocity"]
        b[:] = opt.momentum * b + g / denom
        p[:] = p - lr * b
    else:
        p[:] = p - lr * (g / denom)


def _adagrad(opt, k, p, g, s, lr, step):
    a = s["accumulator"]
    a[:] = a + g * g
    p[:] = p - lr * (g / (nd.sqrt(a) + opt.epsilon))


def _lion(opt, k, p, g, s, lr, step):
    b1, b2, m = opt.beta1, opt.beta2, s["m"]
    wd = opt.weight_decay if opt.decays(k) else 0.0
    direction = nd.sign(b1 * m + (1 - b1) * g)
    p[:] = p - lr * (direction + wd * p) if wd else p - lr * direction
    m[:] = b2 * m + (1 - b2) * g


RULES = {"sgd": _sgd, "adam": _adam, "adamw": _adam, "rmsprop": _rmsprop, "adagrad": _adagrad,
         "lion": _lion}

# where each rule's form comes from (docs/reference/conventions.md)
FORMS = {"sgd": "by hand (sgd_update: lr and wd are float32 attributes; sgd_mom_update folds "
                "lr into the velocity)",
         "adam": "by hand (adam_update: float32 attributes, eps before bias correction)",
         "adamw": "by hand, as adam plus the decoupled decay",
         "rmsprop": "by hand (rmsprop_update: eps inside the square root)",
         "adagrad": "by hand (MXNet's: eps inside the square root)",
         "lion": "by hand (no Lion in MXNet 1.9)"}
