"""Real data-parallel training with dropout (docs/design.md section 10: "dropout masks are indexed by
global example"): without injected masks, ``train(devices=2)`` draws the keep-masks of the
global batch as the one-device program draws them, each replica using its rows, so two devices
give the one-device losses and final parameters up to summation order (float64, 1e-10), with a
Dropout node and dropout on attention weights. JAX (one jit over the global batch) is the
control.

Small: the zoo's one-block ``transformer_dropout`` (0.1 on the attention weights and on both
residual branches, Dropout nodes), batch 4 (2 examples per replica), 3 steps.
"""

from __future__ import annotations

import numpy as np
import pytest

from rosetta import checkpoint
from rosetta import models
from rosetta.conformance.runner import without_dropout
from rosetta.spec import TrainSpec
from rosetta.training import train

from selection import BACKENDS

STEPS = 3
BOUND = 1e-10


def _transformer_with_dropout() -> TrainSpec:
    spec = models.get("transformer_dropout")
    spec.data.batch_size = 4
    return spec


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


@pytest.mark.parametrize("backend", [b for b in ("torch", "tensorflow", "jax")
                                     if b in BACKENDS])
def test_two_devices_train_like_one_with_dropout(backend, tmp_path):
    spec = _transformer_with_dropout()
    one = train(spec, backend, dtype="float64", steps=STEPS, progress=False)
    two = train(spec, backend, devices=2, dtype="float64", steps=STEPS, progress=False,
                save=tmp_path / "run")
    assert len(two["losses"]) == STEPS
    worst = max(abs(a - b) / abs(b) for a, b in zip(two["losses"], one["losses"]))
    assert worst < BOUND, (one["losses"], two["losses"])
    # the masks are live: the run with dropout off has other losses
    off = train(without_dropout(spec), backend, dtype="float64", steps=STEPS, progress=False)
    assert min(abs(a - b) for a, b in zip(off["losses"], one["losses"])) > 1e-6
    saved = checkpoint.load(tmp_path / "run").params
    want = one["program"].export_params()
    assert set(saved) == set(want)
    errs = {k: _relative(saved[k], want[k]) for k in want}
    assert max(errs.values()) < BOUND, max(errs.items(), key=lambda kv: kv[1])
