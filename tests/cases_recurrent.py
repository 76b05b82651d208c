"""Cases for LSTM, GRU, SimpleRNN (joined into ``cases.CASES``).

Tiny shapes (T <= 5, C <= 3, H <= 3): each ends in a Dense head (after a Flatten for sequences),
so every recurrent parameter gets a gradient."""

from __future__ import annotations

import rosetta as rs

T, C = 5, 3


def _train(model):
    return rs.TrainSpec(model=model, loss=rs.losses.MeanSquaredError(),
                        optimizer=rs.optim.SGD(0.1, momentum=0.9), data=rs.DataSpec("images"),
                        steps=5)


def _seq(layers, name):
    """Sequential on (T, C), no lengths: every step is real."""
    return lambda: _train(rs.Sequential(layers, input_shape=(T, C), name=name))


def _masked(make_layers, name):
    """A functional Model with inputs x (T, C) and lengths (), the recurrent nodes reading both.
    ``make_layers()`` returns [recurrent layer, ...]; the rest of the chain follows them."""
    def build():
        x = rs.Input((T, C), name="x")
        lengths = rs.Input((), name="lengths", kind="int")
        h = x
        for layer in make_layers():
            h = layer(h, lengths) if layer.op in ("LSTM", "GRU", "SimpleRNN") else layer(h)
        return _train(rs.Model([x, lengths], h, name=name))
    return build


def _head(seq: bool):
    return ([rs.Flatten(name="flat")] if seq else []) + [rs.Dense(2, name="head")]


CASES = [
    ("lstm_last_state", _seq([rs.LSTM(3, name="lstm"), *_head(False)], "lstm_last")),
    ("lstm_sequences_lengths", _masked(lambda: [
        rs.LSTM(3, return_sequences=True, name="lstm"), *_head(True)], "lstm_seq_len")),
    ("lstm_bidirectional_lengths", _masked(lambda: [
        rs.LSTM(2, bidirectional=True, name="bilstm"), *_head(False)], "bilstm_len")),
    ("lstm_bidirectional_sequences_lengths", _masked(lambda: [
        rs.LSTM(2, bidirectional=True, return_sequences=True, name="bilstm"), *_head(True)],
        "bilstm_seq_len")),
    ("lstm_stacked", _seq([rs.LSTM(3, return_sequences=True, name="lstm1"),
                           rs.LSTM(2, name="lstm2"), *_head(False)], "lstm_stacked")),
    ("gru_last_state", _seq([rs.GRU(3, bias_init="normal", name="gru"), *_head(False)],
                            "gru_last")),
    ("gru_sequences_lengths", _masked(lambda: [
        rs.GRU(3, return_sequences=True, bias_init="normal", name="gru"), *_head(True)],
        "gru_seq_len")),
    ("gru_bidirectional_lengths", _masked(lambda: [
        rs.GRU(2, bidirectional=True, bias_init="normal", name="bigru"), *_head(False)],
        "bigru_len")),
    ("gru_reset_before_last_state", _seq([
        rs.GRU(3, reset_after=False, recurrent_bias=False, bias_init="normal", name="gru"),
        *_head(False)], "gru_rb_last")),
    ("gru_reset_before_two_biases_bidirectional_sequences_lengths", _masked(lambda: [
        rs.GRU(2, reset_after=False, bidirectional=True, return_sequences=True,
               bias_init="normal", name="bigru"), *_head(True)], "bigru_rb_seq_len")),
    ("gru_one_bias_sequences_lengths", _masked(lambda: [
        rs.GRU(3, recurrent_bias=False, return_sequences=True, bias_init="normal", name="gru"),
        *_head(True)], "gru_1b_seq_len")),
    ("simple_rnn_tanh", _seq([rs.SimpleRNN(3, return_sequences=True, name="rnn"),
                              *_head(True)], "rnn_tanh")),
    ("lstm_two_biases_bidirectional_lengths", _masked(lambda: [
        rs.LSTM(2, bidirectional=True, recurrent_bias=True, bias_init="normal", name="bilstm"),
        *_head(False)], "bilstm2b_len")),
    ("simple_rnn_two_biases", _seq([rs.SimpleRNN(3, recurrent_bias=True, bias_init="normal",
                                                 name="rnn"), *_head(False)], "rnn_2b")),
    ("simple_rnn_relu_lengths", _masked(lambda: [
        rs.SimpleRNN(3, activation="relu", bias_init="normal", name="rnn"), *_head(False)],
        "rnn_relu_len")),
]
