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
* Attention written out, as HuggingFace's ``eager_attention_forward`` and timm's non-fused path
  write it: MatMul(q, k^T) -> [Multiply(c) or Divide(c)] -> [Add(float mask) or
  Where(keep, s, -inf)] -> Softmax(last axis) -> [Dropout(0)] -> MatMul(., v)
  = ``DotProductAttention(scale=c or 1/c or 1.0)`` on (q, k, v[, mask]). k^T is a Transpose read
  only here (its perm is turned into k's: the last two axes swapped back), or any tensor (a
  Transpose swapping its last two axes is added). The same math: the scale multiplies the
  scores (a Divide by c becomes a product by 1/c, a rounding apart, as the GELU's cube), the
  float mask is added, the int mask keeps where != 0. The op gives a row that keeps no key
  weights 0 where the written-out softmax gives nan; a Constant mask with such a row is left
  written out, and a computed mask is a model whose every score of a row is -inf (no source
  trains through the nan that row gives). Attention with dropout > 0 on its weights (a mask
  the op does not draw), a scale applied elsewhere than to the scores, or a softmax over
  another axis is left written out.

The constants must match to 1e-12 relative (they are the same Python floats in the source);
anything else is left written out.
"""

from __future__ import annotations

import math

import numpy as np

from rosetta.graph import Graph, Node
from rosetta.ops.math import broadcast_types
from rosetta.ops.registry import TensorType

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
GELU_CUBIC = 0.044715


def _close(a, b) -> bool:
    return a is not None and abs(float(a) - b) <= 1e-12 * abs(b)


class _Matcher:
    def __init__(self, graph: Graph):
        self.by_name = {n.name: n for n in graph.nodes}
        self.inputs = {i.name: TensorType(tuple(i.shape), i.kind) for i in graph.inputs}
        self.uses: dict[str, int] = {}
        for n in graph.nodes:
            for i in n.inputs:
                self.uses[i] = self.uses.get(i, 0) + 1
        for o in graph.outputs:
            self.uses[o] = self.uses.get(o, 0) + 1

    def type(self, name):
        """The inferred type of node or graph input ``name``."""
        n = self.by_name.get(name)
        return self.inputs.get(name) if n is None else n.out_type

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


def _softmax_last(n: Node) -> bool:
    """``n`` is a softmax over its last axis (the Softmax op or Activation('softmax'))."""
    if not (n.op == "Softmax" or (n.op == "Activation" and n.attrs.get("fn") == "softmax")):
        return False
    rank, axis = len(n.out_type.shape), n.attrs.get("axis")
    return rank > 0 and (-1 if axis is None else axis) % rank == rank - 1


def _dead_rows(value, keep: bool) -> bool:
    """Whether a Constant mask has a row that keeps no key (every score -inf after it)."""
    v = np.asarray(value)
    alive = (v != 0) if keep else (v != -np.inf)
    return bool(v.ndim and not np.all(np.any(alive, axis=-1)))


def _attention(m: _Matcher, n: Node):
    """``n`` = MatMul(w, v), w the softmax of (scaled, masked) q k^T (the module doc): (the
    op's attributes, its inputs as (q, k-or-None, kt, v, mask), the nodes the pattern drops, the
    k^T Transpose replaced or None) or None."""
    if n.op != "MatMul" or len(n.inputs) != 2:
        return None
    w_name, v = n.inputs
    dropped = []
    drop = m.node(w_name, "Dropout")
    if drop is not None:
        if drop.attrs.get("rate") != 0.0:
            return None
        dropped.append(drop)
        w_name = drop.inputs[0]
    sm = m.by_name.get(w_name)
    if sm is None or m.uses.get(w_name, 0) != 1 or not _softmax_last(sm):
        return None
    dropped.append(sm)
    s_name, mask, mask_kind = sm.inputs[0], None, None
    add = m.node(s_name, "Add")
    where = m.node(s_name, "Where")
    if add is not None and len(add.inputs) == 2 and add.attrs.get("constant") is None:
        dropped.append(add)
        s_name, mask = None, None
        for a, b in (add.inputs, add.inputs[::-1]):   # the scores: the MatMul's side
            if _scores(m, a) is not None:
                s_name, mask = a, b
                break
        if s_name is None:
            return None
        mask_kind = "float"
    elif where is not None and len(where.inputs) == 2 and where.attrs.get("x") is None \
            and where.attrs.get("y") == -np.inf:
        dropped.append(where)
        mask, s_name, mask_kind = where.inputs[0], where.inputs[1], "keep"
    found = _scores(m, s_name)
    if found is None:
        return None
    scale, qk, scaled = found
    dropped += [qk] + scaled
    q, kt = qk.inputs
    tq, tkt, tv = m.type(q), m.type(kt), m.type(v)
    if tq is None or tkt is None or tv is None:
        return None
    if min(len(tq.shape), len(tkt.shape), len(tv.shape)) < 2 or any(
            t.batch_broadcast or t.kind != "float" for t in (tq, tkt, tv)):
        return None
    if not (tq.shape[:-2] == tkt.shape[:-2] == tv.shape[:-2]) or tkt.shape[-2] != tq.shape[-1] \
            or tv.shape[-2] != tkt.shape[-1]:
        return None
    scores = qk.out_type.shape
    if mask is not None:
        tm = m.type(mask)
        if tm is None or (tm.kind == "int") != (mask_kind == "keep") \
                or broadcast_types([tm, TensorType(scores)]) != scores:
            return None
        const = m.by_name.get(mask)
        if const is not None and const.op == "Constant" and _dead_rows(
                const.attrs["value"], mask_kind == "keep"):
            return None
    transpose = m.node(kt, "Transpose")
    attrs = {"scale": scale, "causal": False}
    return attrs, (q, kt, v, mask), dropped, transpose


def _scores(m: _Matcher, name):
    """``name`` = [c *] MatMul(q, kt) or MatMul(q, kt) / c, read once: (scale, the MatMul, the
    scale's nodes) or None."""
    for op, factor in (("Multiply", None), ("Divide", None)):
        n = m.node(name, op)
        if n is None or len(n.inputs) != 1 or n.attrs.get("constant") is None:
            continue
        c = float(n.attrs["constant"])
        if op == "Divide":
            if n.attrs.get("reverse") or c == 0.0:
                return None
            c = 1.0 / c
        qk = m.node(n.inputs[0], "MatMul")
        if qk is None or len(qk.inputs) != 2:
            return None
        return c, qk, [n]
    qk = m.node(name, "MatMul")
    if qk is None or len(qk.inputs) != 2:
        return None
    return 1.0, qk, []


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
        found = _attention(m, n) if n.op == "MatMul" else None
        if found is not None and not any(p.name in gone for p in found[2]):
            attrs, (q, kt, v, mask), inner, transpose = found
            qk = next(p for p in inner if p.op == "MatMul")
            rank = len(m.type(kt).shape)
            swap = tuple(range(rank - 2)) + (rank - 1, rank - 2)
            if transpose is not None:   # k^T = Transpose(x, perm): k = Transpose(x, perm')
                perm = tuple(transpose.attrs["perm"])
                replaced[transpose.name] = Node(transpose.name, "Transpose",
                                                {"perm": perm[:-2] + (perm[-1], perm[-2])},
                                                transpose.inputs)
                k = transpose.name
            else:                       # k = Transpose(k^T) in the scores MatMul's place
                replaced[qk.name] = Node(qk.name, "Transpose", {"perm": swap}, (kt,))
                k = qk.name
                inner = [p for p in inner if p is not qk]
            replaced[n.name] = Node(n.name, "DotProductAttention", attrs,
                                    (q, k, v) + (() if mask is None else (mask,)))
            gone.update(p.name for p in inner)
            counts["attention"] = counts.get("attention", 0) + 1
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
        if n.name in gone and n.name not in replaced:
            continue
        n = replaced.get(n.name, n)
        nodes.append(Node(n.name, n.op, dict(n.attrs), tuple(resolve(i) for i in n.inputs)))
    return Graph(graph.inputs, nodes, graph.outputs, name=graph.name), counts


def same_values(before: Graph, after: Graph) -> set[str]:
    """The names of ``after``'s nodes (``fuse(before)``) whose output is the output of
    ``before``'s node of that name: the nodes ``fuse`` left alone (a reader of a removed
    Dropout(0) included: it reads the same values), and the last node of each mapped pattern
    (the layer op in its place). Not the node ``fuse`` turned into k where it held k^T (a
    Transpose with other axes, or the scores MatMul made a Transpose)."""
    old = {n.name: n for n in before.nodes}
    kept = {n.name for n in after.nodes}
    alias = {n.name: n.inputs[0] for n in before.nodes
             if n.name not in kept and n.op == "Dropout" and n.attrs.get("rate") == 0.0}

    def resolve(name):
        while name in alias:
            name = alias[name]
        return name

    out = set()
    for n in after.nodes:
        o = old.get(n.name)
        if o is None:
            continue
        same = (n.op == o.op   # attributes compared as the spec's JSON compares them
                and n.opdef.attrs_to_json(n.attrs) == o.opdef.attrs_to_json(o.attrs)
                and tuple(n.inputs) == tuple(resolve(i) for i in o.inputs))
        if same or (n.op != o.op and n.op in _PATTERN_OPS):
            out.add(n.name)
    return out


_PATTERN_OPS = ("DotProductAttention", "Activation")   # the ops a pattern's last node becomes


def note(fused: dict | None) -> str | None:
    """The import note that names the rewrites ``fuse`` counted, or None."""
    if not fused:
        return None
    return ("written-out patterns mapped to one layer op (rosetta.importers.patterns): "
            + ", ".join(f"{k} x{v}" for k, v in sorted(fused.items())))
