"""The spec under construction: layers, canonical parameters, and the map from source names.

A mapping (built in, or a user's ``@rosetta.importers.maps(MyBlock)``) turns source calls into
spec layers through ``Builder.layer``; each parameter is given by its source name and a
``Layout`` (``rosetta.conformance.native``: ``conv2d`` for torch's OIHW kernels, ``linear`` for
(out, in), ``flatten_nchw(c, h, w)`` for a Dense after a channels-first flatten), read from the
source, turned to canonical layout, and recorded in ``names`` (source name -> canonical path),
which the certificate and the checkpoint use.

A ``Value`` is a tensor of the source graph as the spec holds it. ``layout`` says how:

* ``nchw``:  a torch (N, C, H, W) tensor held channels last, (N, H, W, C);
* ``plain``: the same array as the source's;
* a permutation ``perm`` (a tuple, batch axis first): the source's axes held in another order,
  held axis i = source axis perm[i] (``nchw`` is the permutation (0, 2, 3, 1), ``plain`` the
  identity; ``held_layout`` gives those two their names). A permute or transpose of the source is
  no spec layer: it changes only the permutation, so a permute and its inverse cancel (ConvNeXt's
  channels-last LayerNorm and Linear between two permutes run on the held tensor as it is).
  Every axis argument is mapped through it (``canonical_axis``), a view regroups held axes where
  each merged or split group of source axes is held contiguous and in order (``regroup``);
* ``flat``:  a torch (N, C*H*W) flatten of an (N, C, H, W) map, held in canonical (H, W, C)
  flatten order (``chw`` gives C, H, W): only a Dense (whose kernel rows are permuted to match)
  or an elementwise op may consume it; anything else is refused.

A source tensor whose batch axis a view merged with other rows, (N*k, ...), is no ``Value``: both
importers hold it as a ``merged.Merged`` around an ordinary Value of the unmerged shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from rosetta.conformance.native import Layout, layout as as_layout
from rosetta.graph import Layer, Tensor

def held_layout(perm: tuple):
    """The layout of a held permutation: ``plain`` for the identity, ``nchw`` for (0, 2, 3, 1),
    else the permutation itself."""
    perm = tuple(int(p) for p in perm)
    if perm == tuple(range(len(perm))):
        return "plain"
    if perm == (0, 2, 3, 1):
        return "nchw"
    return perm


@dataclass
class Value:
    tensor: Tensor
    layout: object         # "nchw", "plain", "flat" or a permutation (see the module doc)
    shape: tuple           # the source tensor's shape, batch axis included
    chw: tuple | None = None

    @property
    def perm(self) -> tuple:
        """Held axis i = source axis perm[i] (batch included); refused for ``flat``."""
        rank = len(self.shape)
        if self.layout == "flat":
            raise Unsupported("an axis of a channels-first flatten (only a Linear may read it)")
        if self.layout == "plain":
            return tuple(range(rank))
        if self.layout == "nchw":
            return (0, 2, 3, 1)
        return tuple(self.layout)

    @property
    def batch_axis(self) -> int:
        """The source axis that is the batch: 0, or the one held first (a (T, N, C) sequence of a
        ``batch_first=False`` recurrent module, held (N, T, C))."""
        return 0 if self.layout == "flat" else self.perm[0]

    def canonical_axis(self, axis: int) -> int:
        """The per-example canonical axis of the source tensor's ``axis`` (batch excluded)."""
        rank = len(self.shape)
        axis = axis + rank if axis < 0 else axis
        if axis == self.batch_axis:
            raise Unsupported("an operation over the batch axis")
        return self.perm.index(axis) - 1

    def last_axis_in_place(self) -> bool:
        """True where the source's last axis is also the held last axis (an op over the last
        axis, Linear or LayerNorm, runs on the held tensor; the other axes keep their order)."""
        return self.layout != "flat" and self.perm[-1] == len(self.shape) - 1


def permuted(perm: tuple, dims) -> tuple:
    """The held permutation after the source permutes its axes by ``dims`` (output axis j =
    input axis dims[j]): the held tensor is unchanged, its axes renamed."""
    rank = len(perm)
    dims = [int(d) % rank for d in dims]
    inverse = [0] * rank
    for j, d in enumerate(dims):
        inverse[d] = j
    return tuple(inverse[p] for p in perm)


def view_groups(in_shape: tuple, out_shape: tuple):
    """The groups of a view ``in_shape`` -> ``out_shape``: [(input axes, output axes)], the
    shortest runs of axes whose sizes multiply equal (a size-1 axis joins the group before it),
    or None where the sizes do not match."""
    groups, i, j = [], 0, 0
    n, m = len(in_shape), len(out_shape)
    while i < n or j < m:
        gi, gj = [i] if i < n else [], [j] if j < m else []
        pi = in_shape[i] if i < n else 1
        pj = out_shape[j] if j < m else 1
        i, j = i + bool(gi), j + bool(gj)
        while pi != pj:
            if pi < pj and i < n:
                gi.append(i)
                pi *= in_shape[i]
                i += 1
            elif j < m:
                gj.append(j)
                pj *= out_shape[j]
                j += 1
            else:
                return None
        while i < n and in_shape[i] == 1 and (j >= m or out_shape[j] != 1):
            gi.append(i)
            i += 1
        while j < m and out_shape[j] == 1 and (i >= n or in_shape[i] != 1):
            gj.append(j)
            j += 1
        groups.append((gi, gj))
    return groups


def regroup(in_shape: tuple, perm: tuple, out_shape: tuple):
    """A source view ``in_shape`` -> ``out_shape`` on a tensor held in ``perm``, as a reshape of
    the held tensor: (held output shape, output permutation), or None where some group of source
    axes merged or split by the view (``view_groups``) is not held contiguous and in source
    order (a Transpose is needed first: ``view_order``)."""
    groups = view_groups(in_shape, out_shape)
    if groups is None:
        return None
    where = {a: k for k, a in enumerate(perm)}
    held_out, order = [], []
    by_start = {}
    for gi, gj in groups:
        if not gi:                       # new size-1 axes: put them last among the held axes
            by_start[len(perm) + len(by_start)] = gj
            continue
        pos = [where[a] for a in gi]
        if pos != list(range(pos[0], pos[0] + len(pos))):
            return None
        by_start[pos[0]] = gj
    for start in sorted(by_start):
        order.extend(by_start[start])
    if order[0] != 0:
        return None
    held_out = [out_shape[a] for a in order]
    return tuple(held_out), tuple(order)


def view_order(in_shape: tuple, out_shape: tuple, want: tuple):
    """The held order of the input (a permutation of its source axes) from which a Reshape gives
    the view ``out_shape`` held in ``want`` (its groups ordered as ``want`` orders their first
    output axis), or None."""
    groups = view_groups(in_shape, out_shape)
    if groups is None or any(not gj for _, gj in groups):
        return None
    groups = sorted(groups, key=lambda g: want.index(g[1][0]))
    order = tuple(a for gi, _ in groups for a in gi)
    return order if sorted(order) == list(range(len(in_shape))) and order[0] == 0 else None


def reshape_held(b: "Builder", x: "Value", shape: tuple, name: str, source: str) -> "Value":
    """A source reshape of ``x`` (held in ``x.perm``, batch kept) to ``shape``: a Reshape of the
    held tensor where the source axes it merges or splits are held contiguous and in order
    (``regroup``), else a Transpose of the held axes first, to the order whose Reshape gives the
    view held channels last (an image) or plain (``view_order``); no layer where only the held
    permutation changes. ``Unsupported`` where no such order exists."""
    held = regroup(tuple(x.shape), x.perm, shape)
    if held is None:
        # channels last only where the held last axis goes to the view's axis 1 (its channels)
        want = (0, 2, 3, 1) if len(shape) == 4 and any(
            x.perm[-1] in gi and 1 in gj
            for gi, gj in view_groups(tuple(x.shape), shape) or ()) \
            else tuple(range(len(shape)))
        order = view_order(tuple(x.shape), shape, want)
        if order is None:
            raise Unsupported(f"a view of a tensor of shape {x.shape} held in axis order "
                              f"{x.perm} to {shape}")
        P = x.perm
        x = b.layer("Transpose", [x], name=f"{name}_order", source=source, layout=order,
                    out_shape=x.shape, perm=tuple(P.index(a) - 1 for a in order[1:]))
        held = regroup(tuple(x.shape), x.perm, shape)
    held_shape, perm = held
    if held_shape == tuple(x.shape[i] for i in x.perm):
        return Value(x.tensor, held_layout(perm), shape)
    return b.layer("Reshape", [x], name=name, source=source, layout=perm,
                   out_shape=shape, shape=held_shape[1:])


class Unsupported(Exception):
    """A source call that no spec op reproduces exactly; the message says what is missing."""


def spec_name(source: str) -> str:
    """A spec node name for a source module path: ``layer1.0.conv1`` -> ``layer1_0_conv1``."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", source) or "root"
    return name if re.match(r"[A-Za-z_]", name) else f"m_{name}"


class Builder:
    """Collects layers and canonical parameters for one source model."""

    def __init__(self, tensors: dict):
        self.tensors = tensors      # source name -> NumPy array (parameters and buffers)
        self.params: dict = {}      # canonical path -> array
        self.state: dict = {}
        self.names: dict = {}       # source name -> canonical path
        self.layouts: dict = {}     # source name -> Layout
        self.node_source: dict = {}  # spec node -> source label
        self._taken: set = set()

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        return name

    def layer(self, op: str, inputs, *, name: str, source: str, params=None, state=None,
              layout: str | None = None, out_shape: tuple | None = None, chw=None,
              **attrs) -> Value:
        """Add one spec layer ``op`` on ``inputs`` (Values) named after ``name``; ``params`` and
        ``state`` map the op's parameter names to (source name, layout). Returns the Value of
        its output (``layout`` and ``out_shape`` of the source tensor it stands for)."""
        node = self.unique(spec_name(name))
        t = Layer(op, node, **attrs)(*[v.tensor for v in inputs])
        for table, target in ((params or {}, self.params), (state or {}, self.state)):
            for pname, (src, lay) in table.items():
                lay = as_layout(lay)
                if src in self.names:
                    raise Unsupported(f"parameter {src} is used by two layers (the spec has no "
                                      f"shared parameters)")
                if src not in self.tensors:
                    raise Unsupported(f"no parameter or buffer named {src}")
                path = f"{node}/{pname}"
                target[path] = np.array(lay.to_canonical(self.tensors[src]))
                self.names[src] = path
                self.layouts[src] = lay
        self.node_source[node] = source
        lay = layout or (inputs[0].layout if inputs else "plain")
        if isinstance(lay, tuple):
            lay = held_layout(lay)
        if chw is None and layout is None and inputs:   # the layout inherited, with its sizes
            chw = inputs[0].chw
        return Value(t, lay, tuple(out_shape) if out_shape is not None else inputs[0].shape, chw)


class ModuleBuilder:
    """What a user's mapping function gets: ``Builder.layer`` with names relative to its module.

        @rosetta.importers.maps(MyBlock)
        def my_block(module, x, b):
            y = b.layer("Conv2D", [x], name="conv", params={"kernel": ("conv.weight", "conv2d")},
                        filters=module.conv.out_channels, kernel_size=3, padding=1,
                        use_bias=False)
            return b.layer("Activation", [y], name="act", fn="relu")

    ``x`` (and the result) are ``Value``s; images arrive channels last (``x.layout == "nchw"``
    means the source's (N, C, H, W) tensor held as (N, H, W, C)). A result's ``shape`` is the
    source tensor's (taken from the traced graph).
    """

    def __init__(self, builder: Builder, path: str, label: str, out_shape: tuple):
        self._b, self.path, self.label, self._shape = builder, path, label, out_shape

    def _full(self, rel: str) -> str:
        if not rel:   # the module itself (a mapping of one layer)
            return self.path
        return f"{self.path}.{rel}" if self.path else rel

    def layer(self, op, inputs, *, name, params=None, state=None, **attrs) -> Value:
        full = lambda t: {k: (self._full(s), lay) for k, (s, lay) in (t or {}).items()}  # noqa
        v = self._b.layer(op, list(inputs), name=self._full(name), source=self.label,
                          params=full(params), state=full(state), **attrs)
        v.shape = self._shape
        return v


def check_shapes(graph, builder: Builder) -> None:
    """Every canonical array fits the spec's declaration (an importer bug otherwise)."""
    for table, defs in ((builder.params, graph.param_defs()), (builder.state, graph.state_defs())):
        for path, d in defs.items():
            if path not in table:
                raise Unsupported(f"spec parameter {path} was given no source value")
            if tuple(table[path].shape) != tuple(d.shape):
                raise Unsupported(f"{path}: source array of shape {table[path].shape}, the spec "
                                  f"declares {tuple(d.shape)}")


__all__ = ["Builder", "ModuleBuilder", "Value", "Unsupported", "Layout", "spec_name",
           "held_layout", "permuted", "regroup", "reshape_held", "view_order"]
