"""Source tensors whose batch axis a view merged with other rows: Swin's window partition
(B, H, W, C) -> (B*nW, ws, ws, C), MobileViT's unfold into patches (B*P, N, C), HuggingFace's
Conv1D input (B*T, C).

The spec keeps the batch axis first and dynamic, so a (B*k, ...) axis is no spec shape. Such a
tensor is held unmerged, (B, k, ...): a ``Merged`` wraps the ``Value`` of the source tensor
with that axis split in two (``inner``, an ordinary Value of rank r + 1, held in any axis order
with the batch first). A view keeps the flat row-major order, so a view whose first axis is a
multiple of the batch B keeps each example's elements together: example n owns rows
[n*k, (n+1)*k). Held unmerged, every call that treats the merged axis row by row is the same
call on the inner tensor with its axis arguments moved past the split:

* elementwise and broadcasting calls (a batch-broadcast operand gets one more size-1 axis),
  activations, dropout, Linear / addmm / LayerNorm on the last axis, MatMul (the merged axis is
  one of its batch axes), attention;
* calls with an axis argument other than the merged axis: softmax, reductions, slices,
  select / unbind, cat, permute / transpose (a permute may move the merged axis off axis 0:
  then only select / unbind of an axis before it may read it, as ``torch_ops.BatchMoved``);
* a view: to (B*k', ...) stays merged (k' = its first axis / B), to (B, ...) is an ordinary
  view of the inner tensor (Swin's window reverse, ``attn.view(B_ // nW, nW, nH, N, N)``).

Any other reader (a reduction or slice over the merged axis, a view whose first axis is not a
multiple of the batch, an op that would mix rows of different examples) is refused in one line
naming the ATen call.
"""

from __future__ import annotations

from dataclasses import dataclass

from rosetta.importers.builder import Unsupported, Value


@dataclass
class Merged:
    """A source tensor whose axis ``at`` is the batch merged with ``k`` rows each, held as
    ``inner``: the source tensor with that axis split into (B, k) (see the module doc)."""
    inner: Value
    k: int
    at: int = 0

    @property
    def shape(self) -> tuple:
        """The source tensor's (merged) shape."""
        s, a = tuple(self.inner.shape), self.at
        return s[:a] + (s[a] * s[a + 1],) + s[a + 2:]


def merge(inner: Value, k: int, at: int = 0):
    """``inner`` read as a merged tensor of ``k`` rows per example (itself where k is 1)."""
    return inner if k == 1 else Merged(inner, k, at)


def unmerged_shape(shape: tuple, batch: int, k: int, at: int = 0) -> tuple:
    """The source shape ``shape`` with its axis ``at`` (batch * k) split into (batch, k)."""
    shape = tuple(shape)
    if shape[at] != batch * k:
        raise Unsupported(f"a merged-batch result of shape {shape} whose axis {at} is not the "
                          f"batch ({batch}) times {k}")
    return shape[:at] + (batch, k) + shape[at + 1:]


def _axis(a: int, rank: int, at: int, target: str) -> int:
    """Source axis ``a`` of a merged tensor of ``rank`` axes -> the axis of the inner tensor."""
    a = int(a) % rank
    if a == at:
        raise Unsupported(f"{target} over the batch axis merged with other rows (it would mix "
                          f"examples)")
    return a + (a > at)


# the rules by which a call reads a merged tensor (set on the handlers in ``torch_ops``):
SAME = "same"          # per row: no axis arguments, the result merged as its input
DIM = "dim"            # one axis argument (``merged_dim``: its position and keyword)
PERMUTE = "permute"    # permute / transpose
VIEW = "view"          # view / reshape / flatten / unsqueeze / squeeze


def view_from(b, view, c, x: Value):
    """A source view of an ordinary tensor ``x`` (batch first) to ``c.shape`` whose first axis
    is k > 1 times the batch: the view of the held tensor to (B, k, ...), ``Merged``."""
    shape, batch = tuple(c.shape), int(b.batch)
    if x.shape[0] != batch or shape[0] % batch:
        raise Unsupported(f"a view that mixes the batch axis ({x.shape} -> {shape}: its first "
                          f"axis is not a multiple of the batch, {batch})")
    k = shape[0] // batch
    y = view(b, _with(c, [x], (batch, k) + shape[1:]))
    return merge(y, k)


def _with(c, args, shape, kwargs=None, target=None):
    from rosetta.importers.torch_ops import Call

    return Call(target or c.target, list(args), dict(c.kwargs if kwargs is None else kwargs),
                c.name, c.label, tuple(shape), c.params)


def _lift(b, c, v, rank: int):
    """A batch-broadcast operand (a ``Value`` whose batch axis has size 1, or a tensor without
    a batch axis, ``Unbatched``) of a broadcasting call with merged tensors of ``rank`` source
    axes, as a batch-broadcast tensor of the inner rank (rank + 1): torch right-aligns the
    shapes, so its source axes meet the merged tensor's last ones."""
    from rosetta.importers.torch_ops import Unbatched, _plain

    if not isinstance(v, Value):
        return v
    src = tuple(v.shape[1:]) if isinstance(v, Unbatched) else tuple(v.shape)
    if not isinstance(v, Unbatched) and v.shape[0] != 1:
        raise Unsupported(f"{c.target} of a merged-batch tensor and a per-example tensor of "
                          f"shape {v.shape} (their rows do not line up)")
    full = (1,) * (rank + 1 - len(src)) + src
    v = _plain(b, c, Value(v.tensor, v.layout, v.shape), "a broadcast")
    if tuple(v.shape) == full:
        return v
    return b.layer("Reshape", [v], name=f"{c.name}_lift", source=c.label, layout="plain",
                   out_shape=full, shape=full[1:])


def call(b, handler, c):
    """``handler`` on a call ``c`` one of whose operands is ``Merged``: the same call on the
    inner tensors, its axis arguments moved past the split, the result merged again; refused
    where the call is not per row (see the module doc)."""
    from rosetta.importers.torch_ops import (BROADCASTING, Unbatched, matmul, passthrough,
                                             reader_refusal, select, unbind)

    rule = getattr(handler, "merged_rule", None)
    ins = [v for v in flat_args(list(c.args) + list(c.kwargs.values())) if isinstance(v, Merged)]
    first = ins[0]
    k, at, rank = first.k, first.at, len(first.shape)
    if rule is None:
        raise Unsupported(f"{c.target} of a tensor whose batch axis a view merged with other "
                          f"rows ({first.shape}, {k} rows per example; only calls that treat "
                          f"each row alone may read it)")
    if any(m.k != k or m.at != at or len(m.shape) != rank for m in ins):
        raise Unsupported(f"{c.target} of merged-batch tensors of shapes "
                          f"{[m.shape for m in ins]} merged differently")
    if rule == VIEW:
        return _view(b, handler, c, first)
    if at != 0 and handler not in (select, unbind, passthrough) and rule != PERMUTE:
        raise Unsupported(f"{c.target} of a tensor whose merged batch axis a permute moved to "
                          f"axis {at} (only unbind or select of an axis before it may read it)")
    check = getattr(handler, "merged_check", None)
    if check is not None and not check(c, rank):
        raise Unsupported(f"{c.target} of the batch axis merged with other rows")
    lift = c.target in BROADCASTING or handler is matmul

    def inner(v):
        if isinstance(v, Merged):
            return v.inner
        if lift and isinstance(v, Value):
            return _lift(b, c, v, rank)
        if isinstance(v, Value) and not isinstance(v, Unbatched):
            raise Unsupported(f"{c.target} of a merged-batch tensor {first.shape} and a "
                              f"per-example tensor of shape {v.shape}")
        if isinstance(v, (list, tuple)):
            return type(v)(inner(x) for x in v)
        return v

    args, kwargs = [inner(a) for a in c.args], {n: inner(v) for n, v in c.kwargs.items()}
    out_at = at
    if rule == DIM:
        pos, key, default = handler.merged_dim
        d = args[pos] if len(args) > pos else kwargs.get(key)
        if default == "all" and (d is None or (isinstance(d, (list, tuple)) and not d)):
            d = list(range(1, rank))   # a reduction over every per-example axis
        elif d is None:
            d = default
        if d is None:
            pass
        elif isinstance(d, (list, tuple)):
            new = [_axis(a, rank, at, c.target) for a in d]
            if any(int(a) % rank < at for a in d):
                raise Unsupported(f"{c.target} over axes before the merged batch axis")
        else:
            new = _axis(d, rank, at, c.target)
            if handler in (select, unbind) and int(d) % rank < at:
                out_at = at - 1
        if d is None:
            pass
        elif len(args) > pos:
            args[pos] = new
        else:
            kwargs[key] = new
    elif rule == PERMUTE:
        args, out_at = _permute_args(c, args, rank, at)
        kwargs = {}
    line = reader_refusal(c.target, flat_args(args + list(kwargs.values())))
    if line:
        raise Unsupported(line)
    shape = c.shape
    if handler is unbind:   # its pieces' shape
        d = int(c.arg(1, "dim", 0)) % rank
        shape = tuple(first.shape[:d]) + tuple(first.shape[d + 1:])
    target = "aten.permute.default" if rule == PERMUTE else c.target
    y = handler(b, _with(c, args, unmerged_shape(shape, b.batch, k, out_at), kwargs, target))
    if handler is unbind:
        return tuple(merge(p, k, out_at) for p in y)
    if isinstance(y, tuple):   # split / chunk pieces
        return tuple(merge(p, k, out_at) for p in y)
    return merge(y, k, out_at)


def _permute_args(c, args, rank, at):
    """permute(dims) / transpose(d0, d1) of a merged tensor -> permute of the inner tensor
    (the merged axis a pair of axes) and where the merged axis goes."""
    if c.target.startswith("aten.permute"):
        dims = [int(d) % rank for d in args[1]]
    else:
        d0, d1 = int(args[1]) % rank, int(args[2]) % rank
        dims = list(range(rank))
        dims[d0], dims[d1] = d1, d0
    new = []
    for d in dims:
        new.extend([at, at + 1] if d == at else [d + (d > at)])
    return [args[0], new], dims.index(at)


def _view(b, view, c, x: Merged):
    """A view of a merged tensor: its flat order is the inner tensor's, so a view to
    (B*k', ...) is the inner view to (B, k', ...) (merged again when k' > 1)."""
    if x.at != 0:
        raise Unsupported(f"{c.target} of a tensor whose merged batch axis a permute moved to "
                          f"axis {x.at}")
    shape, batch = tuple(c.shape), int(b.batch)
    if not shape or shape[0] % batch:
        raise Unsupported(f"a view of a merged-batch tensor {x.shape} to {shape} (its first "
                          f"axis is not a multiple of the batch, {batch}: it would mix "
                          f"examples)")
    k = shape[0] // batch
    from rosetta.importers.torch_ops import view as view_handler

    target = (batch, k) + shape[1:] if k > 1 else shape
    y = view_handler(b, _with(c, [x.inner], target, {}))
    return merge(y, k)


def flat_args(xs):
    """The leaves of nested lists / tuples of call arguments, in order."""
    for x in xs:
        if isinstance(x, (list, tuple)):
            yield from flat_args(x)
        else:
            yield x


__all__ = ["Merged", "merge", "call", "flat_args", "view_from", "unmerged_shape", "SAME", "DIM",
           "PERMUTE", "VIEW"]
