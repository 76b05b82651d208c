"""Optimizers with their canonical math (DESIGN section 3) and a NumPy float64 reference.

Notation: g gradient, p parameter, t = number of updates already applied (0 for the first),
lr = lr(t) from the schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rosetta.errors import SpecError
from rosetta.schedules import Schedule, as_schedule


def _number(where, name, v, lo=None, hi=None, lo_open=False, hi_open=True):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(f"{name} must be a number, found {v!r}", where=where)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise SpecError(f"{name} must be {'>' if lo_open else '>='} {lo}, found {v}", where=where)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise SpecError(f"{name} must be {'<' if hi_open else '<='} {hi}, found {v}", where=where)
    return float(v)


class Optimizer:
    kind = ""
    learning_rate: Schedule

    def init_state(self, params: dict) -> dict:
        raise NotImplementedError  # every subclass defines it

    def update(self, params: dict, grads: dict, state: dict, step: int):
        """NumPy float64 reference: returns (new params, new state) after update number ``step``."""
        raise NotImplementedError  # every subclass defines it

    def slots(self, state: dict) -> dict:
        """The reference state as ``{"<slot>/<parameter path>": array}``, the names every
        backend's ``export_optimizer_state`` uses."""
        return {}

    def hyperparams(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "learning_rate"}

    def to_json(self) -> dict:
        return {"name": self.kind, "learning_rate": self.learning_rate.to_json(),
                **self.hyperparams()}

    def __eq__(self, other):
        return type(self) is type(other) and self.to_json() == other.to_json()

    def __repr__(self):
        return f"{type(self).__name__}({self.to_json()})"


class SGD(Optimizer):
    """g <- g + weight_decay * p (coupled L2);  v <- momentum * v + g;
    p <- p - lr * v, or with nesterov p <- p - lr * (g + momentum * v).
    lr is not folded into v (Keras folds it), so a changing lr acts on the step, not the history.
    """

    kind = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 where="optimizer"):
        self.learning_rate = as_schedule(learning_rate, f"{where}.learning_rate")
        self.momentum = _number(where, "momentum", momentum, 0.0, 1.0)
        if not isinstance(nesterov, bool):
            raise SpecError(f"nesterov must be true or false, found {nesterov!r}", where=where)
        if nesterov and self.momentum == 0.0:
            raise SpecError("nesterov needs momentum > 0", where=where)
        self.nesterov = nesterov
        self.weight_decay = _number(where, "weight_decay", weight_decay, 0.0)

    def init_state(self, params):
        return {k: np.zeros_like(v) for k, v in params.items()} if self.momentum else {}

    def slots(self, state):
        return {f"velocity/{k}": v for k, v in state.items()}

    def update(self, params, grads, state, step):
        lr = float(self.learning_rate(step))
        new_p, new_s = {}, {}
        for k, p in params.items():
            g = grads[k] + self.weight_decay * p
            if self.momentum:
                v = self.momentum * state[k] + g
                new_s[k] = v
                d = g + self.momentum * v if self.nesterov else v
            else:
                d = g
            new_p[k] = p - lr * d
        return new_p, new_s


class Adam(Optimizer):
    """m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  k = t + 1;
    m_hat = m / (1 - b1^k);  v_hat = v / (1 - b2^k);  p <- p - lr * m_hat / (sqrt(v_hat) + eps).
    eps is added to sqrt(v_hat), after bias correction (Keras adds it before: "epsilon hat").
    AdamW adds the decoupled decay: p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p).
    """

    kind = "adam"

    def __init__(self, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 where="optimizer"):
        self.learning_rate = as_schedule(learning_rate, f"{where}.learning_rate")
        self.beta1 = _number(where, "beta1", beta1, 0.0, 1.0)
        self.beta2 = _number(where, "beta2", beta2, 0.0, 1.0)
        self.epsilon = _number(where, "epsilon", epsilon, 0.0)

    def init_state(self, params):
        return {"m": {k: np.zeros_like(v) for k, v in params.items()},
                "v": {k: np.zeros_like(v) for k, v in params.items()}}

    def slots(self, state):
        return {f"{slot}/{k}": v for slot in ("m", "v") for k, v in state[slot].items()}

    def _decay(self):
        return 0.0

    def update(self, params, grads, state, step):
        lr = float(self.learning_rate(step))
        k = step + 1
        b1, b2 = self.beta1, self.beta2
        new_p, m_new, v_new = {}, {}, {}
        for name, p in params.items():
            g = grads[name]
            m = b1 * state["m"][name] + (1 - b1) * g
            v = b2 * state["v"][name] + (1 - b2) * g * g
            m_hat = m / (1 - b1 ** k)
            v_hat = v / (1 - b2 ** k)
            new_p[name] = p - lr * (m_hat / (np.sqrt(v_hat) + self.epsilon) + self._decay() * p)
            m_new[name], v_new[name] = m, v
        return new_p, {"m": m_new, "v": v_new}


class AdamW(Adam):
    __doc__ = Adam.__doc__
    kind = "adamw"

    def __init__(self, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_decay=0.01, where="optimizer"):
        super().__init__(learning_rate, beta1, beta2, epsilon, where)
        self.weight_decay = _number(where, "weight_decay", weight_decay, 0.0)

    def _decay(self):
        return self.weight_decay


KINDS = {c.kind: c for c in (SGD, Adam, AdamW)}


def from_json(d, where="$.optimizer") -> Optimizer:
    if isinstance(d, Optimizer):
        return d
    if not isinstance(d, dict) or d.get("name") not in KINDS:
        found = d.get("name") if isinstance(d, dict) else d
        raise SpecError(f"unknown optimizer {found!r}; known: {sorted(KINDS)}", where=where)
    args = {k: v for k, v in d.items() if k != "name"}
    try:
        return KINDS[d["name"]](**args, where=where)
    except TypeError as e:
        raise SpecError(f"optimizer {d['name']!r}: {e}", where=where) from None
