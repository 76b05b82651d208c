"""The exact tier with bounds from measured float64 noise (conformance/noise64.py): where a pair
uses more than a tenth of 1e-10, each backend re-runs the steps on batches moved at float64's
rounding level, and the bound becomes the larger of 1e-10 and 16 x that noise. Here the
measurement is forced on every pair (``MEASURE_ABOVE = 0``): a correct pair passes and says so,
and planted traps of each kind (optimizer, forward, running statistics) still fail, blamed as in
test_traps.py (every trap was run this way for the docs: docs/conformance/index.md)."""

from __future__ import annotations

import pytest

from rosetta.conformance import noise64
from rosetta.conformance.suite import run

from test_traps import TRAPS, pytestmark  # noqa: F401


def _run(spec, a, b):
    results, _ = run(spec, [a, b], dtype="float64", steps=3)
    assert len(results) == 1
    return results[0]


def test_correct_pair_passes_with_the_noise_measured(monkeypatch):
    monkeypatch.setattr(noise64, "MEASURE_ABOVE", 0.0)
    _, build, a, b, _ = TRAPS["batchnorm_momentum_flipped"]
    r = _run(build(), a, b)
    assert r.passed, r.where
    assert "float64 noise measured" in r.note, r.note
    assert r.tolerance >= 1e-10 and r.noise is not None


@pytest.mark.parametrize("name", ["keras_epsilon_hat", "gelu_tanh_for_exact",
                                  "batchnorm_momentum_flipped"])
def test_trap_fails_with_the_noise_measured(name, monkeypatch):
    monkeypatch.setattr(noise64, "MEASURE_ABOVE", 0.0)
    trap, build, trapped, other, expected = TRAPS[name]
    trap(monkeypatch)
    r = _run(build(), trapped, other)
    assert not r.passed, f"trap {name} passed: {r.where}"
    assert "float64 noise measured" in r.note, r.note
    assert r.blame.get("category") == expected["category"], r.blame
