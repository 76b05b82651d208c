"""The sequence and robust losses (sequence cross-entropy with padding, Huber, KL divergence): NumPy
references on hand-computed values, algebraic identities, JSON round trips, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rosetta as rs
from rosetta import losses
from rosetta.errors import DataError

LN2, LN3 = np.log(2.0), np.log(3.0)


def _log_softmax(z):
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# --- sequence cross-entropy -----------------------------------------------------------------
def test_sequence_ce_is_the_mean_over_real_tokens_of_the_whole_batch():
    # uniform logits over 2 classes: every real token costs log 2, except the one whose logits
    # are (log 3, 0): -log(3/4) for class 0
    z = np.zeros((2, 3, 2))
    z[1, 0] = [LN3, 0.0]
    y = np.array([[0, -1, -1],      # 1 real token
                  [0, 1, 1]])       # 3 real tokens
    expected = (LN2 + (-np.log(0.75)) + 2 * LN2) / 4
    assert losses.SequenceCrossEntropy().reference(z, y) == pytest.approx(expected, rel=1e-14)
    per_sequence_means = (LN2 + (-np.log(0.75) + 2 * LN2) / 3) / 2
    assert abs(expected - per_sequence_means) > 1e-3   # the rule is not a mean of means


def test_sequence_ce_padding_values_are_never_read():
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((3, 4, 5)), rng.integers(0, 5, (3, 4))
    y[:, 2:] = -1
    loss = losses.SequenceCrossEntropy(label_smoothing=0.1)
    z2 = z.copy()
    z2[:, 2:] = 1e3 * rng.standard_normal((3, 2, 5))
    assert loss.reference(z2, y) == loss.reference(z, y)


def test_sequence_ce_without_padding_is_softmax_ce():
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal((3, 4, 5)), rng.integers(0, 5, (3, 4))
    for eps in (0.0, 0.3):
        assert losses.SequenceCrossEntropy(label_smoothing=eps).reference(z, y) == pytest.approx(
            losses.SoftmaxCrossEntropy(eps).reference(z, y), rel=1e-14)


def test_sequence_ce_smoothing_hand_value():
    z = np.array([[[0.0, LN3], [5.0, 7.0]]])   # softmax of the first token: (1/4, 3/4)
    y = np.array([[1, 7]])                       # 7 is padding
    eps = 0.2
    q = np.array([eps / 2, 1 - eps + eps / 2])
    expected = -(q * np.log([0.25, 0.75])).sum()
    got = losses.SequenceCrossEntropy(ignore_label=7, label_smoothing=eps).reference(z, y)
    assert got == pytest.approx(expected, rel=1e-14)


def test_sequence_ce_all_padding_is_zero_and_a_class_can_be_the_padding():
    z = np.random.default_rng(2).standard_normal((2, 3, 4))
    assert losses.SequenceCrossEntropy().reference(z, np.full((2, 3), -1)) == 0.0
    y = np.array([[0, 1, 2], [3, 0, 0]])
    real = y != 0
    per = -np.take_along_axis(_log_softmax(z), y[..., None], -1)[..., 0]
    got = losses.SequenceCrossEntropy(ignore_label=0).reference(z, y)
    assert got == pytest.approx(per[real].mean(), rel=1e-14)


def test_sequence_ce_token_accuracy_counts_real_positions_only():
    z = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
                  [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    y = np.array([[0, 1, -1],
                  [1, -1, -1]])                 # 3 real tokens, 2 right
    assert losses.SequenceCrossEntropy().metrics(z, y) == {"accuracy": pytest.approx(2 / 3)}
    # padding by class 0: the argmax hits at padded positions do not count
    y = np.array([[0, 1, 0],
                  [1, 0, 0]])                   # 2 real tokens, 1 right
    assert losses.SequenceCrossEntropy(0).metrics(z, y) == {"accuracy": pytest.approx(1 / 2)}


def test_sequence_ce_labels_check_skips_padding():
    loss = losses.SequenceCrossEntropy()
    loss.check_labels(np.array([[0, 2, -1]]), 3)
    with pytest.raises(DataError, match=r"\[0, 3\) or the ignore_label -1"):
        loss.check_labels(np.array([[0, 3, -1]]), 3)
    with pytest.raises(DataError, match="found -2"):
        loss.check_labels(np.array([[-2, 1]]), 3)
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        losses.SoftmaxCrossEntropy().check_labels(np.array([0, -1]), 3)
    losses.Huber().check_labels(np.array([-5.0]), 3)       # float targets: no class ids


def test_sequence_ce_needs_a_time_and_class_axis():
    with pytest.raises(rs.SpecError, match="softmax_cross_entropy"):
        rs.TrainSpec(rs.Sequential([rs.Dense(3, name="d")], input_shape=(4,)),
                     losses.SequenceCrossEntropy(), rs.optim.SGD(0.1), rs.DataSpec("images"))
    rs.TrainSpec(rs.Sequential([rs.Dense(3, name="d")], input_shape=(5, 4)),
                 losses.SequenceCrossEntropy(), rs.optim.SGD(0.1), rs.DataSpec("images"))


# --- Huber --------------------------------------------------------------------------------------
def test_huber_hand_values():
    pred = np.array([[0.5, 2.0, -3.0]])
    target = np.zeros((1, 3))
    # 0.5 * 0.25, 1 * (2 - 0.5), 1 * (3 - 0.5)
    assert losses.Huber().reference(pred, target) == pytest.approx((0.125 + 1.5 + 2.5) / 3,
                                                                   rel=1e-15)
    # delta 2: 0.5 * 0.25, 0.5 * 4 (|d| = delta sits on the quadratic side), 2 * (3 - 1)
    assert losses.Huber(2.0).reference(pred, target) == pytest.approx((0.125 + 2.0 + 4.0) / 3,
                                                                      rel=1e-15)


def test_huber_limits():
    rng = np.random.default_rng(3)
    p, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    d = p - t
    # delta beyond every |d|: half the squared error
    assert losses.Huber(100.0).reference(p, t) == pytest.approx(
        0.5 * losses.MeanSquaredError().reference(p, t), rel=1e-14)
    # tiny delta: delta * (mean |d| - delta / 2) exactly (every element on the linear side)
    delta = 1e-3
    assert np.abs(d).min() > delta
    assert losses.Huber(delta).reference(p, t) == pytest.approx(
        delta * (np.abs(d).mean() - delta / 2), rel=1e-13)


def test_huber_is_continuous_at_delta():
    h = losses.Huber(0.7)
    at = h.reference(np.array([0.7]), np.zeros(1))
    assert at == pytest.approx(0.5 * 0.49, rel=1e-15)
    assert h.reference(np.array([0.7 + 1e-12]), np.zeros(1)) == pytest.approx(at, abs=1e-11)


# --- KL divergence ------------------------------------------------------------------------------
def test_kl_hand_values():
    z = np.array([[0.0, 0.0], [0.0, LN3]])
    p = np.array([[1.0, 0.0],                  # 1 * (log 1 - log 1/2) + 0 log 0 = log 2
                  [0.5, 0.5]])                 # .5 (log .5 - log .25) + .5 (log .5 - log .75)
    row2 = 0.5 * (np.log(0.5) - np.log(0.25)) + 0.5 * (np.log(0.5) - np.log(0.75))
    assert losses.KLDivergence().reference(z, p) == pytest.approx((LN2 + row2) / 2, rel=1e-14)


def test_kl_identities():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((3, 4, 5))
    p = np.exp(rng.standard_normal((3, 4, 5)))
    p /= p.sum(-1, keepdims=True)
    kl = losses.KLDivergence()
    # zero at p = softmax(z), invariant to a shift of the logits, positive elsewhere
    assert abs(kl.reference(z, np.exp(_log_softmax(z)))) < 1e-15
    assert kl.reference(z + 3.0, p) == pytest.approx(kl.reference(z, p), rel=1e-13)
    assert kl.reference(z, p) > 0
    # = cross-entropy(p, z) - entropy(p); for one-hot p, the integer-label cross-entropy
    ce = -(p * _log_softmax(z)).sum(-1).mean()
    entropy = -(p * np.log(p)).sum(-1).mean()
    assert kl.reference(z, p) == pytest.approx(ce - entropy, rel=1e-13)
    y = rng.integers(0, 5, (3, 4))
    assert kl.reference(z, np.eye(5)[y]) == pytest.approx(
        losses.SoftmaxCrossEntropy().reference(z, y), rel=1e-14)


# --- JSON and errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("loss", [losses.SequenceCrossEntropy(),
                                  losses.SequenceCrossEntropy(ignore_label=0, label_smoothing=0.1),
                                  losses.Huber(), losses.Huber(0.25), losses.KLDivergence()])
def test_json_roundtrip(loss):
    d = json.loads(json.dumps(loss.to_json()))
    back = losses.from_json(d)
    assert back == loss and type(back) is type(loss) and back.to_json() == d


def test_json_names_and_defaults():
    assert losses.from_json("huber") == losses.Huber(1.0)
    assert losses.from_json("kl_divergence") == losses.KLDivergence()
    assert losses.from_json({"name": "sequence_cross_entropy"}).to_json() == {
        "name": "sequence_cross_entropy", "ignore_label": -1, "label_smoothing": 0.0}
    assert losses.SequenceCrossEntropy().label_kind == "int"
    assert losses.Huber().label_kind == losses.KLDivergence().label_kind == "float"


@pytest.mark.parametrize("bad, words", [
    (lambda: losses.SequenceCrossEntropy(ignore_label=1.5), "ignore_label"),
    (lambda: losses.SequenceCrossEntropy(ignore_label=True), "ignore_label"),
    (lambda: losses.SequenceCrossEntropy(label_smoothing=1.0), "label_smoothing"),
    (lambda: losses.Huber(0.0), "delta"),
    (lambda: losses.Huber(-1.0), "delta"),
    (lambda: losses.Huber(float("inf")), "delta"),
    (lambda: losses.Huber(True), "delta"),
    (lambda: losses.from_json({"name": "huber", "beta": 1.0}), "beta"),
    (lambda: losses.from_json({"name": "kl_divergence", "log_target": True}), "log_target"),
    (lambda: losses.from_json({"name": "kl"}), "unknown loss"),
])
def test_bad_arguments_are_spec_errors(bad, words):
    with pytest.raises(rs.SpecError, match=words):
        bad()


def test_kl_needs_a_class_axis():
    with pytest.raises(rs.SpecError, match="class axis"):
        rs.TrainSpec(rs.Sequential([rs.Dense(1, name="d")], input_shape=(4,)),
                     losses.KLDivergence(), rs.optim.SGD(0.1), rs.DataSpec("images"))
