"""The built-in datasets of the zoo: what each promises, checked on the arrays themselves."""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs
from rosetta import data, text
from rosetta.errors import DataError
from rosetta.training import check_data


def test_majority_labels_are_the_most_frequent_real_symbol():
    ds = data.load("majority", n=300, length=9, min_length=3)
    tokens, lengths = ds.x_train["tokens"], ds.x_train["lengths"]
    assert tokens.shape[1:] == (9,) and lengths.shape[1:] == ()
    assert lengths.min() >= 3 and lengths.max() <= 9
    for t, n, y in zip(tokens, lengths, ds.y_train):
        assert (t[n:] == 0).all() and (t[:n] > 0).all()     # padding after the real tokens
        counts = np.bincount(t[:n], minlength=4)[1:]
        assert (counts == counts.max()).sum() == 1 and counts.argmax() == y


def test_text_labels_are_the_next_character():
    ds = data.load("text", length=16, n=50)
    x, y = ds.x_train["tokens"], ds.y_train
    assert x.shape[1:] == (16,) and y.shape[1:] == (16,)
    assert (x[:, 1:] == y[:, :-1]).all()
    assert ds.vocab == text.VOCAB and x.max() < len(text.VOCAB)
    assert text.decode(text.encode("def f(x):\n    return x")) == "def f(x):\n    return x"
    assert text.decode(text.encode("é")) == "?"


def test_patterns_and_clusters_shapes_and_classes():
    p = data.load("patterns", n=200, size=16)
    assert p.x_train.shape[1:] == (16, 16, 3) and set(np.unique(p.y_train)) == set(range(10))
    c = data.load("clusters", n=200)
    assert c.x_train.shape[1:] == (100,) and c.y_train.max() == 9


def test_digits_upsampled_repeats_each_pixel():
    small = data.load("digits", layout="image")
    big = data.load("digits", layout="image", size=32, channels=3)
    assert big.x_train.shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(big.x_train[:, ::4, ::4, 2], small.x_train[..., 0])
    with pytest.raises(DataError, match="multiple of 8"):
        data.load("digits", layout="image", size=12)


def _seq_model():
    t = rs.Input((16,), name="tokens", kind="int")
    n = rs.Input((), name="lengths", kind="int")
    h = rs.SequencePool("mean", name="pool")([rs.Embedding(4, 3, name="emb")(t), n])
    return rs.Model([t, n], rs.Dense(3, name="head")(h), name="seq")


def test_check_data_matches_inputs_by_name():
    spec = rs.TrainSpec(_seq_model(), rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.1),
                        rs.DataSpec("majority"))
    check_data(spec, spec.data.load())
    wrong = rs.TrainSpec(_seq_model(), rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.1),
                         rs.DataSpec("majority", args={"length": 12}))
    with pytest.raises(DataError, match="'tokens' of shape \\(12,\\)"):
        check_data(wrong, wrong.data.load())
    flat = rs.TrainSpec(_seq_model(), rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.1),
                        rs.DataSpec("digits"))
    with pytest.raises(DataError, match="one input array"):
        check_data(flat, flat.data.load())


@pytest.mark.parametrize("bad,words", [(np.array([0, 3]), "in \\[1, 16\\]"),
                                       (np.array([3, 17]), "in \\[1, 16\\]"),
                                       (np.array([2.0, 3.0]), "one integer per example")])
def test_lengths_are_checked_once_for_every_backend(bad, words):
    g = _seq_model()
    x = {"tokens": np.ones((2, 16), np.int64), "lengths": bad}
    with pytest.raises(DataError, match=words):
        g.as_input_dict(x)


def test_padding_does_not_change_a_masked_model():
    g = _seq_model()
    p = g.init_params(0)
    tokens = np.array([[1, 2, 3, 1] + [0] * 12, [2, 2, 1, 3] + [0] * 12])
    noisy = tokens.copy()
    noisy[:, 4:] = 3
    lengths = np.array([4, 4])
    a = g.reference_forward(p, {"tokens": tokens, "lengths": lengths})
    b = g.reference_forward(p, {"tokens": noisy, "lengths": lengths})
    np.testing.assert_array_equal(a, b)
