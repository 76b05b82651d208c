"""One lowering per registered op: a small ``tf.Module`` per graph node (the table ``LOWERINGS``).

Each node module owns its variables as attributes named like the canonical parameters
(``dense.kernel``, ``bn.mean``), with the variable named by canonical path (``dense/kernel``), and
computes its op with ``tf`` / ``tf.nn`` functions in canonical layout (NHWC, TensorFlow's own
layout: no parameter is transposed). Configuration is resolved once, at lowering time, into plain
tuples.

Where TensorFlow's default differs from the canonical rule (docs/design.md section 3) the rule is lowered
explicitly, as each class says."""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from rosetta.optim import is_frozen
from rosetta.ops.registry import LoweringTable


def batch_axis(axis: int) -> int:
    """A per-example axis (no batch axis) as an axis of the batched tensor."""
    return axis + 1 if axis >= 0 else axis


def gelu_exact(x):
    """0.5 x (1 + erf(x / sqrt 2)). Written out because tf.nn.gelu builds its constants with
    ``cast(python float, dtype)``, which rounds them through float32: ~1e-10 off in float64."""
    return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), constants in the input's dtype (see
    ``gelu_exact`` for why not tf.nn.gelu(approximate=True))."""
    return 0.5 * x * (1.0 + tf.math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def leaky_relu(x, slope):
    """x if x > 0 else slope * x. Not tf.nn.leaky_relu: its ``alpha`` is a float32 op attribute,
    so a slope such as 0.2 is rounded (1.5e-8 relative) in float64."""
    return tf.where(x > 0, x, slope * x)


# The one activation table, used by the Activation op and by the fused ``activation`` attribute of
# Dense and Conv2D. Every parameter is explicit: gelu's variant, leaky_relu's slope (Keras would
# default to 0.3), softmax's per-example axis.
ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": tf.nn.relu,
    "tanh": tf.math.tanh,
    "sigmoid": tf.math.sigmoid,
    "silu": tf.nn.silu,
    "relu6": tf.nn.relu6,
    "hard_sigmoid": lambda x: tf.nn.relu6(x + 3.0) / 6.0,
    "gelu_exact": gelu_exact,
    "gelu_tanh": gelu_tanh,
    "leaky_relu": leaky_relu,
    "softmax": lambda x, axis=-1: tf.nn.softmax(x, axis=batch_axis(axis)),
}


def activation(name: str, **kwargs):
    """The lowered activation ``name`` with its keyword arguments bound."""
    fn = ACTIVATIONS[name]
    return (lambda x: fn(x, **kwargs)) if kwargs else fn


@dataclass(frozen=True)
class LoweringContext:
    """What every node lowering needs: the variable dtype, the dropout generator and the
    frozen patterns (their parameters' variables are not trainable)."""

    dtype: tf.DType
    rng: tf.random.Generator
    frozen: tuple = ()


class NodeModule(tf.Module):
    """A lowered node. Parameters and state become ``tf.Variable`` attributes named like the
    canonical parameter (created as zeros; ``params.load`` sets them). Call with the list of input
    tensors (batch first); ``update_state`` says whether training-mode calls may assign state.

    Subclasses define ``__call__(self, xs, training=False, update_state=False)``.
    """

    def __init__(self, node, ctx: LoweringContext):
        super().__init__(name=node.name)
        self.param_names = tuple(node.params)
        self.state_names = tuple(node.state)
        for defs, trainable in ((node.params, True), (node.state, False)):
            for name, d in defs.items():
                path = f"{node.name}/{name}"
                train = trainable and not is_frozen(path, ctx.frozen)
                setattr(self, name, tf.Variable(tf.zeros(d.shape, ctx.dtype), trainable=train,
                                                name=path))


def nhwc_pads(pads) -> tuple:
    """((top, bottom), (left, right)) -> the 4-axis NHWC padding list of tf.nn / tf.pad."""
    return ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0))


def pads_as_list(pads) -> list:
    return [list(p) for p in pads]


def in_xla_context() -> bool:
    """Whether the function being traced is XLA-compiled (``tf.function(jit_compile=True)`` puts
    an XLA control-flow context on its graph). TensorFlow has no public query for this; without the
    internal helper, answer False, which takes the per-group path: correct everywhere, slower."""
    if graph_in_xla is None:
        return False
    return graph_in_xla(tf.compat.v1.get_default_graph())


try:  # TensorFlow-internal, so optional: see in_xla_context
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext as graph_in_xla
except ImportError:  # pragma: no cover - depends on the TensorFlow version
    graph_in_xla = None


# --- the table: every lowering registers itself ------------------------------------------------

LOWERINGS = LoweringTable("the tensorflow backend")


def lowers(*ops: str):
    """Decorator: register a ``NodeModule`` subclass (built as ``cls(node, ctx)``, called as
    ``module(xs, training=..., update_state=...)``) as the TensorFlow lowering of ``ops``::

        @lowers("HardSwish")
        class HardSwish(NodeModule):
            def __call__(self, xs, training=False, update_state=False):
                return xs[0] * tf.nn.relu6(xs[0] + 3.0) / 6.0
    """
    return LOWERINGS.register(ops)
