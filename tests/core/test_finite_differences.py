"""The finite-difference oracle near a kink: a ReLU that switches inside the stencil."""

from __future__ import annotations

import numpy as np

import rosetta as rs
from rosetta.conformance import oracle


def _spec():
    model = rs.Sequential([rs.Dense(1, activation="relu", name="hidden"),
                           rs.Dense(1, use_bias=False, name="head")], input_shape=(1,),
                          name="kink")
    return rs.TrainSpec(model=model, loss=rs.losses.MeanSquaredError(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("regression"))


def test_stencil_shrinks_past_a_relu_kink():
    """pre = w x + b = 0.5 h above the kink: L = (relu(pre) - (-1))^2, dL/dw = 2 (pre + 1) x
    on the smooth side. A plain central difference with step h straddles the kink and reads
    about 3/4 of it; the oracle must return the derivative."""
    spec = _spec()
    x, y = {"x": np.array([[1.0]])}, np.array([[-1.0]])
    pre = 0.5 * oracle.FD_STEP
    params = {"hidden/kernel": np.array([[0.3]]), "hidden/bias": np.array([pre - 0.3]),
              "head/kernel": np.array([[1.0]])}
    exact = 2 * (pre + 1.0)
    w = params["hidden/kernel"]
    up, dn = dict(params, **{"hidden/kernel": w + oracle.FD_STEP}), \
        dict(params, **{"hidden/kernel": w - oracle.FD_STEP})
    naive = (oracle.reference_loss(spec, up, x, y)
             - oracle.reference_loss(spec, dn, x, y)) / (2 * oracle.FD_STEP)
    assert abs(naive - exact) > 0.1                      # the plain stencil is fooled
    _, fd = oracle.finite_differences(spec, params, x, y, "hidden/kernel")
    assert abs(fd[0] - exact) < 1e-6 * exact             # the oracle is not


def test_smooth_loss_keeps_the_step_and_catches_a_wrong_gradient():
    spec = _spec()
    x, y = {"x": np.array([[0.7]])}, np.array([[2.0]])
    params = {"hidden/kernel": np.array([[0.3]]), "hidden/bias": np.array([0.1]),
              "head/kernel": np.array([[1.5]])}
    pre = 0.3 * 0.7 + 0.1
    exact = 2 * (1.5 * pre - 2.0) * 1.5 * 0.7
    _, fd = oracle.finite_differences(spec, params, x, y, "hidden/kernel")
    assert abs(fd[0] - exact) < 1e-8
    assert abs(fd[0] - 1.01 * exact) > 1e-3              # a 1 % wrong gradient would fail
