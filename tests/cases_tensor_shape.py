"""Cases for the tensor-level shape and indexing ops: Transpose, Slice, Gather (indices as input
and constant), Squeeze, Unsqueeze, Cast, Pad (joined into ``cases.CASES``). Each sits between
parameterised layers so that gradients flow through it; negative axes and indices, clamped
slice stops, steps, int tensors through the layout ops and a 4-D input (channels-first in torch)
are all covered by few, small cases."""

from __future__ import annotations

import numpy as np

import rosetta as rs
from rosetta.ops import REGISTRY

MSE = rs.losses.MeanSquaredError


def _spec(inputs, out, name):
    return rs.TrainSpec(model=rs.Model(inputs, out, name=name), loss=MSE(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=5)


def _shape_and_gather():
    """One graph for the float paths (one compile per backend, not one per op):

    * a conv map (NCHW in torch) transposed, sliced (negative start, stop past the end, step 2,
      negative axis) and padded asymmetrically with a non-zero value;
    * Gather with indices as an int input of shape (2, 3) per example, drawn in [0, 7) (the
      tests' widest int range) on a gathered axis of size 7 (a repeated index accumulates its
      gradient); Gather with constant indices (nested, negative and repeated entries; a scalar);
    * Squeeze (listed axes and all size-1 axes), Unsqueeze (negative output axes), a rank-4
      Transpose;
    * a Slice of two axes of a rank-5 tensor (6 axes with the batch: MXNet's ``slice`` takes
      5, so its lowering slices axis by axis on a 3-D view).
    """
    x = rs.Input((4, 5, 2), name="x")
    idx = rs.Input((2, 3), name="idx", kind="int")
    v = rs.Input((3, 1, 4), name="v")
    h = rs.Conv2D(3, 3, padding="same", name="conv")(x)
    t = rs.Transpose((2, 0, -2), name="perm")(h)                              # (3, 4, 5)
    s = rs.Slice(axes=(0, -1), starts=(-2, 1), stops=(100, 5), steps=(1, 2),
                 name="cut")(t)                                               # (2, 4, 2)
    p = rs.Pad(((1, 0), (0, 3), (2, 1)), value=0.5, name="pad")(s)           # (3, 7, 5)
    g = rs.Gather(-2, name="take")(p, idx)                                    # (3, 2, 3, 5)
    c = rs.Gather(-1, indices=((0, -1), (2, 2)), name="take_const")(p)       # (3, 7, 2, 2)
    c = rs.Gather(0, indices=-1, name="last")(c)                              # (7, 2, 2)
    d = rs.Dense(2, name="pre")(v)                                            # (3, 1, 2)
    q = rs.Squeeze((-2,), name="squeeze")(d)                                  # (3, 2)
    u = rs.Unsqueeze((0, -1), name="unsqueeze")(q)                            # (1, 3, 2, 1)
    a = rs.Squeeze(name="squeeze_all")(rs.Transpose((3, 1, 0, 2), name="perm4")(u))  # (3, 2)
    w = rs.Reshape((3, 2, 3, 5, 1), name="rank5")(g)
    w = rs.Slice(axes=(1, 3), starts=(1, -4), stops=(2, 5), steps=(1, 2),
                 name="cut5")(w)     # (3, 1, 3, 2, 1): 6 axes with the batch (MXNet's slice: 5)
    flat = [rs.Flatten(name=f"flat_{n}")(y) for n, y in (("g", g), ("c", c), ("a", a),
                                                          ("w", w))]
    out = rs.Dense(2, name="head")(rs.Concatenate(name="cat")(flat))
    return _spec([x, idx, v], out, "shape_and_gather")


def _cast_int_paths():
    """Int ids through Slice, Pad, Transpose, then Cast to float into a Dense; a float
    truncated by Cast to int (values of both signs, some beyond 1) and back, concatenated with a
    float path (the gradient flows only through that path)."""
    x = rs.Input((3,), name="x")
    ids = rs.Input((2, 4), name="ids", kind="int")
    k = rs.Slice(axes=(1,), starts=(1,), stops=(4,), name="ids_cut")(ids)    # (2, 3)
    k = rs.Pad(((0, 0), (1, 0)), value=2.0, name="ids_pad")(k)               # (2, 4)
    k = rs.Transpose((1, 0), name="ids_perm")(k)                             # (4, 2)
    f = rs.Cast("float", name="ids_float")(rs.Flatten(name="ids_flat")(k))  # (8,)
    h = rs.Dense(8, name="pre")(x)
    t = rs.Cast("float", name="back")(rs.Cast("int", name="trunc")(
        rs.Dense(8, name="scale")(x)))
    s = rs.Concatenate(name="cat")([h, f, t])
    out = rs.Dense(2, name="head")(s)
    return _spec([x, ids], out, "cast_int_paths")


CASES: list = [
    ("shape_and_gather", _shape_and_gather),
    ("cast_int_paths", _cast_int_paths),
]


# --- batch-broadcast inputs (a Parameter or Constant: batch axis of size 1) ---------------------
def _shared():
    """Batch-broadcast inputs, one graph:

    * a Parameter table (7, 3) gathered by batched int ids (its gradient is the sum over the
      batch of the scattered rows), and batched values gathered by Constant indices (a negative
      entry);
    * Transpose, Slice, Pad, Unsqueeze/Squeeze and a Cast pair on a Parameter stay
      batch-broadcast, then broadcast against the batch in an Add.
    """
    ids = rs.Input((2, 4), name="ids", kind="int")
    x = rs.Input((5, 2), name="x")
    table = rs.Parameter((7, 3), "glorot_uniform", name="table")()
    rows = rs.Gather(0, name="lookup")(table, ids)                             # (2, 4, 3)
    pick = rs.Constant(np.array([[4, -1], [0, 2]]), name="pick")()
    h = rs.Dense(3, name="pre")(x)                                            # (5, 3)
    sel = rs.Gather(0, name="select")(h, pick)                                # (2, 2, 3)
    p = rs.Parameter((4, 5, 3), "glorot_uniform", name="shared")()
    t = rs.Transpose((2, 0, 1), name="perm")(p)                               # (3, 4, 5)
    s = rs.Slice(axes=(2,), starts=(-4,), stops=(5,), steps=(2,), name="cut")(t)  # (3, 4, 2)
    q = rs.Pad(((0, 0), (0, 0), (1, 1)), value=0.25, name="pad")(s)          # (3, 4, 4)
    u = rs.Squeeze((0,), name="squeeze")(rs.Unsqueeze((0,), name="unsqueeze")(q))
    c = rs.Cast("float", name="back")(rs.Cast("int", name="trunc")(
        rs.Multiply(constant=4.0, name="scale")(u)))
    g = rs.Dense(4, name="pre4")(rs.Slice(axes=(0,), starts=(0,), stops=(3,),
                                          name="rows3")(h))                   # (3, 4)
    y = rs.Add(name="sum")([rs.Gather(2, indices=0, name="first")(u), g,
                            rs.Gather(2, indices=-1, name="last")(c)])        # (3, 4)
    flat = [rs.Flatten(name=f"flat_{n}")(v) for n, v in (("rows", rows), ("sel", sel),
                                                         ("sum", y))]
    out = rs.Dense(2, name="head")(rs.Concatenate(name="cat")(flat))
    return _spec([ids, x], out, "shape_ops_shared")


# Parameter, Constant, Multiply(constant=) and Add's broadcasting are the tensor-math ops
# (rosetta.ops.math); this case joins as soon as those ops are in the registry (a branch
# without them has no batch-broadcast tensor to test)
if {"Parameter", "Constant"} <= set(REGISTRY):
    CASES.append(("shape_ops_shared", _shared))
