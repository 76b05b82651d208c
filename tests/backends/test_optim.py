"""Every optimizer and schedule on every backend against the NumPy float64 reference of its
canonical math (core/optim.py), over several steps with a changing learning rate.

The reference is fed the backend's own gradients at the backend's own parameters, so this isolates
the update rule from the gradient computation (tested in test_ops.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs
from rosetta.conformance.oracle import check_optimizer

from helpers import compile_spec, random_inputs, random_targets
from selection import BACKENDS

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
