"""``rosetta.from_keras`` of recurrent layers (core/importers/keras_recurrent.py): a Keras LSTM
is the canonical one-bias LSTM, a reset-after GRU the canonical GRU (gates reordered, its (2, 3H)
bias two parameters), a reset-before GRU (``reset_after=False``) the canonical
``GRU(reset_after=False, recurrent_bias=False)``, a Bidirectional the canonical
``bidirectional``, each certified with Keras as the source (float64, 1 step, hidden <= 4, T 3);
what the spec cannot take is refused in one line naming the layer."""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")

import copy  # noqa: E402

import numpy as np  # noqa: E402

import rosetta  # noqa: E402
from rosetta.errors import RosettaError  # noqa: E402
from rosetta.importers import ImportRefused, from_keras  # noqa: E402

L = keras.layers


def _model(body, name):
    x0 = keras.Input((3, 3))
    m = keras.Model(x0, L.Dense(2, name="head")(body(x0)), name=name)
    m.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.MeanSquaredError())
    return m


def test_an_lstm_read_by_a_bidirectional_relu_rnn_certifies():
    def body(x):
        y = L.LSTM(4, return_sequences=True, bias_initializer="random_normal", name="lstm")(x)
        return L.Bidirectional(L.SimpleRNN(4, activation="relu"), name="bi")(y)

    imp = from_keras(_model(body, "krnn"))
    ops = [(n.name, n.op, n.attrs.get("bidirectional"), n.attrs.get("recurrent_bias"))
           for n in imp.spec.model.nodes]
    assert ops == [("lstm", "LSTM", False, False), ("bi", "SimpleRNN", True, False),
                   ("head", "Dense", None, None)]
    assert imp.names["lstm/lstm_cell/bias"] == "lstm/bias"
    assert imp.names["bi/backward_simple_rnn/simple_rnn_cell/kernel"] == "bi/backward_kernel"
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.table()
    assert max(cert.results[0]["worst"].values()) < 1e-10


def test_a_gru_and_a_bidirectional_gru_certify_with_gates_reordered_and_bias_split():
    def body(x):
        init = dict(bias_initializer="random_normal")
        y = L.GRU(4, return_sequences=True, name="gru", **init)(x)
        # named: an unnamed layer's name (and its backward copy's variable paths) follows Keras's
        # process-wide counter, which other tests in this process advance
        return L.Bidirectional(L.GRU(3, name="inner", **init), name="bi")(y)

    m = _model(body, "kgru")
    imp = from_keras(m)
    assert [(n.op, n.attrs.get("bidirectional")) for n in imp.spec.model.nodes] == [
        ("GRU", False), ("GRU", True), ("Dense", None)]
    assert imp.names["gru/gru_cell/bias[0]"] == "gru/bias"
    assert imp.names["gru/gru_cell/bias[1]"] == "gru/recurrent_bias"
    assert imp.names["bi/backward_inner/gru_cell/bias[1]"] == "bi/backward_recurrent_bias"
    # Keras [z, r, h] -> canonical [r, z, n]; row 1 of the (2, 3H) bias is the recurrent bias
    b = keras.ops.convert_to_numpy(m.get_layer("gru").cell.bias.value)
    assert (imp.params["gru/recurrent_bias"] == [*b[1, 4:8], *b[1, :4], *b[1, 8:]]).all()
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.table()
    assert max(cert.results[0]["worst"].values()) < 1e-10


def test_a_reset_before_gru_certifies_and_read_reset_after_fails():
    """Certified on torch, TensorFlow and JAX (MXNet from the saved run: ``rosetta certify``)."""
    m = _model(lambda x: L.GRU(3, reset_after=False, bias_initializer="random_normal",
                               name="gru")(x), "kgru_rb")
    imp = from_keras(m)
    gru = imp.spec.model.nodes[0]
    assert (gru.op, gru.attrs["reset_after"], gru.attrs["recurrent_bias"]) == ("GRU", False, False)
    assert sorted(gru.params) == ["bias", "kernel", "recurrent_kernel"]
    assert imp.names["gru/gru_cell/bias"] == "gru/bias"
    # Keras's one (3H,) bias [z, r, h] -> canonical [r, z, n]
    b = keras.ops.convert_to_numpy(m.get_layer("gru").cell.bias.value)
    assert (imp.params["gru/bias"] == [*b[3:6], *b[:3], *b[6:]]).all()
    cert = imp.certify(("torch", "tensorflow", "jax"), steps=1)
    assert cert.passed, cert.table()
    assert max(max(r["worst"].values()) for r in cert.results) < 1e-10
    # planted: the same model read as the reset-after GRU (one attribute) fails the
    # certificate, blamed on the GRU
    d = imp.spec.to_json()
    next(n for n in d["model"]["nodes"] if n["name"] == "gru")["attrs"]["reset_after"] = True
    bad = copy.copy(imp)
    bad.spec = rosetta.TrainSpec.from_json(d)
    bad.spec.data = imp.spec.data
    cert = bad.certify(("torch",), steps=1)
    assert not cert.passed, cert.table()
    assert "gru" in cert.results[0]["blame"], cert.results[0]
    # a second bias the source does not hold: failed, naming it, before anything runs
    d["model"]["nodes"][0]["attrs"].update(reset_after=False, recurrent_bias=True)
    bad.spec = rosetta.TrainSpec.from_json(d)
    bad.spec.data = imp.spec.data
    cert = bad.certify(("torch", "jax"), steps=1)
    assert [r["passed"] for r in cert.results] == [False, False]
    assert cert.results[0]["blame"] == ("the spec has parameters the source does not hold: "
                                        "gru/recurrent_bias (GRU)"), cert.results[0]


@pytest.mark.parametrize("layer,says", [
    (lambda: L.LSTM(4, dropout=0.2, name="rec"), "rec (LSTM): dropout=0.2"),
    (lambda: L.LSTM(4, recurrent_activation="hard_sigmoid", name="rec"),
     "recurrent_activation='hard_sigmoid'"),
], ids=["dropout", "hard-sigmoid"])
def test_what_the_spec_lacks_is_refused_naming_the_layer(layer, says):
    with pytest.raises(ImportRefused) as e:
        from_keras(_model(lambda x: layer()(x), "bad"))
    assert says in str(e.value), str(e.value)
