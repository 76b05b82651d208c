"""Cross-backend agreement: the same spec, the same neutral start and batches, the same numbers.

float64 on CPU is held to 1e-10 relative (DESIGN section 5, exact tier); float32 to 1e-5 per step.
"""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs
from rosetta import models
from rosetta.conformance import compare_arrays, compare_trees
from rosetta.conformance.tiers import EXACT as EXACT_TIER, FLOAT32 as FLOAT32_TIER
from rosetta.train import train

from cases import BUILD, IDS
from helpers import compile_spec, random_inputs, random_targets
from selection import PAIRS

EXACT = EXACT_TIER.tolerance
FLOAT32 = FLOAT32_TIER.tolerance


def _losses(name, backend, dtype, steps, seed=0):
    return np.array(train(models.get(name), backend, dtype=dtype, steps=steps, seed=seed,
                          progress=False)["losses"])


@pytest.mark.parametrize("a,b", PAIRS)
@pytest.mark.parametrize("name", ["mlp", "cnn", "linear"])
def test_zoo_float64_losses_agree(name, a, b):
    la, lb = _losses(name, a, "float64", 30), _losses(name, b, "float64", 30)
    w = compare_arrays(la, lb, f"{name} loss per step ({a} vs {b})", EXACT)
    assert w.passed, str(w)


@pytest.mark.parametrize("a,b", PAIRS)
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_zoo_float32_losses_agree(name, a, b):
    la, lb = _losses(name, a, "float32", 30), _losses(name, b, "float32", 30)
    w = compare_arrays(la, lb, f"{name} float32 loss per step ({a} vs {b})", FLOAT32,
                       FLOAT32_TIER.floor_fraction)
    assert w.passed, str(w)


@pytest.mark.parametrize("a,b", PAIRS)
@pytest.mark.parametrize("case", IDS)
def test_training_steps_agree_float64(case, a, b):
    """Loss, every gradient, every parameter and the model state after each of 3 Adam steps."""
    spec = BUILD[case]()
    spec = rs.TrainSpec(spec.model, spec.loss,
                        rs.optim.Adam(rs.schedules.WarmupCosine(0.02, 1, 4), epsilon=1e-6),
                        spec.data, steps=3)
    pa, pb = compile_spec(spec, a), compile_spec(spec, b)
    for t in range(3):
        x = random_inputs(spec.model, 6, seed=t, int_high=7)
        y = random_targets(spec, 6, seed=10 + t)
        (la, ga), (lb, gb) = pa.gradients(x, y), pb.gradients(x, y)
        assert compare_arrays(la, lb, f"loss @ step {t}", EXACT).passed, (la, lb)
        w = compare_trees(ga, gb, f"grad @ step {t}", EXACT)
        assert w.passed, str(w)
        la, lb = pa.train_step(x, y), pb.train_step(x, y)
        assert compare_arrays(la, lb, f"train loss @ step {t}", EXACT).passed, (la, lb)
        w = compare_trees(pa.export_params(), pb.export_params(), f"params @ step {t}", EXACT)
        assert w.passed, str(w)
        w = compare_trees(pa.export_state(), pb.export_state(), f"state @ step {t}", EXACT)
        assert w.passed, str(w)
    for training in (False, True):
        x = random_inputs(spec.model, 5, seed=99, int_high=7)
        w = compare_arrays(pa.forward(x, training), pb.forward(x, training), "output", EXACT)
        assert w.passed, str(w)
