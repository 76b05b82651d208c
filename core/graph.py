"""The model graph: a DAG of named nodes with shape inference at build time.

``Model(inputs, outputs)`` builds from the functional API, ``Sequential([...], input_shape=...)``
is sugar for a chain, and ``Graph.from_json`` rebuilds from the neutral JSON. Every path runs the
same validation (``Graph.__init__``), so a bad spec fails the same way however it was written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from rosetta.errors import DataError, SpecError
from rosetta.ops import REGISTRY, ParamDef, RefContext, TensorType, get_op

FORMAT = "rosetta/1"
MAX_ELEMENTS = 2 ** 31 - 1
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KINDS = ("float", "int")


def _check_name(name, where):
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(f"a name is letters, digits and '_', not starting with a digit; "
                        f"found {name!r}", where=where)
    return name


def _snake(op: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", op).lower()


@dataclass(frozen=True)
class InputDef:
    """A graph input: per-example shape and kind (``float`` follows the model dtype)."""

    name: str
    shape: tuple
    kind: str = "float"


@dataclass
class Node:
    """One op application. ``attrs`` are resolved (defaults filled); the rest is inferred."""

    name: str
    op: str
    attrs: dict
    inputs: tuple
    in_types: list = field(default_factory=list)
    out_type: TensorType | None = None
    params: dict = field(default_factory=dict)   # name -> ParamDef (trainable)
    state: dict = field(default_factory=dict)    # name -> ParamDef (non-trainable)

    @property
    def opdef(self):
        return REGISTRY[self.op]


class Graph:
    """A validated, shape-inferred model. Nodes are kept in a topological order."""

    def __init__(self, inputs: list[InputDef], nodes: list[Node], outputs: list[str],
                 name: str = "model"):
        self.name = _check_name(name, "model name")
        if not inputs:
            raise SpecError("a model needs at least one input", where=self.name)
        if not outputs:
            raise SpecError("a model needs at least one output", where=self.name)
        types: dict[str, TensorType] = {}
        for i in inputs:
            where = f"{self.name}/{i.name}"
            _check_name(i.name, f"{self.name}: input name")
            if i.kind not in _KINDS:
                raise SpecError(f"input kind must be one of {_KINDS}, found {i.kind!r}", where=where)
            if not all(isinstance(s, (int, np.integer)) and s > 0 for s in i.shape):
                raise SpecError(f"input shape must be positive integers (no batch axis), "
                                f"found {i.shape}", where=where)
            if i.name in types:
                raise SpecError("duplicate input name", where=where)
            types[i.name] = TensorType(tuple(int(s) for s in i.shape), i.kind)
        self.inputs = [InputDef(i.name, tuple(int(s) for s in i.shape), i.kind) for i in inputs]

        by_name: dict[str, Node] = {}
        for n in nodes:
            where = f"{self.name}/{n.name}"
            _check_name(n.name, f"{self.name}: node name")
            if n.name in by_name or n.name in types:
                raise SpecError("duplicate name (node and input names must be unique)", where=where)
            by_name[n.name] = n
        self.nodes = self._toposort(by_name, types)
        for n in self.nodes:
            self._infer(n, types)
        for o in outputs:
            if o not in types:
                raise SpecError(f"unknown output {o!r}; nodes: {list(by_name)}", where=self.name)
            if types[o].batch_broadcast:
                raise SpecError(f"output {o!r} depends on no model input (a batch-broadcast "
                                f"tensor of Constant/Parameter values): Expand it to the batch",
                                where=self.name)
        self.outputs = list(outputs)
        self.types = types
        self._lengths = self._find_lengths_inputs()   # read on every step: found once

    # --- validation -------------------------------------------------------------------------
    def _toposort(self, by_name, types):
        order, state = [], {}

        def visit(name, chain):
            if name in types:
                return
            if name not in by_name:
                raise SpecError(f"input {name!r} is neither a model input nor a node",
                                where=f"{self.name}/{chain[-1]}" if chain else self.name)
            if state.get(name) == 1:
                raise SpecError(f"cycle through {' -> '.join(chain + [name])}",
                                where=f"{self.name}/{name}")
            if state.get(name) == 2:
                return
            state[name] = 1
            for src in by_name[name].inputs:
                visit(src, chain + [name])
            state[name] = 2
            order.append(by_name[name])

        for name in by_name:
            visit(name, [])
        return order

    def _infer(self, n: Node, types):
        where = f"{self.name}/{n.name}"
        opdef = get_op(n.op, where)
        n.attrs = opdef.resolve_attrs(n.attrs, where)
        arity = opdef.arity
        k = len(n.inputs)
        if isinstance(arity, int) and k != arity:
            raise SpecError(f"expected {arity} input(s), found {k}", where=where, op=n.op)
        if isinstance(arity, tuple) and k < arity[0]:
            raise SpecError(f"expected at least {arity[0]} inputs, found {k}", where=where, op=n.op)
        n.in_types = [types[s] for s in n.inputs]
        for i, (s, t) in enumerate(zip(n.inputs, n.in_types)):
            if i == opdef.lengths_input:
                if t.kind != "int" or t.shape != ():
                    raise SpecError(f"input {i} holds sequence lengths: an int tensor of shape () "
                                    f"per example, found {t.kind} tensor {s!r} of shape "
                                    f"{t.shape}", where=where, op=n.op)
                continue
            if opdef.input_kind != "any" and t.kind != opdef.input_kind:
                raise SpecError(f"expected a {opdef.input_kind} input, found {t.kind} "
                                f"tensor {s!r}", where=where, op=n.op)
        n.out_type = self._batch_broadcast(opdef, n, opdef.infer(n.attrs, n.in_types, where),
                                           where)
        n.params = opdef.params(n.attrs, n.in_types)
        n.state = opdef.state(n.attrs, n.in_types)
        sized = [("output", n.out_type.shape)] + [(f"parameter {k!r}", d.shape)
                                                  for k, d in {**n.params, **n.state}.items()]
        for what, shape in sized:
            if int(np.prod(shape, dtype=np.float64)) > MAX_ELEMENTS:
                raise SpecError(f"{what} of shape {tuple(shape)} exceeds {MAX_ELEMENTS:,} "
                                f"elements (per example for outputs), the frameworks' int32 "
                                f"index limit", where=where, op=n.op)
        types[n.name] = n.out_type

    @staticmethod
    def _batch_broadcast(opdef, n: Node, out: TensorType, where: str) -> TensorType:
        """The one rule for batch-broadcast tensors (``TensorType.batch_broadcast``): the output
        of an op is batch-broadcast iff it has inputs and all of them are (an op without inputs,
        Constant or Parameter, says so itself; Expand's output has the batch of the run). What
        each op accepts is its ``batch_broadcast`` declaration (``OpDef``)."""
        flags = [t.batch_broadcast for t in n.in_types]
        mode = "refuses" if opdef.running_stats else opdef.batch_broadcast
        if any(flags):
            shared = [s for s, f in zip(n.inputs, flags) if f]
            if mode == "refuses":
                raise SpecError(f"input(s) {shared} are batch-broadcast (one example shared by the "
                                f"batch) and {n.op} needs a batch of its own (running statistics "
                                f"or a random mask per example): Expand them first",
                                where=where, op=n.op)
            if mode == "per_example" and not all(flags):
                raise SpecError(f"input(s) {shared} are batch-broadcast and the others are not; "
                                f"{n.op} does not broadcast the batch axis: Expand them first",
                                where=where, op=n.op)
        if not flags:
            return out
        bb = all(flags) and mode != "expands"
        return out if out.batch_broadcast == bb else replace(out, batch_broadcast=bb)

    def ancestors(self, names) -> set[str]:
        """The nodes ``names`` depend on, themselves included (model inputs excluded)."""
        by_name = {n.name: n for n in self.nodes}
        seen, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name in seen or name not in by_name:
                continue
            seen.add(name)
            todo.extend(by_name[name].inputs)
        return seen

    # --- parameters ---------------------------------------------------------------------------
    def param_defs(self) -> dict[str, ParamDef]:
        """Trainable parameters by stable path ``node/param``, in graph order."""
        return {f"{n.name}/{k}": d for n in self.nodes for k, d in n.params.items()}

    def state_defs(self) -> dict[str, ParamDef]:
        """Non-trainable state (BatchNorm running statistics) by path ``node/name``."""
        return {f"{n.name}/{k}": d for n in self.nodes for k, d in n.state.items()}

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        return {p: d.init.sample(d.shape, seed, p) for p, d in self.param_defs().items()}

    def initial_params(self, seed: int) -> "InitialValues":
        """The same values as ``init_params``, drawn one path at a time when read (each path's
        draw depends only on (seed, path)): a program that loads them holds one whole array at
        a time, not the whole model in float64 (what sharded parameters need)."""
        return InitialValues(self.param_defs(), seed)

    def init_state(self) -> dict[str, np.ndarray]:
        return {p: d.init.sample(d.shape, 0, p) for p, d in self.state_defs().items()}

    def param_count(self) -> int:
        return int(sum(np.prod(d.shape) for d in self.param_defs().values()))

    def flops_per_example(self) -> int:
        """Forward FLOPs per example (multiply-add = 2), from shape inference."""
        return int(sum(n.opdef.flops(n.attrs, n.in_types, n.out_type) for n in self.nodes))

    @property
    def output_type(self) -> TensorType:
        return self.types[self.outputs[0]]

    # --- the NumPy float64 reference --------------------------------------------------------
    def reference_forward(self, params: dict, inputs, *, state: dict | None = None,
                          training: bool = False, dropout_masks: dict | None = None,
                          rng: np.random.Generator | None = None):
        """Run the graph in NumPy float64. ``state`` (if given) is updated in place in training.

        Returns the single output, or a list when the graph has several.
        """
        inputs = self.as_input_dict(inputs)
        values = {k: (np.asarray(v, np.float64) if self.types[k].kind == "float"
                      else np.asarray(v)) for k, v in inputs.items()}
        state = state if state is not None else self.init_state()
        batch = len(next(iter(values.values())))
        for n in self.nodes:
            p = {k: np.asarray(params[f"{n.name}/{k}"], np.float64) for k in n.params}
            node_state = {k: state[f"{n.name}/{k}"] for k in n.state}
            ctx = RefContext(training=training, state=node_state,
                             dropout_mask=(dropout_masks or {}).get(n.name), rng=rng,
                             batch=batch)
            values[n.name] = n.opdef.reference(n.attrs, p, [values[s] for s in n.inputs], ctx)
            for k in n.state:
                state[f"{n.name}/{k}"] = ctx.state[k]
        outs = [values[o] for o in self.outputs]
        return outs[0] if len(outs) == 1 else outs

    def lengths_inputs(self) -> dict[str, int]:
        """{input name: T} for each model input some op reads as sequence lengths (the op's
        ``lengths_input``): valid lengths are 1..T, T the shortest sequence they measure."""
        return dict(self._lengths)

    def _find_lengths_inputs(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes:
            k = n.opdef.lengths_input
            if k is not None and k < len(n.inputs):
                t = n.in_types[n.opdef.lengths_measure].shape[0]
                out[n.inputs[k]] = min(out.get(n.inputs[k], t), t)
        return out

    def as_input_dict(self, inputs) -> dict:
        """Accept one array (single-input models), a list in input order, or a dict by name.
        Sequence lengths are checked here, once for every backend (``lengths_inputs``)."""
        names = [i.name for i in self.inputs]
        if isinstance(inputs, dict):
            missing = set(names) - set(inputs)
            if missing:
                raise SpecError(f"missing input(s) {sorted(missing)}", where=self.name)
            out = {k: inputs[k] for k in names}
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) != len(names):
                raise SpecError(f"expected {len(names)} inputs, found {len(inputs)}",
                                where=self.name)
            out = dict(zip(names, inputs))
        elif len(names) != 1:
            raise SpecError(f"this model has inputs {names}: pass a dict", where=self.name)
        else:
            out = {names[0]: inputs}
        for name, t in self._lengths.items():
            a = np.asarray(out[name])
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise DataError(f"input {name!r} holds sequence lengths: one integer per example, "
                                f"found dtype {a.dtype} and shape {a.shape}")
            if a.size and (a.min() < 1 or a.max() > t):
                raise DataError(f"input {name!r}: sequence lengths must be in [1, {t}], found "
                                f"values from {a.min()} to {a.max()}")
        return out

    # --- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "name": self.name,
            "inputs": [{"name": i.name, "shape": list(i.shape), "kind": i.kind}
                       for i in self.inputs],
            "nodes": [{"name": n.name, "op": n.op, "attrs": n.opdef.attrs_to_json(n.attrs),
                       "inputs": list(n.inputs)} for n in self.nodes],
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_json(cls, d, where: str = "$.model") -> "Graph":
        """Rebuild from ``to_json`` output. Only registry lookups: never executes code."""
        _expect(d, dict, where, "an object")
        fmt = d.get("format", FORMAT)
        if fmt != FORMAT:
            raise SpecError(f"unsupported format {fmt!r}; this rosetta reads {FORMAT!r}",
                            where=f"{where}.format")
        _expect_keys(d, {"format", "name", "inputs", "nodes", "outputs"}, where)
        inputs = []
        for i, item in enumerate(_expect(d.get("inputs"), list, f"{where}.inputs", "a list")):
            w = f"{where}.inputs[{i}]"
            _expect(item, dict, w, "an object")
            _expect_keys(item, {"name", "shape", "kind"}, w)
            shape = _expect(item.get("shape"), list, f"{w}.shape", "a list of integers")
            inputs.append(InputDef(item.get("name"), tuple(shape), item.get("kind", "float")))
        nodes = []
        for i, item in enumerate(_expect(d.get("nodes"), list, f"{where}.nodes", "a list")):
            w = f"{where}.nodes[{i}]"
            _expect(item, dict, w, "an object")
            _expect_keys(item, {"name", "op", "attrs", "inputs"}, w)
            op = item.get("op")
            if not isinstance(op, str):
                raise SpecError(f"'op' must be a string, found {op!r}", where=w)
            get_op(op, w)
            ins = _expect(item.get("inputs"), list, f"{w}.inputs", "a list of names")
            nodes.append(Node(item.get("name"), op,
                              dict(_expect(item.get("attrs", {}), dict, f"{w}.attrs", "an object")),
                              tuple(ins)))
        outputs = _expect(d.get("outputs"), list, f"{where}.outputs", "a list of names")
        return cls(inputs, nodes, outputs, name=d.get("name", "model"))

    def __eq__(self, other):
        return isinstance(other, Graph) and self.to_json() == other.to_json()

    def _repr_html_(self) -> str:
        """Jupyter: the layer table (``rosetta.display``)."""
        from rosetta.display import graph_html

        return graph_html(self)

    def summary(self) -> str:
        lines = [f"{self.name}: {self.param_count():,} parameters, "
                 f"{self.flops_per_example():,} FLOPs/example"]
        for i in self.inputs:
            lines.append(f"  {i.name:<20} Input          {i.shape}")
        for n in self.nodes:
            lines.append(f"  {n.name:<20} {n.op:<14} {n.out_type.shape}  <- {', '.join(n.inputs)}")
        return "\n".join(lines)


def _expect(value, typ, where, what):
    if not isinstance(value, typ):
        raise SpecError(f"expected {what}, found {type(value).__name__} {value!r}"[:200],
                        where=where)
    return value


def _expect_keys(d, allowed, where):
    unknown = set(d) - allowed
    if unknown:
        raise SpecError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}",
                        where=where)


# --- the functional API -------------------------------------------------------------------------

class Tensor:
    """A symbolic value in the functional API: a model input or the output of a layer call."""

    def __init__(self, source):
        self.source = source  # InputDef or _Call


@dataclass(eq=False)
class _Call:
    layer: "Layer"
    inputs: tuple


class Layer:
    """A configured op waiting to be called on tensors. Attributes are checked at construction."""

    def __init__(self, op: str, name: str | None = None, **attrs):
        where = f"layer {name or _snake(op)}"
        if name is not None:
            _check_name(name, where)
        self.op = op
        self.name = name
        self.attrs = get_op(op, where).resolve_attrs(attrs, where)

    def __call__(self, *inputs) -> Tensor:
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        for t in inputs:
            if not isinstance(t, Tensor):
                raise SpecError(f"layers are called on rosetta Tensors (from Input or another "
                                f"layer), found {type(t).__name__}", where=f"layer {self.op}")
        return Tensor(_Call(self, tuple(inputs)))

    def __repr__(self):
        return f"{self.op}({self.name or ''})"


def Input(shape, name: str = "x", kind: str = "float") -> Tensor:
    """A model input with per-example ``shape`` (no batch axis). ``kind`` is float or int."""
    return Tensor(InputDef(name, tuple(shape), kind))


def Model(inputs, outputs, name: str = "model") -> Graph:
    """Build a Graph from functional-API tensors. Unnamed layers get ``op``, ``op_1``, ... in
    graph order."""
    ins = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    outs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    calls, seen = [], {}

    def visit(t: Tensor):
        src = t.source
        if isinstance(src, InputDef):
            if not any(i.source is src for i in ins):
                raise SpecError(f"the graph reaches input {src.name!r}, which is not among the "
                                f"model inputs", where=name)
            return
        if id(src) in seen:
            return
        seen[id(src)] = src
        for parent in src.inputs:
            visit(parent)
        calls.append(src)

    for o in outs:
        visit(o)
    taken = {c.layer.name for c in calls if c.layer.name}
    counters: dict[str, int] = {}
    names = {}
    for c in calls:
        if c.layer.name:
            names[id(c)] = c.layer.name
            continue
        base = _snake(c.layer.op)
        while True:
            k = counters.get(base, 0)
            counters[base] = k + 1
            cand = base if k == 0 else f"{base}_{k}"
            if cand not in taken:
                break
        taken.add(cand)
        names[id(c)] = cand

    def ref(t: Tensor) -> str:
        return t.source.name if isinstance(t.source, InputDef) else names[id(t.source)]

    nodes = [Node(names[id(c)], c.layer.op, dict(c.layer.attrs), tuple(ref(t) for t in c.inputs))
             for c in calls]
    return Graph([t.source for t in ins], nodes, [ref(o) for o in outs], name=name)


def Sequential(layers: list, input_shape, name: str = "model", input_kind: str = "float",
               input_name: str = "x") -> Graph:
    """A chain of layers on one input."""
    x = Input(input_shape, name=input_name, kind=input_kind)
    y = x
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise SpecError(f"Sequential takes rosetta layers, found {type(layer).__name__}",
                            where=f"{name}[{i}]")
        y = layer(y)
    return Model(x, y, name=name)


class InitialValues(Mapping):
    """{path: initial array} drawn on each read (``Graph.initial_params``): never all held at
    once. Read-only; ``dict(values)`` draws them all."""

    def __init__(self, defs: dict[str, ParamDef], seed: int):
        self._defs, self._seed = defs, seed

    def __getitem__(self, path: str) -> np.ndarray:
        d = self._defs[path]
        return d.init.sample(d.shape, self._seed, path)

    def __iter__(self):
        return iter(self._defs)

    def __len__(self) -> int:
        return len(self._defs)
