"""Optimizers with their canonical math (docs/design.md section 3) and a NumPy float64 reference.

Notation: g gradient, p parameter, t = number of updates already applied (0 for the first),
lr = lr(t) from the schedule.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import numpy as np

from rosetta.errors import CheckpointError, SpecError
from rosetta.schedules import Schedule, as_schedule


def _number(where, name, v, lo=None, hi=None, lo_open=False, hi_open=True):
    if isinstance(v, bool) or not isinstance(v, (int, float)) \
            or (isinstance(v, float) and not np.isfinite(v)):
        raise SpecError(f"{name} must be a finite number, found {v!r}", where=where)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise SpecError(f"{name} must be {'>' if lo_open else '>='} {lo}, found {v}", where=where)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise SpecError(f"{name} must be {'<' if hi_open else '<='} {hi}, found {v}", where=where)
    return float(v)


def clip_gradients(grads: dict, clip_norm=None, clip_value=None) -> dict:
    """The canonical gradient clipping, applied before every update rule (and before coupled
    weight decay):

    * ``clip_value`` c: g <- clip(g, -c, c), element by element;
    * ``clip_norm`` c: g <- g * min(1, c / ||g||), ||g|| the global L2 norm over every
      parameter's gradient, no epsilon (||g|| = 0 leaves g as is).

    With both, values are clipped first, then the global norm of the clipped gradients.
    """
    if clip_value is not None:
        grads = {k: np.clip(g, -clip_value, clip_value) for k, g in grads.items()}
    if clip_norm is not None:
        norm = np.sqrt(sum(float(np.sum(np.square(g))) for g in grads.values()))
        if norm > clip_norm:
            grads = {k: g * (clip_norm / norm) for k, g in grads.items()}
    return grads


DECAY_MASKS = ("all", "kernels")


def decays(path: str, decay: str = "all") -> bool:
    """Whether weight decay applies to the parameter at ``path`` (``node/param``).

    ``decay="all"``: every parameter. ``decay="kernels"``: every parameter except biases and
    normalisation scales, i.e. except those whose own name (the last path component) is
    ``bias`` or ``scale`` or ends with ``_bias`` or ``_scale`` (Dense/Conv biases, BatchNorm,
    LayerNorm, GroupNorm and RMSNorm scales and offsets); kernels, recurrent kernels and
    embeddings decay. The rule depends on the name only, never on the shape.
    """
    if decay == "all":
        return True
    name = path.rsplit("/", 1)[-1]
    return not (name in ("bias", "scale") or name.endswith(("_bias", "_scale")))


def _decay_mask(where, decay):
    if decay not in DECAY_MASKS:
        raise SpecError(f"decay must be one of {list(DECAY_MASKS)}, found {decay!r}", where=where)
    return decay


def _optional(where, name, v):
    return None if v is None else _number(where, name, v, 0.0, lo_open=True)


def _lr_scale(where, lr_scale) -> dict:
    if lr_scale is None:
        return {}
    if not isinstance(lr_scale, dict):
        raise SpecError(f"lr_scale must map glob patterns over parameter paths to factors, "
                        f"e.g. {{\"emb/*\": 0.1}}, found {lr_scale!r}", where=where)
    out = {}
    for pattern, factor in lr_scale.items():
        if not isinstance(pattern, str) or not pattern:
            raise SpecError(f"lr_scale patterns must be non-empty strings, found {pattern!r}",
                            where=where)
        out[pattern] = _number(where, f"lr_scale[{pattern!r}]", factor, 0.0)
        if not np.isfinite(out[pattern]):
            raise SpecError(f"lr_scale[{pattern!r}] must be finite, found {factor}", where=where)
    return out


def _frozen(where, frozen) -> list:
    if frozen is None:
        return []
    if isinstance(frozen, str) or not isinstance(frozen, (list, tuple)):
        raise SpecError(f"frozen must be a list of glob patterns over parameter paths, e.g. "
                        f"[\"features/*\"], found {frozen!r}"[:200], where=where)
    for pattern in frozen:
        if not isinstance(pattern, str) or not pattern:
            raise SpecError(f"frozen patterns must be non-empty strings, found {pattern!r}",
                            where=where)
    return list(dict.fromkeys(frozen))


def literal(path: str) -> str:
    """The glob pattern that matches exactly ``path`` (``*``, ``?`` and ``[`` bracketed)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def is_frozen(path: str, frozen) -> bool:
    """Whether the parameter at ``path`` matches one of the ``frozen`` glob patterns
    (``fnmatch`` rules, case-sensitive; ``*`` also matches ``/``, as in ``lr_scale``)."""
    return any(fnmatchcase(path, pattern) for pattern in frozen)


def lr_factor(path: str, lr_scale: dict) -> float:
    """The learning-rate factor of the parameter at ``path``: the factor of the first pattern of
    ``lr_scale`` (in its order) that matches the whole path (``fnmatch`` rules, case-sensitive;
    ``*`` also matches ``/``), else 1.0."""
    for pattern, factor in lr_scale.items():
        if fnmatchcase(path, pattern):
            return factor
    return 1.0


class Optimizer:
    """Base of the optimizers. Every optimizer takes ``clip_norm`` and ``clip_value`` (None: no
    clipping; see ``clip_gradients``), applied to the gradients before its rule,
    ``lr_scale`` ({glob pattern over parameter paths: factor >= 0}, see ``lr_factor``): the
    parameter at ``path`` is updated with lr(t) * lr_factor(path) wherever its rule says lr,
    decoupled weight decay included (per-parameter-group learning rates), and ``frozen`` (a
    list of glob patterns over parameter paths, see ``is_frozen``; each must match a parameter
    of the model, checked by ``check_frozen`` when the ``TrainSpec`` is built).

    A frozen parameter is outside the optimizer: p_{t+1} = p_t (no update, no weight decay),
    no optimizer state (no slot in ``state_names``, none in a checkpoint), and its gradient is
    not part of the global norm of ``clip_norm`` (the norm is over the trainable parameters'
    gradients only, as torch's ``clip_grad_norm_`` over the optimizer's parameters). It is
    still a parameter of the model: in the checkpoint and the export, and gradients flow
    through it to earlier layers (the gradients of the other parameters do not change).
    Changing the frozen set between runs is fine-tuning: a newly trainable parameter starts
    from fresh state (zeros, Adagrad's initial accumulator), at the run's update count."""

    kind = ""
    learning_rate: Schedule
    # attributes written to JSON only when they differ from these defaults
    _defaults = {"clip_norm": None, "clip_value": None, "lr_scale": {}, "frozen": []}

    def _clipping(self, where, clip_norm, clip_value, lr_scale=None, frozen=None):
        self.clip_norm = _optional(where, "clip_norm", clip_norm)
        self.clip_value = _optional(where, "clip_value", clip_value)
        self.lr_scale = _lr_scale(where, lr_scale)
        self.frozen = _frozen(where, frozen)

    def is_frozen(self, path: str) -> bool:
        """Whether the parameter at ``path`` is frozen (``frozen`` patterns)."""
        return is_frozen(path, getattr(self, "frozen", ()))

    def trainable(self, params: dict) -> dict:
        """``params`` ({path: value}) without the frozen ones, in their order."""
        if not getattr(self, "frozen", ()):
            return params
        return {k: v for k, v in params.items() if not self.is_frozen(k)}

    def check_frozen(self, paths, where="$.optimizer.frozen") -> None:
        """Every ``frozen`` pattern matches at least one of ``paths`` (the model's parameter
        paths): a pattern that matches nothing is a typo, refused naming it."""
        paths = list(paths)
        for pattern in getattr(self, "frozen", ()):
            if not any(fnmatchcase(p, pattern) for p in paths):
                shown = ", ".join(paths[:6]) + (", ..." if len(paths) > 6 else "")
                raise SpecError(f"frozen pattern {pattern!r} matches no parameter (the model's "
                                f"parameters: {shown or 'none'})", where=where)

    def with_frozen(self, frozen) -> "Optimizer":
        """A copy of this optimizer with ``frozen`` as its frozen patterns (the rest equal)."""
        return from_json({**self.to_json(), "frozen": list(frozen)})

    def carried_slots(self, params: dict, slots: dict) -> dict:
        """The slots of a run whose frozen set changed, for this optimizer: ``slots`` (another
        frozen set's ``<slot>/<path>`` state) without the parameters this one freezes, and a
        parameter this one trains that had no state (it was frozen) starts from the initial
        state (zeros, Adagrad's initial accumulator), whatever the update count."""
        init = self.slots(self.init_state(params))
        return {k: np.asarray(slots[k]) if k in slots else v for k, v in init.items()}

    def lr_factor(self, path: str) -> float:
        """The factor of this optimizer's ``lr_scale`` for the parameter at ``path``."""
        return lr_factor(path, getattr(self, "lr_scale", {}))

    def learning_rates(self, paths, step: int) -> dict:
        """{path: lr(step) * lr_factor(path)}, in float64."""
        lr = float(self.learning_rate(step))
        return {k: lr * self.lr_factor(k) for k in paths}

    def init_state(self, params: dict) -> dict:
        """The fresh state of the trainable ones of ``params`` (frozen parameters have none)."""
        return self._init_state(self.trainable(params))

    def _init_state(self, params: dict) -> dict:
        raise NotImplementedError  # every subclass defines it

    def update(self, params: dict, grads: dict, state: dict, step: int):
        """NumPy float64 reference: returns (new params, new state) after update number ``step``
        (gradients clipped first, see ``clip_gradients``, over the trainable parameters; frozen
        parameters are returned as they are)."""
        train = self.trainable(params)
        grads = clip_gradients({k: grads[k] for k in train}, getattr(self, "clip_norm", None),
                               getattr(self, "clip_value", None))
        new_p, new_s = self._update(train, grads, state, step)
        return {k: new_p.get(k, p) for k, p in params.items()}, new_s

    def _update(self, params: dict, grads: dict, state: dict, step: int):
        raise NotImplementedError  # every subclass defines it

    def decays(self, path: str) -> bool:
        """Whether this optimizer's weight decay applies to ``path`` (``decay`` attribute)."""
        return decays(path, getattr(self, "decay", "all"))

    def slots(self, state: dict) -> dict:
        """The reference state as ``{"<slot>/<parameter path>": array}``, the names every
        backend's ``export_optimizer_state`` uses."""
        return {}

    def state_from_slots(self, params: dict, slots: dict) -> dict:
        """The reference state, in ``init_state``'s structure, that holds ``slots`` ({"<slot>/
        <parameter path>": array}, the names ``slots`` gives): the inverse of ``slots``, so the
        NumPy update (``update``) can continue from a backend's exported optimizer state."""
        init = self.init_state(params)
        name_of = {id(v): k for k, v in self.slots(init).items()}

        def fill(tree):
            if isinstance(tree, dict):
                return {k: fill(v) for k, v in tree.items()}
            return np.asarray(slots[name_of[id(tree)]], np.float64)
        return fill(init)

    def state_names(self, paths) -> list[str]:
        """The ``<slot>/<path>`` names of this optimizer's state for parameters at ``paths``."""
        return list(self.slots(self.init_state({path: np.zeros(()) for path in paths})))

    def check_slots(self, shapes: dict, slots: dict, step) -> dict:
        """Optimizer state to resume from (``Program.load_optimizer_state``), checked before
        anything is assigned: exactly the names ``state_names`` gives for parameters of
        ``shapes`` ({canonical path: shape}), each of its parameter's canonical shape and
        real-valued; ``step`` an integer >= 0. Returns {name: array} in that order; raises
        ``CheckpointError`` naming the first missing, unknown or misshapen tensor."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise CheckpointError(f"optimizer state: the update count must be an integer >= 0, "
                                  f"found {step!r}")
        names = self.state_names(shapes)
        keeps = f"({self.kind} keeps {', '.join(names) or 'no state'})"
        for name in names:
            if name not in slots:
                raise CheckpointError(f"optimizer state: missing {name} {keeps}")
        for name in slots:
            if name not in names:
                raise CheckpointError(f"optimizer state: unknown slot {name} {keeps}")
        out = {}
        for name in names:
            a = np.asarray(slots[name])
            shape = tuple(shapes[name.split("/", 1)[1]])
            if a.shape != shape:
                raise CheckpointError(f"optimizer state: {name} has shape {a.shape}, the model "
                                      f"expects {shape}")
            if a.dtype.kind not in "fiu":
                raise CheckpointError(f"optimizer state: {name} has dtype {a.dtype}, expected "
                                      f"real numbers")
            out[name] = a
        return out

    def hyperparams(self) -> dict:
        return {k: dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
                for k, v in self.__dict__.items()
                if k != "learning_rate" and not (k in self._defaults and v == self._defaults[k])}

    def to_json(self) -> dict:
        return {"name": self.kind, "learning_rate": self.learning_rate.to_json(),
                **self.hyperparams()}

    def __eq__(self, other):
        return type(self) is type(other) and self.to_json() == other.to_json()

    def __repr__(self):
        return f"{type(self).__name__}({self.to_json()})"


class SGD(Optimizer):
    """g <- g + weight_decay * p (coupled L2, on the parameters ``decay`` selects);
    v <- momentum * v + g;  p <- p - lr * v, or with nesterov p <- p - lr * (g + momentum * v).
    lr is not folded into v (Keras folds it), so a changing lr acts on the step, not the history.
    Slot: ``velocity`` (v, initially 0), only with momentum.
    """

    kind = "sgd"
    _defaults = {**Optimizer._defaults, "decay": "all"}

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 decay="all", clip_norm=None, clip_value=None, lr_scale=None, frozen=None,
                 where="optimizer"):
        self.learning_rate = as_schedule(learning_rate, f"{where}.learning_rate")
        self.momentum = _number(where, "momentum", momentum, 0.0, 1.0)
        if not isinstance(nesterov, bool):
            raise SpecError(f"nesterov must be true or false, found {nesterov!r}", where=where)
        if nesterov and self.momentum == 0.0:
            raise SpecError("nesterov needs momentum > 0", where=where)
        self.nesterov = nesterov
        self.weight_decay = _number(where, "weight_decay", weight_decay, 0.0)
        self.decay = _decay_mask(where, decay)
        self._clipping(where, clip_norm, clip_value, lr_scale, frozen)

    def _init_state(self, params):
        return {k: np.zeros_like(v) for k, v in params.items()} if self.momentum else {}

    def slots(self, state):
        return {f"velocity/{k}": v for k, v in state.items()}

    def _update(self, params, grads, state, step):
        lrs = self.learning_rates(params, step)
        new_p, new_s = {}, {}
        for k, p in params.items():
            g = grads[k] + self.weight_decay * p if self.decays(k) else grads[k]
            if self.momentum:
                v = self.momentum * state[k] + g
                new_s[k] = v
                d = g + self.momentum * v if self.nesterov else v
            else:
                d = g
            new_p[k] = p - lrs[k] * d
        return new_p, new_s


EPSILON_MODES = ("canonical", "hat")


class Adam(Optimizer):
    """m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  k = t + 1;
    m_hat = m / (1 - b1^k);  v_hat = v / (1 - b2^k);  p <- p - lr * m_hat / (sqrt(v_hat) + eps).
    eps is added to sqrt(v_hat), after bias correction (``epsilon_mode="canonical"``, the
    default). ``epsilon_mode="hat"`` is Keras's rule ("epsilon hat", eps added to sqrt(v) before
    bias correction): p <- p - lr * sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(v) + eps).
    AdamW adds the decoupled decay on the parameters ``decay`` selects:
    p <- p - lr * (step + wd * p), step either of the two forms above.
    Slots: ``m``, ``v`` (initially 0).
    """

    kind = "adam"
    _defaults = {**Optimizer._defaults, "epsilon_mode": "canonical"}

    def __init__(self, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 epsilon_mode="canonical", clip_norm=None, clip_value=None, lr_scale=None,
                 frozen=None, where="optimizer"):
        self.learning_rate = as_schedule(learning_rate, f"{where}.learning_rate")
        self.beta1 = _number(where, "beta1", beta1, 0.0, 1.0)
        self.beta2 = _number(where, "beta2", beta2, 0.0, 1.0)
        self.epsilon = _number(where, "epsilon", epsilon, 0.0, lo_open=True)
        if epsilon_mode not in EPSILON_MODES:
            raise SpecError(f"epsilon_mode must be one of {list(EPSILON_MODES)}, found "
                            f"{epsilon_mode!r}", where=where)
        self.epsilon_mode = epsilon_mode
        self._clipping(where, clip_norm, clip_value, lr_scale, frozen)

    def _init_state(self, params):
        return {"m": {k: np.zeros_like(v) for k, v in params.items()},
                "v": {k: np.zeros_like(v) for k, v in params.items()}}

    def slots(self, state):
        return {f"{slot}/{k}": v for slot in ("m", "v") for k, v in state[slot].items()}

    def _decay(self, path):
        return 0.0

    def _update(self, params, grads, state, step):
        lrs = self.learning_rates(params, step)
        k = step + 1
        b1, b2 = self.beta1, self.beta2
        new_p, m_new, v_new = {}, {}, {}
        for name, p in params.items():
            g = grads[name]
            m = b1 * state["m"][name] + (1 - b1) * g
            v = b2 * state["v"][name] + (1 - b2) * g * g
            if self.epsilon_mode == "hat":
                d = np.sqrt(1 - b2 ** k) / (1 - b1 ** k) * m / (np.sqrt(v) + self.epsilon)
            else:
                d = (m / (1 - b1 ** k)) / (np.sqrt(v / (1 - b2 ** k)) + self.epsilon)
            new_p[name] = p - lrs[name] * (d + self._decay(name) * p)
            m_new[name], v_new[name] = m, v
        return new_p, {"m": m_new, "v": v_new}


class AdamW(Adam):
    __doc__ = Adam.__doc__
    kind = "adamw"
    _defaults = {**Adam._defaults, "decay": "all"}

    def __init__(self, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_decay=0.01, epsilon_mode="canonical", decay="all", clip_norm=None,
                 clip_value=None, lr_scale=None, frozen=None, where="optimizer"):
        super().__init__(learning_rate, beta1, beta2, epsilon, epsilon_mode, clip_norm,
                         clip_value, lr_scale, frozen, where)
        self.weight_decay = _number(where, "weight_decay", weight_decay, 0.0)
        self.decay = _decay_mask(where, decay)

    def _decay(self, path):
        return self.weight_decay if self.decays(path) else 0.0


class RMSprop(Optimizer):
    """torch's form. v <- rho v + (1 - rho) g^2; centered: mg <- rho mg + (1 - rho) g and
    denom = sqrt(v - mg^2) + eps, else denom = sqrt(v) + eps (eps outside the square root);
    with momentum: b <- momentum * b + g / denom, p <- p - lr * b; without: p <- p - lr * g / denom.
    Every accumulator starts at 0 (Keras and optax can start v elsewhere; no bias correction).
    Slots: ``v``, ``mg`` (centered only), ``velocity`` (momentum > 0 only).
    """

    kind = "rmsprop"

    def __init__(self, learning_rate=1e-2, rho=0.99, momentum=0.0, centered=False, epsilon=1e-8,
                 clip_norm=None, clip_value=None, lr_scale=None, frozen=None, where="optimizer"):
        self.learning_rate = as_schedule(learning_rate, f"{where}.learning_rate")
        self.rho = _number(where, "rho", rho, 0.0, 1.0)
        self.momentum = _number(where, "momentum", momentum, 0.0, 1.0)
        if not isinstance(centered, bool):
            raise SpecError(f"centered must be true or false, found {centered!r}", where=where)
        self.centered = centered
        self.epsilon = _number(where, "epsilon", epsilon, 0.0, lo_open=True)
        self._clipping(where, clip_norm, clip_value, lr_scale, frozen)

    def slot_names(self):
        return ("v",) + (("mg",) if self.centered else ()) + (
            ("velocity",) if self.momentum else ())

    def _init_state(self, params):
        return {s: {k: np.zeros_like(v) for k, v in params.items()} for s in self.slot_names()}

    def slots(self, state):
        return {f"{slot}/{k}": v for slot in self.slot_names() for k, v in state[slot].items()}

    def _update(self, params, grads, state, step):
        lrs = self.learning_rates(params, step)
        rho = self.rho
        new_p, new_s = {}, {s: {} for s in self.slot_names()}
        for k, p in params.items():
            g = grads[k]
            v = rho * state["v"][k] + (1 - rho) * g * g
            new_s["v"][k] = v
            if self.centered:
                mg = rho * state["mg"][k] + (1 - rho) * g
                new_s["mg"][k] = mg
                denom = np.sqrt(v - mg * mg) + self.epsilon
            else:
                denom = np.sqrt(v) + self.epsilon
            if self.momentum:
                b = self.momentum * state["velocity"][k] + g / denom
                new_s["velocity"][k] = b
                new_p[k] = p - lrs[k] * b
            else:
                new_p[k] = p - lrs[k] * (g / denom)
        return new_p, new_s


class Adagrad(Optimizer):
    """a <- a + g^2 (a starts at ``initial_accumulator`` everywhere);
    p <- p - lr * g / (sqrt(a) + eps), eps outside the square root (torch's form; optax puts it
    inside, Keras 3 outside). Slot: ``accumulator`` (a).
    """

    kind = "adagrad"

    def __init__(self, learning_rate=1e-2, initial_accumulator=0.0, epsilon=1e-10,
                 clip_norm=None, clip_value=None, lr_scale=None, frozen=None, where="optimizer"):
        self.learning_rate = as_schedule(learning_rate, f"{where}.learning_rate")
        self.initial_accumulator = _number(where, "initial_accumulator", initial_accumulator, 0.0)
        self.epsilon = _number(where, "epsilon", epsilon, 0.0)
        if self.initial_accumulator == 0.0 and self.epsilon == 0.0:
            raise SpecError("adagrad needs epsilon > 0 or initial_accumulator > 0 (0 / 0 on a "
                            "zero gradient)", where=where)
        self._clipping(where, clip_norm, clip_value, lr_scale, frozen)

    def _init_state(self, params):
        return {k: np.full_like(v, self.initial_accumulator) for k, v in params.items()}

    def slots(self, state):
        return {f"accumulator/{k}": v for k, v in state.items()}

    def _update(self, params, grads, state, step):
        lrs = self.learning_rates(params, step)
        new_p, new_s = {}, {}
        for k, p in params.items():
            g = grads[k]
            a = state[k] + g * g
            new_s[k] = a
            new_p[k] = p - lrs[k] * (g / (np.sqrt(a) + self.epsilon))
        return new_p, new_s


class Lion(Optimizer):
    """c = b1 m + (1 - b1) g;  p <- p - lr * (sign(c) + wd * p) (decoupled decay, on the
    parameters ``decay`` selects);  m <- b2 m + (1 - b2) g. sign(0) = 0. Slot: ``m`` (initially 0).
    """

    kind = "lion"
    _defaults = {**Optimizer._defaults, "decay": "all"}

    def __init__(self, learning_rate=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0, decay="all",
                 clip_norm=None, clip_value=None, lr_scale=None, frozen=None, where="optimizer"):
        self.learning_rate = as_schedule(learning_rate, f"{where}.learning_rate")
        self.beta1 = _number(where, "beta1", beta1, 0.0, 1.0)
        self.beta2 = _number(where, "beta2", beta2, 0.0, 1.0)
        self.weight_decay = _number(where, "weight_decay", weight_decay, 0.0)
        self.decay = _decay_mask(where, decay)
        self._clipping(where, clip_norm, clip_value, lr_scale, frozen)

    def _init_state(self, params):
        return {k: np.zeros_like(v) for k, v in params.items()}

    def slots(self, state):
        return {f"m/{k}": v for k, v in state.items()}

    def _update(self, params, grads, state, step):
        lrs = self.learning_rates(params, step)
        b1, b2 = self.beta1, self.beta2
        new_p, new_s = {}, {}
        for k, p in params.items():
            g, m = grads[k], state[k]
            wd = self.weight_decay if self.decays(k) else 0.0
            new_p[k] = p - lrs[k] * (np.sign(b1 * m + (1 - b1) * g) + wd * p)
            new_s[k] = b2 * m + (1 - b2) * g
        return new_p, new_s


KINDS = {c.kind: c for c in (SGD, Adam, AdamW, RMSprop, Adagrad, Lion)}


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
