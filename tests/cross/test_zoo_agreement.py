"""Every zoo model, float64, 10 whole training steps, every backend pair: loss, every gradient,
every parameter, model state and optimizer state agree to the exact tier's bound (1e-10).

The batch is cut to 4 examples to keep CI short; the models, optimizers, schedules and data are
the zoo's own (``rosetta conformance NAME`` runs the full batch)."""

from __future__ import annotations

import pytest

import rosetta as rs
from rosetta import models
from rosetta.conformance.suite import run

from selection import BACKENDS

STEPS = 10


def _small_batch(spec: rs.TrainSpec) -> rs.TrainSpec:
    data = rs.DataSpec(spec.data.dataset, 4, dict(spec.data.args))
    return rs.TrainSpec(spec.model, spec.loss, spec.optimizer, data, spec.steps, spec.seed,
                        spec.description)


# linear, mlp and cnn are compared over 30 steps in test_agreement.py; resnet_digits is resnet's
# graph, optimizer and schedule on other data (the digits upsampled: tests/core/test_datasets.py)
COVERED_ELSEWHERE = ("linear", "mlp", "cnn", "resnet_digits")


@pytest.mark.parametrize("name", [n for n in models.ZOO if n not in COVERED_ELSEWHERE])
def test_zoo_model_agrees_float64(name):
    results, _ = run(_small_batch(models.get(name)), BACKENDS, dtype="float64", steps=STEPS)
    for r in results:
        assert r.checked_steps == STEPS
        assert r.passed, (f"{name} {r.backend_a} vs {r.backend_b}: worst {r.worst_rel:.2e} at "
                          f"{r.where} (bound {r.tolerance:g}); blame {r.blame}")
