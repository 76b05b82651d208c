"""The exact tier teacher-forced where float64 rounding compounds (conformance/forced64.py): a
pair whose free-running worst uses more than a tenth of 1e-10 is held step by step, each
backend from the other's float64 state, at the same 1e-10. Here every pair is forced
(``FORCE_ABOVE = 0``): a correct pair passes and says so, and planted traps of each kind
(optimizer, forward, running statistics) still fail, blamed as in test_traps.py (every trap was
run this way for docs/conformance/index.md)."""

from __future__ import annotations

import pytest

from rosetta.conformance import forced64
from rosetta.conformance.suite import run

from test_traps import TRAPS, pytestmark  # noqa: F401


def _run(spec, a, b):
    results, _ = run(spec, [a, b], dtype="float64", steps=3)
    assert len(results) == 1
    return results[0]


def test_correct_pair_passes_teacher_forced(monkeypatch):
    monkeypatch.setattr(forced64, "FORCE_ABOVE", 0.0)
    _, build, a, b, _ = TRAPS["batchnorm_momentum_flipped"]
    r = _run(build(), a, b)
    assert r.passed, r.where
    assert "teacher-forced" in r.note, r.note
    assert r.tolerance == 1e-10 and r.worst_rel < 1e-12, r.where


@pytest.mark.parametrize("name", ["keras_epsilon_hat", "gelu_tanh_for_exact",
                                  "batchnorm_momentum_flipped"])
def test_trap_fails_teacher_forced(name, monkeypatch):
    monkeypatch.setattr(forced64, "FORCE_ABOVE", 0.0)
    trap, build, trapped, other, expected = TRAPS[name]
    trap(monkeypatch)
    r = _run(build(), trapped, other)
    assert not r.passed, f"trap {name} passed: {r.where}"
    assert "teacher-forced" in r.note, r.note
    assert r.blame.get("category") == expected["category"], r.blame
