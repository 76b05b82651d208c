"""Constant folding of a ``torch.export`` graph (docs/design.md section 12).

A call whose every tensor input is a constant (a buffer, a constant lifted by ``torch.export``,
or another folded call), or that has no tensor input at all (``arange``, ``ones``, ``full``,
``scalar_tensor``), does not depend on the model input: it is evaluated once at import, by torch
itself on the module's own arrays (float64 for a float64 module), and held as its value
(``Folded``). Position ids, causal masks from ``triu``/``tril``, ``torch.finfo(dtype).min``
fills, token-type zeros and RoPE's cos/sin tables all fold this way, so they need no spec op of
their own.

``torch.export`` captures static shapes: every size in the graph is the example input's, so a
folded mask has the example's sequence length and the imported spec takes exactly that length
(its input shape is fixed). Random calls (dropout, ``rand``) and in-place updates of buffers
(BatchNorm's counters) never fold.

A folded value reaches a computing call as a ``Constant`` node (``as_value``): a 0-d value as a
Python number (the op's scalar attribute), any other right-aligned to the rank of the call's
other operands (torch's broadcasting) with its first axis the batch axis: of size 1 (shared by
every example), or of the example's batch size with every row equal (``zeros(batch, T)``, which
then is shared as one row); rows that differ per example are refused (the spec's constants are
one array for every batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rosetta.importers.builder import Builder, Unsupported, Value, held_layout

# calls that never fold: random draws and the one input-shape-free call that is not a value
_RANDOM = ("dropout", "rand", "bernoulli", "normal", "uniform", "multinomial", "randperm",
           "feature_dropout", "alpha_dropout", "native_dropout")


@dataclass
class Folded:
    """The value of a folded call (a torch tensor, on the CPU, as the module computes it)."""
    tensor: object
    source: str          # the fx node name

    @property
    def array(self) -> np.ndarray:
        return self.tensor.detach().cpu().numpy().copy()


def _never_folds(target: str) -> bool:
    op = target.split(".")[1] if target.startswith("aten.") else target
    return ((op.endswith("_") and not op.startswith("__")) or any(op == r or op.startswith(r + "_") for r in _RANDOM)
            or target.startswith("aten._assert") or "sym_constrain" in target)


def _folds_in_place(n, order: dict) -> bool:
    """An in-place call (``x.add_(y)``) that folds: not random, on the output of another call
    (never a buffer: BatchNorm's counters), and no later call reads that output (it would see
    the mutated value; the fold computes on a copy and leaves the earlier value as it was)."""
    import torch

    op = str(n.target).split(".")[1] if str(n.target).startswith("aten.") else str(n.target)
    if _never_folds(op[:-1]) or not n.args or not isinstance(n.args[0], torch.fx.Node):
        return False
    src = n.args[0]
    return src.op == "call_function" and all(order[u.name] <= order[n.name] for u in src.users)


# calls whose output is a view of their first input (an in-place write into it writes there)
_VIEWS = ("select", "slice", "view", "_unsafe_view", "narrow", "diagonal", "as_strided",
          "transpose", "t", "permute", "expand", "unsqueeze", "squeeze", "alias", "unflatten",
          "split", "split_with_sizes", "chunk", "unbind")


def _viewed(n, inside: set):
    """The tensors (fx names, ``inside``: the folded ones) that ``n``'s output is a view of."""
    out = []
    while True:
        target = str(n.target)
        op = target.split(".")[1] if target.startswith("aten.") else target
        if "getitem" in target or op in _VIEWS:
            n = n.args[0]
            if getattr(n, "name", None) not in inside:
                return out
            out.append(n.name)
        else:
            return out


def fold(nodes, constants: dict) -> dict:
    """{fx node name: Folded or a tuple/number} of every call that folds; ``constants`` maps the
    constant placeholders (buffers, lifted constants) to their tensors. An in-place write into a
    view of a folded tensor (``m = zeros(N, S); m[1, -1] = True``: ``copy_`` into a
    ``select`` of it) would change that tensor after it folded: the tensor, its views and the
    write fold no longer (their readers then meet a call no spec op computes, refused), rather
    than fold to the value before the write."""
    import torch

    known = dict(constants)
    out = {}
    nodes = list(nodes)
    order = {n.name: k for k, n in enumerate(nodes)}
    for n in nodes:
        if n.op != "call_function":
            continue
        target = str(n.target)
        if any(a.name not in known for a in n.all_input_nodes):
            continue
        op = target.split(".")[1] if target.startswith("aten.") else target
        inplace = op.endswith("_") and not op.startswith("__")
        if inplace and n.args and isinstance(n.args[0], torch.fx.Node):
            bases = _viewed(n.args[0], set(out))
            if bases:   # a write through a view: the base (and its views) no longer fold
                gone = {n.args[0].name, *bases}
                gone |= {m.name for m in nodes if m.name in out and m.op == "call_function"
                         and gone & set(_viewed(m, set(out)))}
                for name in gone:
                    known.pop(name, None)
                    out.pop(name, None)
                continue
        if inplace and _folds_in_place(n, order):
            pass   # in place on a folded value (T5's bucket += ...): on a copy of it below
        elif _never_folds(target):
            continue

        def val(a):
            if isinstance(a, torch.fx.Node):
                return known[a.name]
            if isinstance(a, (list, tuple)):
                return type(a)(val(x) for x in a)
            return a

        args = [val(a) for a in n.args]
        if inplace:   # the earlier folded value stays as it was
            args[0] = args[0].clone()
        try:
            with torch.no_grad():
                v = n.target(*args, **{k: val(a) for k, a in n.kwargs.items()})
        except Exception:   # not a value this importer can compute: the mapping decides
            continue
        if isinstance(v, torch.Tensor) or isinstance(v, (tuple, list)) and all(
                isinstance(t, torch.Tensor) for t in v):
            known[n.name] = v
            out[n.name] = (Folded(v, n.name) if isinstance(v, torch.Tensor)
                           else tuple(Folded(t, f"{n.name}_{k}") for k, t in enumerate(v)))
        elif isinstance(v, (int, float, bool)):
            known[n.name] = v
            out[n.name] = v
    return out


def as_value(b: Builder, f: Folded, rank: int, batch: int, name: str, label: str,
             cache: dict, perm: tuple | None = None):
    """A folded value as the operand of a computing call whose other operands have ``rank``
    axes (batch included; 0: no alignment): a Python number for a single element of a 0-d
    tensor, else a ``Constant`` (see the module doc); ``cache`` keeps one node per value and
    rank. ``perm``: the other operands are held with their axes permuted (held axis i = source
    axis perm[i], batch first): the constant is held in that order too, so that NumPy
    broadcasting of the held tensors is the source's."""
    arr = f.array
    if arr.ndim == 0:
        return arr.item()
    if rank and arr.ndim < rank:
        arr = arr.reshape((1,) * (rank - arr.ndim) + arr.shape)
    if arr.shape[0] != 1:
        if arr.shape[0] == batch and (arr == arr[:1]).all():
            arr = arr[:1]
        else:
            if arr.shape[0] == batch:
                raise Unsupported(f"a constant of shape {tuple(f.tensor.shape)} whose first "
                                  f"axis is the batch with values that differ per example (the "
                                  f"spec's constants are one array shared by every example)")
            raise Unsupported(f"a constant of shape {tuple(f.tensor.shape)} read by a call that "
                              f"takes its first axis as the batch axis (of size 1 or "
                              f"{batch}); the spec has no tensor without a batch axis")
    if perm is not None and (len(perm) != arr.ndim or perm[0] != 0):
        raise Unsupported(f"a constant of shape {tuple(f.tensor.shape)} with a tensor held with "
                          f"its axes in the order {perm}")
    key = (f.source, arr.shape, perm)
    if key not in cache:
        held = arr if perm is None else np.transpose(arr, perm)
        value = held[0]
        if value.dtype == np.bool_:
            value = value.astype(np.int64)
        cache[key] = b.layer("Constant", [], name=f"{name}_{f.source}" + (
                                 "" if perm is None else "_" + "".join(map(str, perm))),
                             source=label, layout=held_layout(perm or tuple(range(arr.ndim))),
                             out_shape=arr.shape, value=value)
    return cache[key]


__all__ = ["Folded", "fold", "as_value"]
