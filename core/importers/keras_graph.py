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
* Dropout: the rate is the drop probability (inverted scaling); a ``noise_shape`` that shares one
  mask along some axis is other math (the spec draws one keep decision per element) and is
  refused; a ``noise_shape`` equal to the full shape (or all ``None``) is plain dropout.
* activations by Keras's own names: ``linear`` = identity; ``gelu`` is the exact erf form;
  ``hard_sigmoid`` is Keras 3's relu6(x + 3)/6; ``hard_silu``/``hard_swish`` map to HardSwish;
  ``swish``/``silu`` to silu; ``leaky_relu`` keeps its slope (0.2 unless given).
* The hard sigmoid that MobileNetV3 writes out, ``ReLU(6.0)(x + 3.0) * (1.0 / 6.0)`` (an Add
  operation with 3.0, a ReLU layer with max_value 6, a Multiply operation with 1/6, or a divide
  by 6.0, each read by the next alone), is one Activation(hard_sigmoid): the same function
  (x·(1/6) and x/6 differ by at most one rounding). Any other tensor-with-constant operation
  is refused until the spec has the op.
* ``trainable=False`` on a layer with weights is refused (the spec has no frozen parameters yet;
  a frozen Keras BatchNormalization also runs in inference mode, which is other math).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rosetta.graph import Input, Model
from rosetta.importers.builder import Builder, Unsupported, Value, check_shapes
from rosetta.importers.errors import ImportRefused
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


class _Ctx:
    """One node being mapped: its operation, Keras tensors, spec inputs and the builder."""

    def __init__(self, b: Builder, op, node, inputs, out_shape):
        self.b, self.op, self.node, self.inputs, self.out_shape = b, op, node, inputs, out_shape
        self.label = _label(op)

    def layer(self, op, inputs=None, *, name=None, params=None, state=None, out_shape=(),
              **attrs) -> Value:
        """``out_shape``: the Keras shape of the result (default the node's output)."""
        return self.b.layer(op, self.inputs if inputs is None else inputs,
                            name=name or self.op.name, source=self.label, params=params,
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
    return _act(c, build("identity"), c.op.activation, f"{c.op.name}_act")


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
    return c.layer("BatchNorm", params=c.weights(scale="gamma", bias="beta"),
                   state=c.weights(mean="moving_mean", var="moving_variance"),
                   momentum=float(op.momentum), epsilon=float(op.epsilon))


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
        y = c.layer(op_name, name=f"{c.op.name}_pool", out_shape=None)
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
    if ns is not None:
        full = tuple(c.out_shape)
        if any(n is not None and n != full[i] for i, n in enumerate(ns) if i > 0) or (
                len(ns) != len(full)):
            raise Unsupported(f"noise_shape={tuple(ns)} shares one keep decision along an axis "
                              f"(the spec's Dropout draws one per element)")
    return c.layer("Dropout", rate=float(c.op.rate))


def _activation_layer(c: _Ctx):
    return _act(c, c.inputs[0], c.op.activation, c.op.name)   # 'linear': its input itself


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


def _op_node(c: _Ctx):
    kind = type(c.op).__name__
    k = _constant(c.node)
    if k is None and len(c.inputs) == 2 and kind in ("Add", "Multiply"):
        return _add(c) if kind == "Add" else _multiply(c)
    if k is not None:
        raise Unsupported(f"a tensor {kind.lower()} with the constant {k!r} (no spec op "
                          f"computes a tensor with a constant yet)")
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
    refusals: dict = {}

    def refuse(label, why):
        refusals.setdefault(label, []).append(why)

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not layer.trainable and layer.weights:
            refuse(_label(layer), "trainable=False (the spec has no frozen parameters yet; a "
                                  "frozen BatchNormalization also runs in inference mode)")
    graph_input = Input(shape, name="x", kind=kind)
    env = {id(kin): Value(graph_input, "plain", tuple(kin.shape))}
    nodes = [n for d in sorted(fn._nodes_by_depth, reverse=True) for n in fn._nodes_by_depth[d]]
    consumers: dict = {}
    for n in nodes:
        for t in n.input_tensors:
            consumers.setdefault(id(t), []).append(n)
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
            continue   # an input was refused already: its own line names it
        if len(outs) != 1:
            refuse(label, f"{len(outs)} outputs (one-output layers map)")
            continue
        if isinstance(op, keras.Model):
            refuse(label, "a nested model (import the model it contains on its own, or build "
                          "one flat functional model)")
            continue
        c = _Ctx(b, op, node, ins, tuple(outs[0].shape))
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
            refuse(label, str(e))
            continue
        except Exception as e:  # a spec check (shape, attribute) the layer's settings fail
            refuse(label, f"{type(e).__name__}: {e}")
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
    unused = [v.path for v in model.weights if v.path not in b.names
              and "float" in str(v.dtype)]
    if unused:
        raise ImportRefused([f"{p}: a variable no mapped layer reads (the spec has no unused "
                             f"parameters)" for p in unused])
    return KerasCaptured(graph, b.params, b.state, b.names, b.node_source, shape, kind,
                         keras_nodes)
