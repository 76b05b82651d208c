"""Recurrent layers: LSTM, GRU (reset-after or reset-before) and SimpleRNN, with masking by
sequence lengths.

Shared rule (every op here). Input ``x`` (T, C) per example, optional second input ``lengths``
(int, shape () per example, in [1, T]; without it every step is real). Zero initial state. With H
= ``units`` and G gates, the parameters are ``kernel`` (C, G*H), ``recurrent_kernel`` (H, G*H)
and ``bias`` (G*H), plus ``recurrent_bias`` (G*H) where the op has a second bias
(``recurrent_bias=True``: torch's ``bias_hh``; the GRU's default), gate blocks side by side on
the last axis in the order each op names.

Two biases are two trainable parameters, never summed into one: b + rb computes the same forward
pass, but both get the same gradient, so a step moves their sum twice as far as one bias would
(a port that sums torch's ``bias_ih`` and ``bias_hh`` trains differently from its source).

Masking: a step t >= length does not change the state, and its output is 0. The forward
direction runs t = 0 .. T-1; ``bidirectional`` adds a second parameter set (``backward_`` +
name) that runs over each example's real steps in reverse, length-1 .. 0 (equivalently t = T-1
.. 0 with the same mask: the padded steps come first and leave the zero state alone). Outputs
are concatenated [forward, backward] on the feature axis. ``return_sequences``: (T, H*dirs),
the state after each step (0 on padded steps); else (H*dirs,): the forward state after step
length-1 and the backward state after its last step (t = 0). Stacking is stacking nodes
(``return_sequences=True`` below).
"""

from __future__ import annotations

import numpy as np

from rosetta.initializers import Initializer
from rosetta.ops.registry import Attr, OpDef, ParamDef, TensorType, positive, register


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def param_names(op: str, bidirectional: bool, recurrent_bias: bool | None = None) -> list[str]:
    """Canonical parameter names of a recurrent op, forward set first (``recurrent_bias``: the
    op's attribute of that name; None: the op's default, True for the GRU, else False)."""
    two = (op == "GRU") if recurrent_bias is None else recurrent_bias
    base = ["kernel", "recurrent_kernel", "bias"] + (["recurrent_bias"] if two else [])
    return base + ([f"backward_{n}" for n in base] if bidirectional else [])


class _Recurrent(OpDef):
    arity = (1, None)
    lengths_input = 1
    gates = 1

    attrs = {
        "units": Attr("int", check=positive),
        "return_sequences": Attr("bool", False),
        "bidirectional": Attr("bool", False),
        "kernel_init": Attr("init", Initializer("glorot_uniform")),
        "recurrent_init": Attr("init", Initializer("orthogonal")),
        "bias_init": Attr("init", Initializer("zeros")),
    }

    def infer(self, a, inputs, where):
        if len(inputs) > 2:
            raise self.fail(where, "1 or 2 inputs (x, optional lengths)", f"{len(inputs)} inputs")
        x = inputs[0]
        if len(x.shape) != 2:
            raise self.fail(where, "an input of rank 2 per example (T, C)", f"shape {x.shape}")
        h = a["units"] * (2 if a["bidirectional"] else 1)
        return TensorType((x.shape[0], h) if a["return_sequences"] else (h,))

    def params(self, a, inputs):
        c, h, g = inputs[0].shape[1], a["units"], self.gates * a["units"]
        shapes = {"kernel": ((c, g), a["kernel_init"]),
                  "recurrent_kernel": ((h, g), a["recurrent_init"]),
                  "bias": ((g,), a["bias_init"]),
                  "recurrent_bias": ((g,), a["bias_init"])}
        return {n: ParamDef(*shapes[n.removeprefix("backward_")])
                for n in param_names(self.name, a["bidirectional"], a.get("recurrent_bias"))}

    def cell(self, a, p, x_t, state):
        """One step: (new state tuple, its output h). ``p`` has the unprefixed names."""
        raise NotImplementedError  # pragma: no cover

    def initial_state(self, n, h):
        return (np.zeros((n, h)),)

    def _direction(self, a, p, x, lengths, reverse):
        n, t_len, _ = x.shape
        state = self.initial_state(n, a["units"])
        out = np.zeros((n, t_len, a["units"]))
        for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
            new = self.cell(a, p, x[:, t], state)
            m = (t < lengths)[:, None]
            state = tuple(np.where(m, s_new, s) for s_new, s in zip(new, state))
            out[:, t] = np.where(m, new[0], 0.0)
        return out, state[0]

    def reference(self, a, p, xs, ctx):
        x = xs[0]
        lengths = (np.asarray(xs[1]) if len(xs) > 1
                   else np.full(x.shape[0], x.shape[1], dtype=np.int64))
        outs, finals = [], []
        for prefix in ("", "backward_") if a["bidirectional"] else ("",):
            q = {k: p[prefix + k]
                 for k in param_names(self.name, False, a.get("recurrent_bias"))}
            out, final = self._direction(a, q, x, lengths, reverse=bool(prefix))
            outs.append(out)
            finals.append(final)
        return np.concatenate(outs if a["return_sequences"] else finals, axis=-1)

    def flops(self, a, inputs, out):
        t, c = inputs[0].shape
        h = a["units"]
        dirs = 2 if a["bidirectional"] else 1
        per_step = 2 * (c + h) * self.gates * h + 4 * self.gates * h
        return int(t * dirs * per_step)


class _OptionalRecurrentBias(_Recurrent):
    """An op with one bias by default and torch's second one on request."""

    attrs = {**_Recurrent.attrs, "recurrent_bias": Attr("bool", False)}


def _recurrent_bias(p):
    """The second bias's term (0 without one)."""
    return p.get("recurrent_bias", 0.0)


@register
class LSTM(_OptionalRecurrentBias):
    """Long short-term memory, gates [i, f, g, o], one bias (``recurrent_bias=True``: two):

        z = x_t K + h R + b (+ rb);  i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o)
        c' = f ⊙ c + i ⊙ g;   h' = o ⊙ tanh(c')

    K (C, 4H), R (H, 4H), b (4H), rb (4H) trainable on its own (torch's ``bias_hh``); masking,
    direction and output by the module's shared rule.

    Traps: torch's nn.LSTM has two biases (b_ih + b_hh): with one (the default) the torch
    lowering keeps bias_hh frozen at zero, since a second trainable bias doubles the bias's
    update; ``recurrent_bias=True`` is that second bias, as torch trains it. Keras also orders
    [i, f, c, o] (the same) and has one bias, torch [i, f, g, o]; flax's LSTMCell splits per-gate
    Dense layers.
    """

    positional = ("units",)

    gates = 4

    def initial_state(self, n, h):
        return (np.zeros((n, h)), np.zeros((n, h)))

    def cell(self, a, p, x_t, state):
        h, c = state
        z = x_t @ p["kernel"] + h @ p["recurrent_kernel"] + p["bias"] + _recurrent_bias(p)
        i, f, g, o = np.split(z, 4, axis=-1)
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h_new = sigmoid(o) * np.tanh(c_new)
        return h_new, c_new


@register
class GRU(_Recurrent):
    """Gated recurrent unit, gates [r, z, n], reset-after (default) or reset-before:

        a = x_t K + b;  u = h R + rb            (K (C, 3H), R (H, 3H), b and rb (3H))
        r = σ(a_r + u_r);  z = σ(a_z + u_z)
        reset_after=True:   n = tanh(a_n + r ⊙ u_n)
        reset_after=False:  n = tanh(a_n + (r ⊙ h) R_n + rb_n)
        h' = (1 − z) ⊙ n + z ⊙ h

    ``recurrent_bias`` (default True): rb is a second trainable bias (torch's ``bias_hh``);
    False: there is none (rb = 0 above, no parameter; Keras's reset-before GRU has one bias).
    Masking, direction and output by the module's shared rule.

    Traps: torch and flax order [r, z, n] and are reset-after only. Keras orders [z, r, h]; its
    ``reset_after=True`` (Keras 3's default) is this rule with two biases, its
    ``reset_after=False`` (the TF1 default) applies r before the recurrent matmul and has one
    bias: ``GRU(reset_after=False, recurrent_bias=False)``. The two forms are different math,
    not a relabelling (TensorFlow's ``GRUBlockCell`` is reset-before too).
    """

    positional = ("units",)

    attrs = {**_Recurrent.attrs, "reset_after": Attr("bool", True),
             "recurrent_bias": Attr("bool", True)}

    gates = 3

    def cell(self, a, p, x_t, state):
        (h,) = state
        a_r, a_z, a_n = np.split(x_t @ p["kernel"] + p["bias"], 3, axis=-1)
        r_rz, r_n = np.split(p["recurrent_kernel"], [2 * h.shape[-1]], axis=-1)
        rb_rz, rb_n = np.split(np.broadcast_to(_recurrent_bias(p), (3 * h.shape[-1],)),
                               [2 * h.shape[-1]])
        u_r, u_z = np.split(h @ r_rz + rb_rz, 2, axis=-1)
        r = sigmoid(a_r + u_r)
        z = sigmoid(a_z + u_z)
        if a["reset_after"]:
            n = np.tanh(a_n + r * (h @ r_n + rb_n))
        else:
            n = np.tanh(a_n + (r * h) @ r_n + rb_n)
        return ((1.0 - z) * n + z * h,)


@register
class SimpleRNN(_OptionalRecurrentBias):
    """Elman recurrent layer: h' = act(x_t K + h R + b (+ rb)), act in {tanh, relu}; K (C, H),
    R (H, H), b (H), rb (H) with ``recurrent_bias=True``. Masking, direction and output by the
    module's shared rule.

    Trap: torch's nn.RNN has two biases (b_ih + b_hh); with one (the default) the torch lowering
    keeps bias_hh frozen at 0, ``recurrent_bias=True`` trains it as torch does.
    """

    positional = ("units",)

    attrs = {**_OptionalRecurrentBias.attrs,
             "activation": Attr("str", "tanh", choices=("tanh", "relu"))}

    def cell(self, a, p, x_t, state):
        (h,) = state
        z = x_t @ p["kernel"] + h @ p["recurrent_kernel"] + p["bias"] + _recurrent_bias(p)
        return (np.tanh(z) if a["activation"] == "tanh" else np.maximum(z, 0.0),)
