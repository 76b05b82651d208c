"""The exact map from an ONNX graph's initializers to the parameters of the torch model it was
exported from (``from_onnx(torch_module=...)``).

Both torch exporters store some parameters under new names and in another layout: TorchScript
writes a Linear's weight W (out, in) pre-transposed as ``onnx::MatMul_*`` = W^T; the dynamo
exporter as ``val_*`` = W^T, a tied weight under its other name (GPT-2's ``lm_head.weight``
for ``wte.weight``), and a position table read at constant positions folded into its rows
(``embedding_*`` = P[positions]); both fold parameters read at constant positions (T5's and
BEiT's relative-position bias tables) or concatenated with zeros (timm's qkv bias) into
constants. An initializer is paired with a parameter by value only, never by closeness (an
initializer under the parameter's own name, of its shape, pairs by name first), in one of
these exact ways (the exporter moves values without arithmetic); gathered and concatenated
pair with the torch module's parameters only (``pair_initializers``'s ``parameters``):

* ``identity``: bitwise equal, same shape and dtype;
* ``transpose``: a 2-D initializer bitwise equal to W^T;
* ``gathered``: an initializer X each of whose elements is bitwise equal to exactly one
  element of one parameter P (and to no element of another), so X = P.flat[positions] for a
  constant integer array ``positions`` of X's shape: P read at constant indices along its first
  axis, then permuted or reshaped (T5's ``relative_attention_bias`` at its (T, T) buckets,
  permuted to (H, T, T); BEiT's ``relative_position_bias_table`` at its
  ``relative_position_index``). ``rows`` is its case of whole rows: a (T, D) or (1, T, D)
  initializer each of whose rows is one row of a 2-D P (D,): P[positions] (a position table
  folded at its positions), read through a Gather of the table's rows;
* ``concatenated``: an initializer bitwise equal to the concatenation, along one axis, of
  parameters and blocks of zeros (timm's ``cat(q_bias, zeros_like(k_bias), v_bias)``): the
  zero blocks are constants with a zero gradient, as in torch (``zeros_like`` is no parameter).

A value of X matching several elements of P (a table with two equal rows), or elements of
several parameters, is not ``gathered``: the pairing is unique or it is not made.

A pairing is unique or it is not made: an initializer that matches several parameters (equal
values: zero biases, untouched LayerNorm scales) pairs with none, and those parameters are
named as unpaired with the fix (give them distinct values before the export; the import sweep
adds noise to every parameter). Several initializers may pair with one parameter (a tied
weight, stored once as it is and once transposed).

``torch_form`` then rewrites a copy of the graph so that every paired parameter is one
initializer under its torch name in its torch layout, read through ``Transpose(perm=[1, 0])``
or ``Gather(axis=0)`` at constant positions where the exporter stored it transposed or by rows:
the graph computes the same function bitwise, the importer sees the parameter (a transposed one
as a Dense kernel in torch's ``linear`` layout, a tied one as one shared ``Parameter``), and
canonical values, gradients and optimizer state are the torch parameter's. A ``gathered`` or
``concatenated`` initializer stays in the graph as it is (``onnx.reference`` and onnxruntime run
it unchanged); the importer reads it as the tensor computed from its parameters (``derive``:
Gather of the flattened ``Parameter``, or Concatenate of ``Parameter``s and zero
``Constant``s, ``onnx_ops._derived_operand``), as it does a constant it folds itself from a
parameter (TorchScript's T5 Gather of the bias table at buckets computed from shapes). Each
torch parameter keeps one ``Parameter`` node, and its gradient is the sum over its uses, as
torch computes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Pairing:
    pairs: dict = field(default_factory=dict)      # initializer -> (parameter, how, positions)
    #                                               (concatenated: (parameters, how, Derived))
    unpaired: dict = field(default_factory=dict)   # parameter -> why no initializer pairs

    def params_of(self, x) -> tuple:
        """The parameters initializer ``x`` holds (several for a concatenation)."""
        p = self.pairs[x][0]
        return p if isinstance(p, tuple) else (p,)

    def derived(self) -> dict:
        """{initializer: its parameters} of the ``gathered`` and ``concatenated`` pairs, which
        the importer reads as computed tensors of them (``derive``)."""
        return {x: self.params_of(x) for x in self.derivations()}

    def derivations(self) -> dict:
        """{initializer: ``Derived``} of the ``gathered`` and ``concatenated`` pairs."""
        return {x: d for x, (_, how, d) in self.pairs.items()
                if how in ("gathered", "concatenated")}


@dataclass
class Derived:
    """How a constant is computed from parameters, bitwise: ``gathered``, X =
    P.flat[positions] (``params`` = (P,)); ``concatenated``, X = concat(parts, axis) with each
    part a parameter name or None (a block of zeros) of shape ``shapes[i]``."""

    kind: str
    params: tuple
    positions: np.ndarray | None = None
    axis: int = 0
    parts: tuple = ()
    shapes: tuple = ()
    ambiguous: tuple = ()    # parameters that matched but could not be told apart

    def compute(self, values: dict, dtype) -> np.ndarray:
        """The constant from the parameters' ``values`` ({name: array}): what the exporter
        folded, with other values (the certificate's random ones)."""
        if self.kind == "gathered":
            return np.asarray(values[self.params[0]], dtype).reshape(-1)[self.positions]
        return np.concatenate([np.zeros(s, dtype) if p is None else np.asarray(values[p], dtype)
                               for p, s in zip(self.parts, self.shapes)], self.axis)


def _key(a: np.ndarray) -> tuple:
    a = np.ascontiguousarray(a)
    return (a.dtype.str, a.shape, a.tobytes())


def _exactly(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` in ``dtype`` where that holds every value exactly, else ``a`` as it is."""
    if a.dtype == dtype:
        return a
    b = a.astype(dtype)
    return b if np.array_equal(b.astype(a.dtype), a, equal_nan=True) else a


def _bits(a: np.ndarray) -> np.ndarray:
    """The bit patterns of a float array (bitwise comparison: -0.0 is not 0.0)."""
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.dtype.itemsize}").reshape(-1)


def _gathered(x: np.ndarray, tensors: dict, cache: dict):
    """``Derived("gathered")`` where every element of ``x`` is bitwise one element of exactly
    one tensor (and of no other), an element no other element of it equals; ``Derived`` with
    ``ambiguous`` set where some tensors hold all the values but not uniquely; else None.
    ``x`` of one value repeated (a constant fill) is not gathered."""
    xb = _bits(x)
    if xb.size < 2 or (xb == xb[0]).all():
        return None
    hits, unsure = [], []
    for name, a in tensors.items():
        if a.dtype != x.dtype or a.size < 2:
            continue
        key = (name, a.dtype.str)   # (the caller's cache: one sort per tensor)
        if key not in cache:
            pb = _bits(a)
            order = np.argsort(pb, kind="stable")
            cache[key] = (order, pb[order])
        order, sb = cache[key]
        at = np.searchsorted(sb, xb)
        if (at >= sb.size).any() or (sb[np.minimum(at, sb.size - 1)] != xb).any():
            continue
        dup = (at + 1 < sb.size) & (sb[np.minimum(at + 1, sb.size - 1)] == xb)
        if dup.any():
            unsure.append(name)
        else:
            hits.append((name, order[at].reshape(x.shape).astype(np.int64)))
    if len(hits) == 1 and not unsure:
        return Derived("gathered", (hits[0][0],), positions=hits[0][1])
    if hits or unsure:
        return Derived("gathered", (), ambiguous=tuple(sorted([h for h, _ in hits] + unsure)))
    return None


def _concatenated(x: np.ndarray, tensors: dict):
    """``Derived("concatenated")`` where ``x`` is, along one axis, consecutive blocks each
    bitwise equal to exactly one tensor or all zeros (at least one tensor and two blocks);
    ``ambiguous`` set where a block equals several tensors; else None."""
    for axis in range(x.ndim):
        rest = x.shape[:axis] + x.shape[axis + 1:]
        # (a tensor of zeros is a zero block: timm's k_bias buffer, zeros_like's value)
        cands = {k: a for k, a in tensors.items() if a.dtype == x.dtype and a.ndim == x.ndim
                 and a.shape[:axis] + a.shape[axis + 1:] == rest and _bits(a).any()}
        if not cands:
            continue
        parts, shapes, at, ok = [], [], 0, True
        while at < x.shape[axis]:
            hit = [k for k, a in cands.items() if at + a.shape[axis] <= x.shape[axis]
                   and np.array_equal(_bits(np.take(x, range(at, at + a.shape[axis]), axis)),
                                      _bits(a))]
            if len(hit) > 1:
                return Derived("concatenated", (), ambiguous=tuple(sorted(hit)))
            if hit:
                parts.append(hit[0])
                shapes.append(cands[hit[0]].shape)
                at += cands[hit[0]].shape[axis]
                continue
            end = at
            while end < x.shape[axis] and not _bits(np.take(x, [end], axis)).any():
                end += 1
            if end == at:
                ok = False
                break
            parts.append(None)
            shapes.append(x.shape[:axis] + (end - at,) + x.shape[axis + 1:])
            at = end
        named = [p for p in parts if p is not None]
        if ok and named and len(parts) > 1 and len(set(named)) == len(named):
            return Derived("concatenated", tuple(named), axis=axis, parts=tuple(parts),
                           shapes=tuple(shapes))
    return None


def derive(x: np.ndarray, tensors: dict, cache: dict | None = None):
    """How the constant ``x`` is computed from ``tensors`` ({name: array}) bitwise, without
    arithmetic (see the module doc): a ``Derived`` (``gathered`` or ``concatenated``; with
    ``ambiguous`` set and no ``params`` where it matches but not uniquely), or None. Compared in
    ``x``'s float type where that holds a tensor exactly; ``cache`` (a dict the caller keeps
    for one set of tensors) holds each tensor's sorted bits across calls."""
    x = np.asarray(x)
    if x.dtype.kind != "f" or x.size < 2:
        return None
    tensors = {k: _exactly(np.asarray(v), x.dtype) for k, v in tensors.items()
               if np.asarray(v).dtype.kind == "f"}
    return _gathered(x, tensors, {} if cache is None else cache) or _concatenated(x, tensors)


def _rows(d: Derived, x: np.ndarray, tensors: dict):
    """The row positions of a ``gathered`` ``x`` of shape (T, D) or (1, T, D) whose every row
    is a whole row of its 2-D table (D,) in order (a position table folded at its positions),
    else None."""
    p = tensors[d.params[0]]
    if p.ndim != 2 or x.shape[-1] != p.shape[1] or not (x.ndim == 2 or (
            x.ndim == 3 and x.shape[0] == 1)):
        return None
    pos = d.positions.reshape(-1, p.shape[1])
    r, c = np.divmod(pos, p.shape[1])
    if (c != np.arange(p.shape[1])).any() or (r != r[:, :1]).any():
        return None
    return r[:, 0].reshape(x.shape[:-1])


def pair_initializers(model, tensors: dict, parameters=None) -> Pairing:
    """The exact pairing (see the module doc) of ``model``'s float initializers of more than
    one element with ``tensors`` ({torch parameter or buffer name: NumPy array}). An
    initializer named after a tensor of its shape and dtype pairs with it by name first, its
    values aside (the exporter kept the name; BatchNorm statistics at their defaults are equal
    to each other; the certificate sets random values on both sides anyway). ``parameters``
    (names among ``tensors``; None: all): the trainable ones, the only ones an initializer
    pairs with as gathered or concatenated (a buffer is no parameter of the spec)."""
    from onnx import numpy_helper

    # compared in the graph's float type where that holds a tensor exactly (a module made
    # float64 after a float32 export): never by rounding
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    floats = [a.dtype for a in arrays.values() if a.dtype.kind == "f"]
    if floats:
        dt = max(set(floats), key=floats.count)
        tensors = {k: _exactly(v, dt) for k, v in tensors.items()}
    by_value: dict = {}
    for name, a in tensors.items():
        by_value.setdefault(_key(a), []).append(name)
    out = Pairing()
    equal: dict = {}   # parameter -> the parameters it cannot be told from
    # a tensor whose own initializer holds other values (changed since the export) pairs by
    # name only: another initializer equal to it now does not stand for it in the graph
    stale = {k for k, a in arrays.items() if k in tensors and _key(a) != _key(tensors[k])}
    cache: dict = {}
    for init in model.graph.initializer:
        x = arrays[init.name]
        if x.dtype.kind != "f" or x.size <= 1:
            continue
        t = tensors.get(init.name)
        if t is not None and t.shape == x.shape:
            out.pairs[init.name] = (init.name, "identity", None)
            continue
        cands = [(p, "identity", None) for p in by_value.get(_key(x), [])]
        if x.ndim == 2:
            cands += [(p, "transpose", None) for p in by_value.get(_key(x.T), [])]
        if not cands:   # gathered (by rows: a position table) or concatenated
            d = derive(x, {k: v for k, v in tensors.items() if k not in stale and (
                parameters is None or k in parameters)}, cache)
            if d is not None and d.params:
                pos = _rows(d, x, tensors) if d.kind == "gathered" else None
                p = d.params[0] if d.kind == "gathered" else d.params
                cands = [(p, "rows", pos) if pos is not None else (p, d.kind, d)]
            elif d is not None:
                for p in d.ambiguous:
                    equal.setdefault(p, set()).update(q for q in d.ambiguous if q != p)
                    if len(d.ambiguous) == 1:
                        out.unpaired[p] = (f"{init.name} holds its values but some of them twice "
                                           f"(equal elements): give it distinct values before "
                                           f"the export")
        cands = [c for c in cands if c[0] not in stale]
        if len({p for p, _, _ in cands}) == 1:
            out.pairs[init.name] = cands[0]
        elif cands:
            names = sorted({p for p, _, _ in cands})
            for p in names:
                equal.setdefault(p, set()).update(q for q in names if q != p)
    paired = {q for x in out.pairs for q in out.params_of(x)}
    for p in tensors:
        if p in paired:
            out.unpaired.pop(p, None)
            continue
        if p in out.unpaired:
            continue
        if p in equal:
            out.unpaired[p] = (f"equal to {', '.join(sorted(equal[p]))}: give the parameters "
                               f"distinct values before the export")
        else:
            out.unpaired[p] = "no initializer holds its values"
    return out


def torch_form(model, pairing: Pairing, tensors: dict):
    """A copy of ``model`` in which each paired parameter is one initializer named and laid
    out as torch's, read through a Transpose or a Gather where the exporter stored it
    transposed or by rows (see the module doc); the function is bitwise the same."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    rename, front, drop, add = {}, [], set(), {}
    for x, (p, how, pos) in pairing.pairs.items():
        if x == p:
            continue
        dtype = numpy_helper.to_array(inits[x]).dtype
        for q in pairing.params_of(x):
            if q not in inits and q not in add:
                add[q] = numpy_helper.from_array(np.asarray(tensors[q], dtype), q)
        if how in ("gathered", "concatenated"):   # kept: the importer reads it as computed
            continue
        drop.add(x)
        if how == "identity":
            rename[x] = p
        elif how == "transpose":
            front.append(helper.make_node("Transpose", [p], [x], perm=[1, 0],
                                          name=f"rosetta_transpose/{x}"))
        else:
            idx = f"rosetta_positions/{x}"
            front.append(helper.make_node("Constant", [], [idx], name=idx,
                                          value=numpy_helper.from_array(pos, idx)))
            front.append(helper.make_node("Gather", [p, idx], [x], axis=0,
                                          name=f"rosetta_rows/{x}"))
    kept = [i for i in g.initializer if i.name not in drop]
    del g.initializer[:]
    g.initializer.extend(kept + list(add.values()))
    for node in g.node:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    inputs = [vi for vi in g.input if vi.name not in drop]
    del g.input[:]
    g.input.extend(inputs)
    nodes = front + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return m


__all__ = ["Derived", "Pairing", "derive", "pair_initializers", "torch_form"]
