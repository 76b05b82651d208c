"""Every optimizer and schedule on every backend against the NumPy float64 reference of its
canonical math (core/optim.py), over several steps with a changing learning rate.

The reference is fed the backend's own gradients at the backend's own parameters, so this isolates
the update rule from the gradient computation (tested in test_ops.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import rosetta as rs
from rosetta.conformance import compare_trees
from rosetta.conformance.oracle import check_optimizer
from rosetta.conformance.tiers import EXACT

from helpers import compile_spec, random_inputs, random_targets
from selection import BACKENDS, PAIRS

S = rs.schedules
OPTIMIZERS = {
    "sgd_plain_step": lambda: rs.optim.SGD(S.Step(0.1, step_size=2, gamma=0.5)),
    "sgd_momentum_wd_cosine": lambda: rs.optim.SGD(S.Cosine(0.1, 4, final=0.01), momentum=0.9,
                                                   weight_decay=0.05),
    "sgd_nesterov_exponential": lambda: rs.optim.SGD(S.Exponential(0.1, 2, 0.5), momentum=0.8,
                                                     nesterov=True),
    "sgd_nesterov_staircase_wd": lambda: rs.optim.SGD(S.Exponential(0.1, 2, 0.5, staircase=True),
                                                      momentum=0.5, nesterov=True,
                                                      weight_decay=0.01),
    "adam_warmup_cosine": lambda: rs.optim.Adam(S.WarmupCosine(0.05, 2, 6, init=0.01, final=1e-3),
                                                beta1=0.8, beta2=0.95, epsilon=1e-3),
    "adam_constant": lambda: rs.optim.Adam(0.01),
    "adamw_step": lambda: rs.optim.AdamW(S.Step(0.05, 3, 0.3), weight_decay=0.1, epsilon=1e-6),
    "adam_hat_warmup": lambda: rs.optim.Adam(S.WarmupCosine(0.05, 2, 6, init=0.01), beta1=0.8,
                                             beta2=0.95, epsilon=1e-2, epsilon_mode="hat"),
    "adamw_hat_step": lambda: rs.optim.AdamW(S.Step(0.05, 3, 0.3), weight_decay=0.1,
                                             epsilon=1e-3, epsilon_mode="hat"),
    "rmsprop_plain_cosine": lambda: rs.optim.RMSprop(S.Cosine(0.02, 5, final=0.002), rho=0.9,
                                                     epsilon=1e-3),
    "rmsprop_centered_momentum_step": lambda: rs.optim.RMSprop(S.Step(0.01, 2, 0.5), rho=0.8,
                                                               momentum=0.7, centered=True,
                                                               epsilon=1e-4),
    "rmsprop_momentum_constant": lambda: rs.optim.RMSprop(0.01, momentum=0.9),
    "adagrad_initial_exponential": lambda: rs.optim.Adagrad(S.Exponential(0.1, 2, 0.5),
                                                            initial_accumulator=0.1,
                                                            epsilon=1e-3),
    "adagrad_zero_constant": lambda: rs.optim.Adagrad(0.05),
    # the schedules torch's LR schedulers and Adagrad's lr_decay import to (a linear warm-up,
    # then a periodic cosine past its period; lr / (1 + d t))
    "sgd_momentum_sequential_linear_cosine_annealing": lambda: rs.optim.SGD(
        S.Sequential((S.Linear(0.1, 0.2, 1.0, 2), S.CosineAnnealing(0.1, 2, 0.01)), (2,)),
        momentum=0.9),
    "adagrad_inverse_time": lambda: rs.optim.Adagrad(S.InverseTime(0.1, 0.5),
                                                     initial_accumulator=0.1),
    "lion_wd_cosine": lambda: rs.optim.Lion(S.Cosine(0.01, 5, final=0.001), beta1=0.8,
                                            beta2=0.95, weight_decay=0.5),
    "lion_constant": lambda: rs.optim.Lion(0.003),
    # gradient norms of these steps are 0.46 to 0.70, entries up to 0.24: both clips act
    "sgd_momentum_clip_norm": lambda: rs.optim.SGD(S.Step(0.1, 2, 0.5), momentum=0.9,
                                                   clip_norm=0.3),
    "adam_clip_value_and_norm": lambda: rs.optim.Adam(0.01, clip_value=0.08, clip_norm=0.25),
    "rmsprop_centered_clip_value": lambda: rs.optim.RMSprop(0.01, rho=0.9, centered=True,
                                                            epsilon=1e-4, clip_value=0.05),
    "adagrad_clip_norm_inactive": lambda: rs.optim.Adagrad(0.05, 0.1, clip_norm=10.0),
    "sgd_wd_kernels": lambda: rs.optim.SGD(S.Cosine(0.1, 4), momentum=0.5, weight_decay=0.3,
                                           decay="kernels"),
    "adamw_kernels_hat_clip": lambda: rs.optim.AdamW(S.Step(0.05, 3, 0.3), weight_decay=0.2,
                                                     epsilon=1e-3, epsilon_mode="hat",
                                                     decay="kernels", clip_norm=0.3),
    "adamw_kernels": lambda: rs.optim.AdamW(0.02, weight_decay=0.5, decay="kernels"),
    "lion_kernels_clip": lambda: rs.optim.Lion(0.01, weight_decay=0.5, decay="kernels",
                                               clip_norm=0.2),
    # per-parameter learning-rate factors (first matching pattern wins: hidden/bias gets 0.1)
    "sgd_momentum_wd_lr_scale": lambda: rs.optim.SGD(S.Step(0.1, 2, 0.5), momentum=0.9,
                                                     weight_decay=0.05,
                                                     lr_scale={"hidden/*": 0.1, "*/bias": 3.0}),
    # factor 0 freezes out/kernel, decoupled decay included
    "adamw_kernels_lr_scale_cosine": lambda: rs.optim.AdamW(
        S.WarmupCosine(0.05, 2, 6, init=0.01), weight_decay=0.2, decay="kernels",
        lr_scale={"out/kernel": 0.0, "*bias": 2.5}),
    "adam_hat_lr_scale_constant": lambda: rs.optim.Adam(0.01, epsilon=1e-3, epsilon_mode="hat",
                                                        lr_scale={"hidden/kernel": 0.3}),
    "lion_wd_lr_scale_clip": lambda: rs.optim.Lion(0.01, weight_decay=0.5, clip_norm=0.2,
                                                   lr_scale={"out/*": 0.5}),
    # frozen parameters: no update, no state, no decay, outside the clipping norm (the norm of
    # these steps' trainable gradients exceeds 0.2, the frozen kernel's would change it); the
    # hidden layer's gradients flow through the frozen out/kernel
    "adamw_frozen_out_kernel_clip": lambda: rs.optim.AdamW(0.05, weight_decay=0.2, clip_norm=0.2,
                                                           frozen=["out/kernel"]),
    "sgd_momentum_wd_frozen_hidden_lr_scale": lambda: rs.optim.SGD(
        S.Step(0.1, 2, 0.5), momentum=0.9, weight_decay=0.05, frozen=["hidden/*"],
        lr_scale={"out/*": 2.0}),
}
STEPS = 6


def _model():
    return rs.Sequential([rs.Dense(5, activation="tanh", name="hidden"), rs.Dense(3, name="out")],
                         input_shape=(4,), name="opt_case")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_optimizer_matches_reference(opt, backend):
    spec = rs.TrainSpec(model=_model(), loss=rs.losses.SoftmaxCrossEntropy(0.05),
                        optimizer=OPTIMIZERS[opt](), data=rs.DataSpec("images"), steps=STEPS)
    w = check_optimizer(spec, backend, steps=STEPS)
    assert w.passed, str(w)


@pytest.mark.skipif(not PAIRS, reason="needs two backends")
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_optimizer_backends_agree_float64(opt):
    """Every selected backend from the same start and batches: parameters and optimizer state
    after each step agree pairwise at the exact tier (1e-10)."""
    spec = rs.TrainSpec(model=_model(), loss=rs.losses.SoftmaxCrossEntropy(0.05),
                        optimizer=OPTIMIZERS[opt](), data=rs.DataSpec("images"), steps=STEPS)
    progs = {b: compile_spec(spec, b) for b in BACKENDS}
    for t in range(STEPS):
        x = random_inputs(spec.model, 8, seed=t)
        y = random_targets(spec, 8, seed=100 + t)
        out = {}
        for b, prog in progs.items():
            prog.train_step(x, y)
            out[b] = (prog.export_params(), prog.export_optimizer_state())
        for a, b in PAIRS:
            for i, what in enumerate(("params", "optimizer state")):
                w = compare_trees(out[a][i], out[b][i], f"{what} @ step {t} ({a} vs {b})",
                                  EXACT.tolerance)
                assert w.passed, str(w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_schedule_lr_is_applied_from_step_zero(backend):
    """With plain SGD, the first update moves parameters by exactly lr(0) * gradient."""
    sched = S.WarmupCosine(0.4, 3, 8, init=0.1)
    spec = rs.TrainSpec(model=_model(), loss=rs.losses.MeanSquaredError(),
                        optimizer=rs.optim.SGD(sched), data=rs.DataSpec("images"), steps=3)
    prog = compile_spec(spec, backend, "float64")
    for t in range(4):
        x = random_inputs(spec.model, 4, seed=t)
        y = random_targets(spec, 4, seed=t)
        p0 = prog.export_params()
        _, g = prog.gradients(x, y)
        prog.train_step(x, y)
        p1 = prog.export_params()
        lr = sched(t)
        for k in p0:
            np.testing.assert_allclose(p0[k] - p1[k], lr * g[k], rtol=1e-12, atol=1e-15)


@pytest.mark.skipif(not PAIRS, reason="needs two backends")
def test_gradients_of_a_frozen_parameter_agree():
    """``gradients`` reports a frozen parameter's gradient too (TensorFlow's tape must watch
    its non-trainable variable: unwatched, it reported zeros)."""
    spec = rs.TrainSpec(model=_model(), loss=rs.losses.MeanSquaredError(),
                        optimizer=rs.optim.SGD(0.1, frozen=["out/kernel"]),
                        data=rs.DataSpec("images"), steps=1)
    x, y = random_inputs(spec.model, 4, seed=0), random_targets(spec, 4, seed=0)
    grads = {b: compile_spec(spec, b, "float64").gradients(x, y)[1] for b in BACKENDS}
    for b, g in grads.items():
        assert np.abs(g["out/kernel"]).max() > 1e-3, b
    for a, b in PAIRS:
        w = compare_trees(grads[a], grads[b], f"gradients ({a} vs {b})", EXACT.tolerance)
        assert w.passed, str(w)


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_optimizer_json_round_trip(opt):
    o = OPTIMIZERS[opt]()
    assert rs.optim.from_json(o.to_json()) == o
    assert rs.optim.from_json(json.loads(json.dumps(o.to_json()))).to_json() == o.to_json()


@pytest.mark.parametrize("bad,words", [
    (lambda: rs.optim.Adam(epsilon_mode="keras"), "epsilon_mode"),
    (lambda: rs.optim.AdamW(epsilon_mode=None), "epsilon_mode"),
    (lambda: rs.optim.RMSprop(rho=1.0), "rho"),
    (lambda: rs.optim.RMSprop(centered=1), "centered"),
    (lambda: rs.optim.RMSprop(momentum=-0.1), "momentum"),
    (lambda: rs.optim.Adagrad(initial_accumulator=-1.0), "initial_accumulator"),
    (lambda: rs.optim.Adagrad(initial_accumulator=0.0, epsilon=0.0), "epsilon > 0"),
    (lambda: rs.optim.Lion(beta2=1.0), "beta2"),
    (lambda: rs.optim.Lion(weight_decay=-1.0), "weight_decay"),
    (lambda: rs.optim.SGD(0.1, clip_norm=0.0), "clip_norm"),
    (lambda: rs.optim.Adam(clip_value=-1.0), "clip_value"),
    (lambda: rs.optim.Adam(clip_value="1"), "clip_value"),
    (lambda: rs.optim.AdamW(decay="biases"), "decay"),
    (lambda: rs.optim.from_json({"name": "adam", "decay": "kernels"}), "decay"),  # no decay
    (lambda: rs.optim.from_json({"name": "lion", "bogus": 1}), "bogus"),
    (lambda: rs.optim.SGD(0.1, frozen="hidden/*"), "list of glob patterns"),
    (lambda: rs.optim.Adam(frozen=[""]), "frozen patterns"),
    (lambda: rs.TrainSpec(model=_model(), loss=rs.losses.MeanSquaredError(),
                          optimizer=rs.optim.SGD(0.1, frozen=["hidden/*", "hiden/kernel"]),
                          data=rs.DataSpec("images")), "'hiden/kernel' matches no parameter"),
])
def test_optimizer_spec_errors(bad, words):
    with pytest.raises(rs.SpecError, match=words):
        bad()


def test_clip_and_decay_reference_rules():
    g = {"a/kernel": np.array([3.0, 0.0]), "a/bias": np.array([4.0])}
    c = rs.optim.clip_gradients(g, clip_norm=1.0)  # ||g|| = 5: scaled by 1/5, no epsilon
    assert c["a/kernel"][0] == pytest.approx(0.6, rel=1e-15)
    assert c["a/bias"][0] == pytest.approx(0.8, rel=1e-15)
    assert rs.optim.clip_gradients(g, clip_norm=5.0)["a/bias"][0] == 4.0
    zero = {"w": np.zeros(3)}
    assert (rs.optim.clip_gradients(zero, clip_norm=1.0)["w"] == 0).all()
    v = rs.optim.clip_gradients(g, clip_value=2.0, clip_norm=np.sqrt(8.0))  # values first
    np.testing.assert_allclose(v["a/kernel"], [2.0, 0.0], rtol=1e-15)
    assert [rs.optim.decays(p, "kernels") for p in
            ("d/kernel", "d/bias", "bn/scale", "lstm/recurrent_kernel", "lstm/recurrent_bias",
             "emb/embeddings", "rms/scale")] == [True, False, False, True, False, True, False]
    assert rs.optim.decays("d/bias", "all")


def test_epsilon_hat_and_rmsprop_adagrad_lion_by_hand():
    p, g = {"w": np.array([2.0])}, {"w": np.array([0.3])}
    hat = rs.optim.Adam(0.1, beta1=0.9, beta2=0.999, epsilon=0.5, epsilon_mode="hat")
    q, _ = hat.update(p, g, hat.init_state(p), 0)  # sqrt(0.001)/0.1 * 0.03/(sqrt(0.001*0.09)+eps)
    assert q["w"][0] == pytest.approx(
        2.0 - 0.1 * np.sqrt(0.001) / 0.1 * 0.03 / (np.sqrt(0.001 * 0.09) + 0.5), rel=1e-14)
    rms = rs.optim.RMSprop(0.1, rho=0.9, epsilon=0.01)
    q, st = rms.update(p, g, rms.init_state(p), 0)  # v = 0.1 * 0.09
    assert q["w"][0] == pytest.approx(2.0 - 0.1 * 0.3 / (np.sqrt(0.009) + 0.01), rel=1e-14)
    ada = rs.optim.Adagrad(0.1, initial_accumulator=0.16, epsilon=0.01)
    q, st = ada.update(p, g, ada.init_state(p), 0)  # a = 0.25
    assert q["w"][0] == pytest.approx(2.0 - 0.1 * 0.3 / 0.51, rel=1e-14)
    lion = rs.optim.Lion(0.1, weight_decay=0.25)  # sign(c) = -1, decay 0.25 * 2
    q, st = lion.update(p, {"w": np.array([-0.3])}, lion.init_state(p), 0)
    assert q["w"][0] == pytest.approx(2.0 - 0.1 * (-1.0 + 0.5), rel=1e-15)
    assert st["w"][0] == pytest.approx(0.01 * -0.3, rel=1e-15)
