"""Tensor-level math: Constant, Parameter, Expand, MatMul, the broadcasting binary ops (Add,
Subtract, Multiply, Divide, Power, Maximum, Minimum), the comparisons (Equal, Less, Greater),
Where and Unary.

Batch-broadcast tensors
-----------------------
Constant and Parameter output a tensor whose batch axis has size 1 (``TensorType.batch_broadcast``):
its full shape is (1, *shape), one value shared by every example of the run. The flag is part of
the inferred type, never of the JSON (it follows from the graph). The broadcasting ops here take
such tensors next to batched ones with NumPy's rules over the FULL shape, batch axis included:

* inputs of one per-example rank broadcast axis by axis (each size equal or 1);
* an input of lower per-example rank is allowed only when it is batch-broadcast: its full shape
  (1, *s) right-aligns against (N, *big), so it equals per-example s padded with leading 1s. A
  batched input of lower rank is refused ("inputs of one rank"): NumPy would pair its batch axis
  with a per-example axis.

Any other op takes batch-broadcast inputs only when all its inputs are (the result is then
batch-broadcast too) and refuses a mix; Expand brings one to the batch of the run. The gradient
of a batch-broadcast value is the sum over the batch (broadcasting's adjoint); every backend gets
it from its autodiff.

Constant values are stored inline in the spec JSON (attribute ``value``: dtype, shape and the flat
data, +-inf as strings), whatever their size: a constant is part of the model's definition, not
of its trained state, and the checkpoint holds only parameters and state. The importers fold
every input-independent subgraph (masks from shapes, arange) into one.

Scalar attribute form
---------------------
Each binary op also takes ONE input and a scalar attribute ``constant``: y = x op c, or with
``reverse=True`` y = c op x (``c - x``, ``c / x``, ``c ** x``), so ``x * 0.125`` needs no Constant
node. The constant is applied in the program dtype (a Python float in every lowering: never
rounded through float32).
"""

from __future__ import annotations

import numpy as np

from rosetta.ops.elementwise import FUNCTIONS, _erf
from rosetta.ops.registry import Attr, OpDef, ParamDef, TensorType, register


# --- the broadcasting rule (one place) ----------------------------------------------------------
def broadcast_types(inputs: list[TensorType]) -> tuple | None:
    """The per-example shape of NumPy broadcasting over the full shapes of ``inputs`` (see the
    module docstring), or None where they do not broadcast."""
    rank = max(len(t.shape) for t in inputs)
    shapes = []
    for t in inputs:
        if len(t.shape) < rank and not t.batch_broadcast:
            return None
        shapes.append((1,) * (rank - len(t.shape)) + tuple(t.shape))
    out = []
    for sizes in zip(*shapes):
        big = {n for n in sizes if n != 1}
        if len(big) > 1:
            return None
        out.append(big.pop() if big else 1)
    return tuple(out)


def broadcast_shape(shapes: list[tuple]) -> tuple | None:
    """``broadcast_types`` of batched tensors of these per-example shapes (ranks must match)."""
    return broadcast_types([TensorType(tuple(s)) for s in shapes])


def _broadcast_or_fail(op: OpDef, inputs: list[TensorType], where: str) -> tuple:
    out = broadcast_types(inputs)
    if out is None:
        shapes = [(t.shape, "batch-broadcast") if t.batch_broadcast else t.shape for t in inputs]
        raise op.fail(where, "inputs of one rank whose sizes on each axis are equal or 1 (NumPy "
                      "broadcasting over the full shape; a lower rank only for a batch-broadcast "
                      "input such as a Constant or Parameter)", f"shapes {shapes}")
    return out


# --- Constant and Parameter --------------------------------------------------------------------
@register
class Constant(OpDef):
    """y = value, a fixed array, as a batch-broadcast tensor of per-example shape value.shape
    (full shape (1, *value.shape)). The kind is the array's: floating -> float (computed in the
    program dtype), integer or boolean -> int. No gradient. The value is stored inline in the
    spec JSON (``{"dtype", "shape", "data"}``, +-inf as ``"inf"``/``"-inf"``; nan refused)."""

    positional = ("value",)
    arity = 0
    input_kind = "any"
    attrs = {"value": Attr("array", doc="the array (NumPy dtype decides float or int)")}

    def infer(self, a, inputs, where):
        v = a["value"]
        return TensorType(tuple(v.shape), "float" if v.dtype.kind == "f" else "int",
                          batch_broadcast=True)

    def reference(self, a, p, xs, ctx):
        return np.array(a["value"])[None]

    def flops(self, a, inputs, out):
        return 0


@register
class Parameter(OpDef):
    """y = value, a trainable array of ``shape`` (initialized by ``init``), as a batch-broadcast
    tensor (full shape (1, *shape)): a class token, a position table, a layer-scale gamma, a bias
    added by hand. dL/dvalue = sum over the batch of dL/dy (the adjoint of the broadcast)."""

    positional = ("shape", "init")
    arity = 0
    input_kind = "any"
    attrs = {"shape": Attr("shape", check=lambda s: None if all(n > 0 for n in s)
                           else "must be positive sizes"),
             "init": Attr("init")}

    def infer(self, a, inputs, where):
        return TensorType(tuple(a["shape"]), batch_broadcast=True)

    def params(self, a, inputs):
        return {"value": ParamDef(tuple(a["shape"]), a["init"])}

    def reference(self, a, p, xs, ctx):
        return np.array(p["value"])[None]

    def flops(self, a, inputs, out):
        return 0


# --- Expand ------------------------------------------------------------------------------------
@register
class Expand(OpDef):
    """y = broadcast_to(x, (N, *shape)) over the per-example axes (NumPy ``broadcast_to``; torch
    ``expand``, ONNX ``Expand``): x's per-example shape is right-aligned against ``shape`` (new
    leading axes allowed), each axis of x has size 1 or the target size, -1 keeps x's size (not
    on a new axis). A batch-broadcast x is also expanded to the batch N of the run, so
    ``cls_token.expand(B, -1, -1)`` is Expand((-1, -1)) of a Parameter. dL/dx = dL/dy summed
    over the broadcast axes (batch axis included for a batch-broadcast x)."""

    positional = ("shape",)
    input_kind = "any"
    batch_broadcast = "expands"
    attrs = {"shape": Attr("shape", check=lambda s: None if all(n > 0 or n == -1 for n in s)
                           else "must be positive sizes or -1")}

    def target(self, a, x: TensorType, where) -> tuple:
        shape, rank = a["shape"], len(x.shape)
        if len(shape) < rank:
            raise self.fail(where, f"a shape of at least the input's rank {rank}",
                            f"shape {shape} for input {x.shape}")
        lead = len(shape) - rank
        out = []
        for i, n in enumerate(shape):
            src = x.shape[i - lead] if i >= lead else None
            if n == -1:
                if src is None:
                    raise self.fail(where, "-1 only on an axis the input has", f"shape {shape}")
                n = src
            elif src not in (None, 1, n):
                raise self.fail(where, f"input axes of size 1 or the target size (input "
                                f"{x.shape})", f"shape {shape}")
            out.append(n)
        return tuple(out)

    def infer(self, a, inputs, where):
        return TensorType(self.target(a, inputs[0], where), inputs[0].kind)

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        target = self.target(a, TensorType(x.shape[1:]), "reference")
        x = x.reshape(x.shape[0], *(1,) * (len(target) + 1 - x.ndim), *x.shape[1:])
        batch = ctx.batch if x.shape[0] == 1 and ctx.batch is not None else x.shape[0]
        return np.array(np.broadcast_to(x, (batch, *target)))

    def flops(self, a, inputs, out):
        return 0


# --- MatMul ------------------------------------------------------------------------------------
def matmul_plan(a_shape: tuple, b_shape: tuple):
    """(a as a matrix stack, b as a matrix stack, output shape) per example, NumPy's rule: a 1-D
    a is (1, k) and a 1-D b is (k, 1), those axes removed from the output; the leading axes
    broadcast. None where the inner sizes differ or the leading axes do not broadcast."""
    a2 = (1, *a_shape) if len(a_shape) == 1 else tuple(a_shape)
    b2 = (*b_shape, 1) if len(b_shape) == 1 else tuple(b_shape)
    if a2[-1] != b2[-2]:
        return None
    return a2, b2


@register
class MatMul(OpDef):
    """y = a @ b per example, NumPy ``matmul`` semantics: for rank >= 2, y[..., i, j] =
    sum_k a[..., i, k] b[..., k, j] with the leading axes broadcast (NumPy rule over the full
    shape: a batch-broadcast operand, e.g. a Parameter weight, may have fewer axes); a 1-D a is
    a row (1, k) and a 1-D b a column (k, 1), that axis dropped from y. dL/da = dL/dy @ b^T,
    dL/db = a^T @ dL/dy, each summed over the axes it was broadcast along."""

    arity = 2
    batch_broadcast = "broadcasts"
    attrs = {}

    def shapes(self, inputs, where):
        a, b = inputs
        if len(a.shape) < 1 or len(b.shape) < 1:
            raise self.fail(where, "operands of rank >= 1 per example", f"shapes {a.shape}, "
                            f"{b.shape}")
        plan = matmul_plan(a.shape, b.shape)
        if plan is None:
            raise self.fail(where, "a's last axis equal to b's second-to-last (NumPy matmul)",
                            f"shapes {a.shape} @ {b.shape}")
        a2, b2 = plan
        lead = _broadcast_or_fail(self, [TensorType(a2[:-2], batch_broadcast=a.batch_broadcast),
                                         TensorType(b2[:-2], batch_broadcast=b.batch_broadcast)],
                                  where)
        out = (*lead, *(() if len(a.shape) == 1 else (a2[-2],)),
               *(() if len(b.shape) == 1 else (b2[-1],)))
        return a2, b2, out

    def infer(self, a, inputs, where):
        return TensorType(self.shapes(inputs, where)[2])

    def reference(self, a, p, xs, ctx):
        x, w = xs
        a1, b1 = x.ndim == 2, w.ndim == 2
        if a1:
            x = x[:, None, :]
        if b1:
            w = w[..., None]
        rank = max(x.ndim, w.ndim)
        x = x.reshape(x.shape[0], *(1,) * (rank - x.ndim), *x.shape[1:])
        w = w.reshape(w.shape[0], *(1,) * (rank - w.ndim), *w.shape[1:])
        y = np.matmul(x, w)
        if b1:
            y = y[..., 0]
        if a1:
            y = y[..., 0, :] if not b1 else y[..., 0]
        return y

    def flops(self, a, inputs, out):
        k = inputs[0].shape[-1]
        return 2 * int(np.prod(out.shape)) * k


# --- binary ops --------------------------------------------------------------------------------
class Binary(OpDef):
    """Base of the broadcasting binary ops: two inputs (Add and Multiply: two or more, folded
    left to right), or one input and the scalar attribute ``constant`` (``reverse``: c op x)."""

    arity = (1, None)
    variadic = False
    batch_broadcast = "broadcasts"
    out_kind = None           # None: the inputs' kind; "int" for comparisons
    attrs = {"constant": Attr("scalar", None, doc="y = x op constant, one input; +-inf allowed"),
             "reverse": Attr("bool", False, doc="with constant: y = constant op x")}

    @staticmethod
    def fn(x, y):  # pragma: no cover - each op sets it
        raise NotImplementedError

    def infer(self, a, inputs, where):
        k = len(inputs)
        if a["constant"] is None:
            if a["reverse"]:
                raise self.fail(where, "reverse only with a constant", "reverse=True")
            if k < 2 or (k > 2 and not self.variadic):
                raise self.fail(where, "2 inputs" + (" or more" if self.variadic else "")
                                + " (or one input and a constant)", f"{k} inputs")
        elif k != 1:
            raise self.fail(where, "one input with a constant", f"{k} inputs")
        kinds = {t.kind for t in inputs}
        if len(kinds) > 1:
            raise self.fail(where, "inputs of one kind (Cast one of them)", f"kinds {kinds}")
        kind = kinds.pop()
        c = a["constant"]
        if kind == "int" and c is not None and not float(c).is_integer():
            raise self.fail(where, "an integer constant for an int input", f"constant {c}")
        shape = _broadcast_or_fail(self, inputs, where) if k > 1 else inputs[0].shape
        return TensorType(shape, self.out_kind or kind)

    def reference(self, a, p, xs, ctx):
        if a["constant"] is not None:
            c = a["constant"]
            if np.issubdtype(np.asarray(xs[0]).dtype, np.integer):
                c = int(c)      # an int input takes an integer constant (infer): stays int
            out = self.fn(c, xs[0]) if a["reverse"] else self.fn(xs[0], c)
        else:
            out = xs[0]
            for x in xs[1:]:
                out = self.fn(out, x)
        return out.astype(np.int64) if self.out_kind == "int" else out


def _binary(name: str, fn, doc: str, variadic=False, out_kind=None, input_kind="float"):
    cls = type(name, (Binary,), {"__doc__": doc, "fn": staticmethod(fn), "variadic": variadic,
                                 "out_kind": out_kind, "input_kind": input_kind,
                                 "__module__": __name__})
    return register(cls)


_RULE = (" NumPy broadcasting over the full shape (batch axis included; see rosetta.ops.math);"
         " or one input and ``constant``.")

_INTS = (" Int inputs (all of one kind) give an exact int result without gradient (position ids"
         " computed from token ids).")
Add = _binary("Add", np.add, "y = x_1 + x_2 (+ ...), elementwise, summed left to right;" + _RULE
              + " dL/dx_i = dL/dy summed over the axes x_i broadcasts along." + _INTS,
              variadic=True, input_kind="any")
Subtract = _binary("Subtract", np.subtract, "y = a - b elementwise;" + _RULE
                   + " reverse: y = c - x. dL/da = dL/dy, dL/db = -dL/dy (summed over "
                   "broadcast axes)." + _INTS, input_kind="any")
Multiply = _binary("Multiply", np.multiply, "y = x_1 * x_2 (* ...), elementwise, multiplied "
                   "left to right;" + _RULE + " e.g. the squeeze-excite gate (H, W, C) * "
                   "(1, 1, C). dL/dx_i = sum over the axes x_i broadcasts along of dL/dy * "
                   "prod_{j != i} x_j." + _INTS, variadic=True, input_kind="any")
Divide = _binary("Divide", np.divide, "y = a / b elementwise, true division of floats (int "
                 "inputs are refused: torch true-divides ints, TensorFlow floor-divides);"
                 + _RULE + " reverse: y = c / x. x / 0 = +-inf (IEEE). dL/da = dL/dy / b, "
                 "dL/db = -dL/dy a / b^2.")
Power = _binary("Power", np.power, "y = a ** b elementwise (IEEE pow: a negative base with a "
                "non-integer exponent gives nan on every backend);" + _RULE
                + " reverse: y = c ** x. dL/da = dL/dy b a^(b-1), dL/db = dL/dy y log(a) "
                "(nan for a <= 0; an exponent attribute has no gradient).")
Maximum = _binary("Maximum", np.maximum, "y = max(a, b) elementwise;" + _RULE
                  + " The gradient goes to the larger input; at ties (probability zero for "
                  "random floats) torch and JAX split it evenly, TensorFlow and MXNet give it to "
                  "one input.")
Minimum = _binary("Minimum", np.minimum, "y = min(a, b) elementwise;" + _RULE
                  + " The gradient goes to the smaller input (ties: see Maximum).")
Equal = _binary("Equal", np.equal, "y = 1 if a == b else 0 (int kind), exact comparison, "
                "elementwise;" + _RULE + " Inputs of one kind (an int input takes an integer "
                "constant). No gradient.", out_kind="int", input_kind="any")
Less = _binary("Less", np.less, "y = 1 if a < b else 0 (int kind), elementwise;" + _RULE
               + " reverse: y = c < x. No gradient.", out_kind="int", input_kind="any")
Greater = _binary("Greater", np.greater, "y = 1 if a > b else 0 (int kind), elementwise;"
                  + _RULE + " reverse: y = c > x. No gradient.", out_kind="int",
                  input_kind="any")


# --- Where -------------------------------------------------------------------------------------
@register
class Where(OpDef):
    """y = x where cond != 0 else y, elementwise (NumPy ``where``), cond an int tensor (0/1 from
    a comparison or a Constant mask); inputs (cond, x, y), or (cond, t) with one of the scalar
    attributes ``x`` / ``y`` in place of that side (torch ``scores.masked_fill(mask, -inf)`` is
    Where(x=-inf) on inputs (mask, scores)). +-inf is exact on every backend. All inputs
    broadcast (NumPy rule over the full shape). dL/dx = dL/dy where cond, else 0 (and dL/dy the
    rest); none to cond."""

    arity = (2, 3)
    input_kind = "any"
    batch_broadcast = "broadcasts"
    attrs = {"x": Attr("scalar", None, doc="the value where cond holds (instead of input 1)"),
             "y": Attr("scalar", None, doc="the value where cond fails (instead of input 2)")}

    def infer(self, a, inputs, where):
        k = len(inputs)
        given = sum(a[s] is not None for s in ("x", "y"))
        if given > 1 or k != 3 - given:
            raise self.fail(where, "inputs (cond, x, y), or (cond, t) with one scalar "
                            "attribute x or y", f"{k} inputs and {given} scalar attributes")
        if inputs[0].kind != "int":
            raise self.fail(where, "an int condition (0/1; Cast or compare first)",
                            f"a {inputs[0].kind} condition")
        if any(t.kind != "float" for t in inputs[1:]):
            raise self.fail(where, "float values", [t.kind for t in inputs[1:]])
        return TensorType(_broadcast_or_fail(self, inputs, where))

    def reference(self, a, p, xs, ctx):
        cond = xs[0] != 0
        if a["x"] is not None:
            return np.where(cond, a["x"], xs[1])
        if a["y"] is not None:
            return np.where(cond, xs[1], a["y"])
        return np.where(cond, xs[1], xs[2])


# --- Unary -------------------------------------------------------------------------------------
UNARY = {
    "neg": np.negative,
    "abs": np.abs,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "exp": np.exp,
    "log": np.log,
    "erf": _erf,
    "reciprocal": lambda x: 1.0 / x,
    "square": np.square,
    "tanh": np.tanh,
    "sigmoid": FUNCTIONS["sigmoid"],
    "sin": np.sin,
    "cos": np.cos,
}


@register
class Unary(OpDef):
    """y = f(x) elementwise. fn: neg -x; abs |x| (d/dx = sign(x), 0 at 0); sqrt; rsqrt
    1/sqrt(x); exp; log (natural); erf (2/sqrt(pi)) int_0^x e^(-t^2) dt; reciprocal 1/x; square
    x^2; tanh; sigmoid 1/(1+e^-x); sin; cos. Outside the domain (sqrt, rsqrt, log of x < 0) nan,
    at 0 +-inf, on every backend (IEEE)."""

    positional = ("fn",)
    attrs = {"fn": Attr("str", choices=tuple(UNARY))}

    def infer(self, a, inputs, where):
        return inputs[0]

    def reference(self, a, p, xs, ctx):
        return UNARY[a["fn"]](xs[0])


__all__ = ["broadcast_types", "broadcast_shape", "matmul_plan", "UNARY", "Binary"]
