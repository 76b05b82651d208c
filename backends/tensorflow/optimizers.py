"""Optimizer lowering: ``tf.Module`` optimizers with the canonical update rules of
``rosetta.optim`` and the familiar ``apply_gradients(grads_and_vars)`` API.

Keras's optimizers cannot be configured to the canonical rules (its SGD folds lr into the momentum
buffer, its Adam adds epsilon before bias correction: "epsilon hat"), and Keras 3 binds one backend
per process, so the rules are written here with ``tf`` ops:

* slot variables are created up front (``build``), named ``<param path>/<slot>``;
* ``step`` is an int64 variable counting the updates already applied; update number ``step``
  uses ``lr(step)``, computed in-graph from the schedule with TensorFlow math (``TF_MATH``) in the
  variables' dtype, then ``step`` is incremented;
* Adam's bias corrections 1 - beta^k are computed in float64 and cast once (in float32,
  1 - 0.999 alone loses five digits); ``epsilon_mode="hat"`` (Keras's rule) uses the factor
  sqrt(1 - b2^k) / (1 - b1^k), computed the same way;
* RMSprop (torch's form: eps outside the square root, accumulators from 0, lr outside the
  momentum buffer), Adagrad (accumulator from ``initial_accumulator``, eps outside the square
  root) and Lion are written here too (Keras's RMSprop and Adagrad differ in both);
* ``clip_value`` / ``clip_norm`` clip the gradients in ``apply_gradients`` before any rule: values
  first, then g * min(1, c / ||g||) with the global norm, no epsilon (Keras's ``clipnorm`` is
  per variable);
* ``decay`` ("all" | "kernels") selects the variables weight decay applies to, by canonical path
  (``rosetta.optim.decays``);
* ``lr_scale``: each variable is updated with lr(step) * ``lr_factor`` of its canonical path
  (``rosetta.optim.lr_factor``), decoupled decay included.

Slot names (``export``): SGD ``velocity``; Adam/AdamW ``m``, ``v``; RMSprop ``v``, ``mg``
(centered), ``velocity`` (momentum); Adagrad ``accumulator``; Lion ``m``.

Resuming (``load``): the slot variables and ``step`` are assigned in place; the compiled steps
read them as variables, so nothing is retraced, and lr(step), the bias corrections and the
epsilon-hat factor all follow from ``step``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import tensorflow as tf

from rosetta import optim as spec_optim
from rosetta.errors import SpecError

# The array namespace the schedules are written against (rosetta.schedules), in TensorFlow.
TF_MATH = SimpleNamespace(floor=tf.math.floor, cos=tf.math.cos, minimum=tf.minimum,
                          maximum=tf.maximum, where=tf.where)


def slot_key(var: tf.Variable) -> str:
    """A variable's key in the slot tables: its name without the ``:0`` suffix (the canonical
    path for variables made by this backend)."""
    return var.name.split(":")[0]


class Optimizer(tf.Module):
    """Base: schedule, step counter, slot tables, ``apply_gradients`` and ``reset``.

    Subclasses name their ``slot_names`` and define ``update(var, g, lr, slots, context)``, which
    assigns the new slot values and parameter for one variable.
    """

    slot_names: tuple = ()
    slot_init: dict = {}  # slot -> initial value where it is not 0
    clip_norm = clip_value = None
    lr_scale: dict = {}  # glob pattern over canonical paths -> lr factor (rosetta.optim)

    def __init__(self, learning_rate, var_list, name: str):
        super().__init__(name=name)
        self.schedule = learning_rate  # a rosetta.schedules.Schedule: lr(step, xp)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.slots = {}
        self.build(var_list)

    def build(self, var_list) -> None:
        """Create the slot variables of every variable in ``var_list`` (``slot_init`` or 0)."""
        keys = [slot_key(v) for v in var_list]
        if len(set(keys)) != len(keys):
            raise ValueError(f"variables need unique names for their optimizer slots: {keys}")
        for slot in self.slot_names:
            self.slots[slot] = {
                slot_key(v): tf.Variable(self._initial(slot, v), trainable=False,
                                         name=f"{slot_key(v)}/{slot}") for v in var_list}

    def _initial(self, slot, var):
        # tf.constant in the variable's dtype: tf.cast(0.1, float64) would go through float32
        return tf.fill(tf.shape(var), tf.constant(self.slot_init.get(slot, 0.0), var.dtype))

    def reset(self) -> None:
        """Back to the state before the first update: slots at their initial values, step 0."""
        for slot, table in self.slots.items():
            for var in table.values():
                var.assign(self._initial(slot, var))
        self.step.assign(0)

    def export(self) -> dict:
        """Slot values as NumPy arrays named ``<slot>/<parameter path>`` (``velocity``, ``m``,
        ``v``: the canonical names of ``rosetta.optim``)."""
        from rosetta.backends.tensorflow.params import to_host

        return {f"{slot}/{key}": to_host(var)
                for slot, table in self.slots.items() for key, var in table.items()}

    def load(self, slots: dict, step: int) -> None:
        """Set the slot variables from ``slots`` (exactly the names of ``export``, checked by
        the core's ``Optimizer.check_slots``) and the update count ``step``: the next
        ``apply_gradients`` applies update number ``step``."""
        for name, a in slots.items():
            slot, key = name.split("/", 1)
            var = self.slots[slot][key]
            var.assign(np.asarray(a, dtype=var.dtype.as_numpy_dtype))
        self.step.assign(int(step))

    def learning_rate(self, dtype=tf.float32):
        """lr(step) of the next update, in ``dtype`` (computed in float32 for bf16 / float16
        variables: the step count is not exact in bf16 beyond 256, then rounded once)."""
        at = dtype if dtype in (tf.float32, tf.float64) else tf.float32
        return tf.cast(self.schedule(tf.cast(self.step, at), xp=TF_MATH), dtype)

    def apply_gradients(self, grads_and_vars) -> None:
        """Apply update number ``step`` to every (gradient, variable) pair, then count it."""
        pairs = [(tf.convert_to_tensor(g), v) for g, v in grads_and_vars]  # sparse -> dense
        pairs = self.clip(pairs)
        shared = {}   # per variable dtype: lr(step) and the shared quantities, computed once
        for g, var in pairs:
            dtype = var.dtype
            if dtype not in shared:
                shared[dtype] = self.learning_rate(dtype), self.prepare(dtype)
            lr, context = shared[dtype]
            key = slot_key(var)
            factor = spec_optim.lr_factor(key, self.lr_scale)
            var_lr = lr if factor == 1.0 else lr * tf.constant(factor, dtype)
            self.update(var, g, var_lr, {s: self.slots[s][key] for s in self.slot_names},
                        context)
        self.step.assign_add(1)

    def clip(self, pairs):
        """Gradients clipped by value, then by global norm (``rosetta.optim.clip_gradients``)."""
        if self.clip_value is not None:
            pairs = [(tf.clip_by_value(g, tf.constant(-self.clip_value, g.dtype),
                                       tf.constant(self.clip_value, g.dtype)), v)
                     for g, v in pairs]
        if self.clip_norm is not None and pairs:
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(g * g) for g, _ in pairs]))
            c = tf.constant(self.clip_norm, norm.dtype)  # not tf.cast: no float32 detour
            factor = tf.where(norm > c, c / norm, tf.ones_like(norm))
            pairs = [(g * factor, v) for g, v in pairs]
        return pairs

    def decays(self, var) -> bool:
        return spec_optim.decays(slot_key(var), getattr(self, "decay", "all"))

    def prepare(self, dtype) -> dict:
        """Per-update quantities shared by every variable."""
        return {}


class SGD(Optimizer):
    """g <- g + weight_decay * p;  v <- momentum * v + g;  p <- p - lr * v
    (nesterov: p <- p - lr * (g + momentum * v)); no momentum: p <- p - lr * g.
    lr multiplies the step, not the buffer (Keras folds it into v)."""

    def __init__(self, learning_rate, var_list, momentum=0.0, nesterov=False, weight_decay=0.0,
                 decay="all", name="SGD"):
        self.decay = decay
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.slot_names = ("velocity",) if momentum else ()
        super().__init__(learning_rate, var_list, name)

    def update(self, var, g, lr, slots, context):
        if self.weight_decay and self.decays(var):
            g = g + self.weight_decay * var
        if self.momentum:
            v = slots["velocity"]
            v_new = self.momentum * v + g
            v.assign(v_new)
            d = g + self.momentum * v_new if self.nesterov else v_new
        else:
            d = g
        var.assign_sub(lr * d)


class Adam(Optimizer):
    """m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  k = step + 1;
    p <- p - lr * (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps): eps after bias correction
    (Keras adds it before, "epsilon hat")."""

    slot_names = ("m", "v")

    def __init__(self, learning_rate, var_list, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 epsilon_mode="canonical", name="Adam"):
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.epsilon_mode = epsilon_mode
        super().__init__(learning_rate, var_list, name)

    def prepare(self, dtype):
        k = tf.cast(self.step + 1, tf.float64)
        c1 = 1.0 - tf.pow(tf.constant(self.beta1, tf.float64), k)
        c2 = 1.0 - tf.pow(tf.constant(self.beta2, tf.float64), k)
        if self.epsilon_mode == "hat":
            return {"alpha": tf.cast(tf.sqrt(c2) / c1, dtype)}
        return {"c1": tf.cast(c1, dtype), "c2": tf.cast(c2, dtype)}

    def direction(self, var, g, slots, context):
        """m_hat / (sqrt(v_hat) + eps), or with epsilon hat
        sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(v) + eps), after updating the moments."""
        b1, b2 = self.beta1, self.beta2
        m = b1 * slots["m"] + (1 - b1) * g
        v = b2 * slots["v"] + (1 - b2) * g * g
        slots["m"].assign(m)
        slots["v"].assign(v)
        if self.epsilon_mode == "hat":
            return context["alpha"] * m / (tf.sqrt(v) + self.epsilon)
        return (m / context["c1"]) / (tf.sqrt(v / context["c2"]) + self.epsilon)

    def update(self, var, g, lr, slots, context):
        var.assign_sub(lr * self.direction(var, g, slots, context))


class AdamW(Adam):
    """Adam with decoupled weight decay: p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)
    (torch's Adam(weight_decay) is coupled L2 instead)."""

    def __init__(self, learning_rate, var_list, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_decay=0.01, epsilon_mode="canonical", decay="all", name="AdamW"):
        self.weight_decay = weight_decay
        self.decay = decay
        super().__init__(learning_rate, var_list, beta1, beta2, epsilon, epsilon_mode, name)

    def update(self, var, g, lr, slots, context):
        d = self.direction(var, g, slots, context)
        if self.decays(var):
            d = d + self.weight_decay * var
        var.assign_sub(lr * d)


class RMSprop(Optimizer):
    """v <- rho v + (1 - rho) g^2; centered: mg <- rho mg + (1 - rho) g,
    denom = sqrt(v - mg^2) + eps, else sqrt(v) + eps; momentum: b <- mu b + g / denom,
    p <- p - lr b; else p <- p - lr g / denom (torch's form)."""

    def __init__(self, learning_rate, var_list, rho=0.99, momentum=0.0, centered=False,
                 epsilon=1e-8, name="RMSprop"):
        self.rho, self.momentum, self.centered, self.epsilon = rho, momentum, centered, epsilon
        self.slot_names = ("v",) + (("mg",) if centered else ()) + (
            ("velocity",) if momentum else ())
        super().__init__(learning_rate, var_list, name)

    def update(self, var, g, lr, slots, context):
        rho = self.rho
        v = rho * slots["v"] + (1 - rho) * g * g
        slots["v"].assign(v)
        if self.centered:
            mg = rho * slots["mg"] + (1 - rho) * g
            slots["mg"].assign(mg)
            denom = tf.sqrt(v - mg * mg) + self.epsilon
        else:
            denom = tf.sqrt(v) + self.epsilon
        if self.momentum:
            b = self.momentum * slots["velocity"] + g / denom
            slots["velocity"].assign(b)
            var.assign_sub(lr * b)
        else:
            var.assign_sub(lr * (g / denom))


class Adagrad(Optimizer):
    """a <- a + g^2 (a starts at ``initial_accumulator``); p <- p - lr g / (sqrt(a) + eps)."""

    slot_names = ("accumulator",)

    def __init__(self, learning_rate, var_list, initial_accumulator=0.0, epsilon=1e-10,
                 name="Adagrad"):
        self.epsilon = epsilon
        self.slot_init = {"accumulator": initial_accumulator}
        super().__init__(learning_rate, var_list, name)

    def update(self, var, g, lr, slots, context):
        a = slots["accumulator"] + g * g
        slots["accumulator"].assign(a)
        var.assign_sub(lr * (g / (tf.sqrt(a) + self.epsilon)))


class Lion(Optimizer):
    """c = b1 m + (1 - b1) g;  p <- p - lr (sign(c) + wd p);  m <- b2 m + (1 - b2) g."""

    slot_names = ("m",)

    def __init__(self, learning_rate, var_list, beta1=0.9, beta2=0.99, weight_decay=0.0,
                 decay="all", name="Lion"):
        self.beta1, self.beta2, self.weight_decay, self.decay = beta1, beta2, weight_decay, decay
        super().__init__(learning_rate, var_list, name)

    def update(self, var, g, lr, slots, context):
        m = slots["m"]
        d = tf.sign(self.beta1 * m + (1 - self.beta1) * g)
        if self.weight_decay and self.decays(var):
            d = d + self.weight_decay * var
        var.assign_sub(lr * d)
        m.assign(self.beta2 * m + (1 - self.beta2) * g)


def _make(opt: spec_optim.Optimizer, var_list) -> Optimizer:
    if isinstance(opt, spec_optim.AdamW):
        return AdamW(opt.learning_rate, var_list, opt.beta1, opt.beta2, opt.epsilon,
                     opt.weight_decay, opt.epsilon_mode, opt.decay)
    if isinstance(opt, spec_optim.Adam):
        return Adam(opt.learning_rate, var_list, opt.beta1, opt.beta2, opt.epsilon,
                    opt.epsilon_mode)
    if isinstance(opt, spec_optim.SGD):
        return SGD(opt.learning_rate, var_list, opt.momentum, opt.nesterov, opt.weight_decay,
                   opt.decay)
    if isinstance(opt, spec_optim.RMSprop):
        return RMSprop(opt.learning_rate, var_list, opt.rho, opt.momentum, opt.centered,
                       opt.epsilon)
    if isinstance(opt, spec_optim.Adagrad):
        return Adagrad(opt.learning_rate, var_list, opt.initial_accumulator, opt.epsilon)
    if isinstance(opt, spec_optim.Lion):
        return Lion(opt.learning_rate, var_list, opt.beta1, opt.beta2, opt.weight_decay,
                    opt.decay)
    raise SpecError(f"the tensorflow backend has no lowering for optimizer {opt.kind!r}",
                    where="$.optimizer")


def lower(opt: spec_optim.Optimizer, var_list) -> Optimizer:
    """The native optimizer for a ``rosetta.optim`` spec, with slots for ``var_list``, the spec's
    gradient clipping and its per-parameter learning-rate factors."""
    native = _make(opt, var_list)
    native.clip_norm, native.clip_value = opt.clip_norm, opt.clip_value
    native.lr_scale = dict(opt.lr_scale)
    return native

