"""Cases for the tensor-math ops (joined into ``cases.CASES``): Constant, Parameter, Expand,
MatMul, the broadcasting binary ops (two inputs and the scalar ``constant`` form), comparisons,
Where, Unary, Reduce, Softmax and LogSoftmax.

Each case packs several ops into one small graph (the CI budget): the forward, finite-difference
and cross-backend tests then cover every op, batch-broadcast values of lower rank, a 4-D
broadcast (torch's channels-first path) and -inf through Where into a softmax. Inputs of the
functions with a restricted domain (sqrt, rsqrt, log, reciprocal, a fractional power) are made
positive first (square + constant).
"""

from __future__ import annotations

import numpy as np

import rosetta as rs

MSE = rs.losses.MeanSquaredError


def _spec(inputs, out, name):
    return rs.TrainSpec(model=rs.Model(inputs, out, name=name), loss=MSE(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=5)


def _positive(h, name):
    """square(h) + 0.5: a positive input for the functions with a restricted domain."""
    return rs.Add(constant=0.5, name=f"{name}_shift")(rs.Unary("square", name=f"{name}_sq")(h))


def _binary():
    """Two-input forms with broadcasting: a batch-broadcast Constant (4,) and Parameter (3, 1)
    against batched (3, 4) values; a batched (3, 1) against (3, 4); three-way Add."""
    x = rs.Input((3, 4), name="x")
    h = rs.Dense(4, name="pre")(x)
    g = rs.Dense(1, name="gate")(x)                                     # (3, 1), batched
    c = rs.Constant(np.array([0.5, -1.0, 2.0, 0.25]), name="c")()       # (4,), shared
    p = rs.Parameter((3, 1), "glorot_uniform", name="p")()              # (3, 1), shared
    s = rs.Add(name="add")(h, c, g)
    d = rs.Subtract(name="sub")(s, p)
    m = rs.Multiply(name="mul")(d, p)
    q = rs.Divide(name="div")(m, _positive(g, "den"))
    w = rs.Power(name="pow")(_positive(h, "base"), rs.Multiply(constant=0.5, name="half")(g))
    mx = rs.Maximum(name="max")(q, w)
    mn = rs.Minimum(name="min")(mx, rs.Add(constant=0.1, name="shifted")(h))
    return _spec(x, rs.Dense(2, name="head")(mn), "math_binary")


def _scalar():
    """The one-input ``constant`` form, each op, reversed where it matters."""
    x = rs.Input((5,), name="x")
    h = rs.Dense(5, name="pre")(x)
    pos = _positive(h, "pos")
    parts = [rs.Add(constant=3.0, name="add_c")(h),
             rs.Subtract(constant=1.0, name="sub_c")(h),
             rs.Subtract(constant=1.0, reverse=True, name="rsub_c")(h),
             rs.Multiply(constant=0.125, name="mul_c")(h),
             rs.Divide(constant=4.0, name="div_c")(h),
             rs.Divide(constant=2.0, reverse=True, name="rdiv_c")(pos),
             rs.Power(constant=3.0, name="cube")(h),
             rs.Power(constant=1.5, name="pow_frac")(pos),
             rs.Power(constant=2.0, reverse=True, name="exp2")(h),
             rs.Maximum(constant=0.1, name="max_c")(h),
             rs.Minimum(constant=-0.1, name="min_c")(h)]
    y = rs.Concatenate(name="cat")(parts)
    return _spec(x, rs.Dense(2, name="head")(y), "math_scalar")


def _unary():
    x = rs.Input((4,), name="x")
    h = rs.Dense(4, name="pre")(x)
    pos = _positive(h, "pos")
    parts = [rs.Unary(fn, name=fn)(pos if fn in ("sqrt", "rsqrt", "log", "reciprocal") else h)
             for fn in ("neg", "abs", "sqrt", "rsqrt", "exp", "log", "erf", "reciprocal",
                        "square", "tanh", "sigmoid", "sin", "cos")]
    return _spec(x, rs.Dense(2, name="head")(rs.Concatenate(name="cat")(parts)), "math_unary")


def _matmul():
    """(2, 3, 4) @ (2, 4, 3) batched; @ a shared (4, 2) Parameter of lower rank; 1-D operands
    on either side; a shared (4,) row @ a batched (2, 4, 3)."""
    a = rs.Input((2, 3, 4), name="a")
    b = rs.Input((2, 4, 3), name="b")
    ha = rs.Dense(4, name="pa")(a)
    ab = rs.MatMul(name="ab")(ha, b)                                        # (2, 3, 3)
    w = rs.MatMul(name="aw")(ab, rs.Parameter((3, 2), "glorot_uniform", name="w")())  # (2, 3, 2)
    v = rs.Reduce("sum", (0, 1), name="v")(ha)                              # (4,)
    m = rs.Reduce("mean", (0,), name="m")(b)                                # (4, 3)
    vm = rs.MatMul(name="vm")(v, m)                                         # (3,)
    mv = rs.MatMul(name="mv")(rs.Reduce("mean", (0,), name="ma")(ha), v)    # (3,)
    vv = rs.MatMul(name="vv")(v, v)                                         # ()
    r = rs.MatMul(name="rb")(rs.Parameter((4,), "glorot_uniform", name="row")(), b)  # (2, 3)
    y = rs.Concatenate(name="cat")([rs.Reshape((12,), name="fw")(w), vm, mv,
                                   rs.Reshape((1,), name="fvv")(vv),
                                   rs.Reshape((6,), name="fr")(r)])
    return _spec([a, b], rs.Dense(2, name="head")(y), "math_matmul")


def _reduce():
    x = rs.Input((2, 3, 4), name="x")
    h = rs.Dense(4, name="pre")(x)
    parts = [rs.Reduce("sum", (0, 2), name="sum")(h),                       # (3,)
             rs.Reduce("mean", (-1,), keepdims=True, name="mean")(h),       # (2, 3, 1)
             rs.Reduce("max", (1,), name="max")(h),                         # (2, 4)
             rs.Reduce("min", (0, 1), keepdims=True, name="min")(h),        # (1, 1, 4)
             rs.Reduce("var", (2,), correction=0, name="var0")(h),          # (2, 3)
             rs.Reduce("var", (0, 1), correction=1, name="var1")(h)]        # (4,)
    flat = [rs.Flatten(name=f"f{i}")(t) if i not in (0, 5) else t for i, t in enumerate(parts)]
    return _spec(x, rs.Dense(2, name="head")(rs.Concatenate(name="cat")(flat)), "math_reduce")


def _softmax_where():
    """Comparisons and Where building masks: a causal Constant (int 0/1) fills scores with -inf
    before Softmax (each row keeps its diagonal); Greater/Less/Equal feed three-input Where; an
    int input compared with an int constant; LogSoftmax over axis 0."""
    x = rs.Input((3, 3), name="x")
    tok = rs.Input((3,), kind="int", name="tokens")
    s = rs.Dense(3, name="scores")(x)
    causal = rs.Constant(np.triu(np.ones((3, 3), np.int64), 1), name="causal")()
    masked = rs.Where(x=float("-inf"), name="masked")(causal, s)
    sm = rs.Softmax(name="softmax")(masked)
    ls = rs.LogSoftmax(axis=0, name="log_softmax")(s)
    gt = rs.Greater(name="gt")(s, rs.Constant(np.zeros(3), name="zero")())
    lt = rs.Less(constant=0.3, reverse=True, name="lt")(s)                # 0.3 < s
    w3 = rs.Where(name="pick")(gt, sm, ls)
    w2 = rs.Where(y=-2.0, name="floor")(lt, w3)
    pad = rs.Equal(constant=0, name="is_pad")(tok)                           # (3,), int
    keep = rs.Where(x=0.0, name="drop_pad")(rs.Reshape((3, 1), name="col")(pad), w2)
    eq = rs.Equal(name="eq")(gt, lt)
    e = rs.Where(y=1.0, name="eq_gate")(eq, keep)
    return _spec([x, tok], rs.Dense(2, name="head")(rs.Flatten(name="flat")(e)), "math_softmax")


def _expand_image():
    """A ViT-style class token (Parameter (1, 4) expanded to the batch, concatenated with the
    tokens), Expand of a batched (3, 1) to (2, 3, 4) (a new leading axis), and 4-D broadcasts
    of shared values against a conv map: a (2,) Constant (mixed rank: channels-last on torch)
    and a (4, 4, 1) Parameter (one rank: torch's channels-first path)."""
    img = rs.Input((4, 4, 2), name="img")
    h = rs.Conv2D(2, 3, padding="same", name="conv")(img)
    h = rs.Add(name="shift")(h, rs.Constant(np.array([1.0, -0.5]), name="offset")())
    h = rs.Multiply(name="scale")(h, rs.Parameter((4, 4, 1), "glorot_uniform", name="gamma")())
    h = rs.Conv2D(2, 3, padding="same", name="conv2")(h)
    t = rs.Reshape((8, 4), name="tokens")(h)
    cls = rs.Expand((-1, -1), name="cls_b")(rs.Parameter((1, 4), "glorot_uniform", name="cls")())
    seq = rs.Concatenate(axis=0, name="seq")([cls, t])                     # (9, 4)
    g = rs.Dense(1, name="g")(rs.Reduce("mean", (0,), name="pool")(t))   # (1,)
    wide = rs.Expand((2, 3, 4), name="wide")(rs.Reshape((1, 1), name="g11")(g))
    y = rs.Concatenate(name="cat")([rs.Flatten(name="fs")(seq), rs.Flatten(name="fw")(wide)])
    return _spec(img, rs.Dense(2, name="head")(y), "math_expand_image")


CASES: list = [
    ("math_binary", _binary),
    ("math_scalar", _scalar),
    ("math_unary", _unary),
    ("math_matmul", _matmul),
    ("math_reduce", _reduce),
    ("math_softmax_where", _softmax_where),
    ("math_expand_image", _expand_image),
]
