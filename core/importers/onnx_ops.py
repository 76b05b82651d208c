"""ONNX nodes -> spec layers, each with the attributes that reproduce the node exactly (docs/design.md
sections 3 and 12), or ``Unsupported`` naming what the spec lacks.

Each handler takes ``(b, node)``: ``b`` the ``Builder`` (its ``tensors`` are the graph's
initializers by name), ``node`` an ``ONode`` (its inputs resolved to ``Value``s for tensors
computed from the model input and ``Const``s for initializers and constant-folded values, its
attributes as Python values, the source label and the inferred output shape). One table,
``ONNX_OPS``, keyed by the ONNX op type (default domain); ``SUPPORTED`` is its sorted keys (the
docs' table is generated from it).

Layouts (``builder.Value``): ONNX images are (N, C, H, W), held channels last; a Conv's kernel
goes from (O, I/g, kH, kW) to (kH, kW, I/g, O), a Gemm's B from (out, in) (``transB=1``) to
(in, out); a flatten of an (N, C, H, W) map with H*W > 1 is kept in canonical (H, W, C) order
and the Gemm / MatMul reading it gets its kernel rows permuted (``flatten_nchw``).

ONNX float attributes (epsilon, alpha) are float32: the spec takes their float32 value exactly
(``float(np.float32(a))``), which is also what ``onnx.reference`` computes with in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rosetta.conformance.native import Layout, flatten_nchw
from rosetta.importers import onnx_merged
from rosetta.importers.builder import (Builder, Unsupported, Value, held_layout,
                                       reshape_held)


@dataclass
class Const:
    """An initializer (``name`` set) or a constant-folded value (``name`` None)."""

    value: np.ndarray
    name: str | None = None
    batch_dependent: bool = False    # folded from the batch size of a dynamic batch axis
    alt: np.ndarray | None = None    # its value at another batch size (when batch_dependent)
    transposed: bool = False         # Transpose(perm=[1, 0]) of the 2-D initializer ``name``:
    #                                  ``value`` is its transpose (a MatMul/Gemm weight only)
    sources: frozenset = frozenset()   # the torch parameters its value was moved from (an
    #                                  initializer ``onnx_pairing`` derived from them, a
    #                                  constant folded from one): ``_derived_operand``


@dataclass
class ONode:
    op: str
    inputs: list             # Value, Const or None (an omitted optional input)
    attrs: dict
    name: str                # the spec node name to use
    label: str               # "/l/Gemm (Gemm)"
    shape: tuple             # the inferred shape of output 0 (batch included)
    outputs_used: list = field(default_factory=list)   # which outputs a later node reads

    def input(self, i):
        return self.inputs[i] if i < len(self.inputs) else None

    def attr(self, key, default=None):
        return self.attrs.get(key, default)


@dataclass
class Pending:
    """A step of a pattern that only its next nodes complete (no tensor the spec holds):
    BART's last-eos head ``hidden[ids == eos].view(N, -1, D)[:, -1]``, exported as NonZero of
    the (N, T) mask ("nonzero"), its Transpose to (K, 2) positions ("positions"), GatherND of
    the (N, T, D) states there ("rows"), the Reshape to (N, -1, D) ("grouped"), then a Gather of
    one row on axis 1. Any other reader is refused with ``refusal``."""

    step: str
    mask: Value
    x: Value | None = None

    @property
    def refusal(self) -> str:
        return ("NonZero's data-dependent positions read other than as the selected rows "
                "x[mask].view(N, -1, ...)[:, i] (NonZero -> Transpose -> GatherND -> Reshape "
                "-> Gather of one row)")


def _repeated(c, static_batch=None) -> bool:
    """Whether a constant is one row repeated for every example: folded from the batch size
    (a buffer expanded to the batch), or, in a graph of fixed batch size ``static_batch`` > 1,
    of that many equal rows."""
    v = np.asarray(c.value)
    return bool(c.batch_dependent or (static_batch and static_batch > 1 and v.ndim >= 1
                                      and len(v) == static_batch and (v == v[:1]).all()))


def _batch_rows(c, static_batch=None):
    """The value of a constant as one batch-broadcast (1, ...) row where it is the same for
    every example: a constant that does not depend on the batch size, as it is (in a graph of
    fixed batch size, its first row where it is that row repeated: ``_repeated``); one that
    does (a buffer expanded to the batch) if all its rows are equal at both batch sizes folded
    (its first row); else None."""
    if not isinstance(c, Const):
        return None
    v = np.asarray(c.value)
    if not c.batch_dependent:
        return v[:1] if _repeated(c, static_batch) else v
    return v[:1] if batch_repeated(c) else None


def _value(v, what="input") -> Value:
    if isinstance(v, Pending):
        raise Unsupported(v.refusal)
    if isinstance(v, Const):
        raise Unsupported(f"{what} is a constant tensor"
                          f"{f' ({v.name})' if v.name else ''} (the spec has no Constant op: "
                          f"only a weight position of Conv, Gemm, MatMul, BatchNormalization "
                          f"or LayerNormalization takes an initializer)")
    if not isinstance(v, Value):
        raise Unsupported(f"{what} is missing")
    return v


def _param(v, what) -> str:
    """The initializer name of a weight input."""
    if not isinstance(v, Const):
        raise Unsupported(f"{what} is computed from the model input (the spec takes it only "
                          f"as a parameter: an initializer)")
    if v.name is None:
        raise Unsupported(f"{what} is computed from constants (fold it into an initializer)")
    if v.transposed:
        raise Unsupported(f"{what} is a transposed initializer {v.name} (only a MatMul or Gemm "
                          f"weight reads one)")
    return v.name


def _shared(b: Builder, name) -> bool:
    return isinstance(name, str) and name in getattr(b, "shared", ())


def _shared_operand(b: Builder, n: ONode, name: str, rank: int) -> Value:
    """The one ``Parameter`` node of an initializer several nodes read (made at its first use,
    so the spec has one parameter whose gradient sums every use's), as an operand of a
    ``rank``-D plain tensor: its array right-aligned with leading size-1 axes (a Reshape)."""
    nodes = b.__dict__.setdefault("shared_nodes", {})
    shape = tuple(b.tensors[name].shape)
    if name not in nodes:
        nodes[name] = b.layer("Parameter", [], name=name, source=n.label,
                              params={"value": (name, "identity")}, layout="plain",
                              out_shape=(1,) + shape, shape=shape, init="ones")
    full = (1,) * (rank - len(shape)) + shape
    if len(full) - 1 == len(shape):
        return nodes[name]
    return b.layer("Reshape", [nodes[name]], name=f"{n.name}_{name}_view", source=n.label,
                   layout="plain", out_shape=full, shape=full[1:])


def _need(v: Value, layout: str, what: str):
    if v.layout != layout:
        raise Unsupported(f"{what} on a {v.layout} tensor of shape {v.shape} (needs an "
                          f"{'(N, C, H, W) image tensor' if layout == 'nchw' else 'unpermuted'} "
                          f"input)")


def _image(b: Builder, n: ONode, x: Value, what: str) -> Value:
    """An (N, C, H, W) tensor held channels last (``nchw``): one held in another axis order
    (a Reshape's result, MobileViT's folded patches) gets a Transpose to it."""
    if x.layout == "nchw" or len(x.shape) != 4 or x.layout == "flat" or x.batch_axis != 0:
        _need(x, "nchw", what)
        return x
    P = x.perm
    return b.layer("Transpose", [x], name=f"{n.name}_channels_last", source=n.label,
                   perm=tuple(P.index(a) - 1 for a in (2, 3, 1)), layout="nchw",
                   out_shape=x.shape)


def _f32(x) -> float:
    """An ONNX float attribute's value (stored as float32) as the float64 it is."""
    return float(np.float32(x))


def _exact(b: Builder, key: str, attr: str, onnx_value: float) -> float:
    """An attribute's float64 value: the float32 one of the graph, or the source model's own
    (``capture_onnx(exact=)``) where the graph's is its float32 rounding."""
    v = getattr(b, "exact", {}).get(key, {}).get(attr)
    if v is None:
        return onnx_value
    if float(np.float32(v)) != onnx_value:
        raise Unsupported(f"{attr} {onnx_value!r} in the graph, {v!r} in the torch model (not "
                          f"its float32 rounding: not the model the graph came from?)")
    return float(v)


def _only_output(n: ONode, what=""):
    extra = [i for i in n.outputs_used if i > 0]
    if extra:
        raise Unsupported(f"its output {extra[0]}{what} is read (the spec's op has one output)")


def _spatial(n: ONode, x: Value, kernel, dilations, strides):
    """The explicit ((top, bottom), (left, right)) padding of ``pads`` / ``auto_pad``."""
    auto = n.attr("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("NOTSET", ""):
        p = list(n.attr("pads", [0, 0, 0, 0]))
        if len(p) != 4:
            raise Unsupported(f"pads {p} (2-D only)")
        return ((p[0], p[2]), (p[1], p[3]))
    if auto == "VALID":
        return ((0, 0), (0, 0))
    pads = []
    for i in range(2):
        size = x.shape[2 + i]
        out = -(-size // strides[i])
        total = max(0, (out - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - size)
        small = total // 2
        pads.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
    return tuple(pads)


# --- convolution and dense ----------------------------------------------------------------------

def _conv1d(b: Builder, n: ONode, x: Value):
    """A 1-D Conv of an (N, C, T) tensor -> ``Conv1D`` on it held channels last, (N, T, C)
    (the layout (0, 2, 1); a Transpose where it is held otherwise); the kernel (out, in/group,
    k) as the spec's (k, in/group, out); explicit pads only (auto_pad refused)."""
    weight = _param(n.input(1), "the kernel W")
    bias = _param(n.input(2), "the bias B") if n.input(2) is not None else None
    w = b.tensors[weight]
    auto = n.attr("auto_pad", "NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", ""):
        raise Unsupported(f"a 1-D convolution with auto_pad {auto!r} (explicit pads only)")
    p = [int(v) for v in n.attr("pads", [0, 0])]
    if x.layout == "flat":
        raise Unsupported(f"a 1-D convolution of a tensor held {x.layout}")
    if x.layout != "plain" and x.perm != (0, 2, 1):
        x = _plain(b, n, x)
    if x.layout == "plain":
        x = b.layer("Transpose", [x], name=f"{n.name}_channels_last", source=n.label,
                    layout=(0, 2, 1), out_shape=x.shape, perm=(1, 0))
    params = {"kernel": (weight, "conv1d")}
    if bias is not None:
        params["bias"] = (bias, "identity")
    return b.layer("Conv1D", [x], name=n.name, source=n.label, params=params,
                   filters=int(w.shape[0]),
                   kernel_size=tuple(int(v) for v in n.attr("kernel_shape", w.shape[2:])),
                   strides=tuple(int(v) for v in n.attr("strides", (1,))),
                   padding=((p[0], p[1]),),
                   dilation=tuple(int(v) for v in n.attr("dilations", (1,))),
                   groups=int(n.attr("group", 1)), use_bias=bias is not None,
                   layout=(0, 2, 1), out_shape=n.shape)


def conv(b: Builder, n: ONode):
    """Conv2D (pads, auto_pad, strides, dilations, group; W and B initializers); of an
    (N, C, T) tensor, Conv1D (``_conv1d``)."""
    x = _value(n.input(0))
    if len(x.shape) == 3:
        return _conv1d(b, n, x)
    if len(x.shape) != 4:
        raise Unsupported(f"a {len(x.shape) - 2}-D convolution (1-D and 2-D only)")
    x = _image(b, n, x, "a 2-D convolution")
    weight = _param(n.input(1), "the kernel W")
    bias = _param(n.input(2), "the bias B") if n.input(2) is not None else None
    w = b.tensors[weight]
    k = tuple(n.attr("kernel_shape", w.shape[2:]))
    d = tuple(n.attr("dilations", (1, 1)))
    s = tuple(n.attr("strides", (1, 1)))
    params = {"kernel": (weight, "conv2d")}
    if bias is not None:
        params["bias"] = (bias, "identity")
    return b.layer("Conv2D", [x], name=n.name, source=n.label, params=params,
                   filters=int(w.shape[0]), kernel_size=k, strides=s,
                   padding=_spatial(n, x, k, d, s), dilation=d, groups=int(n.attr("group", 1)),
                   use_bias=bias is not None, layout="nchw", out_shape=n.shape)


def _dense(b: Builder, n: ONode, x: Value, weight: str, lay: str, bias: str | None, shape):
    """Dense(x) with kernel ``weight`` read in layout ``lay`` ("linear": (out, in); "identity":
    (in, out)), rows permuted after a channels-first flatten."""
    if x.layout == "flat":
        lay = flatten_nchw(*x.chw, then=lay)
    elif x.layout != "plain" and not x.last_axis_in_place():
        x = _plain(b, n, x)   # (held in another axis order with the last axis last: as held)
    w = b.tensors[weight]
    if w.ndim != 2:
        raise Unsupported(f"a weight {weight} of rank {w.ndim} (a dense kernel is 2-D)")
    units = w.shape[0] if str(getattr(lay, "name", lay)).endswith("linear") else w.shape[1]
    params = {"kernel": (weight, lay)}
    if bias is not None:
        if b.tensors[bias].shape != (units,):
            raise Unsupported(f"a bias {bias} of shape {b.tensors[bias].shape} (the spec's "
                              f"Dense adds a ({units},) bias)")
        params["bias"] = (bias, "identity")
    return b.layer("Dense", [x], name=n.name, source=n.label, params=params, units=int(units),
                   use_bias=bias is not None, layout="plain" if x.layout == "flat" else x.layout,
                   out_shape=shape)


def gemm(b: Builder, n: ONode):
    """Y = alpha A B' + beta C with A the input (N, in), B an initializer, C a (out,) bias:
    Dense (alpha = beta = 1, transA = 0; transB = 1 reads B as (out, in), 0 as (in, out))."""
    if _f32(n.attr("alpha", 1.0)) != 1.0 or _f32(n.attr("beta", 1.0)) != 1.0:
        raise Unsupported(f"Gemm(alpha={n.attr('alpha', 1.0):g}, beta={n.attr('beta', 1.0):g}) "
                          f"(the spec's Dense is alpha = beta = 1)")
    if n.attr("transA", 0):
        raise Unsupported("Gemm(transA=1) (a transposed input)")
    x = _value(n.input(0), "input A")
    w = n.input(1)
    flip = isinstance(w, Const) and w.transposed   # B = Transpose(W): read W the other way
    weight = w.name if flip else _param(w, "input B")
    bias = _param(n.input(2), "input C") if n.input(2) is not None else None
    if _shared(b, weight):
        raise Unsupported(f"a Gemm of a shared initializer {weight}")
    return _dense(b, n, x, weight, "linear" if bool(n.attr("transB", 0)) != flip
                  else "identity", bias, n.shape)


def matmul(b: Builder, n: ONode):
    """x @ W with W an initializer (in, out): Dense without bias; ``onnx_graph`` fuses a
    following Add of a (out,) initializer into it (the Linear pattern: Dense with bias)."""
    a, w = n.input(0), n.input(1)
    if not (isinstance(a, Value) and isinstance(w, Const) and w.name is not None
            and np.asarray(w.value).ndim == 2):
        xs = [_plain(b, n, _value(v)) if not isinstance(v, Const) else v for v in (a, w)]
        if any(isinstance(v, Value) and len(v.shape) < 3 for v in xs):
            raise Unsupported("a MatMul of a computed (N, K) matrix with a computed or "
                              "non-initializer operand (ONNX would multiply across the batch)")
        xs = _operands(b, n, xs)
        return b.layer("MatMul", xs, name=n.name, source=n.label, layout=xs[0].layout,
                       out_shape=n.shape)
    x = a
    # x @ Transpose(W) (a torch Linear's weight, ``onnx_pairing``): W read as (out, in)
    weight = w.name if w.transposed else _param(w, "input B")
    bias = n.attrs.get("_fused_bias")
    if _shared(b, weight) or _shared(b, bias):   # ALBERT: x @ W (+ B) of shared Parameters
        return _shared_matmul(b, n, x, weight, bias, w.transposed)
    return _dense(b, n, x, weight, "linear" if w.transposed else "identity", bias,
                  n.attrs.get("_fused_shape", n.shape))


def _shared_matmul(b: Builder, n: ONode, x: Value, weight: str, bias,
                   transposed: bool = False) -> Value:
    """x @ W (+ B) where W or B is an initializer other nodes read too: MatMul and Add of the
    shared ``Parameter`` nodes (``_shared_operand``) on the tensor in source order;
    ``transposed``: x @ W^T (GPT-2's LM head by its tied embedding table, (V, C))."""
    x = _plain(b, n, x)
    rank = len(x.shape)
    if rank < 3:
        raise Unsupported("a MatMul of an (N, K) matrix by a shared initializer")
    out = n.attrs.get("_fused_shape", n.shape) if bias is not None else n.shape
    w = _shared_operand(b, n, weight, rank)
    if transposed:   # the last two axes swapped (per example: the batch axis is not held)
        k = rank - 1
        perm = (*range(k - 2), k - 1, k - 2)
        shp = tuple(w.shape[:-2]) + tuple(w.shape[-2:][::-1])
        w = b.layer("Transpose", [w], name=f"{n.name}_weight_t", source=n.label,
                    layout="plain", out_shape=shp, perm=perm)
    y = b.layer("MatMul", [x, w], name=n.name if bias is None else f"{n.name}_matmul",
                source=n.label, layout="plain", out_shape=out)
    if bias is None:
        return y
    bv = (_shared_operand(b, n, bias, rank) if _shared(b, bias)
          else _initializer_parameter(b, n, Const(b.tensors[bias], bias), rank,
                                      tuple(range(rank)), "bias"))
    return b.layer("Add", [y, bv], name=n.name, source=n.label, layout="plain", out_shape=out)


def _shared_layer_norm(b: Builder, n: ONode, x: Value, scale: str, bias: str, eps: float):
    """LayerNormalization whose scale or B other nodes read too (ALBERT's one layer at every
    depth) written out on the last axis with the shared ``Parameter`` nodes: y = (x - mean)
    rsqrt(var + eps) scale + B, var the population variance (ONNX's definition, stash_type 1)."""
    x = _plain(b, n, x)
    shp, rank, lab = tuple(n.shape), len(x.shape), n.label
    red = shp[:-1] + (1,)

    def op(kind, ins, suffix, out=shp, **attrs):
        return b.layer(kind, ins, name=f"{n.name}_{suffix}", source=lab, layout="plain",
                       out_shape=out, **attrs)

    mean = op("Reduce", [x], "mean", red, fn="mean", axes=(-1,), keepdims=True)
    d = op("Subtract", [x, mean], "centered")
    var = op("Reduce", [op("Multiply", [d, d], "square")], "var", red, fn="mean", axes=(-1,),
             keepdims=True)
    r = op("Unary", [op("Add", [var], "var_eps", red, constant=eps)], "rstd", red, fn="rsqrt")
    y = op("Multiply", [d, r], "normalized")

    def operand(name, what):
        if _shared(b, name):
            return _shared_operand(b, n, name, rank)
        return _initializer_parameter(b, n, Const(b.tensors[name], name), rank,
                                      tuple(range(rank)), what)

    y = op("Multiply", [y, operand(scale, "scale")], "scaled")
    return b.layer("Add", [y, operand(bias, "bias")], name=n.name, source=lab, layout="plain",
                   out_shape=shp)


# --- normalisation ------------------------------------------------------------------------------

def batch_normalization(b: Builder, n: ONode):
    """y = (x - mean) / sqrt(var + epsilon) * scale + B -> BatchNorm(momentum, epsilon,
    running_var="biased"): ONNX's running update is running * momentum + current * (1 -
    momentum) with the population (biased) variance, the spec's convention (torch's unbiased
    rule where the torch model the graph came from is given: ``from_onnx(torch_module=)``)."""
    _only_output(n, " (the updated running statistics)")
    x = _value(n.input(0))
    if x.layout not in ("nchw", "plain") or (x.layout == "plain" and len(x.shape) != 2):
        raise Unsupported(f"a batch norm of a {x.layout} tensor of shape {x.shape} (the spec's "
                          f"BatchNorm normalises (N, C) vectors and (N, C, H, W) images)")
    scale, bias, mean, var = (_param(n.input(i), w) for i, w in
                              enumerate(("scale", "B", "input_mean", "input_var"), 1))
    momentum = _exact(b, mean, "momentum", _f32(n.attr("momentum", 0.9)))
    if not 0.0 <= momentum < 1.0:
        raise Unsupported(f"BatchNormalization(momentum={momentum:g}) (the spec's BatchNorm "
                          f"momentum is in [0, 1))")
    return b.layer("BatchNorm", [x], name=n.name, source=n.label,
                   params={"scale": (scale, "identity"), "bias": (bias, "identity")},
                   state={"mean": (mean, "identity"), "var": (var, "identity")},
                   momentum=momentum,
                   epsilon=_exact(b, mean, "epsilon", _f32(n.attr("epsilon", 1e-5))),
                   running_var=getattr(b, "running_var", "biased"), out_shape=n.shape)


def layer_normalization(b: Builder, n: ONode):
    """LayerNorm over the last axis (scale and B initializers, stash_type 1)."""
    _only_output(n, " (the mean or inverse deviation)")
    x = _value(n.input(0))
    axis = int(n.attr("axis", -1))
    if x.layout != "flat" and not x.last_axis_in_place():
        x = _plain(b, n, x)   # (held in another order with the last axis last: as held)
    if x.layout == "flat" or axis not in (-1, len(x.shape) - 1):
        raise Unsupported(f"LayerNormalization(axis={axis}) of a {x.layout} tensor of shape "
                          f"{x.shape} (the spec's LayerNorm normalises the last axis of an "
                          f"unpermuted tensor)")
    if n.input(2) is None:
        raise Unsupported("LayerNormalization without its bias B (the spec's LayerNorm has a "
                          "scale and bias)")
    scale, bias = _param(n.input(1), "scale"), _param(n.input(2), "B")
    if int(n.attr("stash_type", 1)) != 1:
        raise Unsupported("LayerNormalization(stash_type != 1) (statistics in another type)")
    if _shared(b, scale) or _shared(b, bias):
        return _shared_layer_norm(b, n, x, scale, bias,
                                  _exact(b, scale, "epsilon", _f32(n.attr("epsilon", 1e-5))))
    return b.layer("LayerNorm", [x], name=n.name, source=n.label,
                   params={"scale": (scale, "identity"), "bias": (bias, "identity")},
                   epsilon=_exact(b, scale, "epsilon", _f32(n.attr("epsilon", 1e-5))),
                   out_shape=n.shape)


# --- activations --------------------------------------------------------------------------------

def _activation(fn, **extra):
    def handler(b: Builder, n: ONode):
        x = _value(n.input(0))
        kw = {k: (f(n) if callable(f) else f) for k, f in extra.items()}
        return b.layer("Activation", [x], name=n.name, source=n.label, fn=fn,
                       out_shape=n.shape, chw=x.chw, **kw)
    handler.__doc__ = f"Activation(fn={fn!r}{''.join(f', {k}' for k in extra)})."
    return handler


def _gelu_approximate(n):
    a = n.attr("approximate", "none")
    return a.decode() if isinstance(a, bytes) else a


def hard_sigmoid(b: Builder, n: ONode):
    """ONNX stores HardSigmoid's alpha in float32, so torch's 1/6 arrives as 0.1666666716...,
    3e-8 from the spec's hard_sigmoid slope 1/6 exactly: refused (never approximated); the
    default alpha 0.2 is no spec op either. HardSigmoid(alpha, beta) is max(0, min(1, alpha x +
    beta))."""
    alpha, beta = _f32(n.attr("alpha", 0.2)), _f32(n.attr("beta", 0.5))
    raise Unsupported(f"HardSigmoid(alpha={alpha!r}, beta={beta!r}) (the spec's hard_sigmoid is "
                      f"relu6(x + 3) / 6, slope 1/6 exactly; a float32 alpha is not)")


def hard_swish(b: Builder, n: ONode):
    """HardSwish: y = x max(0, min(1, x / 6 + 1 / 2)), alpha = 1/6 by definition: the spec's."""
    x = _value(n.input(0))
    return b.layer("HardSwish", [x], name=n.name, source=n.label, out_shape=n.shape, chw=x.chw)


def dropout(b: Builder, n: ONode):
    """Dropout(ratio): a Dropout of that rate (identity in eval, as ONNX's inference mode); the
    mask output is refused."""
    _only_output(n, " (the mask)")
    x = _value(n.input(0))
    ratio = n.input(1)
    if ratio is not None and not isinstance(ratio, Const):
        raise Unsupported("a dropout ratio computed from the model input")
    rate = 0.5 if ratio is None else float(np.asarray(ratio.value))
    return b.layer("Dropout", [x], name=n.name, source=n.label, rate=rate, out_shape=n.shape,
                   chw=x.chw)


def identity(b: Builder, n: ONode):
    """No node: the input itself."""
    return _value(n.input(0))


# --- combination, shape -------------------------------------------------------------------------

def _same_layout(b: Builder, n: ONode, x: Value, y: Value):
    """Two operands in one layout: an (N, C, H, W) tensor held channels last beside a plain
    one is brought back to the source's order (a Transpose)."""
    if {x.layout, y.layout} == {"nchw", "plain"}:
        return _plain(b, n, x), _plain(b, n, y)
    return x, y


def _initializer_parameter(b: Builder, n: ONode, c: Const, rank: int, perm: tuple,
                           role: str) -> Value:
    """A float initializer read outside a weight position (ViT's position table added to the
    patches, its class token expanded to the batch) as a batch-broadcast ``Parameter``: its
    source array right-aligned to ``rank`` with a leading size-1 (batch) axis, held per example
    in the axis order ``perm`` of the tensor it meets; the canonical value is that held
    array."""
    src = np.asarray(c.value)
    full = (1,) * (rank - src.ndim) + src.shape
    if src.ndim > rank or full[0] != 1:
        raise Unsupported(f"{role} of shape {src.shape} spans the batch axis ({c.name})")
    if _shared(b, c.name):   # read by other nodes too: the one Parameter node of it
        if tuple(perm) != tuple(range(rank)):
            raise Unsupported(f"{role}: a shared initializer {c.name} against a tensor held "
                              f"in the axis order {perm}")
        return _shared_operand(b, n, c.name, rank)
    inverse = tuple(int(i) for i in np.argsort(perm))
    held = tuple(full[i] for i in perm)
    lay = Layout(f"initializer{src.shape}",
                 lambda k, s=src.shape: np.transpose(np.asarray(k)[None], inverse).reshape(s),
                 lambda a: np.transpose(np.asarray(a).reshape(full), perm)[0])
    return b.layer("Parameter", [], name=f"{n.name}_{role.replace(' ', '_')}", source=n.label,
                   params={"value": (c.name, lay)}, layout=held_layout(perm),
                   out_shape=full, shape=held[1:], init="ones")


def _is_parameter(b: Builder, c) -> bool:
    """An initializer of floats with more than one element: a trained tensor (a size-1 one is
    a scalar attribute of the op reading it), unless it holds +-inf or +-the largest finite
    value of its type: a mask's values (the dynamo exporter's causal mask of
    ``scaled_dot_product_attention`` and HuggingFace's masks hold ``finfo.min``), which no
    trained tensor holds (a step would train the mask's other entries); where the torch model
    the graph came from is given (``b.trainable``, its parameter names), only one of its
    parameters (the exporter's folded buffers and tables, RoPE's, stay constants)."""
    if not (isinstance(c, Const) and c.name is not None and not c.batch_dependent
            and not c.transposed):
        return False
    v = np.asarray(c.value)
    return (v.dtype.kind == "f" and v.size > 1
            and bool((np.abs(v) < np.finfo(v.dtype).max).all())
            and (getattr(b, "trainable", None) is None or c.name in b.trainable))


def _const_node(b: Builder, n: ONode, c: Const, like: Value, role: str) -> Value:
    """A constant operand as a spec Constant (a batch-broadcast tensor) in the layout of the
    computed operand ``like``: right-aligned to its full rank, its leading (batch) axis of size
    1 dropped, an image operand's constant turned channels last; a float initializer as a
    ``Parameter`` in the same way (``_initializer_parameter``)."""
    v = np.asarray(c.value)
    rank = len(like.shape)
    if c.transposed:
        raise Unsupported(f"{role}: a transposed initializer {c.name} (only a MatMul or Gemm "
                          f"weight reads one)")
    if _is_parameter(b, c) and like.layout != "flat":
        return _initializer_parameter(b, n, c, rank, like.perm, role)
    if c.sources and not _is_parameter(b, c) and like.layout != "flat":
        y = _derived_operand(b, n, c, like, role)
        if y is not None:
            return y
    if c.batch_dependent:
        # a value repeated for every example (a buffer expanded to the batch): its first row,
        # batch-broadcast, is the same tensor at every batch size
        if v.ndim == rank and len(v) == like.shape[0] and batch_repeated(c):
            v = v[:1]
        else:
            raise Unsupported(f"{role} depends on the batch size of a dynamic batch axis")
    if v.ndim > rank:
        raise Unsupported(f"{role} of rank {v.ndim} against a tensor of rank {rank}")
    v = v.reshape((1,) * (rank - v.ndim) + v.shape)
    if v.shape[0] != 1:
        raise Unsupported(f"{role} of shape {c.value.shape} spans the batch axis")
    if like.layout == "flat":
        raise Unsupported(f"{role} against a channels-first flatten")
    v = v.transpose(like.perm)   # in the computed operand's held order
    v = v[0]
    if v.dtype.kind == "f":
        v = v.astype(np.float64)
    return b.layer("Constant", [], name=f"{n.name}_{role.replace(' ', '_')}", source=n.label,
                   value=v, layout=like.layout, out_shape=(1, *np.asarray(c.value).shape))


def _derived_operand(b: Builder, n: ONode, c: Const, like: Value, role: str):
    """A constant operand computed from torch parameters without arithmetic (``c.sources``:
    an initializer the exporter folded, or a constant the import folded, from them), read as
    that computation of their ``Parameter`` nodes (one per parameter, ``_shared_operand``), so
    each parameter's gradient is the sum over its uses, as torch computes it
    (``onnx_pairing.derive``, bitwise):

    * gathered, X = P.flat[positions]: Gather (axis 0, the ``indices`` attribute) of the
      flattened P (a Reshape), at the positions laid out as the operand is held;
    * concatenated, X = concat(parts, axis): Concatenate of the parameters' ``Parameter``s and
      zero ``Constant``s (no gradient), then a Reshape right-aligned to the operand's rank and
      a Transpose to its held axis order where they differ.

    None where it is neither: the constant stays a constant, and the parameters are named
    (``OnnxCaptured.unpaired``) as read through arithmetic the import cannot keep."""
    from rosetta.importers.onnx_pairing import derive

    v = np.asarray(c.value)
    if v.dtype.kind != "f":
        return None
    names = sorted(c.sources)
    d = derive(v, {p: b.tensors[p] for p in names}, b.__dict__.setdefault("derive_cache", {}))
    rank = len(like.shape)
    full = (1,) * (rank - v.ndim) + v.shape
    nodes = b.__dict__.get("shared_nodes", {})
    held = d is not None and any(p in b.names and p not in nodes for p in d.params)
    if d is None or not d.params or v.ndim > rank or full[0] != 1 or rank < 2 or held:
        why = (f"{n.label} reads a constant computed from it by arithmetic, not by moving its "
               f"values" if d is None else
               f"{n.label} reads a constant of its values that some of its elements equal "
               f"(give it distinct values before the export)" if not d.params else
               f"{n.label} reads a constant of its values while a layer holds it as its own "
               f"parameter" if held else
               f"{n.label} reads a constant of its values of shape {v.shape} across the batch")
        failed = b.__dict__.setdefault("derive_failed", {})
        for p in names:
            failed.setdefault(p, why)
        return None
    perm = tuple(int(i) for i in like.perm)
    base = f"{n.name}_{role.replace(' ', '_')}"
    if d.kind == "gathered":
        p = d.params[0]
        w = b.tensors[p]
        t = _shared_operand(b, n, p, w.ndim + 1)
        if w.ndim != 1:
            t = b.layer("Reshape", [t], name=f"{base}_flat", source=n.label, layout="plain",
                        out_shape=(1, w.size), shape=(int(w.size),))
        idx = np.transpose(d.positions.reshape(full), perm)[0]
        return b.layer("Gather", [t], name=base, source=n.label, axis=0, indices=idx.tolist(),
                       layout=held_layout(perm), out_shape=full)
    parts = []
    for k, (q, shape) in enumerate(zip(d.parts, d.shapes)):
        parts.append(_shared_operand(b, n, q, len(shape) + 1) if q is not None else b.layer(
            "Constant", [], name=f"{base}_zeros{k}", source=n.label, value=np.zeros(shape),
            layout="plain", out_shape=(1, *shape)))
    y = b.layer("Concatenate", parts, name=f"{base}_cat", source=n.label, axis=d.axis,
                layout="plain", out_shape=(1, *v.shape))
    if full != (1, *v.shape):
        y = b.layer("Reshape", [y], name=f"{base}_view", source=n.label, layout="plain",
                    out_shape=full, shape=full[1:])
    if perm != tuple(range(rank)):
        y = b.layer("Transpose", [y], name=f"{base}_held", source=n.label,
                    perm=tuple(i - 1 for i in perm[1:]), layout=held_layout(perm),
                    out_shape=full)
    return y


def _scalar(c) -> float | None:
    """A size-1 constant's value (ONNX broadcasts it like a scalar), else None."""
    if isinstance(c, Const) and np.asarray(c.value).size == 1 and not c.batch_dependent:
        v = np.asarray(c.value).reshape(())
        return float(v) if v.dtype.kind == "f" else int(v)
    return None


def _operands(b: Builder, n: ONode, items):
    """Computed operands in one layout (held in different axis orders, an image beside a plain
    tensor: back to the source's order), constants as Constant nodes in that layout."""
    vals = [v for v in items if isinstance(v, Value)]
    if not vals:
        raise Unsupported("every input is constant (folded: not expected here)")
    for v in items:
        if isinstance(v, Pending):
            raise Unsupported(v.refusal)
    if any(v is None or not isinstance(v, (Value, Const)) for v in items):
        raise Unsupported("an input is missing")
    lay = {v.layout for v in vals}
    if len(lay) > 1:
        if "flat" in lay:
            raise Unsupported("operands held in different layouts (a channels-first flatten "
                              "beside another tensor)")
        vals = [_plain(b, n, v) for v in vals]
        it = iter(vals)
        items = [next(it) if isinstance(v, Value) else v for v in items]
    like = max(vals, key=lambda v: len(v.shape))
    out = []
    for i, v in enumerate(items):
        if isinstance(v, Const):
            v = _const_node(b, n, v, like, f"input {i}")
        elif len(v.shape) != len(like.shape):
            raise Unsupported(f"operands of rank {len(v.shape)} and {len(like.shape)} (ONNX "
                              f"would broadcast the batch axis against another axis)")
        out.append(v)
    return out


def _binary(op: str):
    def handler(b: Builder, n: ONode):
        x, y = n.input(0), n.input(1)
        for i, c, other in ((1, y, x), (0, x, y)):
            k = _scalar(c)
            if k is not None and isinstance(other, Value):   # x op c, or c op x
                return b.layer(op, [other], name=n.name, source=n.label, constant=k,
                               reverse=(i == 0), out_shape=n.shape, chw=other.chw)
        xs = _operands(b, n, [x, y])
        main = next(v for v, orig in zip(xs, (x, y)) if isinstance(orig, Value))
        return b.layer(op, xs, name=n.name, source=n.label, layout=main.layout,
                       out_shape=n.shape, chw=main.chw)
    handler.__doc__ = (f"{op} with NumPy broadcasting (a size-1 constant operand as its scalar "
                       f"``constant``, a larger one as a Constant).")
    return handler


def concat(b: Builder, n: ONode):
    """Concatenate along the axis as held (channels of an image: its last axis); inputs held in
    different axis orders are brought to the source's order first."""
    xs = [_value(v) for v in n.inputs]
    if len(xs) == 1:
        return xs[0]
    lay = {v.layout for v in xs}
    if "flat" in lay:
        raise Unsupported("a concatenation of tensors held in different layouts")
    if len(lay) > 1:   # held in different axis orders: each in the source's order
        xs = [_plain(b, n, v) for v in xs]
    axis = xs[0].canonical_axis(int(n.attr("axis")))
    return b.layer("Concatenate", xs, name=n.name, source=n.label, axis=axis, out_shape=n.shape)


def _flatten(b: Builder, n: ONode, x: Value):
    if len(x.shape) == 2 and x.layout != "nchw":
        return x
    if x.layout == "nchw":
        _, ch, h, w = x.shape
        if h * w == 1:
            return b.layer("Flatten", [x], name=n.name, source=n.label, layout="plain",
                           out_shape=n.shape)
        return b.layer("Flatten", [x], name=n.name, source=n.label, layout="flat",
                       out_shape=n.shape, chw=(ch, h, w))
    _need(x, "plain", "a flatten")
    return b.layer("Flatten", [x], name=n.name, source=n.label, out_shape=n.shape)


def flatten(b: Builder, n: ONode):
    """Flatten (axis=1); of an image, kept in channels-last order for the Gemm / MatMul that
    reads it (its kernel rows permuted)."""
    x = _value(n.input(0))
    if int(n.attr("axis", 1)) != 1:
        raise Unsupported(f"Flatten(axis={n.attr('axis')}) (the spec flattens every axis but "
                          f"the batch)")
    return _flatten(b, n, x)


def reshape(b: Builder, n: ONode):
    """Reshape to the inferred output shape (the shape input is a constant or folded from the
    input's shape): a flatten, or a Reshape of the held tensor's per-example axes where the axes
    it merges or splits are held in order, else after a Transpose to such an order (an image's
    (N, C, H, W) -> (N, C, H*W), held channels last, is (N, H*W, C) held permuted)."""
    p = n.input(0)
    if isinstance(p, Pending) and p.step == "rows" and isinstance(n.input(1), Const):
        return _group_rows(p, n.input(1))
    x = _value(n.input(0))
    if not isinstance(n.input(1), Const):
        raise Unsupported("a reshape to a shape computed from the model input's values")
    shape = tuple(n.shape)
    if shape and shape[0] != x.shape[0]:   # the batch merged with other rows: held unmerged
        return onnx_merged.view_from(b, n, x)
    if len(shape) == 2:
        return _flatten(b, n, x)
    if x.layout == "flat":
        raise Unsupported(f"a reshape of a channels-first flatten to {shape}")
    if shape == tuple(x.shape):
        return x
    return reshape_held(b, x, shape, n.name, n.label)


def _group_rows(rows: Pending, target: Const) -> Pending:
    """x[mask] (K, ...) reshaped to (N, -1, ...): the rows grouped per example (every example
    holding K / N of them, what the reshape needs), the ``Pending`` step before one row's
    Gather. The target's N must follow the batch size."""
    t = np.asarray(target.value).reshape(-1).tolist()
    n_ = rows.x.shape[0]
    alt = None if target.alt is None else np.asarray(target.alt).reshape(-1).tolist()
    if (len(t) != len(rows.x.shape) or t[0] != n_ or t[1] != -1
            or tuple(t[2:]) != tuple(rows.x.shape[2:])
            or (target.batch_dependent and (alt is None or alt[0] != n_ + 1))):
        raise Unsupported(f"x[mask] reshaped to {t} (only to (N, -1, ...): {rows.refusal})")
    return Pending("grouped", rows.mask, rows.x)


def where(b: Builder, n: ONode):
    """Where(cond, x, y) with cond a 0/1 int tensor (a comparison, or a folded constant mask as a
    Constant); a size-1 constant x or y as the scalar attribute (+-inf kept); of int x and y
    (BART's masked_fill of its shifted ids), y + cond (x - y) in exact int arithmetic."""
    cond, x, y = n.input(0), n.input(1), n.input(2)
    return _where(b, n, cond, x, y, _int_output(n))


def is_nan(b: Builder, n: ONode):
    """IsNaN(x) = Equal(Equal(x, x), 0) (NaN is the one value unequal to itself), an int 0/1."""
    x = _value(n.input(0))
    eq = b.layer("Equal", [x, x], name=f"{n.name}_eq", source=n.label, out_shape=n.shape,
                 chw=x.chw)
    return b.layer("Equal", [eq], name=n.name, source=n.label, constant=0, out_shape=n.shape,
                   chw=x.chw)


def not_(b: Builder, n: ONode):
    """Not(c) = Equal(c, 0) of a 0/1 int condition (a comparison's output)."""
    x = _value(n.input(0))
    return b.layer("Equal", [x], name=n.name, source=n.label, constant=0, out_shape=n.shape,
                   chw=x.chw)


def _unary(fn):
    def handler(b: Builder, n: ONode):
        x = _value(n.input(0))
        return b.layer("Unary", [x], name=n.name, source=n.label, fn=fn, out_shape=n.shape,
                       chw=x.chw)
    handler.__doc__ = f"Unary(fn={fn!r})."
    return handler


def _reduce(fn):
    def handler(b: Builder, n: ONode):
        x = _value(n.input(0))
        keep = bool(int(n.attr("keepdims", 1)))
        if n.input(1) is not None:
            axes = _ints(n.input(1), "reduce axes")
        else:
            axes = [int(a) for a in n.attr("axes", [])]
        if not axes:
            if int(n.attr("noop_with_empty_axes", 0)):
                return x
            raise Unsupported("a reduction over every axis, the batch axis included")
        axes = [_axis(x, a) for a in axes]
        if not keep:
            x = _plain(b, n, x)
        held = tuple(x.canonical_axis(a) for a in axes)
        return b.layer("Reduce", [x], name=n.name, source=n.label, fn=fn, axes=held,
                       keepdims=keep, out_shape=n.shape, layout=x.layout if keep else "plain")
    handler.__doc__ = f"Reduce(fn={fn!r}, axes, keepdims) over per-example axes."
    return handler


def _axis_op(op):
    def handler(b: Builder, n: ONode):
        x = _value(n.input(0))
        return b.layer(op, [x], name=n.name, source=n.label,
                       axis=x.canonical_axis(int(n.attr("axis", -1))), out_shape=n.shape)
    handler.__doc__ = f"{op}(axis) (opset 13: over one axis, default -1)."
    return handler


def cumsum(b: Builder, n: ONode):
    """CumSum(x, axis) -> ``Cumsum(axis)``: y_i = sum_{j <= i} x_j along a per-example axis (the
    axis a constant input; int or float x, as RoBERTa's position ids from a mask). ``exclusive``
    and ``reverse`` are refused: the spec's Cumsum is the inclusive forward sum."""
    x = _value(n.input(0))
    for attr in ("exclusive", "reverse"):
        if int(n.attr(attr, 0)):
            raise Unsupported(f"CumSum({attr}=1) (the spec's Cumsum is inclusive and forward)")
    (axis,) = _ints(n.input(1), "CumSum's axis")
    axis = _axis(x, axis, "CumSum's axis")
    return b.layer("Cumsum", [x], name=n.name, source=n.label, axis=x.canonical_axis(axis),
                   out_shape=n.shape, layout=x.layout)


def expand(b: Builder, n: ONode):
    """Expand to the inferred output shape (its per-example axes; a constant input as a
    Constant, a float initializer as a Parameter, brought to the batch of the run)."""
    x = n.input(0)
    if not isinstance(n.input(1), Const):
        raise Unsupported("an Expand to a shape computed from the model input's values")
    shape = tuple(n.shape)
    if _is_parameter(b, x):   # a parameter expanded to the batch (ViT's class token)
        x = _initializer_parameter(b, n, x, len(shape), tuple(range(len(shape))), "input")
    elif isinstance(x, Const):
        if x.batch_dependent:
            raise Unsupported("an expanded constant that depends on the batch size")
        v = np.asarray(x.value)
        v = v.reshape((1,) * (len(shape) - v.ndim) + v.shape)
        if v.shape[0] != 1:
            raise Unsupported(f"an expanded constant of shape {x.value.shape} spans the batch")
        arr = v[0].astype(np.float64) if v.dtype.kind == "f" else v[0]
        x = b.layer("Constant", [], name=f"{n.name}_input", source=n.label, value=arr,
                    layout="plain", out_shape=(1, *v.shape[1:]))
    else:
        x = _plain(b, n, _value(x))
    return b.layer("Expand", [x], name=n.name, source=n.label, shape=shape[1:], layout="plain",
                   out_shape=shape)


# --- tensor shape and indexing (the spec ops of core/ops/shape.py and indexing.py) -------------


def _plain(b: Builder, n: ONode, x: Value) -> Value:
    """``x`` as the source's array: a tensor held in another axis order (an (N, C, H, W) one
    channels last) is transposed back to the source's order per example (a Transpose node); a
    plain tensor is itself; one whose batch axis the source moved is refused."""
    if x.layout == "plain":
        return x
    if x.layout == "flat":
        raise Unsupported("an axis of a channels-first flatten (only a Gemm or MatMul may read "
                          "it)")
    if x.batch_axis != 0:
        raise Unsupported(f"this op on a tensor whose batch axis the source moved to axis "
                          f"{x.batch_axis} (only Split, Slice and Squeeze of another axis may "
                          f"read it)")
    P = x.perm
    return b.layer("Transpose", [x], name=f"{n.name}_to_source_order", source=n.label,
                   perm=tuple(P.index(j) - 1 for j in range(1, len(P))), layout="plain",
                   out_shape=x.shape)


def _ints(v, what) -> list:
    if not isinstance(v, Const):
        raise Unsupported(f"{what} computed from the model input's values (the spec takes them "
                          f"as attributes)")
    return [int(i) for i in np.asarray(v.value).reshape(-1)]


def _axis(x: Value, axis: int, what="axis") -> int:
    rank = len(x.shape)
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise Unsupported(f"{what} 0, the batch axis (the spec addresses per-example axes)")
    return axis


def transpose(b: Builder, n: ONode):
    """Transpose(perm): a Transpose of the per-example axes of the tensor as held, to the
    output's source order (a tensor held permuted, an (N, C, H, W) one channels last, composes
    its own permutation; the identity adds no node); a perm that moves the batch axis renames
    the held axes, no node, and only Split, Slice or Squeeze of the other axes may read it.

    (The batch stays held first: timm's ``qkv.permute(2, 0, 3, 1, 4).unbind(0)``; NonZero's
    (2, K) positions transposed to (K, 2) are a step of a ``Pending`` pattern.)"""
    p = n.input(0)
    if isinstance(p, Pending) and p.step == "nonzero" and list(n.attr("perm", [1, 0])) == [1, 0]:
        return Pending("positions", p.mask)
    x = _value(n.input(0))
    rank = len(x.shape)
    perm = [int(p) for p in n.attr("perm", list(range(rank))[::-1])]
    if x.layout == "flat":
        raise Unsupported("a transpose of a channels-first flatten")
    if perm[0] != 0:   # the batch moved (timm's qkv.permute(2, 0, 3, 1, 4)): held as it is,
        held = tuple(perm.index(p) for p in x.perm)   # its axes renamed, for a Split/Slice/
        return Value(x.tensor, held_layout(held), tuple(n.shape))   # Squeeze of axis 0
    # output held in source order: its axis j is the held axis of input axis perm[j]
    held = [x.perm.index(p) - 1 for p in perm[1:]]
    if held == list(range(len(held))):
        return Value(x.tensor, "plain", tuple(n.shape))
    return b.layer("Transpose", [x], name=n.name, source=n.label, perm=tuple(held),
                   layout="plain", out_shape=n.shape)


def slice_(b: Builder, n: ONode):
    """Slice(data, starts, ends, axes, steps) with constant starts/ends/axes/steps: Python slice
    semantics per axis (ONNX clamps as Python does); the batch axis only whole."""
    x = _value(n.input(0))
    starts, ends = _ints(n.input(1), "slice starts"), _ints(n.input(2), "slice ends")
    axes = (_ints(n.input(3), "slice axes") if n.input(3) is not None
            else list(range(len(starts))))
    steps = _ints(n.input(4), "slice steps") if n.input(4) is not None else [1] * len(starts)
    keep = []
    rank = len(x.shape)
    for ax, st, en, sp in zip(axes, starts, ends, steps):
        ax = ax + rank if ax < 0 else ax
        if ax == x.batch_axis:
            if range(x.shape[ax])[st:en:sp] != range(x.shape[ax]):
                raise Unsupported("a slice of the batch axis")
            continue
        if sp < 1:
            raise Unsupported(f"a slice with step {sp} (the spec's Slice steps are >= 1)")
        keep.append((x.canonical_axis(ax), st, en, sp))
    if not keep:
        return x
    if x.layout == "flat":
        raise Unsupported("a slice of a channels-first flatten")
    return b.layer("Slice", [x], name=n.name, source=n.label, axes=tuple(k[0] for k in keep),
                   starts=tuple(k[1] for k in keep), stops=tuple(k[2] for k in keep),
                   steps=tuple(k[3] for k in keep), out_shape=n.shape)


def split(b: Builder, n: ONode):
    """Split(x, split, axis) -> one Slice per output (sizes from ``split`` or equal parts)."""
    x = _value(n.input(0))
    axis = int(n.attr("axis", 0)) % len(x.shape)
    if axis == x.batch_axis:
        raise Unsupported("a Split of the batch axis")
    shapes = n.attrs.get("_output_shapes", [])
    if not shapes or any(not s for s in shapes):
        raise Unsupported("the output shapes of the Split are unknown")
    sizes = [s[axis] for s in shapes]
    if x.layout == "flat":
        raise Unsupported("a split of a channels-first flatten")
    held = x.canonical_axis(axis)
    outs, start = [], 0
    for k, size in enumerate(sizes):
        outs.append(b.layer("Slice", [x], name=f"{n.name}_{k}", source=n.label, axes=(held,),
                            starts=(start,), stops=(start + size,), steps=(1,),
                            out_shape=shapes[k]))
        start += size
    return outs


def gather(b: Builder, n: ONode):
    """Gather(data, indices, axis): an initializer table read at computed int indices on axis 0
    is an Embedding (the table a parameter); computed data at constant indices is Gather with
    the ``indices`` attribute. Computed indices into computed data are refused (ONNX shares one
    index tensor across the batch, the spec's Gather takes one per example). A parameter table
    read at constant positions is ``_gather_positions``; a table other nodes read too, a Gather
    of its one ``Parameter``; rows of BART's last-eos head, ``_last_rows``."""
    data, idx = n.input(0), n.input(1)
    axis = int(n.attr("axis", 0))
    if isinstance(data, Pending) and data.step == "grouped":
        return _last_rows(b, n, data, idx, axis)
    if _is_parameter(b, data) and isinstance(idx, Const):
        return _gather_positions(b, n, data, idx, axis)
    if isinstance(data, Const):
        table = _param(data, "the gathered table")
        w = b.tensors[table]
        idx = _value(idx, "the indices")
        if axis not in (0, -w.ndim) or w.ndim != 2:
            raise Unsupported(f"a Gather on axis {axis} of a {w.ndim}-D initializer (an "
                              f"Embedding reads rows of a 2-D table)")
        if _shared(b, table):   # a table other nodes read too (BART's encoder and decoder,
            # GPT-2's tied LM head): Gather (axis 0) of its one Parameter, y[n, ...] = W[ids[n, ...]]
            return b.layer("Gather", [_shared_operand(b, n, table, w.ndim + 1),
                                      _plain(b, n, idx)], name=n.name, source=n.label, axis=0,
                           layout="plain", out_shape=n.shape)
        return b.layer("Embedding", [_plain(b, n, idx)], name=n.name, source=n.label,
                       params={"embedding": (table, "identity")}, vocab_size=int(w.shape[0]),
                       dim=int(w.shape[1]), layout="plain", out_shape=n.shape)
    x = _plain(b, n, _value(data))
    ax = _axis(x, axis) - 1
    if isinstance(idx, Const):
        ind = np.asarray(idx.value).tolist()
        return b.layer("Gather", [x], name=n.name, source=n.label, axis=ax, indices=ind,
                       layout="plain", out_shape=n.shape)
    raise Unsupported("a Gather at indices computed from the model input (per-example "
                      "indices: use GatherElements semantics; ONNX's shares one index tensor "
                      "over the batch)")


def _gather_positions(b: Builder, n: ONode, data: Const, idx: Const, axis: int) -> Value:
    """A parameter table (P, ...) read at constant positions of shape (1, T...) (GPT-2 and
    BERT's position table at ``position_ids``, a (1, T) buffer; RoBERTa's token-type table at
    its buffered ids, the same (T,) row for every example: ``_batch_rows``): Gather of the
    table's ``Parameter`` (batch-broadcast) with the ``indices`` attribute, a batch-broadcast
    (1, T..., ...) tensor, so the table stays a parameter (not folded into a constant);
    brought to the batch (``Expand``) where ONNX's output is (N, T..., ...)."""
    static = getattr(b, "static_batch", None)
    ind = _batch_rows(idx, static)
    w = np.asarray(data.value)
    if ind is None or ind.ndim < 1 or ind.shape[0] != 1 or axis not in (0, -w.ndim):
        raise Unsupported(f"a Gather of a parameter table at constant positions of shape "
                          f"{np.shape(idx.value)} on axis {axis} (positions (1, T...), or the "
                          f"same for every example, on axis 0 only)")
    table = _initializer_parameter(b, n, data, w.ndim + 1, tuple(range(w.ndim + 1)), "table")
    rows = _repeated(idx, static)   # the same row for every example: ONNX's is (N, T...)
    y = b.layer("Gather", [table], name=f"{n.name}_row" if rows else n.name, source=n.label,
                axis=0, indices=ind[0].tolist(), layout="plain", out_shape=(1, *n.shape[1:]))
    if not rows:
        return y
    return b.layer("Expand", [y], name=n.name, source=n.label, shape=tuple(n.shape[1:]),
                   layout="plain", out_shape=n.shape)


def batch_repeated(c) -> bool:
    """A batch-dependent constant that is one row repeated for every example, at both batch
    sizes folded (a buffer expanded to the batch)."""
    if not (isinstance(c, Const) and c.batch_dependent and c.alt is not None):
        return False
    v, alt = np.asarray(c.value), np.asarray(c.alt)
    return (v.ndim >= 1 and alt.ndim == v.ndim and len(alt) == len(v) + 1 and len(v) > 0
            and bool((v == v[:1]).all()) and bool((alt == v[:1]).all()))


def squeeze(b: Builder, n: ONode):
    """Squeeze of constant per-example axes (all size-1 per-example axes without axes); of a
    tensor held in another axis order (``_squeeze_held``), a Reshape of the held tensor."""
    x = _value(n.input(0))
    if isinstance(x.layout, tuple) and n.input(1) is not None:
        return _squeeze_held(b, n, x, _ints(n.input(1), "squeeze axes"))
    x = _plain(b, n, x)
    rank = len(x.shape)
    if n.input(1) is None:
        axes = [i for i in range(1, rank) if x.shape[i] == 1]
        if x.shape[0] == 1:
            raise Unsupported("a Squeeze without axes of a batch of 1 (it would remove the "
                              "batch axis)")
    else:
        axes = [_axis(x, a) for a in _ints(n.input(1), "squeeze axes")]
    return b.layer("Squeeze", [x], name=n.name, source=n.label, axes=tuple(a - 1 for a in axes),
                   layout="plain", out_shape=n.shape)


def _squeeze_held(b: Builder, n: ONode, x: Value, axes) -> Value:
    """Squeeze source ``axes`` (size 1) of ``x`` held permuted: a Reshape of the held tensor
    without them, its permutation renumbered (timm's ``q, k, v = qkv.unbind(0)`` after the
    batch-moving permute: the batch is first again)."""
    rank = len(x.shape)
    axes = sorted({a % rank for a in axes})
    if x.batch_axis in axes or any(x.shape[a] != 1 for a in axes):
        raise Unsupported(f"a Squeeze of axes {axes} of a tensor of shape {x.shape}")
    keep = [p for p in x.perm if p not in axes]
    perm = tuple(p - sum(a < p for a in axes) for p in keep)
    if perm[0] != 0:
        raise Unsupported(f"a Squeeze that leaves the batch axis at {perm[0]}")
    held = tuple(x.shape[p] for p in keep)
    return b.layer("Reshape", [x], name=n.name, source=n.label, layout=held_layout(perm),
                   out_shape=n.shape, shape=held[1:])


def unsqueeze(b: Builder, n: ONode):
    """Unsqueeze at constant axes after the batch axis."""
    x = _plain(b, n, _value(n.input(0)))
    axes = _ints(n.input(1), "unsqueeze axes")
    out_rank = len(x.shape) + len(axes)
    axes = [a + out_rank if a < 0 else a for a in axes]
    if 0 in axes:
        raise Unsupported("an Unsqueeze at axis 0, before the batch axis")
    return b.layer("Unsqueeze", [x], name=n.name, source=n.label,
                   axes=tuple(a - 1 for a in axes), layout="plain", out_shape=n.shape)


FLOAT_TYPES = {1: "float", 10: "float", 11: "float", 16: "float"}
INT_TYPES = {2: "int", 3: "int", 4: "int", 5: "int", 6: "int", 7: "int", 12: "int", 13: "int"}


def cast(b: Builder, n: ONode):
    """Cast(to): a float type -> Cast("float") (the program's float dtype: a model computing in
    one float type), an int type -> Cast("int"), bool -> x != 0 as Equal(Equal(x, 0), 0) (the
    spec's bools are 0/1 ints; of a bool, the input itself); strings are refused."""
    x = _value(n.input(0))
    to = int(n.attr("to"))
    if to == 9:   # bool: 0/1 ints in the spec
        if (n.attrs.get("_input_kinds") or [""])[0] == "b":
            return x      # a bool already (a comparison's 0/1)
        z = b.layer("Equal", [x], name=f"{n.name}_zero", source=n.label, constant=0,
                    out_shape=n.shape, chw=x.chw)
        return b.layer("Equal", [z], name=n.name, source=n.label, constant=0,
                       out_shape=n.shape, chw=x.chw)
    kind = FLOAT_TYPES.get(to) or INT_TYPES.get(to)
    if kind is None:
        raise Unsupported(f"Cast to ONNX type {to} (float and int types only)")
    return b.layer("Cast", [x], name=n.name, source=n.label, to=kind, out_shape=n.shape,
                   chw=x.chw)


def pad(b: Builder, n: ONode):
    """Pad(data, pads, constant_value, axes) in mode 'constant' with constant pads >= 0 and no
    padding of the batch axis."""
    mode = n.attr("mode", "constant")
    if mode != "constant":
        raise Unsupported(f"Pad(mode={mode!r}) (constant padding only)")
    x = _value(n.input(0))
    rank = len(x.shape)
    pads = _ints(n.input(1), "pads")
    axes = (_ints(n.input(3), "pad axes") if n.input(3) is not None else list(range(rank)))
    axes = [a + rank if a < 0 else a for a in axes]
    k = len(axes)
    value = 0.0
    if n.input(2) is not None:
        if not isinstance(n.input(2), Const):
            raise Unsupported("a pad value computed from the model input")
        value = float(np.asarray(n.input(2).value).reshape(-1)[0]) if np.asarray(
            n.input(2).value).size else 0.0
    per = {a: (pads[i], pads[i + k]) for i, a in enumerate(axes)}
    if any(lo < 0 or hi < 0 for lo, hi in per.values()):
        raise Unsupported("negative pads (a crop; the spec's Pad pads only)")
    if per.get(0, (0, 0)) != (0, 0):
        raise Unsupported("padding of the batch axis")
    if x.layout == "flat":
        raise Unsupported("padding of a channels-first flatten")
    held = [(0, 0)] * (rank - 1)
    for a, pr in per.items():
        if a:
            held[x.canonical_axis(a)] = pr
    return b.layer("Pad", [x], name=n.name, source=n.label, pads=tuple(held), value=value,
                   out_shape=n.shape)


def resize(b: Builder, n: ONode):
    """Resize(mode='linear') of an (N, C, H, W) map in H and W (sizes or scales; the
    coordinate modes half_pixel, pytorch_half_pixel and align_corners): a linear map of the
    H·W cells, the constant matrix kron(Mh, Mw) of the 1-D interpolation weights
    (``cells.bilinear_matrix``: source coordinate (i + 0.5) / scale - 0.5 clamped at 0, or
    i (H - 1) / (oh - 1)) times the (H·W, C) cells; other modes, antialias and a resize of N
    or C are refused."""
    from rosetta.importers.cells import bilinear_matrix, matrix_of_cells

    def text(key, default):
        v = n.attr(key, default)
        return v.decode() if isinstance(v, bytes) else v

    mode, coord = text("mode", "nearest"), text("coordinate_transformation_mode", "half_pixel")
    if mode != "linear":
        raise Unsupported(f"Resize(mode={mode!r}) (linear only)")
    if coord not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        raise Unsupported(f"Resize(coordinate_transformation_mode={coord!r}) (half_pixel, "
                          f"pytorch_half_pixel or align_corners)")
    if int(n.attr("antialias", 0)) or n.attr("axes") is not None:
        raise Unsupported("Resize with antialias or axes")
    x = _value(n.input(0))
    if len(x.shape) != 4 or tuple(n.shape[:2]) != tuple(x.shape[:2]):
        raise Unsupported(f"a Resize of {x.shape} to {n.shape} (H and W of an (N, C, H, W) "
                          f"map only)")
    x = _image(b, n, x, "a resize")
    scales = n.input(2)
    sc = (np.asarray(scales.value, np.float64).reshape(-1) if isinstance(scales, Const)
          and np.asarray(scales.value).size else None)
    if n.input(3) is not None and not isinstance(n.input(3), Const):
        raise Unsupported("Resize sizes computed from the model input's values")
    (h, w), (oh, ow) = x.shape[2:], n.shape[2:]
    if coord == "pytorch_half_pixel" and min(oh, ow) == 1:
        raise Unsupported("Resize(pytorch_half_pixel) to one cell")
    align = coord == "align_corners"
    sh, sw = (None, None) if sc is None else (float(sc[2]), float(sc[3]))
    p = np.kron(bilinear_matrix(h, oh, align, sh), bilinear_matrix(w, ow, align, sw))
    return matrix_of_cells(b, n, x, p, (oh, ow), "resize")


# --- pooling ------------------------------------------------------------------------------------

def _floor_out(size, k, s, lo, hi, d=1):
    return (size + lo + hi - d * (k - 1) - 1) // s + 1


def _pool(op, b: Builder, n: ONode):
    _only_output(n, " (the indices)")
    x = _value(n.input(0))
    if len(x.shape) != 4:
        raise Unsupported(f"{len(x.shape) - 2}-D pooling (2-D only)")
    x = _image(b, n, x, "2-D pooling")
    k = tuple(n.attr("kernel_shape"))
    s = tuple(n.attr("strides", (1, 1)))
    if tuple(n.attr("dilations", (1, 1))) != (1, 1):
        raise Unsupported("pooling with dilations (the spec's pools have none)")
    if int(n.attr("storage_order", 0)):
        raise Unsupported("MaxPool(storage_order=1)")
    pads = [list(p) for p in _spatial(n, x, k, (1, 1), s)]
    if op == "AvgPool2D" and int(n.attr("count_include_pad", 0)) and any(map(any, pads)):
        raise Unsupported("AveragePool with padding and count_include_pad=1 (the spec's "
                          "AvgPool2D excludes padded cells)")
    for i in range(2):
        size, out = x.shape[2 + i], n.shape[2 + i]
        lo, hi = pads[i]
        extra = out - _floor_out(size, k[i], s[i], lo, hi)
        if extra:
            # ceil_mode: a last window starting inside the input or its padding, its cells past
            # the end left out (the max of the rest, the average over the input cells in it):
            # the spec's pool with that many more cells of padding after
            extra = (out - 1) * s[i] + k[i] - (size + lo + hi)
            if (not n.attr("ceil_mode", 0) or extra <= 0 or extra >= s[i]
                    or _floor_out(size, k[i], s[i], lo, hi + extra) != out):
                raise Unsupported(f"pooling of size {size} to {out} (window {k[i]}, stride "
                                  f"{s[i]}, padding {(lo, hi)}) that extra padding after does "
                                  f"not reproduce")
            pads[i][1] = hi + extra
    return b.layer(op, [x], name=n.name, source=n.label, kernel_size=k, strides=s,
                   padding=tuple(map(tuple, pads)), out_shape=n.shape)


def max_pool(b, n):
    """MaxPool2D (pads, auto_pad, ceil_mode as extra padding after; no dilations, no indices
    output)."""
    return _pool("MaxPool2D", b, n)


def average_pool(b, n):
    """AvgPool2D (padding excluded from the average: count_include_pad=0 where padded;
    ceil_mode as extra padding after)."""
    return _pool("AvgPool2D", b, n)


def _global(op):
    """A global pool over H, W to (N, C, 1, 1), held as a (1, 1, C) map."""
    def handler(b: Builder, n: ONode):
        """{op} to (N, C), then Reshape to the (N, C, 1, 1) map held as (1, 1, C)."""
        x = _value(n.input(0))
        x = _image(b, n, x, "global pooling")
        v = b.layer(op, [x], name=n.name, source=n.label, layout="plain",
                    out_shape=(x.shape[0], x.shape[1]))
        return b.layer("Reshape", [v], name=f"{n.name}_keepdims", source=n.label,
                       layout="nchw", out_shape=n.shape, shape=(1, 1, x.shape[1]))
    handler.__doc__ = handler.__doc__.format(op=op)
    return handler


# --- constant gathers and scatters, BART's last-eos head ----------------------------------------

def gather_elements(b: Builder, n: ONode):
    """GatherElements of a constant equal along ``axis`` at computed indices (RoBERTa's buffered
    token-type ids): a constant, whatever the in-range indices; any other refused.

    y[i][j] = data[i][indices[i][j]] (axis 1; likewise on any axis), y of the indices' shape.
    Where ``data`` is a constant equal along ``axis`` (RoBERTa's zeros at its computed position
    ids) every in-range index reads the same value: y is data's first slice along ``axis``, cut
    to the indices' shape on the other axes and repeated along ``axis`` (as ``from_torch``'s
    gather; out-of-range indices, an error in ONNX, are not checked). No spec op gathers
    per-example elements, so any other GatherElements is refused."""
    data, idx = n.input(0), n.input(1)
    axis = int(n.attr("axis", 0))
    if not isinstance(data, Const) or not isinstance(idx, Value):
        raise Unsupported("a GatherElements other than of a constant at computed indices (the "
                          "spec gathers no per-example elements)")

    def first(v, shape):
        v = np.asarray(v)
        ax = axis % v.ndim
        f = np.take(v, [0], axis=ax)
        if v.ndim != len(shape) or not (v == f).all():
            return None
        if any(f.shape[k] < s for k, s in enumerate(shape) if k != ax):
            return None
        f = f[tuple(slice(None) if k == ax else slice(0, s) for k, s in enumerate(shape))]
        return np.ascontiguousarray(np.broadcast_to(f, shape))

    shape = tuple(idx.shape)
    y = first(data.value, shape)
    if y is not None and not getattr(b, "dynamic_batch", True):   # a fixed batch size
        return Const(y, None)
    # at another batch size (the batch axis is dynamic): from data's own value there
    alt = first(data.alt if data.batch_dependent else data.value, (shape[0] + 1, *shape[1:]))
    if y is None or alt is None:
        raise Unsupported(f"a GatherElements at computed indices of a constant of shape "
                          f"{np.shape(data.value)} that varies along axis {axis} (or does not "
                          f"follow the batch size)")
    return Const(y, None, batch_dependent=True, alt=alt)


def _scatter_np(op: str, data, idx, upd, axis: int):
    """ONNX's ScatterND / ScatterElements (reduction 'none') in NumPy: a copy of ``data`` with
    ``upd`` written at ``idx``."""
    out = np.array(data, copy=True)
    idx = np.asarray(idx)
    if op == "ScatterND":
        for pos in np.ndindex(*idx.shape[:-1]):
            out[tuple(idx[pos])] = np.asarray(upd)[pos]
    else:
        np.put_along_axis(out, np.where(idx < 0, idx + out.shape[axis], idx), upd, axis)
    return out


def _at_batch(v, batch_axis: int, extra: int):
    """(shape, value) of a scatter input at the batch size plus ``extra``: a Value's shape (its
    value None), a Const's value (its ``alt`` where it depends on the batch size)."""
    if isinstance(v, Value):
        shape = list(v.shape)
        shape[batch_axis] += extra
        return tuple(shape), None
    val = np.asarray(v.alt if extra and v.batch_dependent else v.value)
    return val.shape, val


def scatter(b: Builder, n: ONode):
    """ScatterND / ScatterElements at constant indices: constant updates as a Where on the
    positions written, computed updates filling a box of each example as a Pad (BART's
    shift_tokens_right); any other refused.

    With constant indices (reduction 'none', no position written twice) the positions written,
    a constant 0/1 ``mask``, are known. Constant updates into computed data: y = data where not
    mask, U where mask (U the updates scattered into zeros): ``Where`` (int data: data + mask
    (U - data), exact in ints). Computed updates that fill a box of the data (each example its
    own rows, in row-major order: BART's ``shift_tokens_right`` writing ids[:, :-1] at [:, 1:])
    are that box padded: ``Pad`` with the constant the data holds elsewhere (constant data), or
    Pad then Where(mask) (computed data). Any other scatter is refused."""
    op = n.op
    red = n.attr("reduction", "none")
    red = red.decode() if isinstance(red, bytes) else red
    if red != "none":
        raise Unsupported(f"{op}(reduction={red!r}) (the spec scatters by replacing only)")
    data, idx, upd = n.input(0), n.input(1), n.input(2)
    if not isinstance(idx, Const):
        raise Unsupported(f"{op} at indices computed from the model input")
    vals = [v for v in (data, upd) if isinstance(v, Value)]
    if not vals:
        raise Unsupported("a scatter of constants only (folded: not expected here)")
    bax = vals[0].batch_axis
    if any(v.batch_axis != bax for v in vals):
        raise Unsupported(f"{op} of data and updates with different batch axes")
    axis = int(n.attr("axis", 0))
    runs = [0, 1] if any(isinstance(v, Const) and v.batch_dependent
                         for v in (data, idx, upd)) else [0]
    found = []
    for extra in runs:   # at the batch size, and at another one where a constant depends on it
        dshape, dval = _at_batch(data, bax, extra)
        ushape, uval = _at_batch(upd, bax, extra)
        ival = _indices_at(idx, extra)
        size = int(np.prod(ushape))
        try:
            src = _scatter_np(op, np.zeros(dshape, np.int64), ival,
                              np.arange(1, size + 1).reshape(ushape), axis % len(dshape))
        except (IndexError, ValueError) as e:
            raise Unsupported(f"{op} indices that do not fit the data ({e})") from None
        if np.count_nonzero(src) != size:
            raise Unsupported(f"{op} writing a position twice (ONNX leaves the result "
                              f"undefined)")
        found.append((dshape, dval, ushape, uval, src))
    dshape, dval, ushape, uval, src = found[0]
    mask = (src > 0).astype(np.int64)
    mask_c = Const(mask, None, batch_dependent=len(found) > 1,
                   alt=(found[1][4] > 0).astype(np.int64) if len(found) > 1 else None)
    int_data = _int_output(n)
    if isinstance(upd, Const):   # constant updates into computed data
        u = [np.where(f[4] > 0, _scatter_np(op, np.zeros(f[0], np.asarray(f[3]).dtype),
                                            _indices_at(idx, k), f[3], axis % len(f[0])), 0)
             for k, f in enumerate(found)]
        u_c = Const(u[0], None, batch_dependent=len(u) > 1, alt=u[1] if len(u) > 1 else None)
        x = _value(data, "the data")
        return _masked(b, n, x, mask_c, u_c, int_data)
    # computed updates: the box they fill, in row-major order, each example its own rows
    for dsh, _, ush, _, sr in found:
        where_ = np.argwhere(sr > 0)
        lo, hi = where_.min(0), where_.max(0) + 1
        box = sr[tuple(slice(a, z) for a, z in zip(lo, hi))]
        if (len(dsh) != len(ush) or tuple(hi - lo) != tuple(ush)
                or not np.array_equal(box, np.arange(1, box.size + 1).reshape(ush))):
            raise Unsupported(f"{op} of computed updates that do not fill a box of the data in "
                              f"order (only a shifted copy, as torch's x[:, 1:] = y)")
        pads = [(int(a), int(d - z)) for a, z, d in zip(lo, hi, dsh)]
        if pads[bax] != (0, 0):
            raise Unsupported(f"{op} that writes across examples")
    x = _value(upd, "the updates")
    held = [(0, 0)] * (len(x.shape) - 1)
    for a, pr in enumerate(pads):
        if a != bax:
            held[x.canonical_axis(a)] = pr
    value = 0.0
    if isinstance(data, Const):   # constant data: the value it holds outside the box
        outside = np.asarray(data.value)[mask == 0]
        if outside.size and not (outside == outside.flat[0]).all():
            raise Unsupported(f"{op} into a constant that is not one value outside the written "
                              f"box")
        value = float(outside.flat[0]) if outside.size else 0.0
    y = b.layer("Pad", [x], name=n.name if isinstance(data, Const) else f"{n.name}_box",
                source=n.label, pads=tuple(held), value=value, out_shape=n.shape)
    if isinstance(data, Const):
        return y
    return _masked(b, n, _value(data, "the data"), mask_c, y, int_data)


def _indices_at(idx: Const, extra: int):
    """Constant indices at the batch size plus ``extra`` (0 or 1)."""
    return np.asarray(idx.alt if extra and idx.batch_dependent else idx.value)


def _masked(b: Builder, n: ONode, x: Value, mask: Const, u, int_data: bool) -> Value:
    """y = u where mask else x (mask a constant 0/1, u a Const or a Value): ``Where``, or for
    int tensors x + mask (u - x) in exact int arithmetic (the spec's Where takes floats); a
    ``u`` of one value at every masked position is a scalar."""
    if isinstance(u, Const):
        m = np.asarray(mask.value) > 0
        vals = np.asarray(u.value)[m]
        if vals.size and (vals == vals.flat[0]).all():
            u = Const(np.asarray(vals.flat[0]))
    return _where(b, n, mask, u, x, int_data)


def _int_output(n: ONode) -> bool:
    """Whether the node's first output is an int or bool tensor (ONNX's inferred type)."""
    kind = (n.attrs.get("_output_kinds") or [""])[0]
    return bool(kind) and kind in "iub"


def _where(b: Builder, n: ONode, cond, x, y, int_data: bool) -> Value:
    """Where(cond, x, y) on spec ops (see ``where``)."""
    kw, items = {}, [cond]
    for key, v in (("x", x), ("y", y)):
        k = _scalar(v)
        if k is not None:
            kw[key] = k
        else:
            items.append(v)
    if not any(isinstance(v, Value) for v in items):
        raise Unsupported("a Where of constants only")
    xs = _operands(b, n, items)
    main = next(v for v, orig in zip(xs, items) if isinstance(orig, Value))
    if not int_data:
        return b.layer("Where", xs, name=n.name, source=n.label, layout=main.layout,
                       out_shape=n.shape, chw=main.chw,
                       **{k: float(v) for k, v in kw.items()})
    # ints: y + cond (x - y), exact (cond 0/1)
    c, rest = xs[0], xs[1:]
    xv = kw.get("x", None)
    yv = kw.get("y", None)
    lab, shp = n.label, n.shape
    if any(float(v) != int(v) for v in kw.values()):
        raise Unsupported(f"an int Where with a non-integral value {kw}")
    xt = rest.pop(0) if xv is None else None
    yt = rest.pop(0) if yv is None else None
    if yt is None:   # x + (1 - cond) (y - x)
        c = b.layer("Equal", [c], name=f"{n.name}_not", source=lab, constant=0, out_shape=shp,
                    chw=c.chw)
        xt, yt, xv = yt, xt, yv
    if xt is None:
        d = b.layer("Subtract", [yt], name=f"{n.name}_gap", source=lab, constant=int(xv),
                    reverse=True, out_shape=shp, chw=yt.chw)
    else:
        d = b.layer("Subtract", [xt, yt], name=f"{n.name}_gap", source=lab, out_shape=shp,
                    chw=yt.chw)
    d = b.layer("Multiply", [c, d], name=f"{n.name}_masked", source=lab, out_shape=shp,
                chw=yt.chw)
    return b.layer("Add", [yt, d], name=n.name, source=lab, out_shape=shp, chw=yt.chw)


def nonzero(b: Builder, n: ONode):
    """NonZero(mask): its output's shape depends on the data, so it maps only as the start of
    BART's last-eos head ``hidden[mask].view(N, -1, D)[:, i]`` (``Pending``: Transpose ->
    GatherND -> Reshape -> Gather of one row, see ``_last_rows``), of an (N, T) 0/1 mask."""
    m = _value(n.input(0), "the mask")
    kind = (n.attrs.get("_input_kinds") or [""])[0]
    if kind != "b" or len(m.shape) != 2:
        raise Unsupported(f"NonZero of a {kind or 'non-bool'} tensor of shape {m.shape} (only "
                          f"an (N, T) bool mask, as the start of x[mask].view(N, -1, ...)[:, i])")
    return Pending("nonzero", _plain(b, n, m))


def gather_nd(b: Builder, n: ONode):
    """GatherND(x, positions) at NonZero's positions of an (N, T) mask of an (N, T, ...) x:
    the selected rows, a step of BART's last-eos head (``Pending``); anything else refused."""
    x, pos = n.input(0), n.input(1)
    if not (isinstance(pos, Pending) and pos.step == "positions"):
        raise Unsupported("a GatherND other than at NonZero's positions (only "
                          "x[mask].view(N, -1, ...)[:, i])")
    if int(n.attr("batch_dims", 0)):
        raise Unsupported("GatherND(batch_dims != 0) at NonZero's positions")
    x = _plain(b, n, _value(x))
    if tuple(x.shape[:2]) != tuple(pos.mask.shape) or len(x.shape) < 3:
        raise Unsupported(f"x[mask] of x {x.shape} and mask {pos.mask.shape} (an (N, T, ...) "
                          f"tensor at an (N, T) mask)")
    return Pending("rows", pos.mask, x)


def _last_rows(b: Builder, n: ONode, rows: Pending, idx, axis: int) -> Value:
    """Gather(axis 1, one index i) of x[mask].view(N, -1, ...): row i of each example's
    selected rows, ``torch_ops.masked_rows_select`` (one shared rule with ``from_torch``: an
    exact sum with one 1 per example)."""
    from types import SimpleNamespace

    from rosetta.importers.torch_ops import MaskedRows, masked_rows_select

    i = _scalar(idx)
    if axis % 3 != 1 or i is None or np.asarray(idx.value).ndim != 0:
        raise Unsupported(rows.refusal)
    shape = (rows.x.shape[0], *rows.x.shape[2:])
    call = SimpleNamespace(name=n.name, label=n.label, shape=shape)
    return masked_rows_select(b, call, MaskedRows(rows.x, rows.mask, grouped=True), 1, int(i))


ONNX_OPS = {
    "Conv": conv,
    "Gemm": gemm,
    "MatMul": matmul,
    "BatchNormalization": batch_normalization,
    "LayerNormalization": layer_normalization,
    "Relu": _activation("relu"),
    "Sigmoid": _activation("sigmoid"),
    "Tanh": _activation("tanh"),
    "LeakyRelu": _activation("leaky_relu", slope=lambda n: _f32(n.attr("alpha", 0.01))),
    "Gelu": _activation("gelu", approximate=_gelu_approximate),
    "HardSwish": hard_swish,
    "Softmax": _axis_op("Softmax"),
    "Dropout": dropout,
    "Identity": identity,
    "Add": _binary("Add"),
    "Sub": _binary("Subtract"),
    "Mul": _binary("Multiply"),
    "Div": _binary("Divide"),
    "Pow": _binary("Power"),
    "Max": _binary("Maximum"),
    "Min": _binary("Minimum"),
    "Equal": _binary("Equal"),
    "Less": _binary("Less"),
    "Greater": _binary("Greater"),
    "Where": where,
    "IsNaN": is_nan,
    "Not": not_,
    "Neg": _unary("neg"),
    "Abs": _unary("abs"),
    "Sqrt": _unary("sqrt"),
    "Exp": _unary("exp"),
    "Log": _unary("log"),
    "Erf": _unary("erf"),
    "Reciprocal": _unary("reciprocal"),
    "Sin": _unary("sin"),
    "Cos": _unary("cos"),
    "ReduceSum": _reduce("sum"),
    "ReduceMean": _reduce("mean"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    "LogSoftmax": _axis_op("LogSoftmax"),
    "CumSum": cumsum,
    "Expand": expand,
    "Concat": concat,
    "Flatten": flatten,
    "Reshape": reshape,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": _global("GlobalAvgPool2D"),
    "GlobalMaxPool": _global("GlobalMaxPool2D"),
    "Transpose": transpose,
    "Slice": slice_,
    "Split": split,
    "Gather": gather,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Cast": cast,
    "Pad": pad,
    "GatherElements": gather_elements,
    "ScatterND": scatter,
    "ScatterElements": scatter,
    "NonZero": nonzero,
    "GatherND": gather_nd,
    "Resize": resize,
}

# refused whatever their inputs, with the reason (reported even after a refused input)
REFUSED = {
    "HardSigmoid": hard_sigmoid,
}

SUPPORTED = tuple(sorted(ONNX_OPS))


def markdown_table() -> str:
    """The supported-op table of the docs (docs/hooks/onnx_ops.py), from ``ONNX_OPS``: each ONNX
    op with the first sentence of its handler's docstring; then the refused ones."""
    def first(fn):
        doc = " ".join((fn.__doc__ or "").split())
        return doc.split(". ")[0].rstrip(".") + "." if doc else ""

    rows = ["| ONNX op | spec |", "|---|---|"]
    rows += [f"| {op} | {first(ONNX_OPS[op]).replace('|', '/')} |" for op in SUPPORTED]
    rows += [f"| {op} | refused: {first(fn).replace('|', '/')} |" for op, fn in
             sorted(REFUSED.items())]
    return "\n".join(rows)
