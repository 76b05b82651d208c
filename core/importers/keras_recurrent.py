"""Keras's LSTM, SimpleRNN, GRU and Bidirectional layers -> the spec's recurrent ops
(``keras_graph.LAYERS`` entries).

* ``LSTM``: Keras's gates [i, f, c, o] are the canonical [i, f, g, o], kernel (C, 4H),
  recurrent_kernel (H, 4H) and ONE bias (4H): the canonical LSTM as it is (``recurrent_bias``
  False), every layout the identity. ``activation`` must be tanh and ``recurrent_activation``
  sigmoid (the spec's cell).
* ``SimpleRNN``: kernel, recurrent_kernel, one bias; ``activation`` tanh or relu.
* ``Bidirectional(layer, merge_mode="concat")``: the canonical ``bidirectional`` ([forward,
  backward] on the feature axis; Keras reverses the backward layer's sequence back, and its last
  output is the state after t = 0, the canonical rule), its ``backward_*`` parameters from the
  backward layer.
* ``GRU(reset_after=True)`` (Keras 3's default): the canonical GRU. Keras computes
  z = σ(x K_z + b_z + h R_z + rb_z), r = σ(... _r), hh = tanh(x K_h + b_h + r ⊙ (h R_h + rb_h)),
  h' = z ⊙ h + (1 − z) ⊙ hh: the spec's reset-after rule with its gates ordered [z, r, h] where
  the canonical GRU orders [r, z, n]. So ``kernel`` and ``recurrent_kernel`` take the layout
  ``keras_gru_gates`` (the first two H-blocks of the last axis swapped, its own inverse), and
  the (2, 3H) ``bias`` variable is two pieces (``keras_parts``): row 0 -> ``bias``, row 1 ->
  ``recurrent_bias``, each in ``keras_gru_gates``.
* ``GRU(reset_after=False)`` (the TF1 default): r multiplies h before the recurrent matmul,
  hh = tanh(x K_h + b_h + (r ⊙ h) R_h), and the bias is ONE (3H,) variable:
  ``GRU(reset_after=False, recurrent_bias=False)``, kernel, recurrent_kernel and bias each in
  ``keras_gru_gates``. Read as reset-after it would be other math (the certificate fails).

Refused too, one line each: ``dropout`` / ``recurrent_dropout`` > 0 (drawn inside the layer,
where no mask can be injected), ``go_backwards`` on its own, ``return_state``, ``stateful``,
``use_bias=False``, a masked input (the spec's lengths input is not read from a Keras mask).
"""

from __future__ import annotations

import numpy as np

from rosetta.conformance.native import Layout
from rosetta.importers.builder import Unsupported
from rosetta.importers.keras_parts import part_name


def _swap_gates(a):
    """Keras's [z, r, h] blocks of the last axis <-> the canonical [r, z, n] (its own inverse)."""
    z, r, h = np.split(np.asarray(a), 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


KERAS_GRU_GATES = Layout("keras_gru_gates", _swap_gates, _swap_gates)


def _name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _check(layer) -> tuple[str, dict]:
    """The spec op and its attributes for one Keras recurrent layer (no direction), or
    ``Unsupported``."""
    kind = type(layer).__name__
    for attr in ("dropout", "recurrent_dropout"):
        if getattr(layer, attr, 0.0):
            raise Unsupported(f"{attr}={getattr(layer, attr)} (drawn inside the layer, where no "
                              f"mask can be injected; put a Dropout layer before it)")
    for attr in ("return_state", "stateful"):
        if getattr(layer, attr, False):
            raise Unsupported(f"{attr}=True (the spec's recurrent layers return one tensor and "
                              f"start each batch from zeros)")
    if not layer.cell.use_bias:
        raise Unsupported("use_bias=False (the spec's recurrent layers always have a bias)")
    act = _name(layer.cell.activation)
    if kind in ("LSTM", "GRU"):
        rec = _name(layer.cell.recurrent_activation)
        if act != "tanh" or rec != "sigmoid":
            raise Unsupported(f"activation={act!r}, recurrent_activation={rec!r} (the spec's "
                              f"{kind} is tanh and sigmoid)")
        if kind == "GRU" and not layer.cell.reset_after:   # one bias, r before the matmul
            return kind, {"reset_after": False, "recurrent_bias": False}
        return kind, {}
    if act not in ("tanh", "relu"):
        raise Unsupported(f"activation={act!r} (the spec's SimpleRNN takes tanh or relu)")
    return "SimpleRNN", {"activation": act}


def _params(c, layer, prefix: str) -> dict:
    cell = layer.cell
    if type(layer).__name__ != "GRU":
        return {f"{prefix}kernel": (cell.kernel.path, "identity"),
                f"{prefix}recurrent_kernel": (cell.recurrent_kernel.path, "identity"),
                f"{prefix}bias": (cell.bias.path, "identity")}
    if not cell.reset_after:   # one (3H,) bias
        return {f"{prefix}{n}": (getattr(cell, n).path, KERAS_GRU_GATES)
                for n in ("kernel", "recurrent_kernel", "bias")}
    bias = cell.bias.path   # (2, 3H): the input bias and the recurrent bias
    for i in (0, 1):
        c.b.tensors[part_name(bias, i)] = np.asarray(c.b.tensors[bias])[i]
    return {f"{prefix}kernel": (cell.kernel.path, KERAS_GRU_GATES),
            f"{prefix}recurrent_kernel": (cell.recurrent_kernel.path, KERAS_GRU_GATES),
            f"{prefix}bias": (part_name(bias, 0), KERAS_GRU_GATES),
            f"{prefix}recurrent_bias": (part_name(bias, 1), KERAS_GRU_GATES)}


def _masked(c) -> bool:
    return any(getattr(t, "_keras_mask", None) is not None for t in c.node.input_tensors)


def recurrent(c):
    """A Keras ``LSTM`` / ``SimpleRNN`` / ``GRU`` layer (``c``: keras_graph's ``_Ctx``)."""
    layer = c.op
    op, extra = _check(layer)
    if layer.go_backwards:
        raise Unsupported("go_backwards=True outside Bidirectional (the spec's backward "
                          "direction comes with its forward one)")
    if _masked(c):
        raise Unsupported("a masked input (the spec reads sequence lengths as a second input, "
                          "not a Keras mask)")
    return c.layer(op, params=_params(c, layer, ""), units=layer.cell.units,
                   return_sequences=bool(layer.return_sequences), **extra)


def bidirectional(c):
    """``Bidirectional(LSTM | GRU | SimpleRNN, merge_mode="concat")``."""
    fwd, bwd = c.op.forward_layer, c.op.backward_layer
    if c.op.merge_mode != "concat":
        raise Unsupported(f"merge_mode={c.op.merge_mode!r} (the spec concatenates [forward, "
                          f"backward])")
    op, extra = _check(fwd)
    if (type(bwd).__name__, _check(bwd)) != (type(fwd).__name__, (op, extra)) \
            or bwd.cell.units != fwd.cell.units or not bwd.go_backwards or fwd.go_backwards \
            or bwd.return_sequences != fwd.return_sequences:
        raise Unsupported("a backward layer that is not the forward layer's mirror (the spec's "
                          "two directions share every setting)")
    if _masked(c):
        raise Unsupported("a masked input (the spec reads sequence lengths as a second input, "
                          "not a Keras mask)")
    return c.layer(op, params={**_params(c, fwd, ""), **_params(c, bwd, "backward_")},
                   units=fwd.cell.units, return_sequences=bool(fwd.return_sequences),
                   bidirectional=True, **extra)


LAYERS = {"LSTM": recurrent, "SimpleRNN": recurrent, "GRU": recurrent,
          "Bidirectional": bidirectional}
