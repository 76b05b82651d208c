"""What only the MXNet backend has: its exporter (``HybridBlock.export``), the ops it refuses,
its two modes, and its place in its own environment. Runs where mxnet is under test (the
``mxnet`` tox environment, ``.ci/mxnet``); the shared backend tests (NumPy references, finite
differences, optimizers, training, resume) run on it through ``selection.BACKENDS``.
"""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs
from rosetta import models
from rosetta.cli import main as rosetta_main
from rosetta.errors import BackendUnavailable

from helpers import compile_spec, random_inputs, random_targets, spec_for
from selection import BACKENDS

pytestmark = pytest.mark.skipif("mxnet" not in BACKENDS,
                                reason="the mxnet backend is not selected (its own environment)")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_export_checked_without_rosetta(tmp_path, capsys, dtype):
    """``rosetta export --format mxnet`` of a two-input model (token ids and lengths): the
    standalone loader, in a process where rosetta cannot be imported, matches the NumPy
    reference forward (the export command's check: 1e-5 / 1e-10)."""
    run = tmp_path / "run"
    assert rosetta_main(["train", "lstm", "--backend", "mxnet", "--dtype", dtype, "--steps", "3",
                         "--save", str(run), "--quiet"]) == 0
    out = tmp_path / "export"
    assert rosetta_main(["export", str(run), "--format", "mxnet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "FAIL" not in text, text
    assert {p.name for p in out.iterdir()} == {"export.json", "load.py", "model-symbol.json",
                                               "model-0000.params"}


def test_export_refuses_other_formats(tmp_path):
    from rosetta.backends.mxnet.export import export

    program = compile_spec(models.get("mlp"), "mxnet")
    with pytest.raises(BackendUnavailable, match="mxnet"):
        export(program, "onnx", tmp_path, example={})


def test_an_op_without_lowering_is_refused_by_name(monkeypatch):
    """Every registry op has a lowering today; one without (removed here) is a
    BackendUnavailable naming the node and the op when the model is built."""
    from rosetta.backends.mxnet import layers

    monkeypatch.delitem(layers.LOWERINGS, "Conv2DTranspose")
    x = rs.Input((4, 4, 2), name="x")
    y = rs.Conv2DTranspose(3, (3, 3), strides=(2, 2), padding="same", name="up")(x)
    with pytest.raises(BackendUnavailable, match="up.*Conv2DTranspose"):
        compile_spec(spec_for(rs.Model(x, y, name="m")), "mxnet")


def test_modes_agree():
    """The hybridized block (default) and the imperative one take the same float64 step."""
    spec = models.get("transformer")
    x, y = random_inputs(spec.model, 4), random_targets(spec, 4)
    results = []
    for mode in ("hybrid", "imperative"):
        from rosetta.backend_registry import get_backend

        p = get_backend("mxnet").compile(spec, dtype="float64", mode=mode)
        loss = p.train_step(x, y)
        results.append((loss, p.export_params()))
    (la, pa), (lb, pb) = results
    assert la == pytest.approx(lb, rel=1e-12)
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-10, atol=1e-14)


def test_numpy_below_1_24():
    """This environment is MXNet's own: NumPy 1.23, where the core runs too."""
    assert np.lib.NumpyVersion(np.__version__) < "1.24.0"
