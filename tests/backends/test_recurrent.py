"""LSTM, GRU and SimpleRNN beyond the generic op tests: the torch lowering is torch's own fused
layer with a frozen second bias, padded steps neither leak into outputs nor into the final state,
bad lengths and bad specs fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs
from rosetta.errors import DataError, SpecError

from cases import BUILD
from helpers import compile_spec, random_inputs
from selection import BACKENDS

T = 5


@pytest.mark.skipif("torch" not in BACKENDS, reason="torch backend not selected")
@pytest.mark.parametrize("case,node,cls,frozen", [
    ("lstm_bidirectional_lengths", "bilstm", "LSTM", True),
    ("gru_sequences_lengths", "gru", "GRU", False),
    ("simple_rnn_tanh", "rnn", "RNN", True),
])
def test_torch_lowers_to_native_fused_layer(case, node, cls, frozen):
    import torch
    spec = BUILD[case]()
    prog = compile_spec(spec, "torch")
    rnn = prog.model.node_module(node).rnn
    assert type(rnn) is getattr(torch.nn, cls)
    optimized = {id(p) for g in prog.optimizer.param_groups for p in g["params"]}
    for name, p in rnn.named_parameters():
        if name.startswith("bias_hh"):
            # the canonical LSTM / SimpleRNN has ONE bias: torch's second is a frozen zero
            assert p.requires_grad is not frozen, name
            assert (id(p) in optimized) is not frozen, name
            if frozen:
                assert not p.detach().abs().max().item(), name
        else:
            assert p.requires_grad and id(p) in optimized, name
    # the frozen bias stays zero through training
    x = random_inputs(spec.model, 4)
    prog.train_step(x, np.ones((4, 2)))
    if frozen:
        assert all(not p.detach().abs().max().item()
                   for n, p in rnn.named_parameters() if n.startswith("bias_hh"))


@pytest.mark.skipif("torch" not in BACKENDS, reason="torch backend not selected")
def test_torch_loop_gru_has_no_frozen_bias():
    """nn.GRU is reset-after with two biases only: GRU(reset_after=False) and a one-bias GRU are
    ``LoopGRU``, nn.GRU's parameter names, ``bias_hh`` only with ``recurrent_bias=True``, every
    parameter trained (no frozen zero)."""
    from rosetta.backends.torch.recurrent import LoopGRU
    for case, node, hh in (("gru_reset_before_last_state", "gru", False),
                           ("gru_reset_before_two_biases_bidirectional_sequences_lengths",
                            "bigru", True),
                           ("gru_one_bias_sequences_lengths", "gru", False)):
        prog = compile_spec(BUILD[case](), "torch")
        rnn = prog.model.node_module(node).rnn
        assert type(rnn) is LoopGRU
        names = {n for n, _ in rnn.named_parameters()}
        assert any(n.startswith("bias_hh") for n in names) is hh, names
        optimized = {id(p) for g in prog.optimizer.param_groups for p in g["params"]}
        assert all(p.requires_grad and id(p) in optimized for p in rnn.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["lstm_bidirectional_sequences_lengths",
                                  "gru_sequences_lengths", "simple_rnn_relu_lengths",
                                  "gru_reset_before_two_biases_bidirectional_sequences_lengths"])
def test_padded_steps_change_nothing(case, backend):
    """Steps t >= length: output 0 (return_sequences) and no effect on any state, so changing the
    padded inputs changes no output."""
    spec = BUILD[case]()
    prog = compile_spec(spec, backend)
    x = random_inputs(spec.model, 6, seed=3)
    x["lengths"] = np.array([1, 2, 3, 5, 4, 1])
    noisy = {k: v.copy() for k, v in x.items()}
    pad = np.arange(T)[None, :] >= x["lengths"][:, None]
    noisy["x"][pad] = np.random.default_rng(9).standard_normal((int(pad.sum()), 3)) * 10
    assert not np.allclose(noisy["x"], x["x"])
    out, out_noisy = prog.forward(x), prog.forward(noisy)
    np.testing.assert_array_equal(out, out_noisy)
    ref = spec.model.reference_forward(prog.export_params(), x)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)


def _sequence_model(op, backend, **attrs):
    x = rs.Input((T, 3), name="x")
    lengths = rs.Input((), name="lengths", kind="int")
    y = getattr(rs, op)(2, return_sequences=True, name="rnn", **attrs)(x, lengths)
    spec = rs.TrainSpec(model=rs.Model([x, lengths], y, name="seq"),
                        loss=rs.losses.MeanSquaredError(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("images"), steps=1)
    return spec, compile_spec(spec, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,attrs", [("LSTM", {"bidirectional": True}), ("GRU", {}),
                                      ("SimpleRNN", {"bidirectional": True})])
def test_padded_outputs_are_zero_and_final_state_is_last_real_step(op, attrs, backend):
    spec, prog = _sequence_model(op, backend, **attrs)
    x = random_inputs(spec.model, 4, seed=5)
    x["lengths"] = np.array([2, 5, 1, 3])
    out = prog.forward(x)
    pad = np.arange(T)[None, :] >= x["lengths"][:, None]
    assert not out[pad].any()
    assert np.abs(out[~pad]).min() > 0
    # masking is truncation: the same example cut to its real steps, in a model of that length
    # without lengths (the parameters do not depend on T), gives the same real outputs
    params = prog.export_params()
    for i, n in enumerate(x["lengths"]):
        xn = rs.Input((int(n), 3), name="x")
        short = rs.Model(xn, getattr(rs, op)(2, return_sequences=True, name="rnn", **attrs)(xn))
        ref = short.reference_forward(params, x["x"][i:i + 1, :n])
        np.testing.assert_allclose(out[i, :n], ref[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lengths_out_of_range_raise_data_error(backend):
    spec = BUILD["lstm_sequences_lengths"]()
    prog = compile_spec(spec, backend)
    x = random_inputs(spec.model, 3)
    for bad in ([0, 1, 2], [1, 2, T + 1]):
        with pytest.raises(DataError, match=r"lengths must be in \[1, 5\]"):
            prog.forward({**x, "lengths": np.array(bad)})
    with pytest.raises(DataError, match="one integer per example"):
        prog.forward({**x, "lengths": np.array([1.0, 2.0, 3.0])})


def test_bad_specs_name_what_was_expected():
    with pytest.raises(SpecError, match=r"rank 2 per example \(T, C\)"):
        rs.Sequential([rs.LSTM(2)], input_shape=(4, 4, 3))
    x = rs.Input((T, 3), name="x")
    with pytest.raises(SpecError, match="sequence lengths: an int tensor of shape"):
        rs.Model([x, f := rs.Input((), name="f")], rs.GRU(2)(x, f))
    n = rs.Input((), name="n", kind="int")
    with pytest.raises(SpecError, match=r"1 or 2 inputs \(x, optional lengths\)"):
        rs.Model([x, n], rs.GRU(2)(x, n, x))
    with pytest.raises(SpecError, match="must be one of"):
        rs.SimpleRNN(2, activation="sigmoid")
    with pytest.raises(SpecError, match="must be positive"):
        rs.LSTM(0)


def test_parameters_and_json_round_trip():
    x = rs.Input((T, 3), name="x")
    n = rs.Input((), name="n", kind="int")
    model = rs.Model([x, n], rs.GRU(2, bidirectional=True, name="g")(x, n))
    assert {p: d.shape for p, d in model.param_defs().items()} == {
        "g/kernel": (3, 6), "g/recurrent_kernel": (2, 6), "g/bias": (6,),
        "g/recurrent_bias": (6,), "g/backward_kernel": (3, 6),
        "g/backward_recurrent_kernel": (2, 6), "g/backward_bias": (6,),
        "g/backward_recurrent_bias": (6,)}
    assert model.output_type.shape == (4,)
    assert rs.Graph.from_json(model.to_json()) == model
    one = rs.Model([x], rs.GRU(2, reset_after=False, recurrent_bias=False, name="g")(x))
    assert sorted(one.param_defs()) == ["g/bias", "g/kernel", "g/recurrent_kernel"]
    assert rs.Graph.from_json(one.to_json()) == one
