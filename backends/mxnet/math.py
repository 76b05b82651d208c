"""Lowerings of the tensor-math ops (``rosetta.ops.math``): Constant, Parameter, Expand, MatMul,
the broadcasting binary ops, the comparisons, Where and Unary.

MXNet's int tensors are the program's float dtype (``model.py``), so comparisons return 0.0 /
1.0 and an integer Constant is held in the float dtype (exact below 2^24 / 2^53). The legacy
operators traced into a symbol do not know shapes, so every rule is built from the per-example
shapes of the node: operands are brought to one rank by size-1 axes after the batch axis
(``full_rank``), ``broadcast_*`` operators broadcast, ``where`` and ``batch_dot`` (which do not)
get operands broadcast explicitly, and the batch of a batch-broadcast operand is taken from a
batched one with ``broadcast_like`` on axis 0. Expand of a batch-broadcast input, and the nodes
without inputs, are called with the first model input after their inputs (``GraphBlock``): its
batch axis is the run's.

A Constant is a Gluon constant (``params.get_constant``, never trained, not a canonical
parameter) in the program dtype. erf is ``lowering._erf`` (MXNet's own erf backward is ~1e-8 off
in float64). max/min gradients at ties (probability zero): MXNet gives every tied element the
full gradient."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import _erf, lowers
from rosetta.ops.math import Expand as ExpandOp


def full_rank(F, x, rank: int, have: int):
    """x (``have`` per-example axes) with size-1 axes inserted after the batch axis up to
    ``rank`` per-example axes."""
    for _ in range(rank - have):
        x = F.expand_dims(x, axis=1)
    return x


def batch_like(F, xs, types):
    """Each batch-broadcast operand broadcast on axis 0 to the batch of the first batched one
    (all returned unchanged when every operand is batch-broadcast)."""
    ref = next((x for x, t in zip(xs, types) if not t.batch_broadcast), None)
    if ref is None:
        return list(xs)
    return [F.broadcast_like(x, ref, lhs_axes=(0,), rhs_axes=(0,)) if t.batch_broadcast else x
            for x, t in zip(xs, types)]


@lowers("Constant")
def constant(F, node, xs, p, ctx):
    """The Gluon constant ``value`` of the node block, (1, *shape) in the program dtype."""
    return p["value"]


@lowers("Parameter")
def parameter(F, node, xs, p, ctx):
    return F.expand_dims(p["value"], axis=0)


@lowers("Expand")
def expand(F, node, xs, p, ctx):
    """x brought to the target rank, its batch axis to the run's for a batch-broadcast x
    (broadcast_like the model input passed after it), then broadcast_to (0: keep the batch)."""
    t = node.in_types[0]
    target = ExpandOp().target(node.attrs, t, node.name)
    x = full_rank(F, xs[0], len(target), len(t.shape))
    if t.batch_broadcast:
        x = F.broadcast_like(x, xs[1], lhs_axes=(0,), rhs_axes=(0,))
    return F.broadcast_to(x, shape=(0, *target))


@lowers("MatMul")
def matmul(F, node, xs, p, ctx):
    """batch_dot of the operands broadcast to one (N, *lead, ., .) shape and flattened to
    (-1, ., .); 1-D operands a row / column, that axis removed from the result by the final
    reshape to the output shape."""
    ta, tb = node.in_types
    a, b = xs
    sa, sb = tuple(ta.shape), tuple(tb.shape)
    if len(sa) == 1:
        a, sa = F.expand_dims(a, axis=1), (1, *sa)
    if len(sb) == 1:
        b, sb = F.expand_dims(b, axis=-1), (*sb, 1)
    rank = max(len(sa), len(sb))
    a, b = full_rank(F, a, rank, len(sa)), full_rank(F, b, rank, len(sb))
    sa, sb = (1,) * (rank - len(sa)) + sa, (1,) * (rank - len(sb)) + sb
    a, b = batch_like(F, [a, b], [ta, tb])
    lead = tuple(max(m, n) for m, n in zip(sa[:-2], sb[:-2]))
    a = F.reshape(F.broadcast_to(a, shape=(0, *lead, *sa[-2:])), shape=(-1, *sa[-2:]))
    b = F.reshape(F.broadcast_to(b, shape=(0, *lead, *sb[-2:])), shape=(-1, *sb[-2:]))
    return F.reshape(F.batch_dot(a, b), shape=(-1, *node.out_type.shape))


# op -> (tensor-tensor operator name, x op c, c op x)
BINARY = {
    "Add": ("broadcast_add", lambda F, x, c: x + c, lambda F, x, c: c + x),
    "Subtract": ("broadcast_sub", lambda F, x, c: x - c, lambda F, x, c: c - x),
    "Multiply": ("broadcast_mul", lambda F, x, c: x * c, lambda F, x, c: c * x),
    "Divide": ("broadcast_div", lambda F, x, c: x / c, lambda F, x, c: c / x),
    "Power": ("broadcast_power", lambda F, x, c: x ** c, lambda F, x, c: c ** x),
    "Maximum": ("broadcast_maximum", lambda F, x, c: F.maximum(x, c),
                lambda F, x, c: F.maximum(x, c)),
    "Minimum": ("broadcast_minimum", lambda F, x, c: F.minimum(x, c),
                lambda F, x, c: F.minimum(x, c)),
    "Equal": ("broadcast_equal", lambda F, x, c: x == c, lambda F, x, c: x == c),
    "Less": ("broadcast_lesser", lambda F, x, c: x < c, lambda F, x, c: x > c),
    "Greater": ("broadcast_greater", lambda F, x, c: x > c, lambda F, x, c: x < c),
}


@lowers(*BINARY)
def binary(F, node, xs, p, ctx):
    """x_1 op x_2 (op ...) left to right with MXNet's ``broadcast_*`` operators (operands at one
    rank), or the scalar operator (x op c, reverse c op x)."""
    name, scalar, rscalar = BINARY[node.op]
    c = node.attrs["constant"]
    if c is not None:
        return (rscalar if node.attrs["reverse"] else scalar)(F, xs[0], c)
    rank = len(node.out_type.shape)
    xs = [full_rank(F, x, rank, len(t.shape)) for x, t in zip(xs, node.in_types)]
    y = xs[0]
    for x in xs[1:]:
        y = getattr(F, name)(y, x)
    return y


@lowers("Where")
def where(F, node, xs, p, ctx):
    """F.where (no broadcasting) on operands broadcast to (N, *out); a scalar side is
    ones_like * c (+-inf stays exact: 1 * -inf = -inf)."""
    out = tuple(node.out_type.shape)
    xs = [full_rank(F, x, len(out), len(t.shape)) for x, t in zip(xs, node.in_types)]
    xs = [F.broadcast_to(x, shape=(0, *out)) for x in batch_like(F, xs, node.in_types)]
    cond, a = xs[0], node.attrs
    if a["x"] is not None:
        return F.where(cond, F.ones_like(xs[1]) * a["x"], xs[1])
    if a["y"] is not None:
        return F.where(cond, xs[1], F.ones_like(xs[1]) * a["y"])
    return F.where(cond, xs[1], xs[2])


UNARY = {
    "neg": lambda F, x: F.negative(x), "abs": lambda F, x: F.abs(x),
    "sqrt": lambda F, x: F.sqrt(x), "rsqrt": lambda F, x: F.rsqrt(x),
    "exp": lambda F, x: F.exp(x), "log": lambda F, x: F.log(x), "erf": _erf,
    "reciprocal": lambda F, x: F.reciprocal(x), "square": lambda F, x: F.square(x),
    "tanh": lambda F, x: F.tanh(x), "sigmoid": lambda F, x: F.sigmoid(x),
    "sin": lambda F, x: F.sin(x), "cos": lambda F, x: F.cos(x),
}


@lowers("Unary")
def unary(F, node, xs, p, ctx):
    return UNARY[node.attrs["fn"]](F, xs[0])
