"""Neutral initialization, schedules, optimizer references and data batching."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import rosetta as rs
from rosetta import data
from rosetta.initializers import Initializer

S = rs.schedules


def test_init_depends_only_on_seed_and_path():
    a = rs.Sequential([rs.Dense(8, name="a"), rs.Dense(4, name="b")], (5,), name="m")
    b = rs.Sequential([rs.Dense(8, name="a"), rs.Dense(7, name="c"), rs.Dense(2, name="d")], (5,),
                      name="m")
    pa, pb = a.init_params(0), b.init_params(0)
    np.testing.assert_array_equal(pa["a/kernel"], a.init_params(0)["a/kernel"])
    # same path and shape -> same numbers, whatever else the model holds
    np.testing.assert_array_equal(pa["a/kernel"], pb["a/kernel"])
    assert not np.array_equal(pa["a/kernel"], a.init_params(1)["a/kernel"])
    assert not np.array_equal(pa["b/kernel"][:, 0], pb["c/kernel"][:, 0][:8])


@pytest.mark.parametrize("name,shape,var", [
    ("glorot_uniform", (400, 600), 2.0 / 1000),
    ("glorot_normal", (400, 600), 2.0 / 1000),
    ("he_uniform", (3, 3, 64, 32), 2.0 / 576),
    ("he_normal", (3, 3, 64, 32), 2.0 / 576),
    ("lecun_uniform", (500, 300), 1.0 / 500),
    ("lecun_normal", (500, 300), 1.0 / 500),
])
def test_variance_scaling(name, shape, var):
    w = Initializer(name).sample(shape, 0, "p")
    assert w.var() == pytest.approx(var, rel=0.05)
    if name.endswith("normal"):
        std = math.sqrt(var) / 0.87962566103423978
        assert np.abs(w).max() <= 2 * std + 1e-12


def test_other_initializers():
    assert (Initializer("zeros").sample((3,), 0, "p") == 0).all()
    assert (Initializer("ones").sample((3,), 0, "p") == 1).all()
    assert (Initializer("constant", value=0.5).sample((3,), 0, "p") == 0.5).all()
    t = Initializer("truncated_normal", stddev=0.1).sample((10000,), 0, "p")
    assert np.abs(t).max() <= 0.2 and t.std() == pytest.approx(0.088, rel=0.05)
    q = Initializer("orthogonal").sample((6, 4), 0, "p")
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-12)
    q = Initializer("orthogonal", gain=2.0).sample((3, 5), 0, "p")
    np.testing.assert_allclose(q @ q.T, 4 * np.eye(3), atol=1e-12)
    assert Initializer.from_json(Initializer("normal", stddev=0.02).to_json()) == \
        Initializer("normal", stddev=0.02)


def test_schedules_closed_form():
    assert [S.Step(1.0, 2, 0.5)(t) for t in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert S.Exponential(1.0, 2, 0.5)(1) == pytest.approx(math.sqrt(0.5))
    assert S.Exponential(1.0, 2, 0.5, staircase=True)(3) == 0.5
    c = S.Cosine(1.0, 10, final=0.1)
    assert c(0) == 1.0 and c(10) == pytest.approx(0.1) and c(20) == pytest.approx(0.1)
    assert c(5) == pytest.approx(0.55)
    w = S.WarmupCosine(1.0, 4, 12, init=0.2, final=0.0)
    assert [float(w(t)) for t in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert float(w(8)) == pytest.approx(0.5) and float(w(12)) == pytest.approx(0.0)
    assert float(S.Constant(0.3)(7)) == 0.3
    for s in (S.Step(1.0, 2), c, w):
        assert S.as_schedule(s.to_json()) == s


def test_sgd_reference_by_hand():
    p, g = {"w": np.array([1.0])}, {"w": np.array([0.5])}
    opt = rs.optim.SGD(S.Step(0.1, 1, 0.5), momentum=0.9, weight_decay=0.1)
    st = opt.init_state(p)
    p1, st = opt.update(p, g, st, 0)   # g' = 0.6, v = 0.6, p = 1 - 0.1*0.6
    assert p1["w"][0] == pytest.approx(0.94)
    p2, st = opt.update(p1, g, st, 1)  # g' = 0.594, v = 0.9*0.6+0.594 = 1.134, lr 0.05
    assert p2["w"][0] == pytest.approx(0.94 - 0.05 * 1.134)
    nes = rs.optim.SGD(0.1, momentum=0.9, nesterov=True)
    q, _ = nes.update(p, g, nes.init_state(p), 0)  # v = 0.5, step = g + 0.9 v = 0.95
    assert q["w"][0] == pytest.approx(1 - 0.095)


def test_adam_and_adamw_reference_by_hand():
    p, g = {"w": np.array([2.0])}, {"w": np.array([0.3])}
    adam = rs.optim.Adam(0.1, epsilon=1e-8)
    q, st = adam.update(p, g, adam.init_state(p), 0)
    assert q["w"][0] == pytest.approx(2.0 - 0.1 * 0.3 / (0.3 + 1e-8), rel=1e-14)
    adamw = rs.optim.AdamW(0.1, weight_decay=0.5, epsilon=1e-8)
    q, _ = adamw.update(p, g, adamw.init_state(p), 0)
    assert q["w"][0] == pytest.approx(2.0 - 0.1 * (0.3 / (0.3 + 1e-8) + 0.5 * 2.0), rel=1e-14)
    # epsilon is added after bias correction: with a large eps the step is m_hat/(|g|+eps)
    big = rs.optim.Adam(1.0, epsilon=1.0)
    q, _ = big.update(p, g, big.init_state(p), 0)
    assert q["w"][0] == pytest.approx(2.0 - 0.3 / 1.3, rel=1e-14)


def test_lr_scale_first_matching_pattern_wins():
    opt = rs.optim.SGD(0.1, lr_scale={"emb/*": 0.1, "*/bias": 2.0, "block?/conv/kernel": 0.5})
    assert [opt.lr_factor(p) for p in ("emb/embeddings", "emb/bias", "head/bias",
                                       "block1/conv/kernel", "block12/conv/kernel", "head/kernel",
                                       "Emb/embeddings")] == [0.1, 0.1, 2.0, 0.5, 1.0, 1.0, 1.0]
    assert rs.optim.lr_factor("a/b/c", {"a/*": 3.0}) == 3.0   # * crosses "/"
    assert rs.optim.SGD(0.1).lr_factor("anything") == 1.0


def test_lr_scale_reference_by_hand():
    p = {"emb/w": np.array([1.0]), "head/w": np.array([1.0]), "head/bias": np.array([1.0])}
    g = {k: np.array([0.5]) for k in p}
    sgd = rs.optim.SGD(S.Step(0.1, 1, 0.5), momentum=0.9, lr_scale={"emb/*": 0.1, "*bias": 0.0})
    q, st = sgd.update(p, g, sgd.init_state(p), 0)
    assert q["emb/w"][0] == pytest.approx(1 - 0.01 * 0.5, rel=1e-15)
    assert q["head/w"][0] == pytest.approx(1 - 0.1 * 0.5, rel=1e-15)
    assert q["head/bias"][0] == 1.0 and st["head/bias"][0] == 0.5   # frozen, momentum still kept
    q, _ = sgd.update(q, g, st, 1)                                     # lr(1) = 0.05, v = 0.95
    assert q["emb/w"][0] == pytest.approx(1 - 0.005 - 0.005 * 0.95, rel=1e-14)
    # decoupled decay follows the parameter's lr: p - lr * factor * (direction + wd * p)
    adamw = rs.optim.AdamW(0.1, weight_decay=0.5, epsilon=1e-8, lr_scale={"emb/*": 0.2})
    q, _ = adamw.update(p, g, adamw.init_state(p), 0)
    assert q["emb/w"][0] == pytest.approx(1 - 0.02 * (0.5 / (0.5 + 1e-8) + 0.5), rel=1e-14)
    assert q["head/w"][0] == pytest.approx(1 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.5), rel=1e-14)


def test_lr_scale_json_and_errors():
    opt = rs.optim.AdamW(0.1, lr_scale={"z/*": 0.5, "a/*": 2})
    d = opt.to_json()
    assert d["lr_scale"] == {"z/*": 0.5, "a/*": 2.0}
    back = rs.optim.from_json(json.loads(json.dumps(d)))
    assert back == opt and list(back.lr_scale) == ["z/*", "a/*"]   # the order is the rule
    assert "lr_scale" not in rs.optim.Lion(0.1).to_json()
    assert "lr_scale" not in rs.optim.Lion(0.1, lr_scale={}).to_json()
    for bad, words in [([("emb/*", 0.1)], "glob patterns"), ({"": 1.0}, "non-empty"),
                       ({3: 1.0}, "non-empty"), ({"a/*": -0.1}, ">= 0"),
                       ({"a/*": "0.1"}, "number"), ({"a/*": math.inf}, "finite"),
                       ({"a/*": True}, "number")]:
        with pytest.raises(rs.SpecError, match=words):
            rs.optim.Adam(0.1, lr_scale=bad)
    with pytest.raises(rs.SpecError, match="lr_scale"):
        rs.optim.from_json({"name": "sgd", "learning_rate": 0.1, "lr_scale": 0.5})


def test_digits_and_batches_are_deterministic():
    ds = data.load("digits")
    assert ds.x_train.shape == (1438, 64) and ds.x_test.shape == (359, 64)
    assert ds.x_train.max() <= 1.0 and set(np.unique(ds.y_train)) == set(range(10))
    img = data.load("digits", layout="image")
    np.testing.assert_array_equal(img.x_train.reshape(-1, 64), ds.x_train)
    a = [idx.copy() for _, idx in data.batches(100, 32, seed=4, steps=7)]
    b = [idx.copy() for _, idx in data.batches(100, 32, seed=4, steps=7)]
    assert all((x == y).all() for x, y in zip(a, b)) and len(a) == 7
    assert all(len(i) == 32 for i in a)  # the incomplete last batch is dropped
    assert len(set(np.concatenate(a[:3]).tolist())) == 96  # one epoch: no repeats


def test_datasets_and_their_errors():
    r = data.load("regression")
    coef = np.polyfit(r.x_train[:, 0], r.y_train[:, 0], 1)
    assert coef[0] == pytest.approx(2.0, abs=0.05)
    im = data.load("images", height=8, width=8, channels=1)
    assert im.x_train.shape[1:] == (8, 8, 1)
    with pytest.raises(rs.DataError, match="unknown dataset"):
        data.load("cifar")
    with pytest.raises(rs.DataError, match="layout"):
        data.load("digits", layout="nchw")
    with pytest.raises(rs.DataError, match="exceeds"):
        list(data.batches(10, 32, 0, 1))
