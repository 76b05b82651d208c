"""Every planted trap fails the float32 tier too, blamed like in float64 (test_traps.py,
test_traps_recurrent.py); and a float32-only arithmetic bug in an optimizer fails the
noise-derived bound where the old fixed bound (1e-5 normwise) passed it.

The float32 tier is teacher-forced: each checked step starts both backends from the float64 state
rounded to float32, and holds each float32 result within the rounding noise measured at that step
(conformance/noise.py). Few steps and few noise runs keep this short; the rule is the same.
"""

from __future__ import annotations

import pytest

import rosetta as rs
from rosetta.conformance.suite import compare_trajectories, run
from rosetta.conformance.tiers import FLOAT32

from test_traps import (TRAPS, _image_spec, check_blamed_tensor, pytestmark,  # noqa: F401
                        trap_float32_bias_correction)
from test_traps_recurrent import _lstm_spec, trap_torch_lstm_second_bias_trainable

STEPS = 2        # the decay-by-rank trap shows after the first update (biases start at 0)
NOISE_RUNS = 2


def _run32(spec, trapped, other):
    results, trajs = run(spec, [trapped, other], dtype="float32", steps=STEPS,
                         noise_runs=NOISE_RUNS)
    assert len(results) == 1
    return results[0], trajs


@pytest.mark.parametrize("name", list(TRAPS))
def test_trap_fails_float32_and_is_blamed(name, monkeypatch):
    trap, build, trapped, other, expected = TRAPS[name]
    spec = build()
    trap(monkeypatch)
    r, _ = _run32(spec, trapped, other)
    assert not r.passed, f"trap {name} passed float32: {r.where}"
    for key, value in expected.items():
        assert r.blame.get(key) == value, f"{name}: blamed {r.blame}, expected {expected}"
    check_blamed_tensor(name, spec, r.blame)
    assert r.blame["noise"] is not None   # the measured noise at the blamed element is reported


def test_lstm_second_bias_fails_float32(monkeypatch):
    """The hidden second bias lives outside the canonical state, so a teacher-forced step that
    reloads the canonical state does not reset it: the loss it computes disagrees."""
    trap_torch_lstm_second_bias_trainable(monkeypatch)
    r, _ = _run32(_lstm_spec(), "torch", "jax")
    assert not r.passed, r.where
    assert r.blame["category"] == "loss", r.blame


def test_float32_only_bug_fails_noise_bound_where_fixed_bound_passed(monkeypatch):
    """Adam's bias corrections from float32 betas move float32 parameters by ~1e-6 of their
    scale: under the fixed 1e-5 bound, far above the ~1e-7 float32 noise of the update."""
    spec = _image_spec(rs.optim.Adam(0.1))
    clean, _ = _run32(spec, "tensorflow", "torch")
    assert clean.passed, f"control run without the bug must pass: {clean.where}"
    trap_float32_bias_correction(monkeypatch)
    r, trajs = _run32(spec, "tensorflow", "torch")
    assert not r.passed, f"the float32 bug passed the noise bound: {r.where}"
    assert r.blame["step"] == 0 and r.blame["category"] == "params", r.blame
    old = compare_trajectories(trajs[0], trajs[1], FLOAT32)   # the fixed bound, free-running
    assert old.passed, f"the fixed bound was expected to miss it: {old.where}"
    assert old.worst_rel < FLOAT32.tolerance < 1e-4
