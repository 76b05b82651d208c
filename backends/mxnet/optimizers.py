"""The canonical optimizers (``rosetta.optim``) on MXNet NDArrays, updated in place.

Which form computes each rule (the README's conventions table says the same):

* SGD without momentum: MXNet's own fused ``sgd_update`` (w <- w - lr * (g + wd * w): coupled
  decay, the canonical rule), with wd = 0 on the parameters ``decay`` leaves out.
* Adam / AdamW with ``epsilon_mode="hat"``: MXNet's own ``adam_update`` (its ``Adam`` optimizer's
  kernel: m, v updated, w <- w - lr_t * m / (sqrt(v) + eps)) with lr_t = lr * sqrt(1 - b2^k) /
  (1 - b1^k), which is exactly the "epsilon hat" rule; AdamW adds - lr * wd * w after it.
* written by hand, because MXNet's own optimizers cannot be configured to the canonical rule:
  SGD with momentum (``sgd_mom_update`` folds lr into the velocity: state = mu * state - lr * g),
  Adam / AdamW canonical epsilon (``adam_update`` adds eps to sqrt(v), before bias correction),
  RMSprop (MXNet's ``rmsprop_update`` puts eps inside the square root and ``rmspropalex_update``
  folds lr into the momentum), Adagrad (eps inside the square root), Lion (none in MXNet 1.9).

Every rule takes lr(step) * lr_factor(path) from the spec's schedule, evaluated in float64 on the
host (``Optimizer.learning_rates``): update number t uses lr(t). Clipping (``clip_gradients``:
values first, then the global norm, no epsilon) runs on the gradients before the rule.

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


def init_state(opt: optim.Optimizer, params: dict) -> dict:
    """{slot: {path: NDArray}}: zeros, Adagrad's accumulator at ``initial_accumulator``."""
    fill = getattr(opt, "initial_accumulator", 0.0) if opt.kind == "adagrad" else 0.0
    return {slot: {k: nd.full(p.shape, fill, ctx=p.context, dtype=p.dtype)
                   for k, p in params.items()} for slot in slot_names(opt)}


def clip(opt: optim.Optimizer, grads: dict) -> dict:
    """``rosetta.optim.clip_gradients`` on NDArrays."""
    if opt.clip_value is not None:
        grads = {k: nd.clip(g, -opt.clip_value, opt.clip_value) for k, g in grads.items()}
    if opt.clip_norm is not None:
        norm = math.sqrt(sum(float(nd.sum(g * g).asscalar()) for g in grads.values()))
        if norm > opt.clip_norm:
            grads = {k: g * (opt.clip_norm / norm) for k, g in grads.items()}
    return grads


def update(opt: optim.Optimizer, params: dict, grads: dict, state: dict, step: int) -> None:
    """Apply update number ``step`` to ``params`` ({path: NDArray}, in place), ``state`` too."""
    grads = clip(opt, grads)
    lrs = opt.learning_rates(params, step)
    rule = RULES.get(opt.kind)
    if rule is None:
        raise SpecError(f"the mxnet backend has no optimizer {opt.kind!r}", where="optimizer")
    for k, p in params.items():
        rule(opt, k, p, grads[k], {s: state[s][k] for s in state}, lrs[k], step)


def _sgd(opt, k, p, g, s, lr, step):
    wd = opt.weight_decay if opt.decays(k) else 0.0
    if not opt.momentum:
        nd.sgd_update(p, g, lr=lr, wd=wd, rescale_grad=1.0, out=p)
        return
    if wd:
        g = g + wd * p
    v = s["velocity"]
    v[:] = opt.momentum * v + g
    d = g + opt.momentum * v if opt.nesterov else v
    p[:] = p - lr * d


def _adam(opt, k, p, g, s, lr, step):
    b1, b2, kk = opt.beta1, opt.beta2, step + 1
    m, v = s["m"], s["v"]
    wd = opt._decay(k)
    if opt.epsilon_mode == "hat":
        decayed = p * (lr * wd) if wd else None
        lr_t = lr * math.sqrt(1 - b2 ** kk) / (1 - b1 ** kk)
        nd.adam_update(p, g, m, v, lr=lr_t, beta1=b1, beta2=b2, epsilon=opt.epsilon, wd=0.0,
                       rescale_grad=1.0, out=p)
        if decayed is not None:
            p[:] = p - decayed
        return
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
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

# where each rule's form comes from (README conventions table)
FORMS = {"sgd": "momentum 0: MXNet's sgd_update; momentum: by hand (sgd_mom_update folds lr in)",
         "adam": "epsilon hat: MXNet's adam_update; canonical epsilon: by hand",
         "adamw": "as adam, plus the decoupled decay by hand",
         "rmsprop": "by hand (rmsprop_update: eps inside the square root)",
         "adagrad": "by hand (MXNet's: eps inside the square root)",
         "lion": "by hand (no Lion in MXNet 1.9)"}
