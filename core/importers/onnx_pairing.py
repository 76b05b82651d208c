"""The exact map from an ONNX graph's initializers to the parameters of the torch model it was
exported from (``from_onnx(torch_module=...)``).

Both torch exporters store some parameters under new names and in another layout: TorchScript
writes a Linear's weight W (out, in) pre-transposed as ``onnx::MatMul_*`` = W^T; the dynamo
exporter as ``val_*`` = W^T, a tied weight under its other name (GPT-2's ``lm_head.weight``
for ``wte.weight``), and a position table read at constant positions folded into its rows
(``embedding_*`` = P[positions]). An initializer is paired with a parameter by value only,
never by closeness (an initializer under the parameter's own name, of its shape, pairs by
name first), in one of three exact ways (the exporter moves values without arithmetic):

* ``identity``: bitwise equal, same shape and dtype;
* ``transpose``: a 2-D initializer bitwise equal to W^T;
* ``rows``: a (T, D) or (1, T, D) initializer each of whose rows is bitwise equal to exactly
  one row of a 2-D parameter P (T, D): P[positions].

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
canonical values, gradients and optimizer state are the torch parameter's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Pairing:
    pairs: dict = field(default_factory=dict)      # initializer -> (parameter, how, positions)
    unpaired: dict = field(default_factory=dict)   # parameter -> why no initializer pairs


def _key(a: np.ndarray) -> tuple:
    a = np.ascontiguousarray(a)
    return (a.dtype.str, a.shape, a.tobytes())


def _exactly(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` in ``dtype`` where that holds every value exactly, else ``a`` as it is."""
    b = a.astype(dtype)
    return b if np.array_equal(b.astype(a.dtype), a, equal_nan=True) else a


def pair_initializers(model, tensors: dict) -> Pairing:
    """The exact pairing (see the module doc) of ``model``'s float initializers of more than
    one element with ``tensors`` ({torch parameter or buffer name: NumPy array}). An
    initializer named after a tensor of its shape and dtype pairs with it by name first, its
    values aside (the exporter kept the name; BatchNorm statistics at their defaults are equal
    to each other; the certificate sets random values on both sides anyway)."""
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
    rows: dict = {}   # row bytes -> [(parameter, row)]
    for name, a in tensors.items():
        if a.ndim == 2:
            for r in range(a.shape[0]):
                rows.setdefault(_key(a[r]), []).append((name, r))
    out = Pairing()
    equal: dict = {}   # parameter -> the parameters it cannot be told from
    # a tensor whose own initializer holds other values (changed since the export) pairs by
    # name only: another initializer equal to it now does not stand for it in the graph
    stale = {k for k, a in arrays.items() if k in tensors and _key(a) != _key(tensors[k])}
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
        if not cands and x.ndim in (2, 3) and (x.ndim == 2 or x.shape[0] == 1):
            r2 = x.reshape(-1, x.shape[-1])
            hits = [rows.get(_key(r), []) for r in r2]
            tables = {p for h in hits for p, _ in h}
            if all(len(h) == 1 for h in hits) and len(tables) == 1:
                pos = np.array([r for (_, r), in hits], np.int64).reshape(x.shape[:-1])
                cands = [(tables.pop(), "rows", pos)]
        cands = [c for c in cands if c[0] not in stale]
        if len({p for p, _, _ in cands}) == 1:
            out.pairs[init.name] = cands[0]
        elif cands:
            names = sorted({p for p, _, _ in cands})
            for p in names:
                equal.setdefault(p, set()).update(q for q in names if q != p)
    paired = {p for p, _, _ in out.pairs.values()}
    for p in tensors:
        if p in paired:
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
        if p not in inits and p not in add:
            add[p] = numpy_helper.from_array(np.asarray(tensors[p], dtype), p)
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


__all__ = ["Pairing", "pair_initializers", "torch_form"]
