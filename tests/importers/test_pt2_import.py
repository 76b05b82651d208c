"""A .pt2 ExportedProgram (torch.export.save) as the source of from_torch and `rosetta import`
(rosetta.importers.pt2): the graph in both modes by its BatchNorm and dropout flags, whichever
mode it was exported in; a decomposed program refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402
from rosetta import checkpoint  # noqa: E402
from rosetta.importers import ImportRefused  # noqa: E402


def model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
                      nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).double()
    return m, torch.randn(2, 3, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("training", [True, False], ids=["exported-training", "exported-eval"])
def test_a_pt2_imports_in_both_modes_and_certifies(tmp_path, training):
    m, x = model()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m.train(training), (x,)), str(path))
    imp = rosetta.from_torch(str(path))
    assert imp.spec.name == "m" and imp.names["1.running_var"].endswith("/var")
    m.eval()
    np.testing.assert_allclose(imp.predict(x.numpy().transpose(0, 2, 3, 1)),
                               m(x).detach().numpy(), rtol=1e-12)
    cert = imp.certify(("torch",), steps=2, dropout="off")
    assert cert.passed, cert.table()


def test_a_decomposed_program_is_refused_in_one_line():
    m, x = model()
    ep = torch.export.export(m.train(), (x,)).run_decompositions()
    with pytest.raises(ImportRefused, match="calls of a fixed mode") as e:
        rosetta.from_torch(ep)
    assert len(e.value.lines) == 1


def test_cli_imports_a_pt2(tmp_path):
    from cli_run import run_cli

    m, x = model()
    torch.export.save(torch.export.export(m.train(), (x,)), str(tmp_path / "m.pt2"))
    r = run_cli(["import", str(tmp_path / "m.pt2"), "--out", tmp_path / "ck", "--backends",
                 "torch", "--steps", "1", "--dropout", "off"])
    assert r.status == 0 and r.traceback is None, str(r)
    assert "PASS" in r.out
    assert checkpoint.load(tmp_path / "ck").spec.model.output_type.shape == (5,)
