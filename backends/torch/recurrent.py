"""Lowerings of LSTM, GRU and SimpleRNN (merged into ``layers.LOWERINGS``): torch's own fused
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (batch_first, one layer, ``bidirectional`` native), inside
``NativeRecurrent``, which adds masking by lengths and picks the output.

* Gate orders already agree: nn.LSTM [i, f, g, o], nn.GRU [r, z, n] in the reset-after form
  (n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))), the canonical rules.
* Biases: torch adds two, b_ih + b_hh. The canonical LSTM and SimpleRNN have ONE by default:
  ``bias`` is ``bias_ih_l0`` and ``bias_hh_l0`` is held at zero as a frozen parameter
  (requires_grad False, so no optimizer sees it). Left trainable it would get the same gradient
  as ``bias_ih`` and double the bias's update (the trap tests/cross/test_traps_recurrent.py
  plants). With ``recurrent_bias=True`` (LSTM, SimpleRNN) and always on the GRU, both are
  trained: ``bias`` = ``bias_ih_l0``, ``recurrent_bias`` = ``bias_hh_l0``.
* Lengths, one direction: the layer runs unmasked over all T steps (a step never reads a later
  one, so the real steps' outputs are the same), then the length rule is applied around it: the
  final state is the output at step length-1 (a gather), padded outputs are multiplied by 0.
  No packing: ``pack_padded_sequence`` sorts the batch on the host and runs the packed kernel,
  measured 2.3x the unmasked run at the zoo's shapes (N=32, T=16, H=32, one thread; final states
  equal to 6e-8 in float32), which made the zoo ``lstm`` 2.5-3.4x its hand-written baseline.
* Lengths, both directions: ``pack_padded_sequence(enforce_sorted=False)`` (lengths on the CPU as
  int64), so torch runs the backward direction over each example's real steps in reverse;
  ``pad_packed_sequence(total_length=T)`` writes 0 on padded steps. Final states are ``h_n``
  (forward after step length-1, backward after t = 0).
* Mixed precision (``low`` set by ``program.precision_rules``): torch's CPU autocast leaves the
  recurrent kernel in float32 and oneDNN refuses a bf16 LSTM with float32 weights, so the layer
  casts explicitly: its float input and every weight are cast from the float32 masters to the
  low type and the fused kernel runs on them (``torch.func.functional_call``), autocast off;
  the casts' backward brings the low-type gradients back to the float32 masters."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rosetta.backends.torch.lowering import CHANNELS_LAST, lowers, native_params, same
from rosetta.graph import Node


class NativeRecurrent(nn.Module):
    """``rnn`` (nn.LSTM, nn.GRU or nn.RNN) on canonical (N, T, C), optional lengths (N,) int.
    Returns (N, T, H*dirs) with zeros on padded steps, or the final states (N, H*dirs)."""

    def __init__(self, rnn: nn.RNNBase, return_sequences: bool, frozen_recurrent_bias: bool):
        super().__init__()
        self.rnn = rnn
        self.return_sequences = return_sequences
        self.low: torch.dtype | None = None   # a mixed policy's low type (module docstring)
        self.frozen_recurrent_bias = frozen_recurrent_bias
        self.reset_constants()

    def reset_constants(self) -> None:
        """The second bias held at zero (not a canonical parameter: no checkpoint holds it), set
        again after the parameters get memory (``model.materialize``)."""
        if self.frozen_recurrent_bias:
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_hh"):
                    if p.device.type != "meta":
                        with torch.no_grad():
                            p.zero_()
                    p.requires_grad_(False)

    def _rnn(self, x):
        """The fused kernel on ``x``: the module itself, or under a mixed policy the module
        with every weight cast to ``low`` (autocast off: the types are the ones written)."""
        if self.low is None:
            return self.rnn(x)
        weights = {k: v.to(self.low) for k, v in self.rnn.named_parameters()}
        with torch.autocast(x.data.device.type, enabled=False):
            return functional_call(self.rnn, weights, (x,))

    def forward(self, x, lengths=None):
        n, t = x.shape[0], x.shape[1]
        if self.low is not None and x.is_floating_point():
            x = x.to(self.low)
        if lengths is not None and not self.rnn.bidirectional:
            out, _ = self._rnn(x)
            last = (lengths.to(out.device, torch.int64) - 1).view(n, 1, 1)
            if not self.return_sequences:
                return out.gather(1, last.expand(n, 1, out.shape[2])).squeeze(1)
            steps = torch.arange(t, device=out.device).view(1, t, 1)
            return out * (steps <= last).to(out.dtype)
        if lengths is None:
            out, h_n = self._rnn(x)
        else:
            packed = pack_padded_sequence(x, lengths.to("cpu", torch.int64), batch_first=True,
                                          enforce_sorted=False)
            out, h_n = self._rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
        if self.return_sequences:
            return out
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
            h_n = h_n[0]
        return h_n.transpose(0, 1).reshape(n, -1)  # (dirs, N, H) -> (N, [forward, backward])


def _build(cls):
    def build(node: Node, layout: str) -> nn.Module:
        a = node.attrs
        frozen_recurrent_bias = "recurrent_bias" not in node.params
        kwargs = {"nonlinearity": a["activation"]} if node.op == "SimpleRNN" else {}
        rnn = cls(node.in_types[0].shape[-1], a["units"], batch_first=True,
                  bidirectional=a["bidirectional"], **kwargs)
        return NativeRecurrent(rnn, a["return_sequences"], frozen_recurrent_bias)
    build.__doc__ = f"{cls.__name__} in ``NativeRecurrent`` (see the module docstring)."
    return build


def _transpose(a):
    """Canonical (in, G*H) <-> torch weight (G*H, in): its own inverse."""
    return a.T



def _native(cls) -> dict:
    """canonical name -> (cls, torch attribute, to native, to canonical), both directions
    (``recurrent_bias`` where the node declares it)."""
    table = {}
    for prefix, suffix in (("", ""), ("backward_", "_reverse")):
        table[f"{prefix}kernel"] = (cls, f"weight_ih_l0{suffix}", _transpose, _transpose)
        table[f"{prefix}recurrent_kernel"] = (cls, f"weight_hh_l0{suffix}", _transpose, _transpose)
        table[f"{prefix}bias"] = (cls, f"bias_ih_l0{suffix}", same, same)
        table[f"{prefix}recurrent_bias"] = (cls, f"bias_hh_l0{suffix}", same, same)
    return table


native_params({
    "LSTM": _native(nn.LSTM),
    "GRU": _native(nn.GRU),
    "SimpleRNN": _native(nn.RNN),
})


lowers("LSTM", accepts=CHANNELS_LAST)(_build(nn.LSTM))
lowers("GRU", accepts=CHANNELS_LAST)(_build(nn.GRU))
lowers("SimpleRNN", accepts=CHANNELS_LAST)(_build(nn.RNN))
