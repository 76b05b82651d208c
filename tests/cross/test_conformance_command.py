"""``rosetta conformance``: reports, plots, saved trajectories, --compare, exit status, and the
pytest plugin."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rosetta import models
from rosetta.cli import main
from rosetta.conformance.pytest_plugin import ConformanceError, assert_conformant

from selection import BACKENDS

pair = BACKENDS[:2]

FIELDS = ("model", "backend_a", "backend_b", "tier", "dtype", "device", "worst_abs", "worst_rel",
          "tolerance", "where", "passed")


def test_conformance_reports_plot_save_and_compare(tmp_path, capsys):
    report, plot, save = tmp_path / "r.json", tmp_path / "p.png", tmp_path / "runs"
    rc = main(["conformance", "linear", "--backends", *pair, "--steps", "4", "--quiet",
               "--report", str(report), "--plot", str(plot), "--save", str(save)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "linear" in out and "PASS" in out
    data = json.loads(report.read_text())
    tiers = {r["tier"] for r in data["results"]}
    assert tiers == {"oracle", "exact", "float32"}
    for r in data["results"]:
        assert all(k in r for k in FIELDS) and r["passed"]
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
    files = sorted(save.glob("*.npz"))
    assert len(files) == 2 * len(pair)
    f64 = [f for f in files if "float64" in f.name]
    assert main(["conformance", "--compare", str(f64[0]), str(f64[1]), "--quiet"]) == 0
    f32 = [f for f in files if "float32" in f.name]
    assert main(["conformance", "--compare", str(f64[0]), str(f32[0]), "--quiet"]) == 2
    for fmt in ("md", "html"):
        path = tmp_path / f"r.{fmt}"
        assert main(["conformance", "linear", "--backends", *pair, "--steps", "2", "--quiet",
                     "--dtype", "float64", "--no-oracle", "--report", str(path)]) == 0
        assert "linear" in path.read_text()


def test_conformance_bad_input(tmp_path):
    assert main(["conformance", "nosuchmodel", "--quiet"]) == 2
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a trajectory")
    assert main(["conformance", "--compare", str(bad), str(bad), "--quiet"]) == 2


def test_conformance_fails_with_exit_1_and_names_the_tensor(monkeypatch, capsys, tmp_path):
    from test_traps import trap_flatten_nchw
    if "torch" not in BACKENDS:
        pytest.skip(reason="the planted trap is in the torch backend")
    other = [b for b in BACKENDS if b != "torch"][0]
    trap_flatten_nchw(monkeypatch)
    report = tmp_path / "fail.json"
    rc = main(["conformance", "cnn", "--backends", "torch", other, "--steps", "2", "--quiet",
               "--dtype", "float64", "--no-oracle", "--report", str(report)])
    assert rc == 1
    r = json.loads(report.read_text())["results"][0]
    assert not r["passed"] and r["blame"]["node"] == "flatten"
    assert "flatten" in capsys.readouterr().out


def test_assert_conformant_helper():
    results = assert_conformant(models.get("linear"), backends=pair, steps=3)
    assert all(r.passed for r in results)
    with pytest.raises(ConformanceError, match="two or more"):
        assert_conformant(models.get("linear"), backends=pair[:1])


def test_pytest_marker(tmp_path):
    test = tmp_path / "test_user_spec.py"
    test.write_text(
        "import pytest\nimport rosetta as rs\n\n"
        f"@pytest.mark.rosetta_conformance(backends={pair!r}, steps=2)\n"
        "def test_mine():\n"
        "    m = rs.Sequential([rs.Dense(3, activation='tanh'), rs.Dense(10)], (64,), name='mine')\n"
        "    return rs.TrainSpec(model=m, loss=rs.losses.SoftmaxCrossEntropy(),\n"
        "                        optimizer=rs.optim.Adam(0.01), data=rs.DataSpec('digits'))\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(test)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
