"""A checkpoint trained under a low precision policy, evaluated and exported: ``rosetta eval``
runs it under the policy it was trained under (reproducing the run's own held-out metrics on the
backend that wrote it), ``--precision float32`` runs its float32 masters in float32; ``rosetta.load`` continues it under
its policy and loss scale; and ``rosetta export`` writes the float32 masters, checked without
rosetta."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rosetta as rs
from rosetta import checkpoint
from rosetta.cli import main

from selection import BACKENDS

LOW_BACKENDS = [b for b in ("torch", "tensorflow", "jax") if b in BACKENDS]


def _spec():
    """A tiny digits classifier: Dense -> LayerNorm -> Dense (a product, a float32
    normalisation, a product)."""
    x = rs.Input((64,), name="x")
    h = rs.Dense(8, activation="relu", name="d1")(x)
    h = rs.LayerNorm(name="ln")(h)
    y = rs.Dense(10, name="d2")(h)
    return rs.TrainSpec(model=rs.Model(x, y, name="tiny_mixed"),
                        loss=rs.losses.SoftmaxCrossEntropy(), optimizer=rs.optim.Adam(1e-2),
                        data=rs.DataSpec("digits", 16), steps=2)


def _eval(capsys, ckpt, backend, *extra):
    capsys.readouterr()
    assert main(["eval", str(ckpt), "--backend", backend, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("backend, precision", [
    (b, p) for b, p in zip(LOW_BACKENDS, ["mixed_float16", "mixed_bfloat16", "mixed_float16"])])
def test_eval_runs_a_mixed_checkpoint_under_its_policy(backend, precision, tmp_path, capsys):
    rs.train(_spec(), backend, precision=precision, save=tmp_path / "ck", progress=False)
    ckpt = checkpoint.load(tmp_path / "ck")
    assert ckpt.precision == precision and ckpt.dtype == "float32"
    own = _eval(capsys, tmp_path / "ck", backend)
    assert own["precision"] == precision
    assert own["metrics"] == pytest.approx(ckpt.record["metrics"], rel=0, abs=0)
    # the Python API loads it under its policy too (with the loss scale): the same metrics
    model = rs.load(tmp_path / "ck")
    assert model["precision"] == precision and model["dtype"] == "float32"
    assert model.program.export_loss_scale() == ckpt.record["loss_scale"]
    assert model.evaluate() == pytest.approx(own["metrics"], rel=0, abs=0)
    masters = _eval(capsys, tmp_path / "ck", backend, "--precision", "float32")
    assert masters["precision"] == "float32"
    # the same float32 masters, evaluated without the policy's low-type products
    assert masters["metrics"]["loss"] != own["metrics"]["loss"]
    assert masters["metrics"]["loss"] == pytest.approx(own["metrics"]["loss"], rel=2 ** -6)


@pytest.mark.skipif("torch" not in BACKENDS, reason="the torch backend is not selected")
def test_export_of_a_mixed_checkpoint_writes_the_float32_masters(tmp_path, capsys):
    rs.train(_spec(), "torch", precision="mixed_float16", save=tmp_path / "ck", progress=False)
    ckpt = checkpoint.load(tmp_path / "ck")
    assert ckpt.record["loss_scale"] is not None
    assert main(["export", str(tmp_path / "ck"), "--format", "torch",
                 "--out", str(tmp_path / "ex")]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "(float32)" in out  # the artifact, checked without rosetta
    masters = {k: v for k, v in ckpt.params.items()}
    assert all(v.dtype == np.float32 for v in masters.values())
