"""Read a Keras 3 Sequential or functional model as a spec graph (docs/design.md section 12).

The model's own graph is walked, node by node, in dependency order (``_nodes_by_depth``): a
Sequential model through the functional model Keras builds for it once it has an input shape.
Every node is a layer (``Conv2D``, ``BatchNormalization``, ...) or an operation node that a
``keras.ops`` call on symbolic tensors leaves in the graph (``x + 3.0`` is an ``Add`` operation
with the constant 3.0). Each maps through ``LAYERS`` (by class name) to the spec op that computes
the same function, with Keras's weights read by ``variable.path`` (``conv1/kernel``): Keras is
channels last and its Dense/Conv/Depthwise/Separable kernels are already in canonical layout, so
every layout is the identity. What no spec op reproduces exactly is collected, one line per node
(``add (keras.ops.Add): ...``), and refused together (``ImportRefused``).

Conventions checked against the spec's (docs/reference/conventions.md):

* BatchNormalization: Keras's moving = m·moving + (1 − m)·batch with the biased batch variance
  is the canonical rule with the same ``momentum``; ``epsilon`` is passed (Keras's default is
  1e-3); the axis must be the channel (last) axis; ``center``/``scale`` False is refused (the
  spec's op has both).
* padding ``same`` is the canonical ``same`` (the extra cell after); average pooling excludes
  padded cells in Keras (TensorFlow's rule) as in the spec; ``causal`` is refused.
* Dropout: the rate is the drop probability (inverted scaling); a ``noise_shape`` equal to the
  full shape (or all ``None``) is plain dropout.
* activations by Keras's own names: ``linear`` = identity; ``gelu`` is the exact erf form;
  ``hard_sigmoid`` is Keras 3's relu6(x + 3)/6; ``hard_silu``/``hard_swish`` map to HardSwish;
  ``swish``/``silu`` to silu; ``leaky_relu`` keeps its slope (0.2 unless given).
* The hard sigmoid that MobileNetV3 writes out, ``ReLU(6.0)(x + 3.0) * (1.0 / 6.0)`` (an Add
  operation with 3.0, a ReLU layer with max_value 6, a Multiply operation with 1/6, or a divide
  by 6.0, each read by the next alone), is one Activation(hard_sigmoid): the same function
  (x·(1/6) and x/6 differ by at most one rounding). Any other ``+ - * /`` of a tensor and a
  Python number is the spec's binary op with ``constant`` (``reverse`` for ``c - x``,
  ``c / x``); other operations with a constant are refused.
* Rescaling (x·scale + offset) and Normalization ((x − mean) / maximum(sqrt(variance), ε), or
  its ``invert``) are the broadcasting binary ops with their fixed values as constants (a number,
  or a Constant node per channel): they are not trained, so an adapted Normalization's variables
  are written into the spec, not into its parameters or state.
* Dropout with ``noise_shape=(None, 1, ..., 1)`` (EfficientNet's drop-connect: one keep decision
  per example) is StochasticDepth; other shared noise shapes are refused.
* ``trainable=False`` on a layer maps its weights to the spec optimizer's ``frozen`` patterns
  (``keras_import``). On a BatchNormalization Keras 3 then also runs it in inference mode (its
  moving statistics normalise, and are not updated, even in training), which the spec's
  BatchNorm does not: it is the affine map written out (``_frozen_batch_norm``), its moving
  statistics frozen parameters of ``Parameter`` nodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rosetta.graph import Input, Model
from rosetta.importers.builder import Builder, Unsupported, Value, check_shapes
from rosetta.importers.errors import ImportRefused
from rosetta.importers.keras_parts import whole
from rosetta.importers.keras_recurrent import LAYERS as RECURRENT_LAYERS
from rosetta.ops.elementwise import FUSED


@dataclass
class KerasCaptured:
    graph: object
    params: dict
    state: dict
    names: dict          # Keras variable path -> canonical path
    node_source: dict    # spec node -> source label
    input_shape: tuple   # per example
    input_kind: str
    keras_nodes: dict    # spec node -> name of the Keras layer/operation whose output it is
    layouts: dict = None  # Keras source name -> Layout (identity unless a mapping says)


# Keras activation name -> (spec Activation attrs) or "HardSwish"; others are refused
ACTIVATIONS = {
    "linear": None, "relu": {"fn": "relu"}, "relu6": {"fn": "relu6"}, "tanh": {"fn": "tanh"},
    "sigmoid": {"fn": "sigmoid"}, "silu": {"fn": "silu"}, "swish": {"fn": "silu"},
    "gelu": {"fn": "gelu", "approximate": "none"}, "hard_sigmoid": {"fn": "hard_sigmoid"},
    "softmax": {"fn": "softmax"}, "hard_silu": "HardSwish", "hard_swish": "HardSwish",
    "leaky_relu": {"fn": "leaky_relu", "slope": 0.2},
}
FUSED_NAME = {"gelu": "gelu_exact"}


def _activation_name(fn) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return name


def _label(op) -> str:
    import keras

    if isinstance(op, keras.layers.Layer):
        return f"{op.name} ({type(op).__name__})"
    return f"{op.name} (keras.ops.{type(op).__name__})"


def local_names(ops) -> dict:
    """id(operation) -> its name in the spec, independent of Keras's process-wide name
    counters: a name of Keras's automatic form (``auto_name``: the class name in snake case,
    then ``_<n>`` from a counter shared by every model of the process, so ``add_3`` in one test
    order is ``add`` in another) is numbered anew within this model, in graph order (``add``,
    ``add_1``, ...), skipping the names given by hand, which are kept. ``ops`` in graph order;
    labels and refusals keep the Keras names the user sees."""
    from keras.src.utils.naming import to_snake_case

    auto, out = {}, {}
    for op in ops:
        base = to_snake_case(type(op).__name__)
        if re.fullmatch(rf"{re.escape(base)}(_\d+)?", op.name):
            auto[id(op)] = base
        else:
            out[id(op)] = op.name
    taken = set(out.values())
    for op in ops:
        if id(op) in auto and id(op) not in out:
            name, k = auto[id(op)], 0
            while name in taken:
                k += 1
                name = f"{auto[id(op)]}_{k}"
            taken.add(name)
            out[id(op)] = name
    return out


class _Ctx:
    """One node being mapped: its operation, Keras tensors, spec inputs and the builder;
    ``name``: the base of its spec node names (``local_names``)."""

    def __init__(self, b: Builder, op, node, inputs, out_shape, name=None):
        self.b, self.op, self.node, self.inputs, self.out_shape = b, op, node, inputs, out_shape
        self.label = _label(op)
        self.name = name or op.name

    def layer(self, op, inputs=None, *, name=None, params=None, state=None, out_shape=(),
              **attrs) -> Value:
        """``out_shape``: the Keras shape of the result (default the node's output)."""
        return self.b.layer(op, self.inputs if inputs is None else inputs,
                            name=name or self.name, source=self.label, params=params,
                            state=state, layout="plain",
                            out_shape=self.out_shape if out_shape == () else out_shape, **attrs)

    def weights(self, **names):
        """{spec param: (Keras variable path, identity)} for the layer's attributes ``names``."""
        out = {}
        for spec_param, attr in names.items():
            v = getattr(self.op, attr, None)
            if v is None:
                raise Unsupported(f"no variable {attr!r}")
            out[spec_param] = (v.path, "identity")
        return out


def _channels_last(op):
    fmt = getattr(op, "data_format", "channels_last")
    if fmt != "channels_last":
        raise Unsupported(f"data_format={fmt!r} (the spec is channels last; build the model "
                          f"with data_format='channels_last')")


def _act(c: _Ctx, y: Value, fn, name: str) -> Value:
    """Apply Keras activation ``fn`` to ``y`` as its own spec layer (identity: nothing)."""
    key = _activation_name(fn)
    if key not in ACTIVATIONS:
        raise Unsupported(f"activation {key!r} (the spec maps {sorted(ACTIVATIONS)})")
    spec = ACTIVATIONS[key]
    if spec is None:
        return y
    if spec == "HardSwish":
        return c.layer("HardSwish", [y], name=name)
    return c.layer("Activation", [y], name=name, **spec)


def _fused(c: _Ctx, build) -> Value:
    """A layer with a fused ``activation``: fused into the spec op where the spec fuses it,
    else a separate layer ``<name>_act`` after it."""
    key = _activation_name(c.op.activation)
    fused = FUSED_NAME.get(key, key if key != "linear" else "identity")
    if fused in FUSED:
        return build(fused)
    return _act(c, build("identity"), c.op.activation, f"{c.name}_act")


def _bias(c, **names):
    p = c.weights(**names)
    if c.op.use_bias:
        p.update(c.weights(bias="bias"))
    return p


def _dense(c: _Ctx):
    return _fused(c, lambda fn: c.layer("Dense", params=_bias(c, kernel="kernel"),
                                         units=c.op.units, use_bias=c.op.use_bias,
                                         activation=fn))


def _conv(c: _Ctx, op: str):
    _channels_last(c.op)
    if c.op.padding not in ("valid", "same"):
        raise Unsupported(f"padding={c.op.padding!r} (valid and same map)")
    return _fused(c, lambda fn: c.layer(op, params=_bias(c, kernel="kernel"),
                                         filters=c.op.filters,
                                         kernel_size=tuple(c.op.kernel_size),
                                         strides=tuple(c.op.strides), padding=c.op.padding,
                                         dilation=tuple(c.op.dilation_rate),
                                         groups=c.op.groups, use_bias=c.op.use_bias,
                                         activation=fn))


def _depthwise(c: _Ctx):
    _channels_last(c.op)
    return _fused(c, lambda fn: c.layer(
        "DepthwiseConv2D", params=_bias(c, kernel="kernel"),
        kernel_size=tuple(c.op.kernel_size), strides=tuple(c.op.strides),
        padding=c.op.padding, dilation=tuple(c.op.dilation_rate),
        depth_multiplier=c.op.depth_multiplier, use_bias=c.op.use_bias, activation=fn))


def _separable(c: _Ctx):
    _channels_last(c.op)
    return _fused(c, lambda fn: c.layer(
        "SeparableConv2D",
        params=_bias(c, depthwise="depthwise_kernel", pointwise="pointwise_kernel"),
        filters=c.op.filters, kernel_size=tuple(c.op.kernel_size),
        strides=tuple(c.op.strides), padding=c.op.padding,
        dilation=tuple(c.op.dilation_rate), depth_multiplier=c.op.depth_multiplier,
        use_bias=c.op.use_bias, activation=fn))


def _batch_norm(c: _Ctx):
    op = c.op
    rank = len(c.out_shape)
    axes = [op.axis] if isinstance(op.axis, int) else list(op.axis)
    if [a % rank for a in axes] != [rank - 1]:
        raise Unsupported(f"axis={op.axis} (the spec normalizes over the channel, last, axis)")
    if not op.center or not op.scale:
        raise Unsupported(f"center={op.center}, scale={op.scale} (the spec's BatchNorm has a "
                          f"scale and an offset)")
    if getattr(op, "synchronized", False):
        raise Unsupported("synchronized=True")
    if getattr(op, "renorm", False):
        raise Unsupported("renorm=True (batch renormalization is other math)")
    if not op.trainable:
        return _frozen_batch_norm(c)
    return c.layer("BatchNorm", params=c.weights(scale="gamma", bias="beta"),
                   state=c.weights(mean="moving_mean", var="moving_variance"),
                   momentum=float(op.momentum), epsilon=float(op.epsilon))


def _frozen_batch_norm(c: _Ctx):
    """A BatchNormalization with ``trainable=False``: Keras 3 runs it in inference mode, in
    training too, y = (x − moving_mean) / sqrt(moving_variance + ε) · γ + β, and updates
    nothing. The spec's BatchNorm normalises by the batch in training, so this is that affine
    function written out: its four variables are ``Parameter`` nodes (frozen, like every weight of
    a ``trainable=False`` layer: no update, no optimizer state, gradients still reach them), then
    Subtract, Add ε, Unary sqrt, Divide, Multiply, Add, broadcasting per channel (Keras's
    tf.nn.batch_normalization computes x·inv + (β − mean·inv) with inv = γ/sqrt(var + ε): the
    same function, other rounding order)."""
    op, x = c.op, c.inputs[0]
    ch = c.out_shape[-1]

    def param(attr, role):
        return c.layer("Parameter", [], name=f"{c.name}_{role}",
                       params={"value": (getattr(op, attr).path, "identity")},
                       out_shape=(1, ch), shape=(ch,), init="ones")

    mean, var = param("moving_mean", "moving_mean"), param("moving_variance", "moving_variance")
    gamma, beta = param("gamma", "gamma"), param("beta", "beta")
    y = c.layer("Subtract", [x, mean], name=f"{c.name}_centered")
    std = c.layer("Add", [var], name=f"{c.name}_var_eps", out_shape=(1, ch),
                  constant=float(op.epsilon))
    std = c.layer("Unary", [std], name=f"{c.name}_std", out_shape=(1, ch), fn="sqrt")
    y = c.layer("Divide", [y, std], name=f"{c.name}_normalized")
    y = c.layer("Multiply", [y, gamma], name=f"{c.name}_scaled")
    return c.layer("Add", [y, beta])


def _norm(op_name):
    def f(c: _Ctx):
        op = c.op
        rank = len(c.out_shape)
        axes = [op.axis] if isinstance(op.axis, int) else list(op.axis)
        if [a % rank for a in axes] != [rank - 1]:
            raise Unsupported(f"axis={op.axis} (the spec normalizes over the last axis)")
        if not getattr(op, "center", True) or not getattr(op, "scale", True):
            raise Unsupported("center=False or scale=False (the spec's op has both)")
        if getattr(op, "rms_scaling", False):
            raise Unsupported("rms_scaling=True (use RMSNormalization)")
        return c.layer(op_name, params=c.weights(scale="gamma", bias="beta"),
                       epsilon=float(op.epsilon))
    return f


def _relu(c: _Ctx):
    op = c.op
    mx = None if op.max_value is None else float(op.max_value)
    slope, thr = float(op.negative_slope), float(op.threshold)
    if thr != 0.0:
        raise Unsupported(f"threshold={thr} (the spec's relu has none)")
    if mx is None and slope == 0.0:
        return c.layer("Activation", fn="relu")
    if mx == 6.0 and slope == 0.0:
        return c.layer("Activation", fn="relu6")
    if mx is None:
        return c.layer("Activation", fn="leaky_relu", slope=slope)
    raise Unsupported(f"max_value={mx}, negative_slope={slope} (relu, relu6 and leaky relu map)")


def _pool(op_name):
    def f(c: _Ctx):
        _channels_last(c.op)
        return c.layer(op_name, kernel_size=tuple(c.op.pool_size),
                       strides=tuple(c.op.strides), padding=c.op.padding)
    return f


def _global_pool(op_name):
    def f(c: _Ctx):
        _channels_last(c.op)
        if not c.op.keepdims:
            return c.layer(op_name)
        y = c.layer(op_name, name=f"{c.name}_pool", out_shape=None)
        return c.layer("Reshape", [y], shape=tuple(c.out_shape[1:]))
    return f


def _axis(c: _Ctx, axis: int) -> int:
    """A Keras axis (batch included) as a per-example axis."""
    rank = len(c.out_shape)
    a = axis % rank
    if a == 0:
        raise Unsupported("an operation over the batch axis")
    return a - 1


def _same_shapes(c: _Ctx, what: str):
    shapes = {tuple(t.shape) for t in c.node.input_tensors}
    if len(shapes) != 1:
        raise Unsupported(f"{what} of shapes {sorted(shapes)} (the spec's Add takes equal "
                          f"shapes)")


def _add(c: _Ctx):
    _same_shapes(c, "Add")
    return c.layer("Add")


def _multiply(c: _Ctx):
    ranks = {len(t.shape) for t in c.node.input_tensors}
    if len(ranks) != 1 or len(c.inputs) != 2:
        raise Unsupported("Multiply of inputs of different ranks or more than two inputs")
    return c.layer("Multiply")


def _dropout(c: _Ctx):
    ns = c.op.noise_shape
    full = tuple(c.out_shape)
    if ns is None or (len(ns) == len(full) and ns[0] is None and all(
            n is None or n == full[i] for i, n in enumerate(ns) if i > 0)):
        return c.layer("Dropout", rate=float(c.op.rate))
    if len(ns) == len(full) and ns[0] is None and all(n == 1 for n in ns[1:]):
        # EfficientNet's (None, 1, 1, 1): one keep decision per example, x·mask/(1 − rate)
        return c.layer("StochasticDepth", rate=float(c.op.rate))
    raise Unsupported(f"noise_shape={tuple(ns)} shares one keep decision along some axes (the "
                      f"spec draws one per element (Dropout) or one per example "
                      f"(StochasticDepth: noise_shape (None, 1, ..., 1)))")


# --- preprocessing layers: fixed constants ------------------------------------------------------

def _keras_constant(c: _Ctx, value, name: str):
    """A constant Keras broadcasts against the (N, ...) output: one Python float when it holds
    one number, else a Constant node of per-example shape (a leading batch axis of size 1, as
    Normalization's (1, ..., C), dropped). Held in float64; the program dtype rounds it, as Keras
    casts it to its compute dtype."""
    v = np.asarray(value, np.float64)
    rank = len(c.out_shape)
    if v.size == 1:
        return float(v.reshape(()))
    if v.ndim > rank or (v.ndim == rank and v.shape[0] != 1):
        raise Unsupported(f"a constant of shape {v.shape} that varies along the batch axis")
    if v.ndim == rank:
        v = v[0]
    per_example = tuple(c.out_shape[1:])
    if np.broadcast_shapes(v.shape, per_example) != per_example:
        raise Unsupported(f"a constant of shape {v.shape} that does not broadcast against "
                          f"{per_example}")
    return c.layer("Constant", [], name=name, out_shape=(1, *v.shape), value=v)


def _with_constant(c: _Ctx, op: str, x: Value, value, name: str, const_name: str) -> Value:
    """y = x op value (``op`` a broadcasting binary op of rosetta.ops.math)."""
    k = _keras_constant(c, value, const_name)
    if isinstance(k, float):
        return c.layer(op, [x], name=name, constant=k)
    return c.layer(op, [x, k], name=name)


def _float_input(c: _Ctx):
    dt = str(c.node.input_tensors[0].dtype)
    if "float" not in dt:
        raise Unsupported(f"an input of dtype {dt} (the spec's arithmetic takes floats: feed "
                          f"float images)")


def held_value(t) -> np.ndarray:
    """A constant as the Keras layer holds it (in its compute dtype), in float64."""
    import keras
    return np.asarray(keras.ops.convert_to_numpy(t), np.float64)


def _rescaling(c: _Ctx):
    """Keras: y = cast(x) · scale + offset, ``scale``/``offset`` numbers or per-channel lists
    cast to the compute dtype (read back from Keras: on tensorflow a Python float goes through
    float32 even for a float64 layer): Multiply by the scale, then Add the offset (left out when
    it is 0: x·s + 0 = x·s)."""
    op = c.op
    _float_input(c)
    scale = held_value(op.backend.cast(op.scale, op.compute_dtype))
    offset = held_value(op.backend.cast(op.offset, op.compute_dtype))
    plain = not np.any(offset != 0)
    y = _with_constant(c, "Multiply", c.inputs[0], scale,
                       c.name if plain else f"{c.name}_scaled", f"{c.name}_scale")
    if plain:
        return y
    return _with_constant(c, "Add", y, offset, c.name, f"{c.name}_offset")


def _normalization(c: _Ctx):
    """Keras 3.15's Normalization (its ``call``): y = (x − mean) / maximum(sqrt(variance), ε),
    ``invert``: y = mean + x · maximum(sqrt(variance), ε), with ε = ``keras.config.epsilon()``
    (1e-7) and mean/variance the layer's own broadcast tensors (``layer.mean``,
    ``layer.variance``: the given arrays or the adapted variables, in its compute dtype). They
    are not trained: the importer writes them into the spec as constants (Subtract/Divide, or
    Multiply/Add, with a number or a Constant node); the divisor maximum(sqrt(variance), ε) is
    computed in NumPy float64 (IEEE sqrt is correctly rounded: Keras's float64 value, which
    rounds to its float32 one)."""
    import keras

    op = c.op
    _float_input(c)
    if 0 in tuple(op._keep_axis):
        raise Unsupported(f"axis={op.axis} keeps the batch axis (a statistic per position in "
                          f"the batch)")
    if op.input_mean is None:   # adapted: the variables are constants of the spec
        c.b.constants.update(v.path for v in op.weights)
    mean, var = held_value(op.mean), held_value(op.variance)
    std = np.maximum(np.sqrt(var), float(keras.config.epsilon()))
    if op.invert:
        y = _with_constant(c, "Multiply", c.inputs[0], std, f"{c.name}_scaled", f"{c.name}_std")
        return _with_constant(c, "Add", y, mean, c.name, f"{c.name}_mean")
    y = _with_constant(c, "Subtract", c.inputs[0], mean, f"{c.name}_centered", f"{c.name}_mean")
    return _with_constant(c, "Divide", y, std, c.name, f"{c.name}_std")


def _activation_layer(c: _Ctx):
    return _act(c, c.inputs[0], c.op.activation, c.name)   # 'linear': its input itself


def _softmax(c: _Ctx):
    axes = c.op.axis if isinstance(c.op.axis, (list, tuple)) else [c.op.axis]
    if len(axes) != 1:
        raise Unsupported(f"axis={c.op.axis} (one axis)")
    return c.layer("Activation", fn="softmax", axis=_axis(c, axes[0]))


def _concat(c: _Ctx):
    return c.layer("Concatenate", axis=_axis(c, c.op.axis))


def _zero_pad(c: _Ctx):
    _channels_last(c.op)
    (t, b), (l_, r) = c.op.padding
    return c.layer("ZeroPadding2D", padding=((int(t), int(b)), (int(l_), int(r))))


def _upsample(c: _Ctx):
    _channels_last(c.op)
    if c.op.interpolation != "nearest":
        raise Unsupported(f"interpolation={c.op.interpolation!r} (nearest maps)")
    return c.layer("UpSampling2D", size=tuple(c.op.size))


def _leaky(c: _Ctx):
    return c.layer("Activation", fn="leaky_relu", slope=float(c.op.negative_slope))


LAYERS = {
    "Dense": _dense, "Conv2D": lambda c: _conv(c, "Conv2D"),
    "Conv1D": lambda c: _conv(c, "Conv1D"), "DepthwiseConv2D": _depthwise,
    "SeparableConv2D": _separable, "BatchNormalization": _batch_norm,
    "LayerNormalization": _norm("LayerNorm"), "ReLU": _relu, "LeakyReLU": _leaky,
    "Activation": _activation_layer, "Softmax": _softmax,
    "MaxPooling2D": _pool("MaxPool2D"), "AveragePooling2D": _pool("AvgPool2D"),
    "MaxPooling1D": _pool("MaxPool1D"), "AveragePooling1D": _pool("AvgPool1D"),
    "GlobalAveragePooling2D": _global_pool("GlobalAvgPool2D"),
    "GlobalMaxPooling2D": _global_pool("GlobalMaxPool2D"),
    "Add": _add, "Multiply": _multiply, "Concatenate": _concat,
    "Flatten": lambda c: c.layer("Flatten"),
    "Reshape": lambda c: c.layer("Reshape", shape=tuple(c.out_shape[1:])),
    "ZeroPadding2D": _zero_pad, "UpSampling2D": _upsample, "Dropout": _dropout,
    "Rescaling": _rescaling, "Normalization": _normalization,
}
LAYERS.update(RECURRENT_LAYERS)   # LSTM, SimpleRNN, GRU, Bidirectional: keras_recurrent.py


# --- operation nodes (keras.ops calls) ---------------------------------------------------------

def _constant(node):
    """The one Python number among ``node``'s arguments (or None)."""
    consts = [a for a in node.arguments.args if isinstance(a, (int, float))
              and not isinstance(a, bool)]
    return float(consts[0]) if len(consts) == 1 else None


def _hard_sigmoid_chain(add_node, consumers):
    """(relu node, scale node) when ``add_node`` (x + 3.0) starts ``ReLU(6)(x + 3) * (1/6)``
    (or ``/ 6.0``), each step read by the next alone; else None."""
    import keras

    def only(node):
        outs = node.output_tensors
        users = consumers.get(id(outs[0]), []) if len(outs) == 1 else []
        return users[0] if len(users) == 1 else None

    if _constant(add_node) != 3.0 or len(add_node.input_tensors) != 1:
        return None
    relu = only(add_node)
    if relu is None or not isinstance(relu.operation, keras.layers.ReLU):
        return None
    r = relu.operation
    if (r.max_value is None or float(r.max_value) != 6.0 or float(r.negative_slope) != 0.0
            or float(r.threshold) != 0.0):
        return None
    scale = only(relu)
    if scale is None or len(scale.input_tensors) != 1:
        return None
    kind, k = type(scale.operation).__name__, _constant(scale)
    if (kind == "Multiply" and k == 1.0 / 6.0) or (kind in ("TrueDivide", "Divide")
                                                   and k == 6.0
                                                   and scale.arguments.args[1] == k):
        return relu, scale
    return None


# keras.ops arithmetic of a tensor and a Python number -> the spec's binary op with ``constant``
# (Keras converts the number straight to the tensor's dtype, as the spec applies its constant)
WITH_NUMBER = {"Add": "Add", "Subtract": "Subtract", "Multiply": "Multiply",
               "TrueDivide": "Divide", "Divide": "Divide"}


def _op_node(c: _Ctx):
    kind = type(c.op).__name__
    k = _constant(c.node)
    if k is None and len(c.inputs) == 2 and kind in ("Add", "Multiply"):
        return _add(c) if kind == "Add" else _multiply(c)
    if k is not None and kind in WITH_NUMBER and len(c.inputs) == 1:
        first = c.node.arguments.args[0]
        reverse = (isinstance(first, (int, float)) and kind not in ("Add", "Multiply"))
        return c.layer(WITH_NUMBER[kind], constant=k, reverse=reverse)   # c - x, c / x
    if k is not None:
        raise Unsupported(f"a tensor {kind.lower()} with the constant {k!r} (the spec maps +, "
                          f"-, * and / of a tensor and a number)")
    raise Unsupported("no spec op reproduces this operation")


# --- the walk ----------------------------------------------------------------------------------

def _functional(model):
    """The functional model holding ``model``'s graph, or an ImportRefused line."""
    import keras
    from keras.src.models.functional import Functional

    label = f"{model.name} ({type(model).__name__})"
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise ImportRefused([f"{label}: a Sequential model without an input shape has no "
                                 f"graph yet: start it with keras.Input(shape) or build it"])
        return fn
    if isinstance(model, Functional):
        return model
    if isinstance(model, keras.Model):
        raise ImportRefused([f"{label}: a subclassed keras.Model has no layer graph to read "
                             f"(its call() is Python code): build it with the functional or "
                             f"Sequential API"])
    raise ImportRefused([f"<source> ({type(model).__name__}): not a keras.Model"])


def capture(model, *, model_name: str = "model") -> KerasCaptured:
    """The spec graph, canonical parameters and name map of the Keras ``model``."""
    import keras

    fn = _functional(model)
    root = f"{model.name} ({type(model).__name__})"
    if len(fn.inputs) != 1 or len(fn.outputs) != 1:
        raise ImportRefused([f"{root}: {len(fn.inputs)} inputs and {len(fn.outputs)} outputs "
                             f"(the spec trains a model with one input and one output)"])
    kin = fn.inputs[0]
    shape = tuple(kin.shape[1:])
    if any(s is None for s in shape):
        raise ImportRefused([f"{root}: input shape {tuple(kin.shape)} has open axes beyond "
                             f"the batch (give keras.Input a full shape)"])
    kind = "int" if "int" in str(kin.dtype) else "float"
    tensors = {v.path: np.array(keras.ops.convert_to_numpy(v.value)) for v in model.variables}
    b = Builder(tensors)
    b.constants = set()   # variable paths written into the spec as constants (Normalization)
    refusals: dict = {}

    def refuse(label, why):
        refusals.setdefault(label, []).append(why)

    def refused(node, label, why):
        """Refuse ``node`` and stand in for its outputs with placeholder inputs of their shapes,
        so that the layers after it are still read and every refused layer is listed at once
        (the placeholders never reach a spec: a refusal raises)."""
        refuse(label, why)
        for t in node.output_tensors:
            shape = tuple(t.shape[1:])
            if all(isinstance(n, int) for n in shape):
                kind = "int" if "int" in str(t.dtype) else "float"
                env[id(t)] = Value(Input(shape, name="refused", kind=kind), "plain",
                                   tuple(t.shape))

    graph_input = Input(shape, name="x", kind=kind)
    env = {id(kin): Value(graph_input, "plain", tuple(kin.shape))}
    nodes = [n for d in sorted(fn._nodes_by_depth, reverse=True) for n in fn._nodes_by_depth[d]]
    consumers: dict = {}
    for n in nodes:
        for t in n.input_tensors:
            consumers.setdefault(id(t), []).append(n)
    local = local_names([n.operation for n in nodes
                         if not isinstance(n.operation, keras.layers.InputLayer)])
    skip = {}   # id(node) -> the node whose Value its output is (a fused chain)
    keras_nodes = {}
    for node in nodes:
        op = node.operation
        if isinstance(op, keras.layers.InputLayer):
            continue
        label = _label(op)
        outs = node.output_tensors
        if id(node) in skip:
            env[id(outs[0])] = env.get(id(skip[id(node)].output_tensors[0]))
            continue
        ins = [env.get(id(t)) for t in node.input_tensors]
        if any(v is None for v in ins):
            continue   # an input the importer could not even stand in for (open shape)
        if len(outs) != 1:
            refused(node, label, f"{len(outs)} outputs (one-output layers map)")
            continue
        if isinstance(op, keras.Model):
            refused(node, label, "a nested model (import the model it contains on its own, "
                                 "or build one flat functional model)")
            continue
        c = _Ctx(b, op, node, ins, tuple(outs[0].shape), local[id(op)])
        chain = None
        try:
            if not isinstance(op, keras.layers.Layer):
                chain = (_hard_sigmoid_chain(node, consumers) if type(op).__name__ == "Add"
                         else None)
                if chain:
                    y = c.layer("Activation", fn="hard_sigmoid")
                    for n in chain:
                        skip[id(n)] = node
                    b.node_source[y.tensor.source.layer.name] = (
                        f"{label} + {_label(chain[0].operation)} + "
                        f"{_label(chain[1].operation)}")
                else:
                    y = _op_node(c)
            else:
                name = type(op).__name__
                if name not in LAYERS:
                    raise Unsupported(f"unsupported layer (the importer maps "
                                      f"{', '.join(sorted(LAYERS))})")
                y = LAYERS[name](c)
        except Unsupported as e:
            refused(node, label, str(e))
            continue
        except Exception as e:  # a spec check (shape, attribute) the layer's settings fail
            refused(node, label, f"{type(e).__name__}: {e}")
            continue
        env[id(outs[0])] = y
        last = chain[1].operation.name if (not isinstance(op, keras.layers.Layer)
                                           and chain) else op.name
        keras_nodes[y.tensor.source.layer.name] = last
    if refusals:
        raise ImportRefused([f"{k}: {'; '.join(dict.fromkeys(v))}" for k, v in refusals.items()])
    out = env.get(id(fn.outputs[0]))
    if out is None or out.tensor is graph_input:
        raise ImportRefused([f"{root}: the model computes nothing"])
    graph = Model(graph_input, out.tensor, name=model_name)
    try:
        check_shapes(graph, b)
    except Unsupported as e:
        raise ImportRefused([f"{root}: {e}"]) from None
    used = {whole(n) for n in b.names}   # a variable whose pieces (keras_parts) are mapped
    unused = [v.path for v in model.weights if v.path not in used
              and v.path not in b.constants and "float" in str(v.dtype)]
    if unused:
        raise ImportRefused([f"{p}: a variable no mapped layer reads (the spec has no unused "
                             f"parameters)" for p in unused])
    return KerasCaptured(graph, b.params, b.state, b.names, b.node_source, shape, kind,
                         keras_nodes, dict(b.layouts))
