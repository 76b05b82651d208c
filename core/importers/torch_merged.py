"""``from_torch``'s reading of ATen calls on a tensor whose batch axis a view merged with other
rows (the rules, ``Merged`` and the axis arithmetic are ``rosetta.importers.merged``, shared with
the ONNX importer): each handler in ``torch_ops`` carries its rule (``merged_rule``: SAME, DIM
with ``merged_dim`` (its position, keyword and default), PERMUTE or VIEW), and ``call`` runs the
same handler on the inner tensors with its axis arguments moved past the split; a call without
a rule is refused in one line naming the ATen call.
"""

from __future__ import annotations

from rosetta.importers.builder import Unsupported, Value
from rosetta.importers.merged import (DIM, PERMUTE, SAME, VIEW, Merged, inner_axis,
                                      lifted_shape, merge, moved, no_rule, permute_dims,
                                      same_merging, unmerged_shape, view_target)


def view_from(b, view, c, x: Value):
    """A source view of an ordinary tensor ``x`` (batch first) to ``c.shape`` whose first axis
    is k > 1 times the batch: the view of the held tensor to (B, k, ...), ``Merged``."""
    batch = int(b.batch)
    if x.shape[0] != batch:
        raise Unsupported(f"a view that mixes the batch axis ({x.shape} -> {tuple(c.shape)})")
    target, k = view_target(c.shape, batch, c.target, x.shape)
    return merge(view(b, _with(c, [x], target)), k)


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
    full = lifted_shape(src, rank, c.target)
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
    if rule is None:
        raise Unsupported(no_rule(c.target, first))
    k, at, rank = same_merging(ins, c.target)
    if rule == VIEW:
        return _view(b, handler, c, first)
    if at != 0 and handler not in (select, unbind, passthrough) and rule != PERMUTE:
        raise Unsupported(moved(c.target, at))
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
            new = [inner_axis(a, rank, at, c.target) for a in d]
            if any(int(a) % rank < at for a in d):
                raise Unsupported(f"{c.target} over axes before the merged batch axis")
        else:
            new = inner_axis(d, rank, at, c.target)
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
    new, out_at = permute_dims(dims, rank, at)
    return [args[0], new], out_at


def _view(b, view, c, x: Merged):
    """A view of a merged tensor: its flat order is the inner tensor's, so a view to
    (B*k', ...) is the inner view to (B, k', ...) (merged again when k' > 1)."""
    if x.at != 0:
        raise Unsupported(moved(c.target, x.at))
    target, k = view_target(c.shape, int(b.batch), c.target, x.shape)
    from rosetta.importers.torch_ops import view as view_handler

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
