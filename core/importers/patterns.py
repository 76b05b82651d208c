"""Written-out patterns of an imported graph mapped back to the one layer op they compute
(``fuse``), so that each backend lowers them to its native fused kernel (DESIGN section 12: a
pattern that is exactly one existing layer op is mapped to that op where the numbers are the
same). Every rewrite keeps the pattern's last node name, so readers of it are unchanged, and
drops the nodes only the pattern read.

* GELU, tanh form, as HuggingFace's ``NewGELUActivation`` (GPT-2's ``gelu_new``) and
  ``GELUTanh`` write it:  0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  = ``Activation(gelu, approximate="tanh")``, the same formula (x^3 computed as a power or a
  product: a rounding apart, far inside the float64 certificate's 1e-10).
* GELU, erf form:  0.5 x (1 + erf(x / sqrt 2))  (or x 0.5 ..., or x * (1/sqrt 2))
  = ``Activation(gelu, approximate="none")``.
* ``Dropout(rate=0)`` (HuggingFace's dropout modules at probability 0): the identity, removed.

The constants must match to 1e-12 relative (they are the same Python floats in the source);
anything else is left written out.
"""

from __future__ import annotations

import math

from rosetta.graph import Graph, Node

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
GELU_CUBIC = 0.044715


def _close(a, b) -> bool:
    return a is not None and abs(float(a) - b) <= 1e-12 * abs(b)


class _Matcher:
    def __init__(self, graph: Graph):
        self.by_name = {n.name: n for n in graph.nodes}
        self.uses: dict[str, int] = {}
        for n in graph.nodes:
            for i in n.inputs:
                self.uses[i] = self.uses.get(i, 0) + 1
        for o in graph.outputs:
            self.uses[o] = self.uses.get(o, 0) + 1

    def node(self, name, op, used_once=True):
        """The node ``name`` when it is an ``op`` read only by the pattern, else None."""
        n = self.by_name.get(name)
        if n is None or n.op != op or (used_once and self.uses.get(name, 0) != 1):
            return None
        return n

    def scaled(self, name, factor, op="Multiply"):
        """``x * factor`` (a Multiply by a constant) read once: (node, x) or None."""
        n = self.node(name, op)
        if n is None or len(n.inputs) != 1:
            return None
        c = n.attrs.get("constant")
        if op == "Multiply" and _close(c, factor):
            return n, n.inputs[0]
        if op == "Divide" and c is not None and not n.attrs.get("reverse") \
                and _close(1.0 / float(c), factor):
            return n, n.inputs[0]
        return None


def _one_plus(m: _Matcher, name, fn):
    """``1 + fn(...)`` read once: (the nodes, the activation's input) or None."""
    add = m.node(name, "Add")
    if add is None or len(add.inputs) != 1 or not _close(add.attrs.get("constant"), 1.0):
        return None
    act = m.node(add.inputs[0], "Activation") or m.node(add.inputs[0], "Unary")
    if act is None or act.attrs.get("fn") != fn:   # Activation(tanh), Unary(tanh / erf)
        return None
    return [add, act], act.inputs[0]


def _half_x_times(m: _Matcher, n: Node):
    """``n`` = (0.5 x) * rest or (x * rest) * 0.5 or 0.5 * (x * rest): yields (x, rest name,
    the nodes of the 0.5 part)."""
    if n.op != "Multiply":
        return
    if len(n.inputs) == 2:
        for a, rest in (n.inputs, n.inputs[::-1]):
            half = m.scaled(a, 0.5)
            if half is not None:
                yield half[1], rest, [half[0]]
    elif _close(n.attrs.get("constant"), 0.5):
        inner = m.node(n.inputs[0], "Multiply")
        if inner is not None and len(inner.inputs) == 2:
            for x, rest in (inner.inputs, inner.inputs[::-1]):
                yield x, rest, [inner]


def _gelu_tanh(m: _Matcher, n: Node):
    for x, rest, half in _half_x_times(m, n):
        found = _one_plus(m, rest, "tanh")
        if found is None:
            continue
        nodes, arg = found
        scaled = m.scaled(arg, SQRT_2_OVER_PI)
        if scaled is None:
            continue
        inner = m.node(scaled[1], "Add")
        if inner is None or len(inner.inputs) != 2 or x not in inner.inputs:
            continue
        cubic = inner.inputs[1] if inner.inputs[0] == x else inner.inputs[0]
        c = m.scaled(cubic, GELU_CUBIC)
        if c is None:
            continue
        power = m.node(c[1], "Power")
        if power is None or power.inputs != (x,) or not _close(power.attrs.get("constant"), 3.0) \
                or power.attrs.get("reverse"):
            continue
        return x, "tanh", half + nodes + [scaled[0], inner, c[0], power]
    return None


def _gelu_erf(m: _Matcher, n: Node):
    for x, rest, half in _half_x_times(m, n):
        found = _one_plus(m, rest, "erf")
        if found is None:
            continue
        nodes, arg = found
        scaled = m.scaled(arg, INV_SQRT_2) or m.scaled(arg, INV_SQRT_2, "Divide")
        if scaled is None or scaled[1] != x:
            continue
        return x, "none", half + nodes + [scaled[0]]
    return None


def fuse(graph: Graph) -> tuple[Graph, dict]:
    """``graph`` with the module doc's patterns mapped to their layer op, and a count of each
    rewrite (``{"gelu_tanh": 2, ...}``); the graph itself when nothing matched."""
    m = _Matcher(graph)
    gone: set[str] = set()
    replaced: dict[str, Node] = {}
    alias: dict[str, str] = {}
    counts: dict[str, int] = {}
    for n in reversed(graph.nodes):   # the last node of a pattern first
        if n.name in gone:
            continue
        if n.op == "Dropout" and n.attrs.get("rate") == 0.0 and n.name not in graph.outputs:
            alias[n.name] = n.inputs[0]
            gone.add(n.name)
            counts["dropout_0"] = counts.get("dropout_0", 0) + 1
            continue
        for kind, match in (("gelu_tanh", _gelu_tanh), ("gelu_erf", _gelu_erf)):
            found = match(m, n) if n.op == "Multiply" else None
            if found is None or any(p.name in gone for p in found[2]):
                continue
            x, approximate, inner = found
            replaced[n.name] = Node(n.name, "Activation",
                                    {"fn": "gelu", "approximate": approximate}, (x,))
            gone.update(p.name for p in inner)
            counts[kind] = counts.get(kind, 0) + 1
            break
    if not counts:
        return graph, counts

    def resolve(name):
        while name in alias:
            name = alias[name]
        return name

    nodes = []
    for n in graph.nodes:
        if n.name in gone:
            continue
        n = replaced.get(n.name, n)
        nodes.append(Node(n.name, n.op, dict(n.attrs), tuple(resolve(i) for i in n.inputs)))
    return Graph(graph.inputs, nodes, graph.outputs, name=graph.name), counts
