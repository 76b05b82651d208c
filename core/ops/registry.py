"""The op registry: every op declared once, as data.

An op declares its attributes (type, default, check), its parameters and state with canonical shapes
and default initializers, shape inference, its math (the class docstring) and a NumPy float64
reference forward, the oracle every backend is held to. Shapes here never include the batch axis.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from rosetta.errors import SpecError
from rosetta.initializers import Initializer, as_initializer

REQUIRED = object()

Shape = tuple  # per-example shape (no batch axis)


@dataclass(frozen=True)
class TensorType:
    """What flows along an edge: a per-example shape and a kind, ``float`` or ``int``.

    ``batch_broadcast``: the tensor's batch axis has size 1, not the batch size N of the run: its
    full shape is (1, *shape), one value shared by every example. Constant and Parameter make such
    tensors, and an op whose inputs all are batch-broadcast makes one (the graph sets the flag,
    ``Graph._infer``). An op that mixes them with batched inputs must broadcast the batch axis
    (``OpDef.batch_broadcast``); Expand brings one to the batch of the run. A model output is
    never batch-broadcast.
    """

    shape: tuple
    kind: str = "float"
    batch_broadcast: bool = False


@dataclass(frozen=True)
class ParamDef:
    """A parameter or state array: canonical shape and initializer.

    ``zero_grad_rows``: indices along axis 0 whose gradient is zero by definition although the
    forward reads them (Embedding's ``padding_idx``, torch's padding row). The finite-difference
    oracle takes their derivative as exactly 0 instead of differencing the reference forward;
    optimizers still apply weight decay to them, as torch does."""

    shape: tuple
    init: Initializer
    trainable: bool = True
    zero_grad_rows: tuple = ()


@dataclass
class RefContext:
    """What a reference forward may need beyond its inputs.

    ``state`` holds the node's state arrays (BatchNorm running statistics) and is updated in place
    in training mode. ``dropout_mask`` is the keep-mask (0/1) to apply, when one is injected.
    """

    training: bool = False
    state: dict = field(default_factory=dict)
    dropout_mask: Any = None
    rng: Any = None
    batch: int | None = None   # N, the batch size of the run (Expand of a batch-broadcast input)


def _check_int(v, where, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise SpecError(f"attribute {name!r} must be an integer, found {v!r}", where=where)
    return int(v)


def _check_float(v, where, name):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise SpecError(f"attribute {name!r} must be a number, found {v!r}", where=where)
    return float(v)


@dataclass(frozen=True)
class Attr:
    """One attribute of an op.

    kind: ``int``, ``float``, ``bool``, ``str`` (one of ``choices``), ``ints`` (a tuple of ``n``
    ints; a single int is repeated), ``shape`` (a tuple of ints, -1 allowed once), ``padding``
    (``valid``, ``same`` or ``n`` explicit (lo, hi) pairs), ``init`` (an initializer),
    ``optional_float`` (a number or None), ``pairs`` (any number of (lo, hi) int pairs, each
    >= 0), ``indices`` (an int, or a nested list of ints of one rectangular shape), ``scalar``
    (a number, +-inf allowed, written ``"inf"`` / ``"-inf"`` in JSON; or None when the default
    is None), ``array`` (a NumPy array, float64 or int64; JSON ``{"dtype", "shape", "data"}``,
    non-finite floats as strings).
    """

    kind: str
    default: Any = REQUIRED
    choices: tuple = ()
    n: int = 0
    check: Callable[[Any], str | None] | None = None
    doc: str = ""

    def normalize(self, value, where: str, name: str):
        k = self.kind
        if value is None and self.default is None:
            return None  # an optional attribute left unset
        if k == "int":
            v = _check_int(value, where, name)
        elif k == "float":
            v = _check_float(value, where, name)
        elif k == "optional_float":
            v = None if value is None else _check_float(value, where, name)
        elif k == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise SpecError(f"attribute {name!r} must be true or false, found {value!r}",
                                where=where)
            v = bool(value)
        elif k == "str":
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise SpecError(f"attribute {name!r} must be one of {list(self.choices)}, "
                                f"found {value!r}", where=where)
            v = value
        elif k == "ints":
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                value = (int(value),) * self.n
            if not isinstance(value, (list, tuple)) or len(value) != self.n:
                raise SpecError(f"attribute {name!r} must be an integer or {self.n} integers, "
                                f"found {value!r}", where=where)
            v = tuple(_check_int(x, where, name) for x in value)
        elif k == "shape":
            if not isinstance(value, (list, tuple)):
                raise SpecError(f"attribute {name!r} must be a list of integers, found {value!r}",
                                where=where)
            v = tuple(_check_int(x, where, name) for x in value)
        elif k == "padding":
            v = _normalize_padding(value, self.n, where, name)
        elif k == "pairs":
            v = _normalize_pairs(value, where, name)
        elif k == "indices":
            v = _normalize_indices(value, where, name)
        elif k == "init":
            v = as_initializer(value, where=f"{where}.{name}")
        elif k == "scalar":
            v = _normalize_scalar(value, where, name)
        elif k == "array":
            v = _normalize_array(value, where, name)
        else:  # pragma: no cover - a registry bug, not user input
            raise AssertionError(f"unknown attribute kind {k}")
        if self.check is not None:
            problem = self.check(v)
            if problem:
                raise SpecError(f"attribute {name!r} {problem}, found {v!r}", where=where)
        return v

    def to_json(self, value):
        if self.kind == "init":
            return value.to_json()
        if self.kind == "scalar":
            return _scalar_json(value)
        if self.kind == "array":
            return {"dtype": value.dtype.name, "shape": list(value.shape),
                    "data": [_scalar_json(v) for v in value.ravel().tolist()]}
        if self.kind == "padding" and not isinstance(value, str):
            return [list(p) for p in value]
        if self.kind in ("pairs", "indices"):
            return _nested_lists(value)
        if isinstance(value, tuple):
            return list(value)
        return value


def _nested_lists(value):
    return [_nested_lists(v) for v in value] if isinstance(value, tuple) else value


def _normalize_pairs(value, where, name):
    """Any number of (lo, hi) pairs of ints >= 0, as a tuple of tuples."""
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2
        and all(not isinstance(x, bool) and isinstance(x, (int, np.integer)) and x >= 0
                for x in p) for p in value)
    if not ok:
        raise SpecError(f"attribute {name!r} must be a list of (lo, hi) pairs of integers >= 0, "
                        f"found {value!r}", where=where)
    return tuple((int(lo), int(hi)) for lo, hi in value)


def _normalize_indices(value, where, name):
    """An int, or a rectangular nested list of ints (at least one), as nested tuples."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    try:
        arr = np.asarray(value)
    except ValueError:
        arr = None
    if (arr is None or arr.ndim == 0 or arr.size == 0
            or not (np.issubdtype(arr.dtype, np.integer))):
        raise SpecError(f"attribute {name!r} must be an integer or a rectangular nested list "
                        f"of integers, found {value!r}", where=where)

    def nest(a):
        return tuple(nest(x) for x in a) if a.ndim else int(a)
    return nest(arr)


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf}


def _scalar_json(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _normalize_scalar(value, where, name):
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    v = _check_float(value, where, name)
    if math.isnan(v):
        raise SpecError(f"attribute {name!r} must be a number or +-inf, found nan", where=where)
    return v


def _normalize_array(value, where, name):
    """An array attribute (Constant's value): any array-like, or the JSON form
    {"dtype": "float64" | "int64", "shape": [...], "data": [flat values]}. Floats become
    float64 and integers/booleans int64; the result is read-only."""
    if isinstance(value, dict):
        if set(value) != {"dtype", "shape", "data"} or value["dtype"] not in ("float64", "int64"):
            raise SpecError(f"attribute {name!r}: the JSON form is {{'dtype': 'float64' | "
                            f"'int64', 'shape': [...], 'data': [...]}}, found keys "
                            f"{sorted(value)}", where=where)
        data = [_NON_FINITE.get(v, v) if isinstance(v, str) else v for v in value["data"]]
        try:
            arr = np.asarray(data, dtype=value["dtype"]).reshape(value["shape"])
        except (TypeError, ValueError) as e:
            raise SpecError(f"attribute {name!r}: data does not fit dtype {value['dtype']} and "
                            f"shape {value['shape']} ({e})", where=where) from None
    else:
        arr = np.asarray(value)
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
        if np.isnan(arr).any():
            raise SpecError(f"attribute {name!r} holds nan (not a value any op can compare "
                            f"or reproduce)", where=where)
    else:
        raise SpecError(f"attribute {name!r} must be an array of numbers, found dtype "
                        f"{arr.dtype}", where=where)
    arr = np.array(arr, order="C")
    arr.setflags(write=False)
    return arr


def _normalize_padding(value, n, where, name):
    if isinstance(value, str):
        if value not in ("valid", "same"):
            raise SpecError(f"attribute {name!r} must be 'valid', 'same' or {n} (lo, hi) pairs, "
                            f"found {value!r}", where=where)
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise SpecError(f"attribute {name!r}: padding must be >= 0, found {value}",
                            where=where)
        return tuple((int(value), int(value)) for _ in range(n))
    if isinstance(value, (list, tuple)) and len(value) == n:
        pairs = []
        for p in value:
            if isinstance(p, (int, np.integer)) and not isinstance(p, bool):
                p = (p, p)
            if (not isinstance(p, (list, tuple)) or len(p) != 2
                    or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0
                           for x in p)):
                raise SpecError(f"attribute {name!r}: each padding entry is a non-negative int or "
                                f"a (lo, hi) pair, found {p!r}", where=where)
            pairs.append((int(p[0]), int(p[1])))
        return tuple(pairs)
    raise SpecError(f"attribute {name!r} must be 'valid', 'same' or {n} (lo, hi) pairs, "
                    f"found {value!r}", where=where)


def positive(v):
    vals = v if isinstance(v, tuple) else (v,)
    return None if all(x > 0 for x in vals) else "must be positive"


def non_negative(v):
    return None if v >= 0 else "must be >= 0"


def unit_interval(v):
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


class OpDef:
    """Base of an op declaration. Subclasses set ``attrs`` and override the methods they need.

    ``arity`` is the number of inputs, or ``(minimum, None)`` for variadic ops.
    ``positional`` names the attributes the layer constructor takes positionally, in order
    (``rosetta.Dense(10)`` is ``units=10``); every other attribute is keyword-only.
    ``input_kind`` is the kind of tensor the op accepts (``float``, ``int``, or ``any`` for
    layout-only ops whose output keeps the input's kind).
    """

    name: str = ""
    attrs: dict[str, Attr] = {}
    positional: tuple[str, ...] = ()
    arity: Any = 1
    input_kind: str = "float"
    # index of an optional int input of per-example shape () holding sequence lengths in
    # [1, T], T = axis 0 of input ``lengths_measure`` (attention: the keys); or None. Lengths
    # are checked once in ``Graph.as_input_dict``; samplers draw valid ones.
    lengths_input: int | None = None
    lengths_measure: int = 0
    # True for an op whose state is running statistics ``mean`` and ``var`` folded in training
    # as state <- momentum * state + (1 - momentum) * batch statistic (attribute ``momentum``):
    # a backend that folds them outside the model (mxnet) finds such nodes by this flag
    running_stats: bool = False
    # How the op treats batch-broadcast inputs (``TensorType.batch_broadcast``):
    # ``per_example`` (default): all inputs batch-broadcast -> so is the output (the op computes
    #   each example alone, so one shared example gives one shared result); a mix is refused;
    # ``broadcasts``: NumPy broadcasting over the full shape, batch axis included (the output is
    #   batch-broadcast only when every input is);
    # ``expands``: the output has the batch of the run (Expand);
    # ``refuses``: no batch-broadcast input (ops with running statistics or random masks).
    batch_broadcast: str = "per_example"

    # --- declarations -------------------------------------------------------------------------
    def infer(self, a: dict, inputs: list[TensorType], where: str) -> TensorType:
        raise NotImplementedError(f"op {self.name} declares no shape inference")  # registry bug

    def params(self, a: dict, inputs: list[TensorType]) -> dict[str, ParamDef]:
        return {}

    def state(self, a: dict, inputs: list[TensorType]) -> dict[str, ParamDef]:
        return {}

    def reference(self, a: dict, p: dict, xs: list[np.ndarray], ctx: RefContext) -> np.ndarray:
        """NumPy float64 forward of a batch (inputs and output carry the batch axis)."""
        raise NotImplementedError(f"op {self.name} declares no reference")  # registry bug

    def dropout_mask_shape(self, a: dict, inputs: list[TensorType], out: TensorType):
        """The per-example shape of the keep-mask this op draws in training (conformance mode
        injects one of this shape, with the batch axis, as ``RefContext.dropout_mask``), or None
        for an op without dropout (or with rate 0)."""
        return None

    def flops(self, a: dict, inputs: list[TensorType], out: TensorType) -> int:
        """Multiply-adds counted as 2 FLOPs, per example, forward pass only."""
        return int(np.prod(out.shape))

    # --- helpers ------------------------------------------------------------------------------
    def resolve_attrs(self, given: dict, where: str) -> dict:
        """Check names and types, fill defaults; the result is what the JSON stores."""
        unknown = set(given) - set(self.attrs)
        if unknown:
            raise SpecError(f"unknown attribute(s) {sorted(unknown)}; {self.name} takes "
                            f"{sorted(self.attrs)}", where=where, op=self.name)
        out = {}
        for key, attr in self.attrs.items():
            if key in given:
                try:
                    out[key] = attr.normalize(given[key], where, key)
                except SpecError as e:
                    raise SpecError(e.detail, where=where, op=self.name) from None
            elif attr.default is REQUIRED:
                raise SpecError(f"missing required attribute {key!r}", where=where, op=self.name)
            else:
                out[key] = attr.default
        return out

    def attrs_to_json(self, a: dict) -> dict:
        return {k: self.attrs[k].to_json(v) for k, v in a.items()}

    def fail(self, where: str, expected: str, found) -> SpecError:
        return SpecError(f"expected {expected}, found {found}", where=where, op=self.name)


REGISTRY: dict[str, OpDef] = {}


def register(cls):
    """Class decorator: declare an op (its name is the class name) in the registry.

    This is also how a user declares an op of their own, outside the package::

        import numpy as np
        from rosetta.ops import Attr, OpDef, register

        @register
        class Scale(OpDef):
            '''y = x * factor'''
            attrs = {"factor": Attr("float")}
            positional = ("factor",)

            def infer(self, a, inputs, where):
                return inputs[0]

            def reference(self, a, p, xs, ctx):
                return xs[0] * a["factor"]

    then one lowering per backend it should run on (``rosetta.backends.<name>.lowering.lowers``)
    and ``rosetta.graph.Layer("Scale", factor=2.0)`` in a model. Parameters and state are declared
    by ``params`` / ``state`` (canonical shapes and initializers), as the built-in ops do.
    """
    if not (isinstance(cls, type) and issubclass(cls, OpDef)):
        raise TypeError(f"@register takes an OpDef subclass, found {cls!r}")
    inst = cls()
    inst.name = cls.__name__
    # the precision sentence is generated from the one table (rosetta.precision.sentence)
    from rosetta.precision import sentence

    doc = inspect.cleandoc(cls.__doc__ or f"The {inst.name} op.")
    inst.__doc__ = cls.__doc__ = f"{doc}\n\n{textwrap.fill(sentence(inst.name), 90)}"
    if inst.name in REGISTRY:
        raise ValueError(f"op {inst.name} is already registered; pick another class name")
    missing = [p for p in inst.positional if p not in inst.attrs]
    if missing:
        raise ValueError(f"op {inst.name}: positional {missing} are not among its attributes "
                         f"{sorted(inst.attrs)}")
    REGISTRY[inst.name] = inst
    return cls


class LoweringTable(dict):
    """One backend's lowerings, {op name: lowering}, filled by that backend's ``lowers``
    decorator (``register``); lowering an op twice is a bug in the lowering code, not user
    input, and raises at import."""

    def __init__(self, owner: str):
        super().__init__()
        self.owner = owner  # "the jax backend", "the keras export": how errors name it

    def register(self, ops: tuple, make: Callable = lambda lower: lower):
        """A decorator that stores ``make(lower)`` for every op in ``ops``."""
        def decorate(lower):
            for op in ops:
                if op in self:
                    raise ValueError(f"{self.owner} already lowers op {op!r}")
                self[op] = make(lower)
            return lower
        return decorate


def get_op(name: str, where: str = "") -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise SpecError(f"unknown op {name!r}; known ops: {', '.join(sorted(REGISTRY))}",
                        where=where) from None
