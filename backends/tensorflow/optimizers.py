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
  1 - 0.999 alone loses five digits).
"""

from __future__ import annotations

from types import SimpleNamespace

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

    def __init__(self, learning_rate, var_list, name: str):
        super().__init__(name=name)
        self.schedule = learning_rate  # a rosetta.schedules.Schedule: lr(step, xp)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.slots = {}
        self.build(var_list)

    def build(self, var_list) -> None:
        """Create the zero-initialised slot variables of every variable in ``var_list``."""
        keys = [slot_key(v) for v in var_list]
        if len(set(keys)) != len(keys):
            raise ValueError(f"variables need unique names for their optimizer slots: {keys}")
        for slot in self.slot_names:
            self.slots[slot] = {
                slot_key(v): tf.Variable(tf.zeros_like(v), trainable=False,
                                         name=f"{slot_key(v)}/{slot}") for v in var_list}

    def reset(self) -> None:
        """Back to the state before the first update: slots zero, step 0."""
        for table in self.slots.values():
            for var in table.values():
                var.assign(tf.zeros_like(var))
        self.step.assign(0)

    def export(self) -> dict:
        """Slot values as NumPy arrays named ``<slot>/<parameter path>`` (``velocity``, ``m``,
        ``v``: the canonical names of ``rosetta.optim``)."""
        return {f"{slot}/{key}": var.numpy().copy()
                for slot, table in self.slots.items() for key, var in table.items()}

    def learning_rate(self, dtype=tf.float32):
        """lr(step) of the next update, in ``dtype``."""
        return tf.cast(self.schedule(tf.cast(self.step, dtype), xp=TF_MATH), dtype)

    def apply_gradients(self, grads_and_vars) -> None:
        """Apply update number ``step`` to every (gradient, variable) pair, then count it."""
        pairs = [(tf.convert_to_tensor(g), v) for g, v in grads_and_vars]  # sparse -> dense
        if pairs:
            dtype = pairs[0][1].dtype
            lr, context = self.learning_rate(dtype), self.prepare(dtype)
            for g, var in pairs:
                key = slot_key(var)
                self.update(var, g, lr, {s: self.slots[s][key] for s in self.slot_names}, context)
        self.step.assign_add(1)

    def prepare(self, dtype) -> dict:
        """Per-update quantities shared by every variable."""
        return {}


class SGD(Optimizer):
    """g <- g + weight_decay * p;  v <- momentum * v + g;  p <- p - lr * v
    (nesterov: p <- p - lr * (g + momentum * v)); no momentum: p <- p - lr * g.
    lr multiplies the step, not the buffer (Keras folds it into v)."""

    def __init__(self, learning_rate, var_list, momentum=0.0, nesterov=False, weight_decay=0.0,
                 name="SGD"):
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.slot_names = ("velocity",) if momentum else ()
        super().__init__(learning_rate, var_list, name)

    def update(self, var, g, lr, slots, context):
        if self.weight_decay:
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
                 name="Adam"):
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        super().__init__(learning_rate, var_list, name)

    def prepare(self, dtype):
        k = tf.cast(self.step + 1, tf.float64)
        return {"c1": tf.cast(1.0 - tf.pow(tf.constant(self.beta1, tf.float64), k), dtype),
                "c2": tf.cast(1.0 - tf.pow(tf.constant(self.beta2, tf.float64), k), dtype)}

    def direction(self, var, g, slots, context):
        """m_hat / (sqrt(v_hat) + eps), after updating the moments."""
        b1, b2 = self.beta1, self.beta2
        m = b1 * slots["m"] + (1 - b1) * g
        v = b2 * slots["v"] + (1 - b2) * g * g
        slots["m"].assign(m)
        slots["v"].assign(v)
        return (m / context["c1"]) / (tf.sqrt(v / context["c2"]) + self.epsilon)

    def update(self, var, g, lr, slots, context):
        var.assign_sub(lr * self.direction(var, g, slots, context))


class AdamW(Adam):
    """Adam with decoupled weight decay: p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)
    (torch's Adam(weight_decay) is coupled L2 instead)."""

    def __init__(self, learning_rate, var_list, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_decay=0.01, name="AdamW"):
        self.weight_decay = weight_decay
        super().__init__(learning_rate, var_list, beta1, beta2, epsilon, name)

    def update(self, var, g, lr, slots, context):
        var.assign_sub(lr * (self.direction(var, g, slots, context) + self.weight_decay * var))


def lower(opt: spec_optim.Optimizer, var_list) -> Optimizer:
    """The native optimizer for a ``rosetta.optim`` spec, with slots for ``var_list``."""
    if isinstance(opt, spec_optim.AdamW):
        return AdamW(opt.learning_rate, var_list, opt.beta1, opt.beta2, opt.epsilon,
                     opt.weight_decay)
    if isinstance(opt, spec_optim.Adam):
        return Adam(opt.learning_rate, var_list, opt.beta1, opt.beta2, opt.epsilon)
    if isinstance(opt, spec_optim.SGD):
        return SGD(opt.learning_rate, var_list, opt.momentum, opt.nesterov, opt.weight_decay)
    raise SpecError(f"the tensorflow backend has no lowering for optimizer {opt.kind!r}",
                    where="$.optimizer")
