"""The float64 certificate where rounding compounds (core/importers/certificate.py): steps that
drift apart free-running past 1e-10 are held again teacher-forced at the same 1e-10, the drift
is reported, and a semantic difference after the first step still fails, blamed on its step."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402


def chaotic():
    """BatchNorm over 2 examples and SGD at lr 50: float64 rounding grows about 10x a step."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 32),
                      nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 3)).double()
    opt = torch.optim.SGD(m.parameters(), lr=50.0, momentum=0.9)
    return rosetta.from_torch(m, (torch.randn(2, 6, dtype=torch.float64),), optimizer=opt,
                              loss=nn.CrossEntropyLoss())


def test_drift_is_reported_and_each_step_is_held_teacher_forced():
    pytest.importorskip("jax")
    cert = chaotic().certify(("jax",), steps=4)
    row = cert.results[0]
    assert row["steps"] == "teacher-forced", cert.table()
    assert max(row["drift"].values()) > 1e-10        # free-running, it is past the exact bound
    assert cert.passed and max(row["worst"].values()) < 1e-10, cert.table()
    assert "teacher-forced: free-running they drift to gradient" in cert.table()


def test_a_difference_after_the_first_step_fails_teacher_forced_too():
    imp = chaotic()
    d = imp.spec.to_json()
    d["optimizer"]["momentum"] = 0.9001       # acts from the second update on
    spec = rosetta.TrainSpec.from_json(d)
    spec.data = imp.spec.data
    bad = copy.copy(imp)
    bad.spec = spec
    cert = bad.certify(("torch",), steps=3)
    row = cert.results[0]
    assert not cert.passed and row["steps"] == "teacher-forced", cert.table()
    assert row["blame"].startswith("first failure at step 1 (teacher-forced): "), row["blame"]
    assert "(source " in row["blame"], row["blame"]      # named by the source's parameter
    assert imp.certify(("torch",), steps=3).passed       # the import itself, free-running
