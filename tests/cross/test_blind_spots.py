"""Rules are only seen where a spec exercises them. This spec makes three of them observable in
one short run through the suite (every backend pair, float64, exact tier):

* 'same' padding with an even input and stride 2 (conv and max-pool): the total padding is odd,
  so the extra cell must go after (TF/XLA's rule; a symmetric lowering would shift the window);
* a schedule that changes at every step (warm-up then cosine), so lr(step) and the step count of
  every lowering are seen (a schedule counted from 1 would differ from the first update);
* BatchNorm in eval mode: running statistics that moved away from their initial values are read
  by the eval-mode output the suite compares after the steps (category ``eval``).

The weight-decay mask on attention's matrix-shaped biases, and the traps these rules guard, are
in test_traps.py (``decay_mask_by_rank``, ``batchnorm_eval_on_batch_statistics``, ...).
"""

from __future__ import annotations

import numpy as np

import rosetta as rs
from rosetta.conformance.suite import run
from rosetta.ops.windows import resolve_padding

from selection import BACKENDS

STEPS = 3


def _spec():
    model = rs.Sequential([
        rs.Conv2D(4, 3, strides=2, padding="same", use_bias=False, name="conv"),   # 8 -> 4
        rs.BatchNorm(momentum=0.5, name="bn"),
        rs.ReLU(name="relu"),
        rs.MaxPool2D(3, strides=2, padding="same", name="pool"),                   # 4 -> 2
        rs.Flatten(name="flat"),
        rs.Dense(10, name="head"),
    ], input_shape=(8, 8, 1), name="blind_spots")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(rs.schedules.WarmupCosine(0.05, 1, STEPS + 1)),
                        data=rs.DataSpec("digits", 8, {"layout": "image"}), steps=STEPS)


def test_rules_are_observable_in_the_spec():
    # odd total padding on both windows: (lo, hi) = (0, 1), the extra cell after
    assert resolve_padding(8, 3, 2, 1, "same", 0) == (4, (0, 1))
    assert resolve_padding(4, 3, 2, 1, "same", 0) == (2, (0, 1))
    schedule = _spec().optimizer.learning_rate
    lr = [float(schedule(t)) for t in range(STEPS)]
    assert len(set(lr)) == STEPS, lr


def test_spec_agrees_with_eval_mode_compared():
    results, trajs = run(_spec(), BACKENDS, dtype="float64", steps=STEPS)
    for r in results:
        assert r.passed, f"{r.backend_a} vs {r.backend_b}: {r.where}; blame {r.blame}"
        assert "eval" in r.per_category, r.per_category
    # the eval output read running statistics that moved
    t = trajs[0]
    assert not np.allclose(t.state["bn/mean"][-1], t.state["bn/mean"][0])
