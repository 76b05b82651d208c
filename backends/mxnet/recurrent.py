"""LSTM, GRU (reset-after, or reset-before with ``reset_after=False``) and SimpleRNN, unrolled
over the (static) time axis.

MXNet's fused ``RNN`` operator keeps two biases per layer (i2h and h2h: a second trainable bias
doubles the bias update), packs every weight into one flat parameter and has no sequence-length
masking of the final state in its CPU kernel; so each cell is written out with ``dot`` and the
gates of the canonical rule (``rosetta.ops.recurrent``): one ``dot`` of the whole sequence with
the input kernel, then per step one ``dot`` with the recurrent kernel. Masking by lengths: a step
t >= length keeps the state, s = m * s_new + (1 - m) * s with m in {0, 1} (exact), and outputs 0.
Parameters stay canonical: kernel (C, G*H), recurrent_kernel (H, G*H), bias (G*H) (GRU also
recurrent_bias unless ``recurrent_bias=False``, used inside its cell; LSTM and SimpleRNN with
``recurrent_bias=True`` too, added to every step's input projection), ``backward_*`` for the
reverse direction."""

from __future__ import annotations

from rosetta.backends.mxnet.lowering import activate, add_bias, lowers, step_mask


def _split(F, x, n: int, axis: int):
    parts = F.split(x, num_outputs=n, axis=axis, squeeze_axis=(axis == 1))
    return [parts] if n == 1 else list(parts)


def _lstm_cell(F, p, xk_t, state, attrs):
    h, c = state
    z = xk_t + F.dot(h, p["recurrent_kernel"])
    i, f, g, o = _split(F, z, 4, axis=-1)
    c_new = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)
    return F.sigmoid(o) * F.tanh(c_new), c_new


def _gru_cell(F, p, xk_t, state, attrs):
    """Reset-after: n = tanh(a_n + r (h R_n + rb_n)); ``reset_after=False``:
    n = tanh(a_n + (r h) R_n + rb_n), rb only with ``recurrent_bias``."""
    (h,) = state
    a_r, a_z, a_n = _split(F, xk_t, 3, axis=-1)
    rb = p.get("recurrent_bias")
    if attrs["reset_after"]:
        u = F.dot(h, p["recurrent_kernel"])
        u_r, u_z, u_n = _split(F, u if rb is None else add_bias(F, u, rb), 3, axis=-1)
        r = F.sigmoid(a_r + u_r)
        n_pre = a_n + r * u_n
    else:
        units = attrs["units"]
        r_rz = F.slice_axis(p["recurrent_kernel"], axis=-1, begin=0, end=2 * units)
        r_n = F.slice_axis(p["recurrent_kernel"], axis=-1, begin=2 * units, end=3 * units)
        u_rz = F.dot(h, r_rz)
        if rb is not None:
            u_rz = add_bias(F, u_rz, F.slice_axis(rb, axis=-1, begin=0, end=2 * units))
        u_r, u_z = _split(F, u_rz, 2, axis=-1)
        r = F.sigmoid(a_r + u_r)
        n_pre = a_n + F.dot(r * h, r_n)
        if rb is not None:
            n_pre = add_bias(F, n_pre, F.slice_axis(rb, axis=-1, begin=2 * units, end=3 * units))
    z = F.sigmoid(a_z + u_z)
    n = F.tanh(n_pre)
    return ((1.0 - z) * n + z * h,)


def _rnn_cell(F, p, xk_t, state, attrs):
    (h,) = state
    return (activate(F, attrs["activation"], xk_t + F.dot(h, p["recurrent_kernel"])),)


CELLS = {"LSTM": (_lstm_cell, 2), "GRU": (_gru_cell, 1), "SimpleRNN": (_rnn_cell, 1)}


def _direction(F, node, p, x, masks, reverse, ctx):
    """(outputs per step, final state) of one direction."""
    cell, n_state = CELLS[node.op]
    t_len = node.in_types[0].shape[0]
    units = node.attrs["units"]
    xk = add_bias(F, F.dot(x, p["kernel"]), p["bias"])               # (N, T, G*H)
    if node.op != "GRU" and "recurrent_bias" in p:   # LSTM/SimpleRNN's second bias: b + rb
        xk = add_bias(F, xk, p["recurrent_bias"])
    steps = _split(F, xk, t_len, axis=1)
    zero = F.zeros_like(F.slice_axis(steps[0], axis=-1, begin=0, end=units))
    state = (zero,) * n_state
    outs = [None] * t_len
    for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
        new = cell(F, p, steps[t], state, node.attrs)
        if masks is None:
            state, outs[t] = new, new[0]
        else:
            m = masks[t]
            state = tuple(F.broadcast_mul(s_new, m) + F.broadcast_mul(s, 1.0 - m)
                          for s_new, s in zip(new, state))
            outs[t] = F.broadcast_mul(new[0], m)
    return outs, state[0]


@lowers("LSTM", "GRU", "SimpleRNN")
def recurrent(F, node, xs, p, ctx):
    """The shared rule of ``rosetta.ops.recurrent``: [forward, backward] on the feature axis,
    every step's output (``return_sequences``) or the final states."""
    a = node.attrs
    t_len = node.in_types[0].shape[0]
    masks = None
    if len(xs) > 1:
        m = F.cast(step_mask(F, xs[1], t_len), dtype=ctx.dtype)       # (N, T)
        masks = [F.reshape(s, shape=(-1, 1)) for s in _split(F, m, t_len, axis=1)]
    outs = []
    for prefix in ("", "backward_") if a["bidirectional"] else ("",):
        q = {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)
             and (prefix or not k.startswith("backward_"))}
        seq, final = _direction(F, node, q, xs[0], masks, bool(prefix), ctx)
        outs.append(F.stack(*seq, axis=1) if a["return_sequences"] else final)
    return outs[0] if len(outs) == 1 else F.concat(*outs, dim=2 if a["return_sequences"] else 1)
