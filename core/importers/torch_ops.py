"""ATen calls of a ``torch.export`` graph -> spec layers, each with the attributes that reproduce
the call exactly (docs/design.md sections 3 and 12), or ``Unsupported`` naming what the spec lacks.

Each handler takes ``(b, call)``: ``b`` the ``Builder``, ``call`` a ``Call`` (its arguments with
tensors resolved to ``Value``s and parameters to their source names, the source label and the
traced output shape). One table, ``ATEN``, keyed by the ATen overload's name.

Layouts (``builder.Value``): images are held channels last; a convolution's kernel goes from
torch's (O, I/g, kH, kW) to (kH, kW, I/g, O), a Linear's weight from (out, in) to (in, out); a
flatten of an (N, C, H, W) map with H*W > 1 is kept in canonical (H, W, C) order and the Linear
reading it gets its kernel rows permuted (``flatten_nchw``), which keeps the numbers exactly.
"""

from __future__ import annotations

import operator
import dataclasses
from dataclasses import dataclass

import numpy as np

from rosetta.conformance.native import Layout, flatten_nchw
from rosetta.importers import torch_merged
from rosetta.importers.torch_fold import Folded, as_value
from rosetta.importers.cells import bilinear_matrix, matrix_of_cells
from rosetta.importers.builder import (Builder, Unsupported, Value, held_layout, permuted,
                                       reshape_held)


@dataclass
class Call:
    target: str          # e.g. "aten.conv2d.default"
    args: list           # Values, parameter names (str, via ``param``), constants
    kwargs: dict
    name: str            # the spec node name to use (source module path or fx node name)
    label: str           # "layer1.0.conv1 (Conv2d)"
    shape: tuple         # the traced output shape (batch included)
    params: dict         # fx placeholder name -> source parameter/buffer name

    def arg(self, i, key, default=None):
        if len(self.args) > i:
            return self.args[i]
        return self.kwargs.get(key, default)


def _value(v, what="input") -> Value:
    if isinstance(v, Canvas):
        return v.value()
    if not isinstance(v, Value):
        raise Unsupported(f"{what} is not a tensor computed from the model input ({v!r})")
    return v


class Canvas:
    """``x.new_zeros(shape)`` written in place before it is read (BART's shift_tokens_right:
    ``shifted[:, 1:] = ids[:, :-1]; shifted[:, 0] = start``): the writes (``copy_`` of a
    tensor, ``fill_`` of a number) into slices along one axis are recorded, and the first
    reader gets the tensor they make, which must be one written tensor with one number around
    it: ``Pad(src, pads, value)`` along that axis (exact; zeros where nothing was written)."""

    def __init__(self, b, c, like: Value):
        self.b, self.name, self.label, self.like = b, c.name, c.label, like
        self.shape = tuple(c.shape)
        self.writes = []        # (axis, start, stop, Value or number)
        self.made = None

    def view(self, dim, start, stop):
        return CanvasView(self, dim % len(self.shape), start, stop)

    def write(self, view, what):
        if self.made is not None:
            raise Unsupported("an in-place write into a fresh tensor after it was read")
        self.writes.append((view.dim, view.start, view.stop, what))

    def value(self) -> Value:
        if self.made is not None:
            return self.made
        tensors = [w for w in self.writes if isinstance(w[3], Value)]
        axes = {w[0] for w in self.writes}
        if len(tensors) != 1 or len(axes) != 1 or 0 in axes:
            raise Unsupported("in-place writes into x.new_zeros(...) other than one tensor "
                              "written along one axis (with numbers around it)")
        axis, lo, hi, src = tensors[0]
        size = self.shape[axis]
        cover = np.zeros(size, bool)
        cover[lo:hi] = True
        numbers = set()
        for _, a, z, v in self.writes:
            if not isinstance(v, Value):
                if cover[a:z].any():
                    raise Unsupported("in-place writes into x.new_zeros(...) that overlap")
                cover[a:z] = True
                numbers.add(float(v))
        if not cover.all():
            numbers.add(0.0)
        if len(numbers) > 1:
            raise Unsupported(f"in-place writes of several numbers {sorted(numbers)} around a "
                              f"tensor in x.new_zeros(...)")
        if isinstance(src.layout, tuple) or src.layout != "plain":
            raise Unsupported("an in-place write of a tensor held in another layout")
        pads = [(0, 0)] * (len(self.shape) - 1)
        pads[axis - 1] = (lo, size - hi)
        self.made = self.b.layer("Pad", [src], name=self.name, source=self.label,
                                 layout="plain", out_shape=self.shape, pads=tuple(pads),
                                 value=numbers.pop() if numbers else 0.0)
        return self.made


@dataclass
class CanvasView:
    """A slice of a ``Canvas`` along one axis, [start, stop): what ``copy_``/``fill_`` write."""
    canvas: Canvas
    dim: int
    start: int
    stop: int


class SizeCheck:
    """A data-dependent size torch.export checks at run time (``unique_consecutive`` of the eos
    counts, the number of rows ``x[mask]`` selects, the asserts on them): no value of the
    model; only size arithmetic and asserts may read it."""

    def __repr__(self):
        return "<a data-dependent size check>"


def size_check(b: Builder, c: Call):
    """``torch.unique_consecutive`` read only for its size (BART: every example must have as
    many eos tokens, which torch asserts at run time), ``sym_size`` of it or of ``x[mask]``,
    and the size arithmetic of the asserts: a ``SizeCheck`` (no spec node). The spec does not
    repeat torch's run-time assert: a batch whose examples hold different numbers of eos
    tokens, which torch refuses, gets each example's last one."""
    if c.target.startswith("aten.unique_consecutive"):
        return (SizeCheck(), SizeCheck(), SizeCheck())
    args = [a for a in c.args if not _number(a)]
    if not args or not all(isinstance(a, (SizeCheck, MaskedRows)) for a in args):
        raise Unsupported(f"{c.target} of a tensor size (only of a data-dependent size check)")
    return SizeCheck()


size_check.static = False


@dataclass
class MaskedRows:
    """``x[mask]`` (an (N, T, ...) tensor at a computed 0/1 (N, T) mask: the selected rows,
    example by example), read only by a ``view`` back to (N, -1, ...) (``grouped``) and then
    a ``select`` of one row of each example."""
    x: Value
    mask: Value
    grouped: bool = False


def masked_rows_select(b: Builder, c: Call, rows: MaskedRows, dim: int, index: int) -> Value:
    """``x[mask].view(N, -1, D)[:, index]``: with every example holding k selected rows (what
    the view needs), row ``index`` of example n is x[n, t] at the t where the running count
    cs[t] = cumsum(mask)[t] reaches index + 1 (k for index -1) and mask[t] = 1. As spec ops:
    w = mask * (cs == that count) (int 0/1, one 1 per example), then
    y = sum_t x[n, t] * w[n, t]: one term x[n, t] and zeros, so exactly x[n, t] (and its
    gradient w). Other indices than -1 and >= 0, other dims than 1, refused."""
    x, mask = rows.x, rows.mask
    if dim != 1 or not rows.grouped or index < -1:
        raise Unsupported("x[mask] read other than as x[mask].view(N, -1, ...)[:, i]")
    n = c.name
    cs = b.layer("Cumsum", [mask], name=f"{n}_count", source=c.label, layout="plain",
                 out_shape=mask.shape, axis=0)
    if index == -1:
        total = b.layer("Slice", [cs], name=f"{n}_total", source=c.label, layout="plain",
                        out_shape=(mask.shape[0], 1), axes=(0,), starts=(-1,),
                        stops=(int(mask.shape[1]),),
                        steps=(1,))
        at = b.layer("Equal", [cs, total], name=f"{n}_at", source=c.label, layout="plain",
                     out_shape=mask.shape)
    else:
        at = b.layer("Equal", [cs], name=f"{n}_at", source=c.label, layout="plain",
                     out_shape=mask.shape, constant=float(index + 1))
    w = b.layer("Multiply", [at, mask], name=f"{n}_pick", source=c.label, layout="plain",
                out_shape=mask.shape)
    w = b.layer("Cast", [w], name=f"{n}_weight", source=c.label, layout="plain",
                out_shape=mask.shape, to="float")
    w = b.layer("Unsqueeze", [w], name=f"{n}_weight_axis", source=c.label, layout="plain",
                out_shape=tuple(mask.shape) + (1,) * (len(x.shape) - len(mask.shape)),
                axes=tuple(range(len(mask.shape) - 1, len(x.shape) - 1)))
    y = b.layer("Multiply", [x, w], name=f"{n}_rows", source=c.label, layout="plain",
                out_shape=x.shape)
    return b.layer("Reduce", [y], name=n, source=c.label, layout="plain", out_shape=c.shape,
                   fn="sum", axes=(0,))


def new_zeros(b: Builder, c: Call):
    """``x.new_zeros(shape)`` of a computed int tensor with x's own shape: a ``Canvas`` that
    ``copy_``/``fill_`` into its slices write (any other use refused when it is read)."""
    x = _value(c.arg(0, "self"))
    if tuple(c.arg(1, "size")) != tuple(x.shape) or c.kwargs.get("dtype") is not None:
        raise Unsupported("x.new_zeros(...) of another shape or dtype than x")
    return Canvas(b, c, x)


def copy_into(b: Builder, c: Call):
    """``view.copy_(src)`` into a slice of a ``Canvas`` (same shape); nothing else."""
    dst, src = c.arg(0, "self"), c.arg(1, "src")
    if not isinstance(dst, CanvasView):
        raise Unsupported("an in-place copy_ into a tensor other than a slice of "
                          "x.new_zeros(...)")
    src = _value(src)
    dst.canvas.write(dst, src)
    return src


def fill_into(b: Builder, c: Call):
    """``view.fill_(number)`` of a slice of a ``Canvas``; nothing else."""
    dst, v = c.arg(0, "self"), c.arg(1, "value")
    if not isinstance(dst, CanvasView) or not _number(v):
        raise Unsupported("an in-place fill_ other than of a slice of x.new_zeros(...) with a "
                          "number")
    dst.canvas.write(dst, v)
    return dst


def _need(v: Value, layout: str, what: str):
    if v.layout != layout:
        raise Unsupported(f"{what} on a {v.layout} tensor of shape {v.shape} (needs an "
                          f"{'(N, C, H, W) image tensor' if layout == 'nchw' else 'unpermuted'} "
                          f"input)")


def _nchw(b: Builder, c: "Call", x: Value, what: str) -> Value:
    """An (N, C, H, W) source tensor held channels last: a Transpose to that order where it is
    held otherwise (MobileViT's fold of patches back into a map)."""
    if x.layout == "nchw" or x.layout == "flat" or len(x.shape) != 4 or isinstance(
            x, (Unbatched, BatchMoved)) or x.perm[0] != 0:
        _need(x, "nchw", what)
        return x
    P = x.perm
    return b.layer("Transpose", [x], name=f"{c.name}_channels_last", source=c.label,
                   layout="nchw", out_shape=x.shape,
                   perm=tuple(P.index(a) - 1 for a in (2, 3, 1)))


def _pair(v, n=2):
    if isinstance(v, (list, tuple)):
        v = list(v)
        return tuple(v * n) if len(v) == 1 else tuple(v)
    return (int(v),) * n


# --- convolution and dense ----------------------------------------------------------------------

def conv2d(b: Builder, c: Call):
    x = _value(c.arg(0, "input"))
    x = _nchw(b, c, x, "a 2-D convolution")
    weight, bias = c.arg(1, "weight"), c.arg(2, "bias")
    if not isinstance(weight, str) or (bias is not None and not isinstance(bias, str)):
        raise Unsupported("a convolution whose kernel is computed (not a parameter)")
    w = b.tensors[weight]
    stride = _pair(c.arg(3, "stride", 1))
    padding = c.arg(4, "padding", 0)
    dilation = _pair(c.arg(5, "dilation", 1))
    groups = int(c.arg(6, "groups", 1))
    kh, kw = w.shape[2], w.shape[3]
    if isinstance(padding, str):   # aten.conv2d.padding: 'valid' or 'same' (stride 1)
        if padding == "valid":
            pads = ((0, 0), (0, 0))
        else:  # torch pads total // 2 before and the rest after, as the spec's explicit pairs
            tot = [dilation[i] * (k - 1) for i, k in enumerate((kh, kw))]
            pads = tuple((t // 2, t - t // 2) for t in tot)
    else:
        p = _pair(padding)
        pads = ((p[0], p[0]), (p[1], p[1]))
    params = {"kernel": (weight, "conv2d")}
    if bias is not None:
        params["bias"] = (bias, "identity")
    return b.layer("Conv2D", [x], name=c.name, source=c.label, params=params,
                   filters=int(w.shape[0]), kernel_size=(kh, kw), strides=stride, padding=pads,
                   dilation=dilation, groups=groups, use_bias=bias is not None,
                   layout="nchw", out_shape=c.shape)


def conv1d(b: Builder, c: Call):
    """torch ``conv1d`` of an (N, C, T) tensor -> ``Conv1D`` on it held channels last,
    (N, T, C) (the layout (0, 2, 1); a Transpose where it is held otherwise); the kernel
    (out, in/groups, k) as the spec's (k, in/groups, out); the output is held (N, T, C) too."""
    x = _value(c.arg(0, "input"))
    if len(x.shape) != 3:
        raise Unsupported(f"a 1-D convolution of a tensor of shape {x.shape} (unbatched)")
    weight, bias = c.arg(1, "weight"), c.arg(2, "bias")
    if not isinstance(weight, str) or (bias is not None and not isinstance(bias, str)) or (
            _shared(b, weight)):
        raise Unsupported("a convolution whose kernel is computed (not a parameter of its own)")
    w = b.tensors[weight]
    stride = int(_seq1(c.arg(3, "stride", 1)))
    padding = c.arg(4, "padding", 0)
    dilation = int(_seq1(c.arg(5, "dilation", 1)))
    groups = int(c.arg(6, "groups", 1))
    k = int(w.shape[2])
    if isinstance(padding, str):   # aten.conv1d.padding: 'valid' or 'same' (stride 1)
        tot = 0 if padding == "valid" else dilation * (k - 1)
        pads = ((tot // 2, tot - tot // 2),)
    else:
        p = int(_seq1(padding))
        pads = ((p, p),)
    if x.layout == "flat" or (x.layout != "plain" and x.perm != (0, 2, 1)):
        x = _plain(b, c, x, "a 1-D convolution")
    if x.layout == "plain":
        x = b.layer("Transpose", [x], name=f"{c.name}_channels_last", source=c.label,
                    layout=(0, 2, 1), out_shape=x.shape, perm=(1, 0))
    params = {"kernel": (weight, "conv1d")}
    if bias is not None:
        params["bias"] = (bias, "identity")
    return b.layer("Conv1D", [x], name=c.name, source=c.label, params=params,
                   filters=int(w.shape[0]), kernel_size=(k,), strides=(stride,), padding=pads,
                   dilation=(dilation,), groups=groups, use_bias=bias is not None,
                   layout=(0, 2, 1), out_shape=c.shape)


def _seq1(v):
    """The one value of a 1-D convolution's stride/padding/dilation list (or the number)."""
    if isinstance(v, (list, tuple)):
        if len(v) != 1:
            raise Unsupported(f"a 1-D convolution argument of {len(v)} values ({v})")
        return v[0]
    return v


def linear(b: Builder, c: Call):
    x = _value(c.arg(0, "input"))
    weight, bias = c.arg(1, "weight"), c.arg(2, "bias")
    if isinstance(bias, Unbatched) and len(bias.shape) == 2:   # a computed bias (EVA-02)
        y = linear(b, Call(c.target, [x, weight], {}, f"{c.name}_matmul", c.label, c.shape,
                           c.params))
        full = (1,) * (len(y.shape) - 1) + (bias.shape[1],)
        bias = b.layer("Reshape", [bias], name=f"{c.name}_bias", source=c.label,
                       layout="plain", out_shape=full, shape=full[1:])
        return b.layer("Add", [_plain(b, c, y, "a computed bias"), bias], name=c.name,
                       source=c.label, layout="plain", out_shape=c.shape)
    if not isinstance(weight, str) or (bias is not None and not isinstance(bias, str)):
        raise Unsupported("a linear map whose weight is computed (not a parameter)")
    if _shared(b, weight):   # a tied weight: x @ W^T of the shared Parameter (+ bias)
        x = _plain(b, c, x, "a linear map by a tied weight")
        wt = b.layer("Transpose", [shared_parameter(b, weight, c.label)],
                     name=f"{c.name}_weight_t", source=c.label, layout="plain",
                     out_shape=(1,) + tuple(b.tensors[weight].shape[::-1]), perm=(1, 0))
        y = b.layer("MatMul", [x, wt], name=c.name if bias is None else f"{c.name}_matmul",
                    source=c.label, layout="plain", out_shape=c.shape)
        if bias is None:
            return y
        return add(b, Call(c.target, [y, bias], {}, c.name, c.label, c.shape, c.params))
    if x.layout == "flat":
        lay, out_layout = flatten_nchw(*x.chw, then="linear"), "plain"
    else:   # the other axes are carried through in their held order (a Transpose to the
        # source order first where the last axis is held elsewhere)
        if not x.last_axis_in_place():
            x = _plain(b, c, x, "a Linear")
        lay, out_layout = "linear", x.layout
    params = {"kernel": (weight, lay)}
    if bias is not None:
        params["bias"] = (bias, "identity")
    return b.layer("Dense", [x], name=c.name, source=c.label, params=params,
                   units=int(b.tensors[weight].shape[0]), use_bias=bias is not None,
                   layout=out_layout, out_shape=c.shape)


def shared_parameter(b: Builder, src: str, label: str) -> Value:
    """The one ``Parameter`` node of a source parameter that several calls read (a tied
    embedding table and output projection): made at its first use, read by every use, so the
    spec has one parameter whose gradient sums every use's, as torch's does."""
    nodes = b.__dict__.setdefault("shared_nodes", {})
    if src not in nodes:
        shape = tuple(b.tensors[src].shape)
        nodes[src] = b.layer("Parameter", [], name=src, source=label,
                             params={"value": (src, "identity")}, layout="plain",
                             out_shape=(1,) + shape, shape=shape, init="ones")
    return nodes[src]


def _shared(b: Builder, src) -> bool:
    return isinstance(src, str) and src in getattr(b, "shared", ())


def addmm(b: Builder, c: Call):
    """bias + x @ W with W (in, out) and bias parameters (HuggingFace's Conv1D, GPT-2) ->
    ``Dense`` (its kernel is already (in, out)); x may hold the batch merged with other axes."""
    bias, x, weight = c.arg(0, "input"), _value(c.arg(1, "mat1")), c.arg(2, "mat2")
    if not isinstance(weight, str) or not isinstance(bias, str) or _shared(b, weight):
        raise Unsupported("addmm whose matrix or bias is not a parameter of its own")
    if c.kwargs.get("beta", 1) != 1 or c.kwargs.get("alpha", 1) != 1:
        raise Unsupported("addmm with beta or alpha != 1")
    if len(b.tensors[bias].shape) != 1 or x.layout == "flat" or not x.last_axis_in_place():
        raise Unsupported(f"addmm of a {x.layout} tensor of shape {x.shape} with a bias of "
                          f"shape {tuple(b.tensors[bias].shape)}")
    return b.layer("Dense", [x], name=c.name, source=c.label,
                   params={"kernel": (weight, "identity"), "bias": (bias, "identity")},
                   units=int(b.tensors[weight].shape[1]), use_bias=True, layout=x.layout,
                   out_shape=c.shape, chw=x.chw)


@dataclass
class FoldedIndices:
    """The folded index operand of an embedding lookup, read by ``embedding`` itself."""
    folded: object


@dataclass
class Unbatched(Value):
    """A source tensor without a batch axis (a table row lookup at folded positions, Whisper's
    ``embed_positions(arange(T))``: (T, D)), held batch-broadcast as (1, T, D): ``shape`` is
    the source's with a leading 1. Only a broadcasting call may read it (torch right-aligns the
    shapes, so (T, D) broadcasts as (1, T, D)); ``torch_graph`` refuses any other reader."""


def embedding(b: Builder, c: Call):
    weight, idx = c.arg(0, "weight"), c.arg(1, "indices")
    if isinstance(idx, FoldedIndices):
        arr = idx.folded.array
        batchless = arr.ndim >= 1 and arr.shape[0] != 1 and not (
            arr.shape[0] == b.batch and (arr == arr[:1]).all())
        idx = as_value(b, idx.folded, 0 if not batchless else arr.ndim + 1, b.batch, c.name,
                       c.label, b.__dict__.setdefault("folded_nodes", {}))
        if batchless:   # a lookup at folded positions without a batch axis (see Unbatched)
            if not isinstance(weight, str):
                raise Unsupported("an embedding whose table is computed")
            if c.arg(2, "padding_idx", -1) not in (-1, None):
                raise Unsupported("Embedding(padding_idx=...) at folded positions")
            shape = (1,) + tuple(c.shape)
            table = b.layer("Parameter", [], name=f"{c.name}_table", source=c.label,
                            params={"value": (weight, "identity")}, layout="plain",
                            out_shape=(1,) + tuple(b.tensors[weight].shape),
                            shape=tuple(b.tensors[weight].shape), init="ones") \
                if not _shared(b, weight) else shared_parameter(b, weight, c.label)
            y = b.layer("Gather", [table, idx], name=c.name, source=c.label, axis=0,
                        layout="plain", out_shape=shape)
            return Unbatched(y.tensor, "plain", shape)
    idx = _value(idx)
    if not isinstance(weight, str):
        raise Unsupported("an embedding whose table is computed")
    padding_idx = c.arg(2, "padding_idx", -1)
    if padding_idx in (-1, None) and _shared(b, weight):
        # a tied table: Gather(axis 0) of the shared Parameter, y[n, ...] = W[ids[n, ...]]
        return b.layer("Gather", [shared_parameter(b, weight, c.label), idx], name=c.name,
                       source=c.label, axis=0, layout="plain", out_shape=c.shape)
    if padding_idx not in (-1, None) and _shared(b, weight):
        # a tied table read with a padding row (BART's encoder and decoder): this lookup passes
        # no gradient at ids == padding_idx, as torch's embedding(padding_idx) per call
        return b.layer("Gather", [shared_parameter(b, weight, c.label), idx], name=c.name,
                       source=c.label, axis=0, padding_idx=int(padding_idx), layout="plain",
                       out_shape=c.shape)
    if c.arg(4, "sparse", False):
        raise Unsupported("Embedding(sparse=True)")
    w = b.tensors[weight]
    # aten.embedding's padding_idx is already >= 0 (nn.Embedding adds the vocabulary size to a
    # negative one) or -1 for none; the spec's Embedding zeroes that row's gradient as torch does
    return b.layer("Embedding", [idx], name=c.name, source=c.label,
                   params={"embedding": (weight, "identity")}, vocab_size=int(w.shape[0]),
                   dim=int(w.shape[1]), layout="plain", out_shape=c.shape,
                   **({} if padding_idx in (-1, None) else {"padding_idx": int(padding_idx)}))


embedding.takes_folded = lambda a: FoldedIndices(a) if isinstance(a, Folded) else a


def index_table(b: Builder, c: Call):
    """``table[idx]`` of a parameter at one folded index tensor (BEiT's
    ``relative_position_bias_table[relative_position_index.view(-1)]``): the lookup of
    ``embedding`` at folded positions (a Gather without a batch axis, ``Unbatched``)."""
    table, idx = c.arg(0, "self"), c.arg(1, "indices")
    if isinstance(idx, (list, tuple)) and any(isinstance(v, Value) and _kind(v) == "int"
                                              for v in idx):
        mask = idx[0]
        layer = getattr(mask.tensor.source, "layer", None) if isinstance(mask, Value) else None
        if len(idx) == 1 and isinstance(table, Value) and table.layout == "plain" and \
                getattr(layer, "op", None) in ("Equal", "Less", "Greater") and \
                tuple(mask.shape) == tuple(table.shape[:len(mask.shape)]) and \
                len(mask.shape) == 2:
            return MaskedRows(table, mask)      # read by view(N, -1, ...)[:, i] only
        raise Unsupported("x[mask] at a computed boolean mask or index tensor (its shape "
                          "depends on the data) other than a comparison's (N, T) mask of an "
                          "(N, T, ...) tensor")
    if not isinstance(table, str) or not isinstance(idx, (list, tuple)) or len(idx) != 1 or \
            not isinstance(idx[0], FoldedIndices) or b.tensors[table].ndim != 2:
        raise Unsupported("an index of a tensor other than a 2-D parameter at one folded index "
                          "tensor")
    return embedding(b, Call(c.target, [table, idx[0]], {}, c.name, c.label, c.shape,
                             c.params))


index_table.takes_folded = lambda a: ([FoldedIndices(v) if isinstance(v, Folded) else v
                                        for v in a] if isinstance(a, (list, tuple)) else a)


# --- normalisation ------------------------------------------------------------------------------

def batch_norm(b: Builder, c: Call):
    """torch BatchNorm1d/2d (affine, track_running_stats, a momentum) -> BatchNorm(momentum =
    1 - torch's momentum, epsilon = eps, running_var="unbiased"): torch's running update is
    running <- (1 - momentum) * running + momentum * batch, with the unbiased batch variance.
    ``momentum=None`` (a cumulative average) is refused before the trace
    (``batch_norm_module_refusal``)."""
    x = _value(c.arg(0, "input"))
    weight, bias = c.arg(1, "weight"), c.arg(2, "bias")
    running_mean, running_var = c.arg(3, "running_mean"), c.arg(4, "running_var")
    if running_mean is None or running_var is None:
        raise Unsupported("BatchNorm(track_running_stats=False) (the spec's BatchNorm keeps "
                          "running statistics and normalises with them in eval)")
    if weight is None or bias is None:
        raise Unsupported("BatchNorm(affine=False) (the spec's BatchNorm has a scale and bias)")
    if not all(isinstance(t, str) for t in (weight, bias, running_mean, running_var)):
        raise Unsupported("a batch norm whose parameters or statistics are computed")
    if x.layout not in ("nchw", "plain") or (x.layout == "plain" and len(x.shape) != 2):
        raise Unsupported(f"a batch norm of a {x.layout} tensor of shape {x.shape} (the spec's "
                          f"BatchNorm normalises (N, C) vectors and (N, C, H, W) images)")
    momentum = float(c.arg(6, "momentum"))
    if momentum == 0.0:
        raise Unsupported("BatchNorm(momentum=0) (running statistics that never move: the "
                          "spec's BatchNorm momentum must be < 1)")
    return b.layer("BatchNorm", [x], name=c.name, source=c.label,
                   params={"scale": (weight, "identity"), "bias": (bias, "identity")},
                   state={"mean": (running_mean, "identity"), "var": (running_var, "identity")},
                   momentum=1.0 - momentum, epsilon=float(c.arg(7, "eps")),
                   running_var="unbiased", out_shape=c.shape)


def batch_norm_module_refusal(module) -> str | None:
    """The refusal line of a torch BatchNorm module that no trace can show (None if none):
    ``momentum=None`` makes torch's running statistics a cumulative average over every batch
    seen (and ``torch.export`` cannot capture it)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    if isinstance(module, _BatchNorm) and module.track_running_stats and module.momentum is None:
        return ("BatchNorm(momentum=None) (a cumulative average of every batch's statistics: "
                "the spec's BatchNorm has an exponential moving average)")
    return None


def group_norm(b: Builder, c: Call):
    x = _value(c.arg(0, "input"))
    x = _nchw(b, c, x, "GroupNorm")
    weight, bias = c.arg(2, "weight"), c.arg(3, "bias")
    if weight is None or bias is None:
        raise Unsupported("GroupNorm(affine=False) (the spec's GroupNorm has a scale and bias)")
    return b.layer("GroupNorm", [x], name=c.name, source=c.label,
                   params={"scale": (weight, "identity"), "bias": (bias, "identity")},
                   groups=int(c.arg(1, "num_groups")), epsilon=float(c.arg(4, "eps", 1e-5)),
                   out_shape=c.shape)


def layer_norm(b: Builder, c: Call):
    x = _value(c.arg(0, "input"))
    shape = list(c.arg(1, "normalized_shape"))
    weight, bias = c.arg(2, "weight"), c.arg(3, "bias")
    if len(shape) != 1 or x.layout == "flat":
        raise Unsupported(f"LayerNorm over {shape} of a {x.layout} tensor of shape {x.shape} "
                          f"(the spec's LayerNorm normalises the held last axis)")
    if not x.last_axis_in_place():   # a Transpose to the source order first
        x = _plain(b, c, x, "a LayerNorm")
    if weight is None or bias is None:
        raise Unsupported("LayerNorm without its scale and bias (elementwise_affine=False or "
                          "bias=False)")
    if _shared(b, weight) or _shared(b, bias):
        return _shared_layer_norm(b, c, x, weight, bias)
    return b.layer("LayerNorm", [x], name=c.name, source=c.label,
                   params={"scale": (weight, "identity"), "bias": (bias, "identity")},
                   epsilon=float(c.arg(4, "eps", 1e-5)), out_shape=c.shape)


def _shared_layer_norm(b: Builder, c: Call, x: Value, weight, bias) -> Value:
    """A LayerNorm whose scale and bias other calls read too (ALBERT's one layer applied at
    every depth) written out as its math on the last axis, with the shared ``Parameter``s:
    y = (x - mean) * rsqrt(var + eps) * scale + bias, var the population variance."""
    eps = float(c.arg(4, "eps", 1e-5))
    n, lab, shp = c.name, c.label, c.shape

    def op(kind, ins, suffix, **attrs):
        return b.layer(kind, ins, name=f"{n}_{suffix}", source=lab, out_shape=shp, **attrs)

    mean = b.layer("Reduce", [x], name=f"{n}_mean", source=lab, fn="mean", axes=(-1,),
                   keepdims=True, out_shape=shp[:-1] + (1,))
    d = op("Subtract", [x, mean], "centered")
    var = b.layer("Reduce", [op("Multiply", [d, d], "square")], name=f"{n}_var", source=lab,
                  fn="mean", axes=(-1,), keepdims=True, out_shape=shp[:-1] + (1,))
    r = b.layer("Unary", [b.layer("Add", [var], name=f"{n}_var_eps", source=lab,
                                  out_shape=shp[:-1] + (1,), constant=eps)],
                name=f"{n}_rstd", source=lab, fn="rsqrt", out_shape=shp[:-1] + (1,))
    y = op("Multiply", [d, r], "normalized")
    y = op("Multiply", [y, _param_operand(b, c, weight, y, "a LayerNorm scale")], "scaled")
    return b.layer("Add", [y, _param_operand(b, c, bias, y, "a LayerNorm bias")], name=n,
                   source=lab, out_shape=shp)


# --- activations --------------------------------------------------------------------------------

def _activation(fn, **extra):
    def handler(b: Builder, c: Call):
        x = _value(c.arg(0, "input"))
        kw = {k: (f(c) if callable(f) else f) for k, f in extra.items()}
        return b.layer("Activation", [x], name=c.name, source=c.label, fn=fn, out_shape=c.shape, **kw)
    handler.merged_rule = torch_merged.SAME
    return handler


def _gelu_approximate(c):
    return c.arg(1, "approximate", "none")


def _leaky_slope(c):
    return float(c.arg(1, "negative_slope", 0.01))


def constants_checked(check):
    """Mark a handler whose refusal of its constant arguments holds whatever its tensor inputs:
    ``check(call)`` raises ``Unsupported`` and is run by the capture also after an input was
    refused (so that line is reported too); the handler runs it first itself."""
    def mark(handler):
        handler.check_constants = check
        return handler
    return mark


def _hardtanh_bounds(c: Call):
    lo, hi = float(c.arg(1, "min_val", -1.0)), float(c.arg(2, "max_val", 1.0))
    if (lo, hi) != (0.0, 6.0):
        raise Unsupported(f"hardtanh({lo:g}, {hi:g}) (the spec clips only as relu6, "
                          f"hardtanh(0, 6))")


@constants_checked(_hardtanh_bounds)
def hardtanh(b: Builder, c: Call):
    """hardtanh(x, 0, 6) is ReLU6 (torch's ``nn.ReLU6`` traces as it); other bounds are refused."""
    _hardtanh_bounds(c)
    x = _value(c.arg(0, "input"))
    return b.layer("Activation", [x], name=c.name, source=c.label, fn="relu6",
                   out_shape=c.shape)


def hardswish(b: Builder, c: Call):
    x = _value(c.arg(0, "input"))
    return b.layer("HardSwish", [x], name=c.name, source=c.label, out_shape=c.shape)


def _softmax_dtype(b: Builder, c: Call):
    """A softmax's ``dtype`` argument (``softmax(x, dim, dtype=torch.float32)``: the source
    computes it in that dtype, then casts back): None or the model's own dtype, else refused
    (the spec computes in one float dtype: a float32 softmax inside a float64 model, ViT's
    attention, is not the spec's float64 softmax; import the model in float32)."""
    dtype = c.kwargs.get("dtype", c.arg(2, "dtype", None))
    if isinstance(dtype, bool) or dtype is None or dtype == getattr(b, "dtype", None):
        return
    raise Unsupported(f"a softmax computed in {dtype} inside a {getattr(b, 'dtype', None)} "
                      f"model (the spec computes in one float dtype: import the model in "
                      f"{dtype})")


def softmax(b: Builder, c: Call):
    x = _value(c.arg(0, "input"))
    _softmax_dtype(b, c)
    return b.layer("Activation", [x], name=c.name, source=c.label, fn="softmax",
                   axis=x.canonical_axis(int(c.arg(1, "dim"))), out_shape=c.shape)


def missing(what):
    def handler(b, c):
        raise Unsupported(what)
    handler.static = True   # refused whatever its inputs: reported even after a refused input
    return handler


# --- combination, shape -------------------------------------------------------------------------

@dataclass
class ParamView:
    """A view of a parameter (timm's ``gamma.reshape(1, -1, 1, 1)``): read where a binary op
    takes it as an operand (``Parameter`` of the viewed shape)."""
    src: str
    shape: tuple
    tensor: object = None


def _param_operand(b: Builder, c: Call, p, other: Value, what: str) -> Value:
    """A parameter operand of a broadcasting binary op with ``other`` (a computed tensor) as a
    ``Parameter`` node: the source array, aligned right to ``other``'s rank (its leading size-1
    axes are the batch axis and broadcast axes), held in ``other``'s axis order, so NumPy
    broadcasting of the held tensors is the source's."""
    src, shape = (p.src, p.shape) if isinstance(p, ParamView) else (p, b.tensors[p].shape)
    src_shape = tuple(b.tensors[src].shape)
    rank = len(other.shape)
    if other.layout == "flat" or len(shape) > rank:
        raise Unsupported(f"{what} by a parameter of shape {shape} with a tensor of shape "
                          f"{other.shape} held as {other.layout}")
    full = (1,) * (rank - len(shape)) + tuple(shape)
    if full[0] != 1:
        raise Unsupported(f"{what} by a parameter of shape {shape} over the batch axis")
    perm = other.perm
    held = tuple(full[i] for i in perm)[1:]
    if _shared(b, src):   # a parameter other calls read too: a view of its one Parameter
        moved = [i for i in perm if full[i] != 1]
        if moved != sorted(moved):
            raise Unsupported(f"{what} by a shared parameter of shape {shape} with a tensor "
                              f"held with its axes in the order {perm}")
        v = shared_parameter(b, src, c.label)
        if held != tuple(src_shape):
            v = b.layer("Reshape", [v], name=f"{c.name}_{src}_view", source=c.label,
                        layout="plain", out_shape=(1,) + held, shape=held)
        return Value(v.tensor, other.layout, full)
    inverse = tuple(int(i) for i in np.argsort(perm))
    lay = Layout(f"param{tuple(shape)}@{perm}",
                 lambda k: np.transpose(np.asarray(k)[None], inverse).reshape(src_shape),
                 lambda a: np.transpose(np.asarray(a).reshape(full), perm)[0])
    return b.layer("Parameter", [], name=f"{c.name}_{src}", source=c.label,
                   params={"value": (src, lay)}, layout=other.layout, out_shape=full,
                   shape=held, init="ones")


def _binary(op: str, what: str):
    """A broadcasting binary op of the source: two computed tensors held in one layout (NumPy
    broadcasting of the held tensors is then the source's: equal ranks, one axis order), a
    parameter operand (``_param_operand``) or a Python number (the op's ``constant``)."""
    def handler(b: Builder, c: Call):
        x, y = c.arg(0, "self"), c.arg(1, "other")
        if c.arg(2, "alpha", 1) != 1:
            raise Unsupported(f"{what} with alpha != 1")
        numbers = (int, float)
        if isinstance(x, numbers) and isinstance(y, numbers):
            raise Unsupported(f"{what} of two numbers")
        if isinstance(y, numbers) or isinstance(x, numbers):
            v, k, rev = (x, y, False) if isinstance(y, numbers) else (y, x, True)
            v = _value(v)
            attrs = {"constant": float(k)}
            if rev and op in ("Subtract", "Divide", "Power"):
                attrs["reverse"] = True
            return b.layer(op, [v], name=c.name, source=c.label, out_shape=c.shape, chw=v.chw,
                           **attrs)
        params = (str, ParamView)
        if isinstance(x, params) and isinstance(y, params):
            raise Unsupported(f"{what} of two parameters (a computed parameter)")
        if isinstance(x, params):
            x = _param_operand(b, c, x, _value(y), what)
        elif isinstance(y, params):
            y = _param_operand(b, c, y, _value(x), what)
        x, y = _value(x), _value(y)
        if x.layout != y.layout and len(x.shape) == len(y.shape) and "flat" not in (
                x.layout, y.layout) and not isinstance(x, Unbatched) and not isinstance(
                y, Unbatched):   # one held in source order: the other too (a Transpose)
            if x.layout == "plain":
                y = _plain(b, c, y, what)
            else:
                x = _plain(b, c, x, what)
                if y.layout != "plain":
                    y = _plain(b, c, y, what)
        if x.layout != y.layout or x.chw != y.chw or len(x.shape) != len(y.shape):
            raise Unsupported(f"{what} of shapes {x.shape} and {y.shape} held in different "
                              f"layouts ({x.layout}, {y.layout})")
        if x.layout == "flat" and x.shape != y.shape:
            raise Unsupported(f"a broadcasting {what} of a channels-first flatten")
        return b.layer(op, [x, y], name=c.name, source=c.label, out_shape=c.shape, chw=x.chw)
    handler.merged_rule = torch_merged.SAME
    return handler


add = _binary("Add", "an add")
mul = _binary("Multiply", "a multiply")
sub = _binary("Subtract", "a subtract")
div = _binary("Divide", "a divide")


def _parameter_cat(b: Builder, c: Call, srcs) -> Value:
    """``torch.cat`` of 1-D parameters and constant buffers (EVA-02's qkv bias: q_bias, a zero
    k_bias buffer, v_bias) -> ``Concatenate`` of batch-broadcast ``Parameter`` / ``Constant``
    nodes: a computed parameter without a batch axis (``Unbatched``), read by a Linear's bias
    or a broadcasting call."""
    parts = []
    for k, src in enumerate(srcs):
        arr = np.asarray(b.tensors[src])
        if arr.ndim != 1:
            raise Unsupported(f"a concatenation of parameters of shape {arr.shape} (only 1-D)")
        if src in getattr(b, "param_names", ()):
            parts.append(shared_parameter(b, src, c.label) if _shared(b, src) else b.layer(
                "Parameter", [], name=f"{c.name}_{src}", source=c.label,
                params={"value": (src, "identity")}, layout="plain", out_shape=(1,) + arr.shape,
                shape=arr.shape, init="ones"))
        elif src in getattr(b, "constant_buffers", ()):
            b.__dict__.setdefault("buffers_read", set()).add(src)   # Captured.constant_buffers
            parts.append(b.layer("Constant", [], name=f"{c.name}_{src}", source=c.label,
                                 layout="plain", out_shape=(1,) + arr.shape, value=arr))
        else:
            raise Unsupported(f"a concatenation of buffer {src}, which the model updates")
    out = (1,) + tuple(c.shape)
    y = b.layer("Concatenate", parts, name=c.name, source=c.label, axis=-1, layout="plain",
                out_shape=out)
    return Unbatched(y.tensor, "plain", out)


def cat(b: Builder, c: Call):
    srcs = c.arg(0, "tensors")
    if srcs and all(isinstance(v, str) for v in srcs):
        return _parameter_cat(b, c, srcs)
    xs = [_value(v) for v in srcs]
    if len(xs) == 1:   # a cat of one tensor is that tensor (DenseNet's first dense layer)
        return xs[0]
    lay = {v.layout for v in xs}
    if len(lay) != 1 or "flat" in lay:
        raise Unsupported("a concatenation of tensors held in different layouts")
    axis = xs[0].canonical_axis(int(c.arg(1, "dim", 0)))
    return b.layer("Concatenate", xs, name=c.name, source=c.label, axis=axis, out_shape=c.shape)


def stack(b: Builder, c: Call):
    """torch.stack(tensors, dim) -> each tensor viewed with a size-1 axis at ``dim``
    (``unsqueeze``), then ``cat`` along it (RoPE's rotate-half in EVA-02)."""
    xs = [_value(v) for v in c.arg(0, "tensors")]
    rank = len(xs[0].shape) + 1
    dim = int(c.arg(1, "dim", 0)) % rank
    if dim == 0:
        raise Unsupported("a stack along the batch axis")
    pieces = [unsqueeze(b, Call("aten.unsqueeze.default", [x, dim], {}, f"{c.name}_{k}",
                                c.label, x.shape[:dim] + (1,) + x.shape[dim:], c.params))
              for k, x in enumerate(xs)]
    return cat(b, Call("aten.cat.default", [pieces, dim], {}, c.name, c.label, c.shape,
                       c.params))


def flatten(b: Builder, c: Call):
    x = _value(c.arg(0, "input"))
    start, end = int(c.arg(1, "start_dim", 0)), int(c.arg(2, "end_dim", -1))
    rank = len(x.shape)
    if start % rank == 0:   # the batch merged with the next axes: a view (``torch_merged``)
        return view(b, c)
    if start != 1 or end not in (-1, rank - 1) or x.layout not in ("nchw", "plain", "flat"):
        return view(b, c)
    return _flatten(b, c, x)


def _flatten(b, c, x):
    if len(x.shape) == 2 and x.layout != "nchw":
        return x
    if x.layout == "nchw":
        n, ch, h, w = x.shape
        if h * w == 1:
            return b.layer("Flatten", [x], name=c.name, source=c.label, layout="plain",
                           out_shape=c.shape)
        return b.layer("Flatten", [x], name=c.name, source=c.label, layout="flat",
                       out_shape=c.shape, chw=(ch, h, w))
    _need(x, "plain", "a flatten")
    return b.layer("Flatten", [x], name=c.name, source=c.label, out_shape=c.shape)


def view(b: Builder, c: Call):
    """A view / reshape: a flatten of an (N, C, H, W) map keeps the channels-first order as the
    ``flat`` layout; any other view is a Reshape of the held tensor where the source axes it
    merges or splits are held contiguous and in order (``builder.regroup``), the held axis order
    carried through."""
    x = c.arg(0, "input")
    shape = tuple(c.shape)
    if isinstance(x, MaskedRows):   # x[mask].view(N, -1, D): the rows grouped per example
        if x.grouped or len(shape) != len(x.x.shape) or shape[0] != x.x.shape[0] or \
                shape[2:] != tuple(x.x.shape[2:]):
            raise Unsupported("x[mask] viewed other than as (N, -1, ...)")
        return MaskedRows(x.x, x.mask, grouped=True)
    if isinstance(x, (str, ParamView)):   # a view of a parameter: read by the op that uses it
        return ParamView(x if isinstance(x, str) else x.src, shape)
    if isinstance(x, Unbatched):   # held (1, ...): a Reshape of it in source order
        x = _plain(b, c, Value(x.tensor, x.layout, x.shape), "a view")
        y = b.layer("Reshape", [x], name=c.name, source=c.label, layout="plain",
                    out_shape=(1,) + shape, shape=shape)
        return Unbatched(y.tensor, "plain", (1,) + shape)
    x = _value(x)
    if shape[0] != x.shape[0]:
        # (N, ...) -> (N*k, ...) (Swin's window partition, MobileViT's patches, HuggingFace's
        # Conv1D input): held unmerged, (N, k, ...) (``torch_merged``)
        if x.batch_axis != 0 or x.layout == "flat":
            raise Unsupported(f"a view that mixes the batch axis ({x.shape} -> {shape})")
        return torch_merged.view_from(b, view, c, x)
    if len(shape) == 2 and x.layout in ("nchw", "plain", "flat"):
        return _flatten(b, c, x)
    if shape == tuple(x.shape):
        return x
    if x.layout == "flat":
        raise Unsupported(f"a view of a channels-first flatten to {shape}")
    # (a Transpose of the held axes first where needed: ShuffleNet's channel shuffle)
    return reshape_held(b, x, shape, c.name, c.label)


def _slice(b: Builder, c: Call, x: Value, dim: int, start, stop, step: int, name: str):
    """``Slice`` of source axis ``dim`` (Python slice rules, resolved against its size)."""
    rank = len(x.shape)
    dim %= rank
    if dim == x.batch_axis:
        raise Unsupported("a slice of the batch axis")
    size = x.shape[dim]
    lo, hi, st = slice(start, stop, step).indices(size)
    if (lo, hi, st) == (0, size, 1):
        return x
    return b.layer("Slice", [x], name=name, source=c.label, axes=(x.canonical_axis(dim),),
                   starts=(lo,), stops=(hi,), steps=(st,),
                   out_shape=x.shape[:dim] + (len(range(lo, hi, st)),) + x.shape[dim + 1:])


def slice_(b: Builder, c: Call):
    """x[..., start:end:step, ...] along one source axis -> ``Slice`` (held order kept); of a
    ``Canvas``, the view its in-place writes go to."""
    if isinstance(c.arg(0, "input"), Canvas):
        cv, dim = c.arg(0, "input"), int(c.arg(1, "dim", 0))
        if int(c.arg(4, "step", 1)) != 1:
            raise Unsupported("a strided slice of x.new_zeros(...) written in place")
        start, stop, _ = slice(c.arg(2, "start", None), c.arg(3, "end", None)).indices(
            cv.shape[dim])
        return cv.view(dim, start, stop)
    x = _value(c.arg(0, "input"))
    return _slice(b, c, x, int(c.arg(1, "dim", 0)), c.arg(2, "start", None),
                  c.arg(3, "end", None), int(c.arg(4, "step", 1)), c.name)


def select(b: Builder, c: Call):
    """x[..., i, ...] -> ``Slice`` of one element and ``Squeeze`` of that held axis; the held
    order of the other source axes is kept."""
    x = c.arg(0, "input")
    if isinstance(x, HiddenStates):   # h_n[k] of a recurrent call
        return x.select(b, c, int(c.arg(1, "dim")), int(c.arg(2, "index")))
    if isinstance(x, MaskedRows):     # x[mask].view(N, -1, D)[:, i]
        return masked_rows_select(b, c, x, int(c.arg(1, "dim")) % 3, int(c.arg(2, "index")))
    if isinstance(x, Canvas):         # the view an in-place fill_ writes
        dim = int(c.arg(1, "dim")) % len(x.shape)
        i = int(c.arg(2, "index")) % x.shape[dim]
        return x.view(dim, i, i + 1)
    x = _value(x)
    rank = len(x.shape)
    dim, i = int(c.arg(1, "dim")) % rank, int(c.arg(2, "index"))
    i = i + x.shape[dim] if i < 0 else i
    y = _slice(b, c, x, dim, i, i + 1, 1, f"{c.name}_slice")
    perm = tuple(p - (p > dim) for p in x.perm if p != dim)
    out = b.layer("Squeeze", [y], name=c.name, source=c.label, axes=(x.canonical_axis(dim),),
                  layout=perm, out_shape=c.shape)
    if isinstance(x, BatchMoved) and perm[0] != 0:   # still not on axis 0
        return BatchMoved(out.tensor, out.layout, out.shape)
    return out


def split(b: Builder, c: Call):
    """chunk / split -> one ``Slice`` per piece (a tuple of Values, read by getitem)."""
    x = _value(c.arg(0, "input"))
    dim = int(c.arg(2, "dim", 0)) % len(x.shape)
    size = x.shape[dim]
    arg = c.arg(1, "split_size")
    if c.target.startswith("aten.chunk"):
        n = int(arg)
        step = -(-size // n)
        sizes = [min(step, size - k) for k in range(0, size, step)]
    elif isinstance(arg, (list, tuple)):
        sizes = [int(v) for v in arg]
    else:
        sizes = [min(int(arg), size - k) for k in range(0, size, int(arg))]
    out, start = [], 0
    for k, n in enumerate(sizes):
        out.append(_slice(b, c, x, dim, start, start + n, 1, f"{c.name}_{k}"))
        start += n
    return tuple(out)


def roll(b: Builder, c: Call):
    """torch.roll(x, shifts, dims): y[..., i, ...] = x[..., (i - s) mod n, ...] along each dim,
    i.e. the last s mod n entries moved in front: ``Concatenate`` of two ``Slice``s per rolled
    axis (Swin's shifted windows). A roll of the flattened tensor (no dims) and of the batch
    axis are refused."""
    x = _value(c.arg(0, "input"))
    shifts, dims = c.arg(1, "shifts"), c.arg(2, "dims", [])
    shifts = [int(s) for s in (shifts if isinstance(shifts, (list, tuple)) else [shifts])]
    dims = [int(d) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
    if not dims or len(dims) != len(shifts):
        raise Unsupported("torch.roll without dims (a roll of the flattened tensor)")
    rank = len(x.shape)
    for k, (s, d) in enumerate(zip(shifts, dims)):
        d %= rank
        n = x.shape[d]
        s %= n
        if s == 0:
            continue
        name = c.name if k == len(dims) - 1 else f"{c.name}_{k}"
        tail = _slice(b, c, x, d, n - s, n, 1, f"{name}_tail")
        head = _slice(b, c, x, d, 0, n - s, 1, f"{name}_head")
        x = b.layer("Concatenate", [tail, head], name=name, source=c.label,
                    axis=x.canonical_axis(d), out_shape=x.shape, chw=x.chw)
    return x


def pad(b: Builder, c: Call):
    """F.pad(x, pad, mode="constant", value) (aten.pad, constant_pad_nd): pad lists (lo, hi)
    pairs from the last axis backwards -> ``Pad`` of the held axes with ``value`` (0 where
    None); all pairs zero is x itself (Swin's pad to a multiple of the window). Other modes,
    negative pads (a crop) and a pad of the batch axis are refused."""
    x = _value(c.arg(0, "input"))
    pairs = [int(v) for v in c.arg(1, "pad")]
    mode = c.arg(2, "mode", "constant") if c.target.startswith("aten.pad") else "constant"
    value = c.arg(3 if c.target.startswith("aten.pad") else 2, "value", None)
    if mode != "constant":
        raise Unsupported(f"F.pad(mode={mode!r}) (the spec's Pad pads with a constant)")
    if len(pairs) % 2 or any(v < 0 for v in pairs):
        raise Unsupported(f"F.pad with pads {pairs} (negative pads crop)")
    rank = len(x.shape)
    by_axis = {rank - 1 - i: (pairs[2 * i], pairs[2 * i + 1]) for i in range(len(pairs) // 2)}
    if not any(lo or hi for lo, hi in by_axis.values()):
        return x
    held = [(0, 0)] * (rank - 1)
    for d, pr in by_axis.items():
        if d == x.batch_axis and any(pr):
            raise Unsupported("F.pad of the batch axis")
        if d != x.batch_axis:
            held[x.canonical_axis(d)] = pr
    return b.layer("Pad", [x], name=c.name, source=c.label, pads=tuple(held),
                   value=0.0 if value is None else float(value), out_shape=c.shape,
                   chw=x.chw)


def permute(b: Builder, c: Call):
    """A permute / transpose of the source is no spec layer: the held tensor stays, its axis
    order follows (``builder.permuted``); a permute and its inverse cancel."""
    x = _value(c.arg(0, "input"))
    lead = isinstance(x, Unbatched)   # held with a leading size-1 axis the source lacks
    rank = len(x.shape) - lead
    if c.target.startswith("aten.permute"):
        dims = [int(d) % rank for d in c.arg(1, "dims")]
    else:
        d0, d1 = int(c.arg(1, "dim0")) % rank, int(c.arg(2, "dim1")) % rank
        dims = list(range(rank))
        dims[d0], dims[d1] = d1, d0
    if lead:
        perm = permuted(x.perm, [0] + [d + 1 for d in dims])
        return Unbatched(x.tensor, held_layout(perm), (1,) + tuple(c.shape))
    if x.layout == "flat":
        raise Unsupported("a transpose of a channels-first flatten")
    perm = permuted(x.perm, dims)
    if perm[0] != 0 and perm != (1, 0, 2):
        # timm's qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4): only unbind / select of a
        # leading axis may read it (``BatchMoved``)
        return BatchMoved(x.tensor, held_layout(perm), tuple(c.shape))
    return Value(x.tensor, held_layout(perm), tuple(c.shape))


@dataclass
class BatchMoved(Value):
    """A source tensor whose batch axis a permute moved off axis 0 (timm's attention stacks q,
    k, v in front: (3, B, H, N, D)); held as before, its batch axis first. Only ``unbind`` /
    ``select`` of an axis before the batch may read it (their pieces have the batch on axis 0
    again); ``reader_refusal`` refuses any other reader."""


def reader_refusal(target: str, values) -> str | None:
    """The refusal line of a call that reads a tensor only some calls may read (``Unbatched``,
    ``BatchMoved``), or None."""
    values = list(values)
    for i, v in enumerate(values):
        if isinstance(v, Unbatched) and target not in BROADCASTING and ATEN.get(target) not in (
                permute, unsqueeze, view, passthrough) and not (
                ATEN.get(target) is linear and i > 0):
            return (f"{target} of a tensor without a batch axis (a table lookup at folded "
                    f"positions; only a broadcasting call may read it)")
        if isinstance(v, BatchMoved) and ATEN.get(target) not in (unbind, select):
            return (f"{target} of a tensor whose batch axis a permute moved off axis 0 (only "
                    f"unbind or select of an axis before it may read it)")
    return None


def unbind(b: Builder, c: Call):
    """x.unbind(dim) -> one ``select`` per index (a tuple of Values, read by getitem)."""
    x = _value(c.arg(0, "input"))
    dim = int(c.arg(1, "dim", 0)) % len(x.shape)
    shape = x.shape[:dim] + x.shape[dim + 1:]
    return tuple(select(b, Call(c.target, [x, dim, i], {}, f"{c.name}_{i}", c.label, shape,
                                c.params)) for i in range(x.shape[dim]))


def expand(b: Builder, c: Call):
    """x.expand(sizes) -> ``Expand`` of the per-example sizes (-1 keeps a size); a parameter
    (ViT's ``cls_token.expand(B, -1, -1)``, shape (1, ...)) is a batch-broadcast ``Parameter``
    expanded to the batch of the run. x is held in source order (a Transpose where not)."""
    x, sizes = c.arg(0, "input"), [int(v) for v in c.arg(1, "size")]
    if isinstance(x, (str, ParamView)):
        src, shape = (x.src, x.shape) if isinstance(x, ParamView) else (x, b.tensors[x].shape)
        shape = tuple(shape)
        if len(shape) != len(sizes) or shape[0] != 1:
            raise Unsupported(f"an expand of a parameter of shape {shape} to {sizes} (its "
                              f"first axis must be the batch, of size 1)")
        src_shape = tuple(b.tensors[src].shape)
        lay = Layout(f"param{shape}", lambda k, s=src_shape: np.asarray(k).reshape(s),
                     lambda a, s=shape: np.asarray(a).reshape(s[1:]))
        x = b.layer("Parameter", [], name=f"{c.name}_{src}", source=c.label,
                    params={"value": (src, lay)}, layout="plain", out_shape=shape,
                    shape=shape[1:], init="ones")
    else:
        x = _plain(b, c, _value(x), "an expand")
        if len(x.shape) != len(sizes):
            raise Unsupported(f"an expand of a tensor of shape {x.shape} to {sizes} (new "
                              f"leading axes before the batch)")
        if tuple(x.shape[1:]) == tuple(c.shape[1:]):
            return x
    return b.layer("Expand", [x], name=c.name, source=c.label, layout="plain",
                   out_shape=c.shape, shape=tuple(sizes[1:]))


def unsqueeze(b: Builder, c: Call):
    """x.unsqueeze(dim) -> a view adding a size-1 axis (``view``); ``unsqueeze(0)`` of a tensor
    without a batch axis (``Unbatched``, held (1, ...)) gives it one of size 1: the same held
    tensor, in source order (T5's relative-position bias, (1, H, T, T))."""
    x = c.arg(0, "input")
    if isinstance(x, Unbatched):
        if int(c.arg(1, "dim")) != 0:
            raise Unsupported("an unsqueeze of a tensor without a batch axis at an axis other "
                              "than 0")
        return _plain(b, c, Value(x.tensor, x.layout, x.shape), "an unsqueeze")
    return view(b, c)


_KEEPS_KIND = ("Slice", "Reshape", "Transpose", "Expand", "Squeeze", "Unsqueeze", "Gather",
               "Concatenate", "Flatten", "Pad")


def _kind(v: Value) -> str:
    """"int" or "float": the kind of a held tensor (a model input's, a Constant's dtype, a
    comparison's int, what a shape op passes through; float otherwise)."""
    src = v.tensor.source
    while True:
        if not hasattr(src, "layer"):
            return getattr(src, "kind", "float")
        op = src.layer.op
        if op == "Constant":
            return "float" if np.asarray(src.layer.attrs["value"]).dtype.kind == "f" else "int"
        if op in ("Equal", "Less", "Greater"):
            return "int"
        if op == "Cast":
            return src.layer.attrs["to"]
        if op in ("Add", "Subtract", "Multiply", "Cumsum") and src.inputs:
            src = src.inputs[0].source     # int arithmetic keeps the int kind (infer)
            continue
        if op not in _KEEPS_KIND or not src.inputs:
            return "float"
        src = src.inputs[0].source


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# x op c for a Python number c -> (comparison op, whether the result is 1 - it): ne is
# 1 - (x == c), ge is 1 - (x < c), le is 1 - (x > c) (exact: 0/1 ints)
_COMPARE = {"eq": ("Equal", False), "ne": ("Equal", True), "lt": ("Less", False),
            "gt": ("Greater", False), "ge": ("Less", True), "le": ("Greater", True)}


def compare(b: Builder, c: Call):
    """``x == c`` / ``x != c`` / ``<``, ``>``, ``<=``, ``>=`` of a computed tensor and a number
    (RoBERTa's ``input_ids.ne(padding_idx)``, BART's ``input_ids.eq(eos_token_id)``) ->
    ``Equal`` / ``Less`` / ``Greater(constant=c)``, an int 0/1 tensor (torch's bool; every
    reader takes 0/1 ints), the negated ones as ``Subtract(constant=1, reverse=True)`` of
    it. No gradient flows through a comparison."""
    x, k = _value(c.arg(0, "self")), c.arg(1, "other")
    if not _number(k):
        raise Unsupported(f"a comparison {c.target} with a tensor operand (only a number)")
    op, negate = _COMPARE[c.target.split(".")[1]]
    if _kind(x) == "int" and not float(k).is_integer():
        raise Unsupported(f"a comparison of an int tensor with {k}")
    y = b.layer(op, [x], name=c.name if not negate else f"{c.name}_{op.lower()}",
                source=c.label, out_shape=c.shape, chw=x.chw, constant=float(k))
    if not negate:
        return y
    return b.layer("Subtract", [y], name=c.name, source=c.label, out_shape=c.shape, chw=x.chw,
                   constant=1.0, reverse=True)


def cumsum(b: Builder, c: Call):
    """``torch.cumsum(x, dim)`` -> ``Cumsum(axis)`` along the held axis of ``dim`` (int or
    float: torch gives int64 for an int input, the spec keeps the int kind); a ``dtype`` other
    than the input's kind is refused, a cumsum over the batch axis too."""
    import torch

    x = _value(c.arg(0, "input"))
    dtype = c.kwargs.get("dtype", c.arg(2, "dtype", None))
    if dtype is not None and not (dtype == getattr(b, "dtype", None) or (
            not dtype.is_floating_point and dtype != torch.bool and _kind(x) == "int")):
        raise Unsupported(f"a cumsum to dtype {dtype}")
    axis = x.canonical_axis(int(c.arg(1, "dim")))
    return b.layer("Cumsum", [x], name=c.name, source=c.label, out_shape=c.shape, chw=x.chw,
                   axis=axis)


def gather_constant(b: Builder, c: Call):
    """``torch.gather(src, dim, index)`` (y[i][j] = src[i][index[i][j]] for dim 1) of a folded
    ``src`` whose entries are all equal along ``dim`` (RoBERTa's buffered token-type ids, zeros,
    gathered at its computed position ids): y is then src's first slice along ``dim``
    broadcast to index's shape, whatever the (in-range) indices, folded. Any other gather at
    computed indices is refused."""
    import torch

    src, dim, index = c.arg(0, "self"), int(c.arg(1, "dim")), c.arg(2, "index")
    if not isinstance(src, FoldedIndices) or isinstance(index, FoldedIndices):
        raise Unsupported("torch.gather at computed indices of a computed tensor (only of a "
                          "constant equal along the gathered axis)")
    arr = src.folded.array
    dim %= arr.ndim
    first = np.take(arr, [0], axis=dim)
    if not (arr == first).all():
        raise Unsupported("torch.gather at computed indices of a constant that varies along "
                          "the gathered axis")
    shape = tuple(c.shape)
    first = first[tuple(slice(0, n) for n in shape)]
    return Folded(torch.from_numpy(np.ascontiguousarray(np.broadcast_to(first, shape))),
                  c.name)


gather_constant.takes_folded = lambda a: FoldedIndices(a) if isinstance(a, Folded) else a


def where(b: Builder, c: Call):
    """torch.where(cond, x, y) / x.masked_fill(mask, value) -> ``Where`` (cond an int 0/1
    tensor: a folded mask arrives as a Constant); a Python number on one side is the op's
    scalar attribute (-inf and the dtype's minimum exact on every backend)."""
    if c.target.startswith("aten.masked_fill"):
        cond, x, y = c.arg(1, "mask"), c.arg(2, "value"), c.arg(0, "input")
    else:
        cond, x, y = c.arg(0, "condition"), c.arg(1, "self"), c.arg(2, "other")
    if _number(x) and _number(y):
        raise Unsupported("torch.where of two numbers over a computed condition")
    cond = _value(cond, "the condition")
    if _kind(cond) != "int":
        raise Unsupported("torch.where with a float condition")
    if _number(x) and not isinstance(y, (int, float)) and _kind(_value(y)) == "int":
        # an int tensor filled with an integer where cond (BART's -100 -> pad in its shifted
        # ids): y + cond * (v - y) in exact int arithmetic (the spec's Where takes floats)
        y, v = _plain(b, c, _value(y), "a where"), float(x)
        if not v.is_integer():
            raise Unsupported(f"an int tensor filled with {x}")
        cond = _plain(b, c, cond, "a where")
        d = b.layer("Subtract", [y], name=f"{c.name}_gap", source=c.label, layout="plain",
                    out_shape=c.shape, constant=v, reverse=True)
        d = b.layer("Multiply", [cond, d], name=f"{c.name}_masked", source=c.label,
                    layout="plain", out_shape=c.shape)
        return b.layer("Add", [y, d], name=c.name, source=c.label, layout="plain",
                       out_shape=c.shape)
    ins = [_plain(b, c, cond, "a where")]
    attrs = {}
    for side, v in (("x", x), ("y", y)):
        if _number(v):
            attrs[side] = float(v)
        else:
            ins.append(_plain(b, c, _value(v), "a where"))
    if len({len(v.shape) for v in ins}) != 1:
        raise Unsupported(f"torch.where of ranks {[len(v.shape) for v in ins]}")
    return b.layer("Where", ins, name=c.name, source=c.label, layout="plain",
                   out_shape=c.shape, **attrs)


def scaled_dot_product_attention(b: Builder, c: Call):
    """F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale) on
    computed (N, ..., T, D) tensors: the spec's ``DotProductAttention``, the same math and the
    same rule for a row that keeps no key (weights 0: torch's ``_safe_softmax``). A boolean
    mask (folded: a Constant, or computed) is the op's int keep-mask, a float mask is added;
    ``is_causal`` is its top-left causal rule and ``scale`` its scale (None: 1/sqrt(D), as
    torch). ``dropout_p`` > 0 (a mask drawn inside the call) and ``enable_gqa`` are refused."""
    q, k, v = (_plain(b, c, _value(c.arg(i, n)), "attention")
               for i, n in enumerate(("query", "key", "value")))
    mask = c.arg(3, "attn_mask")
    if float(c.arg(4, "dropout_p", 0.0)) != 0.0:
        raise Unsupported("scaled_dot_product_attention(dropout_p > 0) (a dropout mask drawn "
                          "inside the call: the certificate cannot give it one)")
    if c.kwargs.get("enable_gqa", False):
        raise Unsupported("scaled_dot_product_attention(enable_gqa=True)")
    causal = bool(c.arg(5, "is_causal", False))
    scale = c.kwargs.get("scale")
    inputs = [q, k, v]
    if mask is not None:
        mask = _value(mask, "the attention mask")
        if len(mask.shape) != len(q.shape):
            raise Unsupported(f"an attention mask of rank {len(mask.shape)} for scores of rank "
                              f"{len(q.shape)}")
        inputs.append(mask)
    return b.layer("DotProductAttention", inputs, name=c.name, source=c.label, layout="plain",
                   out_shape=c.shape, causal=causal,
                   scale=None if scale is None else float(scale))


def dropout(b: Builder, c: Call):
    x = _value(c.arg(0, "input"))
    p = float(c.arg(1, "p"))
    return b.layer("Dropout", [x], name=c.name, source=c.label, rate=p, out_shape=c.shape,
                   chw=x.chw)


def passthrough(b: Builder, c: Call):
    return _value(c.arg(0, "input"))


def to_dtype(b: Builder, c: Call):
    """``x.to(dtype)`` / ``type_as``: a no-op where the dtype is the model's own floating dtype
    (``b.dtype``; HuggingFace casts every mask and embedding to the parameters' dtype) or the
    tensor's int kind; any other cast is refused (the spec computes in one float dtype)."""
    import torch

    x = _value(c.arg(0, "input"))
    dtype = c.kwargs.get("dtype", c.arg(1, "dtype"))
    if not isinstance(dtype, torch.dtype) or dtype == getattr(b, "dtype", None) or (
            not dtype.is_floating_point and dtype != torch.bool and _kind(x) == "int"):
        return x
    layer = getattr(x.tensor.source, "layer", None)
    if dtype == torch.bool and getattr(layer, "op", None) in ("Equal", "Less", "Greater"):
        return x    # a comparison's 0/1 ints are torch's bool already
    raise Unsupported(f"a cast to {dtype} inside the model (the spec computes in one float "
                      f"dtype, the model's {getattr(b, 'dtype', None)})")


def type_as(b: Builder, c: Call):
    """``x.type_as(other)``: a no-op where ``other`` is of x's kind (a float tensor of the
    model's one float dtype, or both int); any other cast is refused."""
    x, other = _value(c.arg(0, "input")), c.arg(1, "other")
    if isinstance(other, Value) and _kind(other) == _kind(x):
        return x
    raise Unsupported(f"type_as a tensor of another kind ({other!r})")


# --- pooling ------------------------------------------------------------------------------------

def _floor_out(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pool(op, b: Builder, c: Call, kernel, stride, padding, dilation, ceil_mode):
    x = _value(c.arg(0, "input"))
    x = _nchw(b, c, x, "2-D pooling")
    k = _pair(kernel)
    s = _pair(stride) if stride not in (None, [], ()) else k
    p = _pair(padding)
    if _pair(dilation) != (1, 1):
        raise Unsupported("pooling with dilation (the spec's pools have none)")
    pads = [(p[i], p[i]) for i in range(2)]
    if ceil_mode:
        # torch's ceil_mode adds a last window that runs past the padded input (it must start
        # inside the input or the left padding); its cells out of range are left out: the max
        # of the rest, the average over the input cells in it. That is the spec's pool with
        # that many more cells of padding after (-inf for max, excluded from the average).
        for i in range(2):
            size, out = x.shape[2 + i], c.shape[2 + i]
            extra = max(0, (out - 1) * s[i] + k[i] - (size + 2 * p[i]))
            if _floor_out(size + extra, k[i], s[i], p[i]) != out or extra >= s[i]:
                raise Unsupported(f"ceil_mode=True pooling of size {size} to {out} (window "
                                  f"{k[i]}, stride {s[i]}, padding {p[i]}) that extra padding "
                                  f"after does not reproduce")
            pads[i] = (p[i], p[i] + extra)
    return b.layer(op, [x], name=c.name, source=c.label, kernel_size=k, strides=s,
                   padding=tuple(pads), out_shape=c.shape)


def max_pool2d(b: Builder, c: Call):
    return _pool("MaxPool2D", b, c, c.arg(1, "kernel_size"), c.arg(2, "stride", None),
                 c.arg(3, "padding", 0), c.arg(4, "dilation", 1), c.arg(5, "ceil_mode", False))


def avg_pool2d(b: Builder, c: Call):
    padding = _pair(c.arg(3, "padding", 0))
    if c.arg(6, "divisor_override", None) is not None:
        raise Unsupported("avg_pool2d(divisor_override=...)")
    if any(padding) and c.arg(5, "count_include_pad", True):
        raise Unsupported("average pooling with padding and count_include_pad=True (the spec's "
                          "AvgPool2D excludes padded cells)")
    return _pool("AvgPool2D", b, c, c.arg(1, "kernel_size"), c.arg(2, "stride", None), padding,
                 1, c.arg(4, "ceil_mode", False))


def _global(op, b, c, x, keep):
    """A global pool over H, W; ``keep`` holds the (N, C, 1, 1) shape as a (1, 1, C) map."""
    if not keep:
        return b.layer(op, [x], name=c.name, source=c.label, layout="plain", out_shape=c.shape)
    v = b.layer(op, [x], name=c.name, source=c.label, layout="plain",
                out_shape=(x.shape[0], x.shape[1]))
    return b.layer("Reshape", [v], name=f"{c.name}_keepdims", source=c.label, layout="nchw",
                   out_shape=c.shape, shape=(1, 1, x.shape[1]))


def _adaptive(op, global_op, b: Builder, c: Call):
    x = _value(c.arg(0, "input"))
    x = _nchw(b, c, x, "adaptive pooling")
    out = _pair(c.arg(1, "output_size"))
    size = x.shape[2:]
    if out == (1, 1):
        return _global(global_op, b, c, x, keep=True)
    if tuple(out) == tuple(size):
        return x
    if size[0] % out[0] or size[1] % out[1]:
        if op != "AvgPool2D":
            return _adaptive_max_windows(b, c, x, tuple(size), tuple(out))
        return _adaptive_avg_matrix(b, c, x, tuple(size), tuple(out))
    k = (size[0] // out[0], size[1] // out[1])
    return b.layer(op, [x], name=c.name, source=c.label, kernel_size=k, strides=k,
                   padding="valid", out_shape=c.shape)


def adaptive_windows(n: int, out: int) -> list:
    """torch's adaptive windows of ``n`` cells into ``out``: window i is [floor(i·n/out),
    ceil((i+1)·n/out)), of unequal sizes (and overlapping) where out does not divide n."""
    return [(i * n // out, -(-(i + 1) * n // out)) for i in range(out)]


def adaptive_avg_matrix(size: tuple, out: tuple) -> np.ndarray:
    """P (oh·ow, H·W): row (i, j) holds 1/(kh·kw) on the cells of window (i, j) (row-major
    spatial order), so that y[(i, j), c] = sum_(h, w) P[(i, j), (h, w)] x[(h, w), c] is torch's
    window mean."""
    (h, w), (oh, ow) = size, out
    p = np.zeros((oh, ow, h, w))
    for i, (h0, h1) in enumerate(adaptive_windows(h, oh)):
        for j, (w0, w1) in enumerate(adaptive_windows(w, ow)):
            p[i, j, h0:h1, w0:w1] = 1.0 / ((h1 - h0) * (w1 - w0))
    return p.reshape(oh * ow, h * w)


def _adaptive_avg_matrix(b: Builder, c: Call, x: Value, size: tuple, out: tuple) -> Value:
    """Adaptive average pooling with windows of unequal size, exactly: the image held (N, H, W,
    C) viewed as (N, H·W, C), the constant window-mean matrix ``adaptive_avg_matrix`` times it
    (MatMul; dL/dx = P^T dL/dy, torch's spread of each output's gradient over its window),
    viewed back as (N, oh, ow, C)."""
    return matrix_of_cells(b, c, x, adaptive_avg_matrix(size, out), out, "mean")


def upsample_bilinear2d(b: Builder, c: Call):
    """F.interpolate(mode="bilinear") of an (N, C, H, W) map (MobileViT resizing a map to a
    multiple of its patch size and back): a linear map of the H·W cells, the constant matrix
    kron(Mh, Mw) of torch's interpolation weights (``bilinear_matrix``) times the (H·W, C)
    cells, as ``_adaptive_avg_matrix`` does (antialias refused)."""
    x = _nchw(b, c, _value(c.arg(0, "input")), "a bilinear resize")
    align = bool(c.arg(2, "align_corners", False))
    scales = c.arg(3, "scale_factors", None)
    if c.kwargs.get("antialias") or (len(c.args) > 4 and c.args[4]):
        raise Unsupported("F.interpolate(antialias=True)")
    (h, w), (oh, ow) = x.shape[2:], c.shape[2:]
    sh, sw = (None, None) if not scales else (float(scales[0]), float(scales[1]))
    p = np.kron(bilinear_matrix(h, oh, align, sh), bilinear_matrix(w, ow, align, sw))
    return matrix_of_cells(b, c, x, p, (oh, ow), "resize")


def _adaptive_max_windows(b: Builder, c: Call, x: Value, size: tuple, out: tuple) -> Value:
    """Adaptive max pooling with windows of unequal size (``adaptive_windows``, overlapping where
    out does not divide the size), exactly, in two passes, as the max over a box is the max over
    its columns of the max over its rows: for each output row i, ``Slice`` of the rows
    [h0_i, h1_i) and ``Reduce(max)`` over them (kept as size 1), ``Concatenate`` of the oh
    results; then the same over the columns. The gradient reaches each window's largest element
    (summed where windows overlap, as torch's scatter-add does); ties, probability zero for
    random floats, are shared as ``Reduce`` shares them, where torch gives all to the first."""
    n, ch = x.shape[0], x.shape[1]
    cur, shape = x, list(x.shape)
    for axis, (cells, count) in enumerate(zip(size, out)):   # axis 0: rows (H), 1: columns
        parts = []
        for i, (lo, hi) in enumerate(adaptive_windows(cells, count)):
            piece = tuple(shape[:2 + axis]) + (hi - lo,) + tuple(shape[3 + axis:])
            s = b.layer("Slice", [cur], name=f"{c.name}_{'hw'[axis]}{i}", source=c.label,
                        axes=(axis,), starts=(lo,), stops=(hi,), steps=(1,), out_shape=piece)
            one = tuple(shape[:2 + axis]) + (1,) + tuple(shape[3 + axis:])
            parts.append(b.layer("Reduce", [s], name=f"{c.name}_{'hw'[axis]}{i}_max",
                                 source=c.label, fn="max", axes=(axis,), keepdims=True,
                                 out_shape=one))
        shape[2 + axis] = count
        cur = b.layer("Concatenate", parts, name=c.name if axis else f"{c.name}_rows",
                      source=c.label, axis=axis, out_shape=tuple(shape))
    assert tuple(shape) == (n, ch, *out)
    return cur


def adaptive_avg_pool2d(b, c):
    return _adaptive("AvgPool2D", "GlobalAvgPool2D", b, c)


class WithIndices(tuple):
    """The (values, indices) of an ATen max pool that returns its argmax positions: the values
    are read as a Value; reading the indices is refused (the spec's pools return values)."""

    def __getitem__(self, i):
        if i != 0:
            raise Unsupported("the indices of a max pool (argmax positions: the spec's pools "
                              "return the values only)")
        return super().__getitem__(i)


def adaptive_max_pool2d(b, c):
    """aten.adaptive_max_pool2d -> (values, indices): the values as ``_adaptive`` pools them."""
    x = _value(c.arg(0, "input"))
    shape = (*x.shape[:2], *_pair(c.arg(1, "output_size")))
    c = dataclasses.replace(c, shape=shape)   # the traced value is the (values, indices) pair
    return WithIndices((_adaptive("MaxPool2D", "GlobalMaxPool2D", b, c),))


# --- tensor math (rosetta.ops.math, rosetta.ops.reduction) ------------------------------------

def _unary(fn):
    def handler(b: Builder, c: Call):
        x = _value(c.arg(0, "input"))
        return b.layer("Unary", [x], name=c.name, source=c.label, fn=fn, out_shape=c.shape,
                       chw=x.chw)
    handler.merged_rule = torch_merged.SAME
    return handler


def power(b: Builder, c: Call):
    """x ** k (a number) -> ``Power(constant=k)``; a tensor exponent as ``Power`` of two."""
    return _binary("Power", "a power")(b, Call(c.target, [c.arg(0, "self"),
                                                          c.arg(1, "exponent")],
                                              {}, c.name, c.label, c.shape, c.params))


power.merged_rule = torch_merged.SAME


def _plain(b: Builder, c: Call, x: Value, what: str) -> Value:
    """``x`` held in source order: a Transpose where it is held otherwise."""
    if x.layout == "flat":
        raise Unsupported(f"{what} of a channels-first flatten")
    if x.layout == "plain":
        return x
    P = x.perm
    return b.layer("Transpose", [x], name=f"{c.name}_order", source=c.label, layout="plain",
                   out_shape=x.shape, perm=tuple(P.index(j) - 1 for j in range(1, len(P))))


def reduce(fn):
    """mean / sum / amax / amin / var over source dims -> ``Reduce`` over the held axes (the
    held order of the remaining axes kept); torch's var takes ``correction`` (default 1)."""
    def handler(b: Builder, c: Call):
        x = _value(c.arg(0, "input"))
        dims = c.arg(1, "dim")
        rank = len(x.shape)
        dims = list(range(1, rank)) if dims in (None, [], ()) else [int(d) % rank
                                                                    for d in dims]
        extra = {}
        if fn == "var":   # var.correction(input, dim, *, correction=None (1), keepdim)
            keep = bool(c.kwargs.get("keepdim", False))
            corr = c.kwargs.get("correction")
            extra["correction"] = 1 if corr is None else corr
        else:
            keep = bool(c.arg(2, "keepdim", False))
        if 0 in dims:
            raise Unsupported(f"a {fn} over the batch axis")
        if fn == "mean" and x.layout == "nchw" and set(dims) == {2, 3}:
            return _global("GlobalAvgPool2D", b, c, x, keep)
        if x.layout == "flat":
            raise Unsupported(f"a {fn} of a channels-first flatten")
        axes = tuple(sorted(x.canonical_axis(d) for d in dims))
        P = x.perm
        perm = P if keep else held_layout([p - sum(d < p for d in dims) for p in P
                                            if p not in dims])
        return b.layer("Reduce", [x], name=c.name, source=c.label, fn=fn, axes=axes,
                       keepdims=keep, layout=perm, out_shape=c.shape, **extra)
    handler.merged_rule, handler.merged_dim = torch_merged.DIM, (1, "dim", "all")
    return handler


def matmul(b: Builder, c: Call):
    """matmul / bmm / mm -> ``MatMul`` of the operands held in source order; a parameter
    operand as a batch-broadcast ``Parameter``."""
    x, y = c.arg(0, "input", c.kwargs.get("self")), c.arg(1, "other", c.kwargs.get("mat2"))
    ops = []
    for v in (x, y):
        if isinstance(v, (str, ParamView)):
            src, shape = (v.src, v.shape) if isinstance(v, ParamView) else (v, None)
            src_shape = tuple(b.tensors[src].shape)
            shape = tuple(shape or src_shape)
            lay = Layout(f"param{shape}", lambda k, s=src_shape: np.asarray(k).reshape(s),
                         lambda a, s=shape: np.asarray(a).reshape(s))
            ops.append(b.layer("Parameter", [], name=f"{c.name}_{src}", source=c.label,
                               params={"value": (src, lay)}, layout="plain",
                               out_shape=(1,) + shape, shape=shape, init="ones"))
        else:
            ops.append(_plain(b, c, _value(v), "a matmul"))
    return b.layer("MatMul", ops, name=c.name, source=c.label, layout="plain",
                   out_shape=c.shape)


def softmax_op(op):
    def handler(b: Builder, c: Call):
        x = _value(c.arg(0, "input"))
        _softmax_dtype(b, c)
        return b.layer(op, [x], name=c.name, source=c.label,
                       axis=x.canonical_axis(int(c.arg(1, "dim"))), out_shape=c.shape)
    handler.merged_rule, handler.merged_dim = torch_merged.DIM, (1, "dim", None)
    return handler


ATEN = {
    "aten.conv2d.default": conv2d,
    "aten.conv2d.padding": conv2d,
    "aten.conv1d.default": conv1d,
    "aten.conv1d.padding": conv1d,
    "aten.linear.default": linear,
    "aten.addmm.default": addmm,
    "aten.embedding.default": embedding,
    "aten.batch_norm.default": batch_norm,
    "aten._native_batch_norm_legit_functional.default": batch_norm,
    "aten.group_norm.default": group_norm,
    "aten.layer_norm.default": layer_norm,
    "aten.relu.default": _activation("relu"),
    "aten.relu_.default": _activation("relu"),
    "aten.sigmoid.default": _activation("sigmoid"),
    "aten.tanh.default": _activation("tanh"),
    "aten.silu.default": _activation("silu"),
    "aten.silu_.default": _activation("silu"),
    "aten.gelu.default": _activation("gelu", approximate=_gelu_approximate),
    "aten.leaky_relu.default": _activation("leaky_relu", slope=_leaky_slope),
    "aten.leaky_relu_.default": _activation("leaky_relu", slope=_leaky_slope),
    "aten.softmax.int": softmax,
    "aten._softmax.default": softmax,
    "aten.hardtanh.default": hardtanh,
    "aten.hardtanh_.default": hardtanh,
    "aten.relu6.default": _activation("relu6"),
    "aten.hardswish.default": hardswish,
    "aten.hardswish_.default": hardswish,
    "aten.hardsigmoid.default": _activation("hard_sigmoid"),
    "aten.hardsigmoid_.default": _activation("hard_sigmoid"),
    "aten.sigmoid_.default": _activation("sigmoid"),
    "aten.mul.Tensor": mul,
    "aten.mul_.Tensor": mul,
    "aten.mul.Scalar": mul,
    "aten.add.Tensor": add,
    "aten.add_.Tensor": add,
    "aten.add.Scalar": add,
    "aten.sub.Tensor": sub,
    "aten.sub.Scalar": sub,
    "aten.div.Tensor": div,
    "aten.div.Scalar": div,
    "aten.cat.default": cat,
    "aten.flatten.using_ints": flatten,
    "aten.view.default": view,
    "aten.index.Tensor": index_table,
    "aten.reshape.default": view,
    "aten._unsafe_view.default": view,
    "aten.dropout.default": dropout,
    "aten.dropout_.default": dropout,
    "aten.feature_dropout.default": missing("channel dropout (Dropout2d: the spec's Dropout "
                                            "drops elements)"),
    "aten.clone.default": passthrough,
    "aten.scaled_dot_product_attention.default": scaled_dot_product_attention,
    "aten.where.self": where,
    "aten.where.ScalarOther": where,
    "aten.where.ScalarSelf": where,
    "aten.masked_fill.Scalar": where,
    "aten.masked_fill.Tensor": where,
    "aten.expand.default": expand,
    "aten.unsqueeze.default": unsqueeze,
    "aten.squeeze.dim": unsqueeze,
    "aten.squeeze.dims": unsqueeze,
    "aten.to.dtype_layout": to_dtype,
    "aten.to.dtype": to_dtype,
    "aten._to_copy.default": to_dtype,
    "aten.type_as.default": type_as,
    "aten.contiguous.default": passthrough,
    "aten.alias.default": passthrough,
    "aten.detach.default": passthrough,
    "aten.max_pool2d.default": max_pool2d,
    "aten.avg_pool2d.default": avg_pool2d,
    "aten.adaptive_avg_pool2d.default": adaptive_avg_pool2d,
    "aten.adaptive_max_pool2d.default": adaptive_max_pool2d,
    "aten.upsample_bilinear2d.vec": upsample_bilinear2d,
    "aten.mean.dim": reduce("mean"),
    "aten.sum.dim_IntList": reduce("sum"),
    "aten.amax.default": reduce("max"),
    "aten.amin.default": reduce("min"),
    "aten.var.correction": reduce("var"),
    "aten.matmul.default": matmul,
    "aten.bmm.default": matmul,
    "aten.mm.default": matmul,
    "aten.pow.Tensor_Scalar": power,
    "aten.pow.Tensor_Tensor": power,
    "aten.neg.default": _unary("neg"),
    **{f"aten.{k}.Scalar": compare for k in _COMPARE},
    "aten.cumsum.default": cumsum,
    "aten.new_zeros.default": new_zeros,
    "aten.sym_size.int": size_check,
    # the size arithmetic of torch.export's run-time asserts (``operator`` functions on sizes)
    **{f"<built-in function {k}>": size_check for k in dir(operator)
       if not k.startswith("_") and k != "getitem"},
    "aten.copy_.default": copy_into,
    "aten.masked_fill_.Scalar": where,
    "aten.fill_.Tensor": fill_into,
    "aten.fill_.Scalar": fill_into,
    "aten.unique_consecutive.default": size_check,
    "aten.gather.default": gather_constant,
    "aten.abs.default": _unary("abs"),
    "aten.sqrt.default": _unary("sqrt"),
    "aten.rsqrt.default": _unary("rsqrt"),
    "aten.exp.default": _unary("exp"),
    "aten.log.default": _unary("log"),
    "aten.erf.default": _unary("erf"),
    "aten.reciprocal.default": _unary("reciprocal"),
    "aten.sin.default": _unary("sin"),
    "aten.cos.default": _unary("cos"),
    "aten.log_softmax.int": softmax_op("LogSoftmax"),
    "aten._log_softmax.default": softmax_op("LogSoftmax"),
    "aten.transpose.int": permute,
    "aten.permute.default": permute,
    "aten.chunk.default": split,
    "aten.split.Tensor": split,
    "aten.split_with_sizes.default": split,
    "aten.slice.Tensor": slice_,
    "aten.select.int": select,
    "aten.unbind.int": unbind,
    "aten.stack.default": stack,
    "aten.roll.default": roll,
    "aten.pad.default": pad,
    "aten.constant_pad_nd.default": pad,
}

# calls whose tensor operands broadcast against each other (torch's rule: right-aligned), so a
# folded constant operand is aligned to the rank of the others (``torch_fold.as_value``)
BROADCASTING = frozenset(k for k, v in ATEN.items()
                         if v in (add, mul, sub, div, power, where, scaled_dot_product_attention))
# of those, the elementwise ones: their operands are held in one axis order (a folded constant
# operand is held in the order of the tensor it meets)
ELEMENTWISE = frozenset(k for k in BROADCASTING if ATEN[k] is not scaled_dot_product_attention)

# how each call reads a tensor whose batch axis a view merged with other rows
# (``torch_merged``): per row (SAME), with one axis argument (DIM: its position, keyword and
# default), a permute, a view; a handler without a rule refuses such a tensor
for _h in (linear, addmm, layer_norm, dropout, passthrough, to_dtype, type_as, where,
           scaled_dot_product_attention, matmul, hardtanh, hardswish, pad):
    _h.merged_rule = torch_merged.SAME
pad.merged_check = lambda c, rank: len(c.arg(1, "pad")) // 2 < rank or not any(
    c.arg(1, "pad")[2 * (rank - 1):])   # no pad of the merged axis 0
for _h, _dim in ((softmax, (1, "dim", None)), (select, (1, "dim", None)),
                 (unbind, (1, "dim", 0)), (slice_, (1, "dim", 0)), (split, (2, "dim", 0)),
                 (cat, (1, "dim", 0)), (roll, (2, "dims", None))):
    _h.merged_rule, _h.merged_dim = torch_merged.DIM, _dim
permute.merged_rule = torch_merged.PERMUTE
for _h in (view, flatten, unsqueeze):
    _h.merged_rule = torch_merged.VIEW

# torch's fused recurrent calls (their own module; it reads ``Call`` and ``_value`` from here)
from rosetta.importers.torch_recurrent import RECURRENT_ATEN, HiddenStates  # noqa: E402

ATEN.update(RECURRENT_ATEN)
