"""``from_onnx``'s reading of ONNX nodes on a tensor whose batch axis a Reshape merged with other
rows: Swin's window partition (B*nW, ws, ws, C) and its qkv Transpose, MobileViT's patches
(B*P, N, C), an exporter's (B*H, T, D) attention. The rules, ``Merged`` and the axis arithmetic
are ``rosetta.importers.merged``, the same as ``from_torch``'s (``torch_merged``); here each ONNX
op type has its rule (``RULES``) and ``call`` runs the op's own handler (``onnx_ops``) on the
inner tensors, its axis attributes or inputs moved past the split, the result merged again.

* SAME: elementwise ops, activations, Dropout, Cast, MatMul / Gemm (a Dense on the last axis, or
  a batched MatMul), LayerNormalization on the last axis; a constant or batch-broadcast operand
  meets the merged tensor's last axes (its axis that meets the merged one must be of size 1);
* DIM: Softmax, LogSoftmax, Concat, Split, Slice, Gather at constant indices, Squeeze, CumSum,
  the Reduce ops over axes other than the merged one;
* PERMUTE: Transpose (the merged axis may move off axis 0: then only a Split, Slice, Squeeze or
  Gather of an axis before it may read it, as timm's ``qkv.permute(2, 0, 3, 1, 4).unbind(0)``);
* VIEW: Reshape, Flatten, Unsqueeze: to (B*k', ...) merged again, to (B, ...) an ordinary
  tensor; the Reshape's target must follow the batch size (checked at a second batch size
  where the batch axis is dynamic).

Any other op reading a merged tensor is refused in one line naming the node.
"""

from __future__ import annotations

import numpy as np

from rosetta.importers.builder import Unsupported, Value, reshape_held
from rosetta.importers.merged import (DIM, PERMUTE, SAME, VIEW, Merged, inner_axis,
                                      lifted_shape, merge, moved, no_rule, permute_dims,
                                      same_merging, unmerged_shape, view_target)

RULES = {op: SAME for op in (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater", "Where",
    "IsNaN", "Not", "Neg", "Abs", "Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Sin", "Cos",
    "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Gelu", "HardSwish", "Dropout", "Identity", "Cast",
    "MatMul", "Gemm", "LayerNormalization")}
RULES.update({op: DIM for op in (
    "Softmax", "LogSoftmax", "Concat", "Split", "Slice", "Gather", "Squeeze", "CumSum",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin")})
RULES.update({"Transpose": PERMUTE, "Reshape": VIEW, "Flatten": VIEW, "Unsqueeze": VIEW})

# the readers of a tensor whose merged axis a Transpose moved off axis 0 (of earlier axes)
AFTER_MOVE = {"Split", "Slice", "Squeeze", "Gather", "Identity"}


def _copy(n, inputs, attrs, shape):
    from rosetta.importers.onnx_ops import ONode

    return ONode(n.op, inputs, attrs, n.name, n.label, tuple(shape), list(n.outputs_used))


def _ints(v, what):
    from rosetta.importers.onnx_ops import Const

    if not isinstance(v, Const):
        raise Unsupported(f"{what} computed from the model input's values")
    return [int(i) for i in np.asarray(v.value).reshape(-1)]


def call(b, handler, n):
    """``handler`` on an ONNX node ``n`` one of whose inputs is ``Merged``: the same handler on
    the inner tensors, its axes moved past the split, the result merged again (see the module
    doc); refused where the op does not treat each row alone."""
    ins = [v for v in n.inputs if isinstance(v, Merged)]
    first, rule = ins[0], RULES.get(n.op)
    if rule is None:
        raise Unsupported(no_rule(n.op, first, "a Reshape"))
    k, at, rank = same_merging(ins, n.op)
    if rule == VIEW:
        return view(b, n, first)
    if at != 0 and rule != PERMUTE and n.op not in AFTER_MOVE:
        raise Unsupported(moved(n.op, at))
    if n.op == "Gather" and not (n.inputs[0] is first and len(ins) == 1):
        raise Unsupported("a Gather at indices computed from a merged-batch tensor")
    attrs, inputs, out_at = dict(n.attrs), list(n.inputs), at
    if rule == SAME:
        inputs = [_operand(b, n, v, rank, matrix=n.op in ("MatMul", "Gemm") and i > 0)
                  for i, v in enumerate(inputs)]
        if n.op == "LayerNormalization":
            if int(n.attr("axis", -1)) % rank != rank - 1:
                raise Unsupported(f"LayerNormalization(axis={n.attr('axis')}) of a "
                                  f"merged-batch tensor (the last axis only)")
            attrs["axis"] = -1
        if n.op == "Gemm" and rank != 2:
            raise Unsupported(f"a Gemm of a merged-batch tensor of rank {rank}")
    else:
        inputs = [v.inner if isinstance(v, Merged) else v for v in inputs]
        if n.op == "Concat" and len(ins) != len(inputs):
            raise Unsupported("a Concat of merged-batch and other tensors")
        if any(isinstance(v, Value) for v in inputs[1:]) and n.op != "Concat":
            raise Unsupported(f"{n.op} of a merged-batch tensor with an operand computed from "
                              f"the model input")
        if rule == PERMUTE:
            perm = [int(p) for p in n.attr("perm", list(range(rank))[::-1])]
            attrs["perm"], out_at = permute_dims(perm, rank, at)
        else:
            out_at = _dims(n, inputs, attrs, rank, at)
    batch = int(b.batch)
    shapes = [unmerged_shape(s, batch, k, out_at) if s else s
              for s in n.attrs.get("_output_shapes", [n.shape])]
    attrs["_output_shapes"] = shapes
    if "_fused_shape" in attrs:
        attrs["_fused_shape"] = unmerged_shape(attrs["_fused_shape"], batch, k, out_at)
    y = handler(b, _copy(n, inputs, attrs, shapes[0]))
    if isinstance(y, (list, tuple)):   # Split: one Value an output
        return [merge(v, k, out_at) for v in y]
    return merge(y, k, out_at)


def _operand(b, n, v, rank: int, matrix: bool = False):
    """An input of a per-row op beside a merged tensor: a merged one as its inner tensor, a
    constant as itself (checked: its axis that meets the merged one is of size 1; the handler
    right-aligns it to the inner rank), a computed batch-broadcast tensor (batch axis of size
    1) reshaped to the inner rank. ``matrix``: a MatMul's or Gemm's second operand, whose 2-D
    constant is a matrix (no batch axes to meet)."""
    from rosetta.importers.onnx_ops import Const, _plain

    if isinstance(v, Merged):
        return v.inner
    if isinstance(v, Const):
        if np.asarray(v.value).size > 1 and not (matrix and np.ndim(v.value) == 2):
            lifted_shape(np.shape(v.value), rank, n.label)
        return v
    if isinstance(v, Value):
        if v.shape[0] != 1:
            raise Unsupported(f"a merged-batch tensor and a per-example tensor of shape "
                              f"{v.shape} (their rows do not line up)")
        full = lifted_shape(v.shape, rank, n.label)
        v = _plain(b, n, v)
        if tuple(v.shape) == full:
            return v
        return b.layer("Reshape", [v], name=f"{n.name}_lift", source=n.label, layout="plain",
                       out_shape=full, shape=full[1:])
    return v


def _dims(n, inputs, attrs, rank: int, at: int) -> int:
    """Move the axis attributes or constant axis inputs of a DIM op past the split (in
    ``attrs`` / ``inputs``); where the merged axis goes (an axis before it removed: one
    earlier)."""
    from rosetta.importers.onnx_ops import Const

    def move(axes):
        return [inner_axis(a, rank, at, n.op) for a in axes]

    def before(axes):
        return sum(1 for a in axes if int(a) % rank < at)

    op = n.op
    if op in ("Softmax", "LogSoftmax"):
        attrs["axis"] = move([n.attr("axis", -1)])[0]
    elif op in ("Concat", "Split", "Gather"):
        (attrs["axis"],) = move([n.attr("axis", 0)])
        if op == "Gather":
            idx = np.asarray(inputs[1].value) if isinstance(inputs[1], Const) else None
            if idx is None:
                raise Unsupported("a Gather at indices computed from the model input")
            return at - before([n.attr("axis", 0)]) if idx.ndim == 0 else at
    elif op in ("CumSum",):
        inputs[1] = Const(np.array(move(_ints(inputs[1], "CumSum's axis"))[0], np.int64))
    elif op == "Squeeze":
        if n.input(1) is None:
            raise Unsupported("a Squeeze without axes of a merged-batch tensor")
        axes = _ints(inputs[1], "squeeze axes")
        inputs[1] = Const(np.array(move(axes), np.int64))
        return at - before(axes)
    elif op.startswith("Reduce"):
        axes = (_ints(inputs[1], "reduce axes") if n.input(1) is not None
                else [int(a) for a in n.attr("axes", [])])
        if not axes:
            raise Unsupported(f"{op} over every axis of a merged-batch tensor (it would mix "
                              f"examples)")
        new = np.array(move(axes), np.int64)
        if n.input(1) is not None:
            inputs[1] = Const(new)
        else:
            attrs["axes"] = list(new)
        if not int(n.attr("keepdims", 1)):
            return at - before(axes)
    elif op == "Slice":
        starts, ends = _ints(inputs[1], "slice starts"), _ints(inputs[2], "slice ends")
        axes = (_ints(inputs[3], "slice axes") if n.input(3) is not None
                else list(range(len(starts))))
        steps = (_ints(inputs[4], "slice steps") if n.input(4) is not None
                 else [1] * len(starts))
        size = n.inputs[0].shape
        keep = [(a, s, e, p) for a, s, e, p in zip(axes, starts, ends, steps)
                if not (int(a) % rank == at and range(size[at])[s:e:p] == range(size[at]))]
        cols = list(zip(*keep)) or [(), (), (), ()]   # (none: the whole merged axis, no node)
        inputs[1:] = [Const(np.array(cols[1], np.int64)), Const(np.array(cols[2], np.int64)),
                      Const(np.array(move(cols[0]), np.int64)),
                      Const(np.array(cols[3], np.int64))]
    return at


def view(b, n, x: Merged):
    """Reshape / Flatten / Unsqueeze of a merged tensor: its flat order is the inner tensor's,
    so a view to (B*k', ...) is the inner view to (B, k', ...) (merged again when k' > 1)."""
    if x.at != 0:
        raise Unsupported(moved(n.op, x.at))
    _follows_batch(b, n, x.shape, x.k)
    target, k = view_target(n.shape, int(b.batch), n.op, x.shape)
    return merge(reshape_held(b, x.inner, target, n.name, n.label), k)


def view_from(b, n, x: Value):
    """A Reshape of an ordinary tensor ``x`` (batch first) to ``n.shape`` whose first axis is
    k > 1 times the batch: the Reshape of the held tensor to (B, k, ...), ``Merged``."""
    if x.layout == "flat" or x.batch_axis != 0 or x.shape[0] != int(b.batch):
        raise Unsupported(f"a reshape that mixes the batch axis ({x.shape} -> "
                          f"{tuple(n.shape)})")
    _follows_batch(b, n, x.shape, 1)
    target, k = view_target(n.shape, int(b.batch), n.op, x.shape)
    return merge(reshape_held(b, x, target, n.name, n.label), k)


def _follows_batch(b, n, in_shape: tuple, k_in: int) -> None:
    """A Reshape's target must follow a dynamic batch size: the output at batch B + 1 (its
    shape input folded there, -1 and 0 resolved as ONNX does) must be the same per-example
    view, its first axis (B + 1) k' (else the graph would mix examples at another batch)."""
    from rosetta.importers.onnx_ops import Const

    if n.op != "Reshape" or not getattr(b, "dynamic_batch", False):
        return
    c = n.input(1)
    if not isinstance(c, Const):
        raise Unsupported("a reshape to a shape computed from the model input's values")
    spec = np.asarray(c.alt if isinstance(c, Const) and c.alt is not None else c.value)
    batch, out = int(b.batch), tuple(n.shape)
    size = int(np.prod(in_shape)) // batch * (batch + 1)
    alt_in = ((batch + 1) * k_in,) + tuple(in_shape[1:])
    dims = [int(d) for d in spec.reshape(-1)]
    if not int(n.attr("allowzero", 0)):
        dims = [alt_in[i] if d == 0 and i < len(alt_in) else d for i, d in enumerate(dims)]
    if dims.count(-1) == 1:
        rest = int(np.prod([d for d in dims if d != -1]))
        dims = [size // rest if d == -1 and rest and size % rest == 0 else d for d in dims]
    want = ((batch + 1) * (out[0] // batch),) + out[1:]
    if tuple(dims) != want:
        raise Unsupported(f"a reshape to {out} whose target does not follow the batch size "
                          f"(at batch {batch + 1} it gives {tuple(dims)}, not {want}: it would "
                          f"mix examples)")


def shape_alt(x) -> np.ndarray:
    """The source shape of ``x`` (a ``Value`` or ``Merged``) at the batch size plus one."""
    full = np.array(x.shape, np.int64)
    if isinstance(x, Merged):
        full[x.at] += x.k
    else:
        full[x.batch_axis] += 1
    return full


__all__ = ["RULES", "call", "view", "view_from", "shape_alt"]
