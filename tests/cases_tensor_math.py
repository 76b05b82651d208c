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


def _elementwise():
    """Every binary op in its two-input form (a batch-broadcast Constant (4,) and Parameter
    (3, 1) against batched (3, 4) values, a batched (3, 1) against (3, 4), a three-way Add), its
    scalar form (reversed where it matters), and every Unary fn."""
    x = rs.Input((3, 4), name="x")
    h = rs.Dense(4, name="pre")(x)
    g = rs.Dense(1, name="gate")(x)                                     # (3, 1), batched
    pos = _positive(h, "pos")                                           # (3, 4), > 0
    c = rs.Constant(np.array([0.5, -1.0, 2.0, 0.25]), name="c")()       # (4,), shared
    p = rs.Parameter((3, 1), "glorot_uniform", name="p")()              # (3, 1), shared
    two = [rs.Add(name="add")(h, c, g),
           rs.Subtract(name="sub")(h, p),
           rs.Multiply(name="mul")(p, h),
           rs.Divide(name="div")(h, pos),
           rs.Power(name="pow")(pos, g),
           rs.Maximum(name="max")(h, c),
           rs.Minimum(name="min")(g, h)]
    scalar = [rs.Add(constant=3.0, name="add_c")(h),
              rs.Subtract(constant=1.0, reverse=True, name="rsub_c")(h),
              rs.Multiply(constant=0.125, name="mul_c")(h),
              rs.Divide(constant=2.0, reverse=True, name="rdiv_c")(pos),
              rs.Power(constant=3.0, name="cube")(h),
              rs.Power(constant=1.5, name="pow_frac")(pos),
              rs.Power(constant=2.0, reverse=True, name="exp2")(h),
              rs.Maximum(constant=0.1, name="max_c")(h),
              rs.Minimum(constant=-0.1, name="min_c")(h)]
    unary = [rs.Unary(fn, name=fn)(pos if fn in ("sqrt", "rsqrt", "log", "reciprocal") else h)
             for fn in ("neg", "abs", "sqrt", "rsqrt", "exp", "log", "erf", "reciprocal",
                        "square", "tanh", "sigmoid", "sin", "cos")]
    y = rs.Concatenate(name="cat")(two + scalar + unary)               # (3, 116)
    return _spec(x, rs.Dense(2, name="head")(y), "math_elementwise")


def _matmul_reduce():
    """MatMul: (2, 3, 4) @ (2, 4, 3) batched; @ a shared (3, 2) Parameter of lower rank; 1-D
    operands on either side; a shared (4,) row @ a batched (2, 4, 3). Reduce: every fn, with and
    without keepdims, one and several axes, negative axes, var with correction 0 and 1."""
    a = rs.Input((2, 3, 4), name="a")
    b = rs.Input((2, 4, 3), name="b")
    ha = rs.Dense(4, name="pa")(a)
    ab = rs.MatMul(name="ab")(ha, b)                                        # (2, 3, 3)
    w = rs.MatMul(name="aw")(ab, rs.Parameter((3, 2), "glorot_uniform", name="w")())  # (2, 3, 2)
    v = rs.Reduce("sum", (0, 1), name="v")(ha)                              # (4,)
    m = rs.Reduce("mean", (0,), name="m")(b)                                # (4, 3)
    vm = rs.MatMul(name="vm")(v, m)                                         # (3,)
    mv = rs.MatMul(name="mv")(rs.Reduce("var", (0,), correction=1, name="va")(ha), v)  # (3,)
    vv = rs.MatMul(name="vv")(v, rs.Reduce("max", (0, -2), name="mx")(ha))  # ()
    r = rs.MatMul(name="rb")(rs.Parameter((4,), "glorot_uniform", name="row")(), b)  # (2, 3)
    parts = [rs.Reshape((12,), name="fw")(w), vm, mv, rs.Reshape((1,), name="fvv")(vv),
             rs.Reshape((6,), name="fr")(r),
             rs.Reshape((6,), name="fmean")(rs.Reduce("mean", (-1,), keepdims=True,
                                                       name="mean")(ha)),   # (2, 3, 1)
             rs.Reshape((4,), name="fmin")(rs.Reduce("min", (0, 1), keepdims=True,
                                                      name="min")(ha)),     # (1, 1, 4)
             rs.Reshape((6,), name="fvar")(rs.Reduce("var", (2,), correction=0,
                                                      name="var0")(ha))]    # (2, 3)
    y = rs.Concatenate(name="cat")(parts)
    return _spec([a, b], rs.Dense(2, name="head")(y), "math_matmul_reduce")


def _masks_expand():
    """Comparisons and Where building masks: a causal Constant (int 0/1) fills scores with -inf
    before Softmax (each row keeps its diagonal); Greater/Less/Equal feed three-input Where; an
    int input compared with an int constant; LogSoftmax over axis 0. Expand: a ViT-style class
    token (Parameter (1, 3) to the batch, concatenated with the rows) and a batched (3, 1) to
    (2, 3, 3) (a new leading axis). A 4-D broadcast of shared values against a conv map: a (2,)
    Constant (mixed rank: channels-last on torch) and a (3, 3, 1) Parameter (one rank: torch's
    channels-first path)."""
    x = rs.Input((3, 3), name="x")
    tok = rs.Input((3,), kind="int", name="tokens")
    img = rs.Input((3, 3, 2), name="img")
    s = rs.Dense(3, name="scores")(x)
    causal = rs.Constant(np.triu(np.ones((3, 3), np.int64), 1), name="causal")()
    sm = rs.Softmax(name="softmax")(rs.Where(x=float("-inf"), name="masked")(causal, s))
    ls = rs.LogSoftmax(axis=0, name="log_softmax")(s)
    gt = rs.Greater(name="gt")(s, rs.Constant(np.zeros(3), name="zero")())
    lt = rs.Less(constant=0.3, reverse=True, name="lt")(s)                # 0.3 < s
    w3 = rs.Where(name="pick")(gt, sm, ls)
    w2 = rs.Where(y=-2.0, name="floor")(lt, w3)
    pad = rs.Equal(constant=0, name="is_pad")(tok)                           # (3,), int
    keep = rs.Where(x=0.0, name="drop_pad")(rs.Reshape((3, 1), name="col")(pad), w2)
    e = rs.Where(y=1.0, name="eq_gate")(rs.Equal(name="eq")(gt, lt), keep)  # (3, 3)
    h = rs.Conv2D(2, 3, padding="same", name="conv")(img)
    h = rs.Add(name="shift")(h, rs.Constant(np.array([1.0, -0.5]), name="offset")())
    h = rs.Multiply(name="scale")(h, rs.Parameter((3, 3, 1), "glorot_uniform", name="gamma")())
    h = rs.Conv2D(3, 3, padding="same", name="conv2")(h)
    t = rs.Add(name="join")(rs.Reshape((3, 9), name="rows")(h), rs.Reshape((3, 9), name="r")(
        rs.Concatenate(axis=0, name="e3")([e, e, e])))  # (3, 9)
    cls = rs.Expand((-1, -1), name="cls_b")(rs.Parameter((1, 9), "glorot_uniform", name="cls")())
    seq = rs.Concatenate(axis=0, name="seq")([cls, t])                     # (4, 9)
    wide = rs.Expand((2, 3, 3), name="wide")(rs.Reduce("mean", (1,), keepdims=True,
                                                       name="pool")(e))   # (2, 3, 3)
    y = rs.Concatenate(name="cat")([rs.Flatten(name="fs")(seq), rs.Flatten(name="fw")(wide)])
    return _spec([x, tok, img], rs.Dense(2, name="head")(y), "math_masks_expand")


CASES: list = [
    ("math_elementwise", _elementwise),
    ("math_matmul_reduce", _matmul_reduce),
    ("math_masks_expand", _masks_expand),
]
