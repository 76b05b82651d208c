"""A float32 source is certified teacher-forced at the float32 tier's measured-noise bounds
(rosetta.importers.certificate32), and a planted change still fails there, blamed on its node."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402


def test_a_float32_source_certifies_in_float32_and_a_planted_epsilon_fails():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * 6 * 6, 5))
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    imp = rosetta.from_torch(m, torch.randn(2, 3, 8, 8), optimizer=opt,
                             loss=nn.CrossEntropyLoss())
    assert imp.dtype == "float32"
    cert = imp.certify(("torch",), steps=1)          # the source's dtype: float32
    assert cert.dtype == "float32" and cert.passed, cert.table()
    assert 0 < max(cert.results[0]["worst"].values()) < 1   # a fraction of the bound
    d = imp.spec.to_json()
    d["model"]["nodes"][1]["attrs"]["epsilon"] = 1e-3
    spec = rosetta.TrainSpec.from_json(d)
    spec.data = imp.spec.data
    bad = copy.copy(imp)
    bad.spec = spec
    cert = bad.certify(("torch",), steps=1)
    assert not cert.passed
    assert cert.results[0]["blame"].startswith("first diverging node: m_1 (BatchNorm"), \
        cert.results[0]["blame"]
