"""``rosetta export``: a checkpoint written by one backend, exported to every format by the
framework that owns it, each artifact run in a process where ``import rosetta`` fails and
compared with the NumPy float64 reference (1e-5 normwise in float32, 1e-10 in float64)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rosetta import export, models
from rosetta.conformance.artifacts import check
from rosetta.training import train

from selection import BACKENDS

pytestmark = pytest.mark.cross
FORMATS = [f for f, (backend, _) in export.formats().items() if backend in BACKENDS]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The zoo CNN trained 5 updates in float64 and float32 on a backend, saved."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for dtype in ("float64", "float32"):
        rec = train(models.get("cnn"), BACKENDS[-1], steps=5, dtype=dtype,
                    save=root / f"ck-{dtype}", progress=False)
        out[dtype] = root / f"ck-{dtype}", rec
    return root, out


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_runs_without_rosetta_and_matches_the_reference(checkpoints, fmt):
    root, cks = checkpoints
    # float64 where the format keeps it (the stricter bound), else float32; the backends' own
    # export tests cover both dtypes
    for dtype in export.export_format(fmt).dtypes[-1:]:
        ck, _ = cks[dtype]
        out = export.export(ck, fmt, root / f"{fmt}-{dtype}")
        meta = json.loads((out / export.EXPORT_JSON).read_text())
        assert meta["dtype"] == dtype and meta["format"] == fmt and meta["step"] == 5
        assert (out / export.LOADER).is_file()
        for w in check(out):
            assert w.passed, str(w)
            assert w.tolerance == {"float32": 1e-5, "float64": 1e-10}[dtype]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rosetta.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_export_bad_input_exits_2_with_one_line(checkpoints, tmp_path):
    root, cks = checkpoints
    ck, _ = cks["float32"]
    fmt = FORMATS[0]
    (tmp_path / "file").write_text("x")
    cases = [
        (["export", tmp_path / "missing", "--format", fmt, "--out", tmp_path / "o"],
         "no such checkpoint"),
        (["export", ck, "--format", fmt, "--out", tmp_path / "file"], "not an export folder"),
        (["export", ck, "--format", fmt, "--out", tmp_path / "no" / "such" / "o"],
         "does not exist"),
        (["export", ck, "--format", "caffe", "--out", tmp_path / "o"], "invalid choice"),
    ]
    if "onnx" in FORMATS:
        cases.append((["export", ck, "--format", "onnx", "--dtype", "float64", "--out",
                       tmp_path / "o"], "exports float32"))
    for args, words in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()
