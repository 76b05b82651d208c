"""Cross-backend agreement: the same spec, the same neutral start and batches, the same numbers.

float64 on CPU is held to 1e-10 relative (docs/design.md section 5, exact tier); float32 to 1e-5 per step.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import rosetta as rs
from rosetta import models
from rosetta.conformance import compare_arrays, compare_trees
from rosetta.conformance.tiers import EXACT as EXACT_TIER, FLOAT32 as FLOAT32_TIER
from rosetta.dropout import mask_draws
from rosetta.training import train

from cases import BUILD, IDS
from helpers import compile_spec, random_inputs, random_targets
from selection import BACKENDS, PAIRS

EXACT = EXACT_TIER.tolerance
FLOAT32 = FLOAT32_TIER.tolerance


@functools.cache
def _losses(name, backend, dtype, steps, seed=0):
    """Per-step losses of a zoo run (cached: each backend trains once for all its pairs)."""
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


def _trace(spec, backend):
    """3 Adam steps from the neutral start on fixed batches: per step the loss, gradients, the
    train-step loss, parameters and state after the update; then eval and training outputs."""
    prog = compile_spec(spec, backend)
    out = []
    for t in range(3):
        x = random_inputs(spec.model, 6, seed=t, int_high=7)
        y = random_targets(spec, 6, seed=10 + t)
        loss, grads = prog.gradients(x, y)
        out.append((f"loss @ step {t}", loss))
        out.append((f"grad @ step {t}", grads))
        out.append((f"train loss @ step {t}", prog.train_step(x, y)))
        out.append((f"params @ step {t}", prog.export_params()))
        out.append((f"state @ step {t}", prog.export_state()))
    x = random_inputs(spec.model, 5, seed=99, int_high=7)
    for training in (False, True):
        out.append((f"output (training={training})", prog.forward(x, training)))
    return out


# a case whose model draws keep-masks (StochasticDepth) draws them per backend here: its masks
# are injected and held against the NumPy reference in test_ops.py instead
UNMASKED = [c for c in IDS if not mask_draws(BUILD[c]().model)]


@pytest.mark.parametrize("case", UNMASKED)
def test_training_steps_agree_float64(case):
    """Loss, every gradient, every parameter and the model state after each of 3 Adam steps,
    and the outputs after them, for every pair of backends. Each backend runs once; its record
    is compared with every other backend's."""
    spec = BUILD[case]()
    spec = rs.TrainSpec(spec.model, spec.loss,
                        rs.optim.Adam(rs.schedules.WarmupCosine(0.02, 1, 4), epsilon=1e-6),
                        spec.data, steps=3)
    traces = {b: _trace(spec, b) for b in BACKENDS}
    for a, b in PAIRS:
        for (what, va), (_, vb) in zip(traces[a], traces[b]):
            cmp = compare_trees if isinstance(va, dict) else compare_arrays
            w = cmp(va, vb, f"{what} ({a} vs {b})", EXACT)
            assert w.passed, str(w)
