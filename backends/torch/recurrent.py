"""Lowerings of LSTM, GRU and SimpleRNN (merged into ``layers.LOWERINGS``): torch's own fused
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (batch_first, one layer, ``bidirectional`` native), inside
``NativeRecurrent``, which adds masking by lengths and picks the output.

* Gate orders already agree: nn.LSTM [i, f, g, o], nn.GRU [r, z, n] in the reset-after form
  (n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))), the canonical rules.
* ``GRU(reset_after=False)`` (n = tanh(W_in x + b_in + W_hn (r ⊙ h) (+ b_hn))) and a GRU
  with ``recurrent_bias=False``: nn.GRU is reset-after only, with two biases, and no torch op
  computes the reset-before cell, so ``LoopGRU`` writes the cell in torch ops, one Python loop
  over the static T, with nn.GRU's parameter names and layouts (``bias_hh_l0`` only with
  ``recurrent_bias=True``: no frozen zero) and its call interface (unpacked input only: with
  lengths both directions run unmasked, see ``NativeRecurrent._unpacked``).
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
import torch.nn.functional as F
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
        elif isinstance(self.rnn, LoopGRU):   # no packed input: shifted unmasked runs
            return self._unpacked(x, lengths)
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

    def _unpacked(self, x, lengths):
        """``forward`` with lengths and no packing, the same outputs: the forward direction's
        unmasked run read at each example's steps; the backward direction run unmasked on each
        example shifted right by T - length (its padded steps first, so they run from the zero
        state and its real steps see the state the canonical rule gives), read back at the
        shifted steps. The export's form (``export.py``) and ``LoopGRU``'s."""
        n, t = x.shape[0], x.shape[1]
        if self.low is not None and x.is_floating_point():
            x = x.to(self.low)
        hidden = self.rnn.hidden_size
        lengths = lengths.to(x.device, torch.int64)
        steps = torch.arange(t, device=x.device)
        real = steps[None, :] < lengths[:, None]                                   # (N, T)
        out, _ = self._rnn(x)
        fwd = out[..., :hidden]
        last = (lengths - 1)[:, None, None].expand(n, 1, hidden)
        finals = [fwd.gather(1, last)[:, 0]]
        seqs = [fwd]
        if self.rnn.bidirectional:
            shift = (t - lengths)[:, None]                                          # (N, 1)
            src = (steps[None, :] - shift).clamp(min=0)                             # (N, T)
            right = x.gather(1, src[..., None].expand(n, t, x.shape[2]))
            back = self._rnn(right)[0][..., hidden:]
            at = (steps[None, :] + shift).clamp(max=t - 1)                          # t -> j
            seqs.append(back.gather(1, at[..., None].expand(n, t, hidden)))
            finals.append(back.gather(1, shift[..., None].expand(n, 1, hidden))[:, 0])
        if self.return_sequences:
            return torch.cat(seqs, -1) * real[..., None].to(x.dtype)
        return torch.cat(finals, -1)


class LoopGRU(nn.Module):
    """The canonical GRU, either form, with nn.GRU's parameters (``weight_ih_l0``
    (3H, C), ``weight_hh_l0`` (3H, H), ``bias_ih_l0``, ``bias_hh_l0`` with ``recurrent_bias``,
    ``*_reverse`` for the backward direction; nn.GRU's uniform(±1/√H) init) and call: x (N, T, C)
    -> (out (N, T, H*dirs), h_n (dirs, N, H)), unmasked, the backward direction t = T-1 .. 0.

        r = σ(a_r + h W_hr + b_hr), z = σ(a_z + h W_hz + b_hz), a = x W_ih + b_ih
        n = tanh(a_n + (r ⊙ h) W_hn + b_hn)     (reset_after=False)
        n = tanh(a_n + r ⊙ (h W_hn + b_hn))     (reset_after=True)
        h' = (1 − z) ⊙ n + z ⊙ h"""

    def __init__(self, input_size: int, hidden_size: int, *, bidirectional: bool,
                 recurrent_bias: bool, reset_after: bool):
        super().__init__()
        self.hidden_size, self.bidirectional = hidden_size, bidirectional
        self.reset_after = reset_after
        self.suffixes = ("", "_reverse") if bidirectional else ("",)
        g = 3 * hidden_size
        for s in self.suffixes:
            self.register_parameter(f"weight_ih_l0{s}", nn.Parameter(torch.empty(g, input_size)))
            self.register_parameter(f"weight_hh_l0{s}", nn.Parameter(torch.empty(g, hidden_size)))
            self.register_parameter(f"bias_ih_l0{s}", nn.Parameter(torch.empty(g)))
            if recurrent_bias:
                self.register_parameter(f"bias_hh_l0{s}", nn.Parameter(torch.empty(g)))
        bound = hidden_size ** -0.5
        for p in self.parameters():
            if p.device.type != "meta":
                nn.init.uniform_(p, -bound, bound)

    def _direction(self, x, s: str, reverse: bool):
        h2 = 2 * self.hidden_size
        w_hh, b_hh = getattr(self, f"weight_hh_l0{s}"), getattr(self, f"bias_hh_l0{s}", None)
        w_rz, w_n = w_hh[:h2], w_hh[h2:]
        b_rz, b_n = (None, None) if b_hh is None else (b_hh[:h2], b_hh[h2:])
        a = F.linear(x, getattr(self, f"weight_ih_l0{s}"), getattr(self, f"bias_ih_l0{s}"))
        h = x.new_zeros(x.shape[0], self.hidden_size)
        t_len = x.shape[1]
        outs = [None] * t_len
        for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
            a_r, a_z, a_n = a[:, t].chunk(3, dim=-1)
            u_r, u_z = F.linear(h, w_rz, b_rz).chunk(2, dim=-1)
            r = torch.sigmoid(a_r + u_r)
            z = torch.sigmoid(a_z + u_z)
            if self.reset_after:
                n = torch.tanh(a_n + r * F.linear(h, w_n, b_n))
            else:
                n = torch.tanh(a_n + F.linear(r * h, w_n, b_n))
            h = (1.0 - z) * n + z * h
            outs[t] = h
        return torch.stack(outs, dim=1), h

    def forward(self, x):
        runs = [self._direction(x, s, bool(s)) for s in self.suffixes]
        return torch.cat([o for o, _ in runs], -1), torch.stack([h for _, h in runs])


def _build(cls):
    def build(node: Node, layout: str) -> nn.Module:
        a = node.attrs
        frozen_recurrent_bias = "recurrent_bias" not in node.params
        if node.op == "GRU" and not (a["reset_after"] and a["recurrent_bias"]):
            rnn = LoopGRU(node.in_types[0].shape[-1], a["units"],
                          bidirectional=a["bidirectional"], recurrent_bias=a["recurrent_bias"],
                          reset_after=a["reset_after"])
            return NativeRecurrent(rnn, a["return_sequences"], False)
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
    "GRU": _native((nn.GRU, LoopGRU)),
    "SimpleRNN": _native(nn.RNN),
})


lowers("LSTM", accepts=CHANNELS_LAST)(_build(nn.LSTM))
lowers("GRU", accepts=CHANNELS_LAST)(_build(nn.GRU))
lowers("SimpleRNN", accepts=CHANNELS_LAST)(_build(nn.RNN))
