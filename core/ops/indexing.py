"""Indexing ops: Slice (Python slices per axis) and Gather (np.take per example).

Axes are per-example axes (axis 0 is the first after the batch; negative ones count from the end);
the batch axis is never addressed. Outputs are ``dataclasses.replace`` of the input type, so the
batch-broadcast mark of a Constant or Parameter passes through.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rosetta.ops.registry import Attr, OpDef, register
from rosetta.ops.shape import check_axes, positive_axis


def _at_least_one(v):
    return None if v else "must name at least one axis"


def slice_bounds(op: OpDef, a: dict, shape: tuple, where: str) -> dict:
    """{axis in [0, rank): (start, stop, step)} normalised by Python's rule
    (``slice(start, stop, step).indices(size)``: negative indices count from the end, both ends
    clamped to [0, size]), so 0 <= start, stop <= size and step >= 1."""
    n = len(a["axes"])
    steps = a["steps"] if a["steps"] is not None else (1,) * n
    if len(a["starts"]) != n or len(a["stops"]) != n or len(steps) != n:
        raise op.fail(where, f"one start, stop and step per axis ({n} axes)",
                      f"starts {a['starts']}, stops {a['stops']}, steps {a['steps']}")
    if any(s < 1 for s in steps):
        raise op.fail(where, "steps >= 1", f"steps {steps}")
    axes = check_axes(op, a["axes"], len(shape), where)
    out = {}
    for ax, start, stop, step in zip(axes, a["starts"], a["stops"], steps):
        b = slice(start, stop, step).indices(shape[ax])
        if not len(range(*b)):
            raise op.fail(where, f"a non-empty slice of axis {ax} (size {shape[ax]})",
                          f"start {start}, stop {stop}, step {step}")
        out[ax] = b
    return out


@register
class Slice(OpDef):
    """y[n] = x[n][..., start_k:stop_k:step_k, ...] on each listed per-example axis k (Python
    slice semantics: negative start/stop count from the end, both clamped to the axis size, so
    ONNX's INT_MAX stop means "to the end"; steps >= 1, default 1; an empty result is refused).
    Output size on axis k: len(range(size_k)[start_k:stop_k:step_k]). One Slice per piece of a
    torch ``chunk``/``split``. Gradient: dL/dx is dL/dy scattered back to the sliced positions,
    zero elsewhere."""

    attrs = {
        "axes": Attr("shape", check=_at_least_one),
        "starts": Attr("shape"),
        "stops": Attr("shape"),
        "steps": Attr("shape", None),
    }
    input_kind = "any"

    def infer(self, a, inputs, where):
        x = inputs[0]
        shape = list(x.shape)
        for ax, b in slice_bounds(self, a, x.shape, where).items():
            shape[ax] = len(range(*b))
        return replace(x, shape=tuple(shape))

    def reference(self, a, p, xs, ctx):
        index = [slice(None)] * xs[0].ndim
        for ax, b in slice_bounds(self, a, xs[0].shape[1:], "").items():
            index[ax + 1] = slice(*b)
        return xs[0][tuple(index)]

    def flops(self, a, inputs, out):
        return 0


def constant_indices(op: OpDef, a: dict, size: int, where: str) -> np.ndarray:
    """The ``indices`` attribute as an int64 array in [0, size) (negative ones + size);
    outside [-size, size) is refused here, at spec time."""
    idx = np.asarray(a["indices"], dtype=np.int64)
    if idx.min() < -size or idx.max() >= size:
        raise op.fail(where, f"indices in [-{size}, {size}) (the size of the gathered axis)",
                      f"indices {a['indices']}")
    return np.where(idx < 0, idx + size, idx)


@register
class Gather(OpDef):
    """y[n] = np.take(x[n], idx[n], axis): with x[n] of per-example shape S and idx[n] of shape
    I, y[n] has shape S[:axis] + I + S[axis+1:] and
    y[n][i_<axis, j, i_>axis] = x[n][i_<axis, idx[n][j], i_>axis].

    The indices are the int tensor given as second input (one set per example; a batch-broadcast
    x, a Constant or Parameter table, is shared by every example), or the constant ``indices``
    attribute with one input (an int: the axis is removed, as x[:, i]; a nested list: its shape
    replaces the axis). Negative indices count from the end (idx + size) on every backend (each
    lowering wraps them itself). Indices outside [-size, size): constant ones are refused in the
    spec, and integer model inputs that feed a Gather's indices are checked against
    [0, size) on the host before a step (``rosetta.datacheck``, as Embedding ids are); indices
    computed inside the model cannot be checked: torch raises, TensorFlow raises on CPU (clamps
    under XLA), JAX and MXNet clamp. Gradient: dL/dx[n][..., k, ...] is the sum of dL/dy over
    the positions j with idx[n][j] == k; none reaches the indices.

    ``padding_idx`` p (axis 0, indices as input: a lookup in a table; an ``Embedding``'s
    padding row where the table is a ``Parameter`` several lookups share, BART's tied
    encoder/decoder tables): the forward is unchanged, and the positions with idx == p pass no
    gradient to x (torch's ``embedding(padding_idx=p)`` per call), so row p gets none from this
    lookup."""

    positional = ("axis",)

    attrs = {"axis": Attr("int"), "indices": Attr("indices", None),
             "padding_idx": Attr("int", None, doc="axis 0 with indices as input: ids equal to "
                                 "it pass no gradient (an Embedding's padding row)")}
    arity = (1, 2)
    # a batch-broadcast x (a Constant or Parameter table) gathered by batched indices, or the
    # reverse: the batch axis broadcasts (``OpDef.batch_broadcast``)
    batch_broadcast = "broadcasts"
    input_kind = "any"

    def infer(self, a, inputs, where):
        x = inputs[0]
        rank = len(x.shape)
        (axis,) = check_axes(self, (a["axis"],), rank, where, "axis")
        if a["padding_idx"] is not None and (axis != 0 or a["indices"] is not None or
                                             not 0 <= a["padding_idx"] < x.shape[0]):
            raise self.fail(where, f"padding_idx in [0, {x.shape[0]}) only with axis 0 and "
                            f"indices as input", f"padding_idx {a['padding_idx']}, axis "
                            f"{a['axis']}")
        if a["indices"] is None:
            if len(inputs) != 2:
                raise self.fail(where, "inputs (x, indices), or one input and the constant "
                                "indices attribute", f"{len(inputs)} input(s) and no indices")
            idx = inputs[1]
            if idx.kind != "int":
                raise self.fail(where, "an int tensor of indices as input 1", f"a {idx.kind} "
                                "tensor (Cast(to='int') it first)")
            ishape = idx.shape
        else:
            if len(inputs) != 1:
                raise self.fail(where, "one input with the constant indices attribute",
                                f"{len(inputs)} inputs")
            ishape = constant_indices(self, a, x.shape[axis], where).shape
        return replace(x, shape=(*x.shape[:axis], *ishape, *x.shape[axis + 1:]))

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        axis = positive_axis(a["axis"], x.ndim - 1)
        size = x.shape[axis + 1]
        if a["indices"] is not None:
            return np.take(x, constant_indices(self, a, size, ""), axis=axis + 1)
        idx = np.asarray(xs[1])
        if idx.size and (idx.min() < -size or idx.max() >= size):
            raise IndexError(f"Gather index outside [-{size}, {size})")
        n = max(len(x), len(idx))
        return np.stack([np.take(x[i if len(x) > 1 else 0], idx[i if len(idx) > 1 else 0],
                                 axis=axis) for i in range(n)])

    def flops(self, a, inputs, out):
        return 0
