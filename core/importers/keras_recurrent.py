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
* ``GRU``: refused in one line. Keras orders the gates [z, r, h] where the canonical GRU has
  [r, z, n], and its reset-after bias is ONE (2, 3H) variable holding the input and the
  recurrent bias: the certificate's Keras participant maps each Keras variable to one canonical
  parameter in its own layout, so neither the reorder nor the split can be certified yet.
  (``reset_after=False`` is other math: r multiplies h before the recurrent matmul.)

Refused too, one line each: ``dropout`` / ``recurrent_dropout`` > 0 (drawn inside the layer,
where no mask can be injected), ``go_backwards`` on its own, ``return_state``, ``stateful``,
``use_bias=False``, a masked input (the spec's lengths input is not read from a Keras mask).
"""

from __future__ import annotations

from rosetta.importers.builder import Unsupported


def _name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _check(layer) -> tuple[str, dict]:
    """The spec op and its attributes for one Keras recurrent layer (no direction), or
    ``Unsupported``."""
    kind = type(layer).__name__
    if kind == "GRU":
        raise Unsupported(
            "Keras's GRU (gates [z, r, h] and one (2, 3H) variable holding both biases; the "
            "certificate maps each Keras variable to one canonical parameter as it is, so the "
            "reorder and split to the canonical [r, z, n] GRU are not certified yet)"
            if layer.reset_after else
            "GRU(reset_after=False) (r multiplies h before the recurrent matmul: the spec's GRU "
            "is reset-after)")
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
    if kind == "LSTM":
        rec = _name(layer.cell.recurrent_activation)
        if act != "tanh" or rec != "sigmoid":
            raise Unsupported(f"activation={act!r}, recurrent_activation={rec!r} (the spec's LSTM "
                              f"is tanh and sigmoid)")
        return "LSTM", {}
    if act not in ("tanh", "relu"):
        raise Unsupported(f"activation={act!r} (the spec's SimpleRNN takes tanh or relu)")
    return "SimpleRNN", {"activation": act}


def _params(layer, prefix: str) -> dict:
    cell = layer.cell
    return {f"{prefix}kernel": (cell.kernel.path, "identity"),
            f"{prefix}recurrent_kernel": (cell.recurrent_kernel.path, "identity"),
            f"{prefix}bias": (cell.bias.path, "identity")}


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
    return c.layer(op, params=_params(layer, ""), units=layer.cell.units,
                   return_sequences=bool(layer.return_sequences), **extra)


def bidirectional(c):
    """``Bidirectional(LSTM | SimpleRNN, merge_mode="concat")``."""
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
    return c.layer(op, params={**_params(fwd, ""), **_params(bwd, "backward_")},
                   units=fwd.cell.units, return_sequences=bool(fwd.return_sequences),
                   bidirectional=True, **extra)


LAYERS = {"LSTM": recurrent, "SimpleRNN": recurrent, "GRU": recurrent,
          "Bidirectional": bidirectional}
