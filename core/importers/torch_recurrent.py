"""torch's fused recurrent calls -> the spec's LSTM / GRU / SimpleRNN (``torch_ops.ATEN`` entries).

``torch.export`` (torch 2.13) keeps ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` as one call each,
``aten.lstm.input`` / ``aten.gru.input`` / ``aten.rnn_tanh.input`` / ``aten.rnn_relu.input``
(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first), after
an ``aten.zeros`` for the initial state. Each call becomes one spec node per layer, every node
``return_sequences=True`` and (with ``bidirectional``) both directions, the next layer reading
the previous one's [forward, backward] sequence as torch's does:

* weights: ``weight_ih_l{k}`` (G*H, C) -> ``kernel`` (C, G*H), ``weight_hh_l{k}`` ->
  ``recurrent_kernel``, the transposes; the gate orders are already the canonical ones (LSTM
  [i, f, g, o], GRU [r, z, n] reset-after with b_hn inside r ⊙ (W_hn h + b_hn): the canonical
  GRU's rule), ``*_reverse`` -> ``backward_*``;
* biases: ``bias_ih_l{k}`` -> ``bias`` and ``bias_hh_l{k}`` -> ``recurrent_bias``, two
  trainable parameters (``recurrent_bias=True`` on LSTM and SimpleRNN), never summed: the sum
  computes the same forward pass but one step moves it half as far as torch moves b_ih + b_hh;
* outputs: the call's output sequence is the last layer's; ``h_n[k]`` (a select of axis 0 of
  h_n, ``HiddenStates``) is layer k // dirs's sequence at its last step (forward direction,
  features [0, H)) or at its first step (backward, [H, 2H)): the state after every step, with no
  padding, is the output there. ``c_n`` (the LSTM's cell state) is no spec output: refused.
* ``batch_first=False``: the sequence is (T, N, C) in the source; the tensor it reads must be
  held batch first (the model transposed its (N, T, C) input), and the output is held (N, T, H)
  standing for the source's (T, N, H) (a permutation layout, ``builder.Value``).

Refused, one line naming the module: an initial state that is passed in (the spec starts from
zeros), ``bias=False``, ``proj_size > 0``, ``dropout`` between layers (drawn inside the fused
kernel, where no mask can be injected), an unbatched (T, C) input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rosetta.importers.builder import Builder, Unsupported, Value
from rosetta.importers.torch_fold import Folded
from rosetta.importers.torch_ops import Call, _value

# ATen overload -> (spec op, extra attributes)
_CALLS = {
    "aten.lstm.input": ("LSTM", {}),
    "aten.gru.input": ("GRU", {}),
    "aten.rnn_tanh.input": ("SimpleRNN", {"activation": "tanh"}),
    "aten.rnn_relu.input": ("SimpleRNN", {"activation": "relu"}),
}
_GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}


@dataclass(frozen=True)
class ZeroState:
    """An ``aten.zeros`` tensor (a recurrent layer's default initial state), shape ``shape``."""

    shape: tuple


def zeros(b: Builder, c: Call):
    """``torch.zeros(...)``: only a recurrent call's default initial state reads it."""
    return ZeroState(tuple(c.shape))


@dataclass
class HiddenStates:
    """torch's h_n (or an LSTM's c_n), (layers * dirs, N, H): the batch on axis 1, so no spec
    tensor. ``h_n[k]`` is mapped (``select``); any other use is refused by the op reading it."""

    what: str             # "h_n" or "c_n"
    module: str           # the source label
    layers: list          # each layer's output sequence (Value, held (N, T, H * dirs))
    dirs: int
    units: int
    time_axis: int        # of the source sequence: 1 batch_first, else 0

    def __repr__(self):
        return f"{self.what} of {self.module}"

    def select(self, b: Builder, c: Call, dim: int, index: int) -> Value:
        if self.what == "c_n":
            raise Unsupported(f"the LSTM's cell state c_n of {self.module} (the spec's LSTM "
                              f"outputs h only)")
        if dim % 3 != 0:
            raise Unsupported(f"a select of axis {dim} of h_n of {self.module} (only h_n[k])")
        k = index % (len(self.layers) * self.dirs)
        seq, d = self.layers[k // self.dirs], k % self.dirs
        steps = seq.shape[self.time_axis]
        t = 0 if d else steps - 1    # backward: its last step visits t = 0
        h = self.units
        y = b.layer("Slice", [seq], name=f"{c.name}_slice", source=c.label, axes=(0, 1),
                    starts=(t, d * h), stops=(t + 1, (d + 1) * h), steps=(1, 1), layout="plain",
                    out_shape=(seq.shape[1 - self.time_axis], 1, h))
        return b.layer("Squeeze", [y], name=c.name, source=c.label, axes=(0,), layout="plain",
                       out_shape=tuple(c.shape))


def recurrent(b: Builder, c: Call):
    """One fused recurrent call -> one spec node per layer (see the module docstring); returns
    (output sequence, h_n[, c_n]) for the graph's getitem."""
    op, extra = _CALLS[c.target]
    x = _value(c.arg(0, "input"))
    hx = c.arg(1, "hx")
    names = list(c.arg(2, "params"))
    has_biases, layers = bool(c.arg(3, "has_biases")), int(c.arg(4, "num_layers"))
    dropout, bidirectional = float(c.arg(5, "dropout")), bool(c.arg(7, "bidirectional"))
    batch_first = bool(c.arg(8, "batch_first"))
    states = hx if isinstance(hx, (list, tuple)) else [hx]
    if not all(isinstance(s, ZeroState) for s in states):
        raise Unsupported("an initial state passed in (the spec's recurrent layers start from "
                          "zeros; call the module without h0)")
    if not has_biases:
        raise Unsupported("bias=False (the spec's recurrent layers always have a bias)")
    dirs = 2 if bidirectional else 1
    if len(names) != layers * dirs * 4 or not all(isinstance(n, str) for n in names):
        raise Unsupported("proj_size > 0 or weights that are not parameters (the spec's LSTM "
                          "has no projection)")
    if dropout > 0 and layers > 1:
        raise Unsupported(f"dropout={dropout} between layers (drawn inside torch's fused kernel; "
                          f"use single-layer modules with nn.Dropout between them)")
    if len(x.shape) != 3:
        raise Unsupported(f"an unbatched input of shape {x.shape} (the spec's sequences are "
                          f"(N, T, C))")
    held = (0, 1, 2) if batch_first else (1, 0, 2)
    if x.layout in ("flat", "merged") or x.perm != held:
        fix = ("transpose the (N, T, C) input to (T, N, C) in forward" if not batch_first
               else "use batch_first=False")
        raise Unsupported(f"batch_first={batch_first} on a tensor of shape {x.shape} held with "
                          f"axis order {x.perm} (the spec's sequences are (N, T, C): {fix})")
    w_ih = b.tensors[names[0]]
    units = int(w_ih.shape[0]) // _GATES[op]
    two = {"recurrent_bias": True} if op != "GRU" else {}
    path, _, typ = c.label.rpartition(" (")
    # an nn.LSTM / GRU / RNN module: its node is named by the module (the zeros and getitems
    # of its forward make no layer), e.g. ``rnn``; else by the call
    base = path if typ.rstrip(")") in ("LSTM", "GRU", "RNN") and path != "<root>" else c.name
    seq, outputs = x, []
    for k in range(layers):
        params = {}
        for d, prefix in enumerate(("", "backward_")[:dirs]):
            w, r, bi, bh = names[(k * dirs + d) * 4:(k * dirs + d + 1) * 4]
            params.update({f"{prefix}kernel": (w, "linear"),
                           f"{prefix}recurrent_kernel": (r, "linear"),
                           f"{prefix}bias": (bi, "identity"),
                           f"{prefix}recurrent_bias": (bh, "identity")})
        shape = list(seq.shape)
        shape[2] = units * dirs
        seq = b.layer(op, [seq], name=base if layers == 1 else f"{base}_l{k}",
                      source=c.label, params=params, units=units, return_sequences=True,
                      bidirectional=bidirectional, layout=held, out_shape=tuple(shape),
                      **two, **extra)
        outputs.append(seq)
    time_axis = 1 if batch_first else 0
    h_n = HiddenStates("h_n", c.label, outputs, dirs, units, time_axis)
    if op != "LSTM":
        return (seq, h_n)
    return (seq, h_n, HiddenStates("c_n", c.label, outputs, dirs, units, time_axis))


def zero_states(a):
    """A recurrent call's ``hx`` as constant folding left it (``torch_fold``): an all-zero
    folded tensor is the default initial state (``ZeroState``); anything else is kept, and a
    non-zero state is refused by ``recurrent``."""
    if isinstance(a, (list, tuple)):
        return type(a)(zero_states(x) for x in a)
    if isinstance(a, Folded) and not np.any(a.array):
        return ZeroState(tuple(a.array.shape))
    return a


recurrent.takes_folded = zero_states
RECURRENT_ATEN = {target: recurrent for target in _CALLS}
RECURRENT_ATEN["aten.zeros.default"] = zeros
