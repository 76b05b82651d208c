"""The Python API's trained model (rosetta.train, rosetta.load, TrainedModel): the five lines
of the README and the docs run as written; fit continues a run exactly; predict, evaluate, save
and the native objects; building from canonical parts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import rosetta as rs
from rosetta import checkpoint, models
from rosetta.errors import CheckpointError, DataError
from rosetta.training import train as train_record

from selection import BACKENDS

OTHER = {b: next((o for o in BACKENDS if o != b), b) for b in BACKENDS}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """``rosetta data cnn --out digits.npz`` (its Python half)."""
    from rosetta import data

    spec = models.get("cnn")
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    data.save_npz(spec.data.load(model=spec.model), path)
    return path


def test_the_five_lines_run_as_written(digits, monkeypatch):
    """README / docs/guide/python-api.md, with 300 steps cut to 20 for CI (names in the
    working folder, as a user types them)."""
    if "jax" not in BACKENDS or "torch" not in BACKENDS:
        pytest.skip("the five lines name jax and torch")  # the tox env lacks one of them
    monkeypatch.chdir(digits.parent)
    model = rs.train("cnn", "jax", data="digits.npz", steps=20)     # Keras-like fit
    print(model.evaluate("digits.npz"))                            # held-out loss, accuracy
    metrics = model.evaluate("digits.npz")
    assert set(metrics) == {"loss", "accuracy"} and 0 <= metrics["accuracy"] <= 1
    assert metrics == model["metrics"]  # the file's held-out arrays are the run's
    x = np.load("digits.npz")["x_test"][:8]
    y = model.predict(x)
    assert y.shape == (8, 10) and y.dtype == np.float32
    model.save("ck")
    again = rs.load("ck", backend="torch")
    assert np.allclose(again.predict(x), y, atol=1e-5)
    net = again.module
    import torch

    assert isinstance(net, torch.nn.Module)
    with torch.no_grad():  # the module is the model: called on channels-last inputs
        np.testing.assert_allclose(net(torch.from_numpy(x.astype(np.float32))).numpy(), y,
                                   atol=1e-5)


def test_the_pytorch_users_lines_run_as_written(tmp_path, monkeypatch):
    """docs/guide/python-api.md, for a PyTorch user (300 steps cut to 5)."""
    if "torch" not in BACKENDS:
        pytest.skip("the lines name torch")  # the tox env lacks it
    monkeypatch.chdir(tmp_path)
    import torch
    import rosetta as rs

    model = rs.train("mlp", "torch", steps=5)                      # any backend trains it
    net, opt = model.module, model.optimizer                       # nn.Module, torch.optim.Adam
    with torch.no_grad():
        logits = net(torch.randn(8, 64))                           # channels last, as the spec
    model.save("ck")                                               # any backend resumes it
    assert isinstance(net, torch.nn.Module) and isinstance(opt, torch.optim.Adam)
    assert logits.shape == (8, 10) and checkpoint.load("ck").step == 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_continues_the_run_exactly(backend):
    """fit(a) then fit(b) makes the updates of one run of 1 + a + b, dropout included
    (float64, the same numbers bit for bit on one backend)."""
    spec = models.get("mlp_dropout")
    whole = rs.train(spec, backend, dtype="float64", steps=7, batch_size=16, progress=False)
    part = rs.train(spec, backend, dtype="float64", steps=1, batch_size=16, progress=False)
    part.fit(2, progress=False).fit(4, progress=False)
    assert part.step == whole.step == 7
    assert part["losses"] == whole["losses"] and part["steps"] == 7
    assert part["final_loss"] == whole["final_loss"]
    for k, v in whole.params.items():
        np.testing.assert_array_equal(part.params[k], v, err_msg=k)
    assert part["metrics"] == whole["metrics"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_saved_model_resumes_on_the_command_lines_path(backend, tmp_path):
    """``save`` writes the checkpoint ``rosetta train --resume`` continues (on another
    backend), and ``rs.load`` + ``fit`` continues it the same way."""
    spec = models.get("mlp")
    model = rs.train(spec, backend, dtype="float64", steps=3, progress=False)
    model.save(tmp_path / "ck")
    ck = checkpoint.load(tmp_path / "ck")
    assert ck.step == 3 and ck.record["data"]["seed"] == spec.seed
    assert ck.record["losses"] == model["losses"]
    other = OTHER[backend]
    resumed = train_record(None, other, resume=tmp_path / "ck", steps=2, progress=False)
    loaded = rs.load(tmp_path / "ck", backend=other).fit(2, progress=False)
    assert loaded.step == 5 and loaded["losses"][-2:] == resumed["losses"]
    for k, v in resumed["program"].export_params().items():
        np.testing.assert_array_equal(loaded.params[k], v, err_msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_evaluate_and_the_native_objects(backend, digits, tmp_path):
    model = rs.train("mlp", backend, steps=2, progress=False)
    assert isinstance(model, rs.TrainedModel) and isinstance(model, dict)
    assert model["program"] is model.program and model.backend == backend
    assert model.module is model.program.model and model.optimizer is model.program.optimizer
    assert model.spec.name == "mlp" and model.step == 2
    assert set(model.params) == set(model.spec.model.param_defs())
    assert json.loads(json.dumps(model.record))["final_loss"] == model["final_loss"]
    ds = model.spec.data.load()
    x, y = ds.x_test, ds.y_test
    assert model.evaluate() == model["metrics"]
    assert model.evaluate((x, y)) == model["metrics"]
    out = model.predict(x[:5])
    np.testing.assert_array_equal(model.predict({"x": x[:5]}), out)
    np.save(tmp_path / "x.npy", x[:5])
    np.testing.assert_array_equal(model.predict(tmp_path / "x.npy"), out)
    with pytest.raises(DataError, match=r"input 'x': expected a batch of shape \(N, 64\)"):
        model.predict(x[:5, :10])


@pytest.mark.parametrize("backend", BACKENDS)
def test_from_state_builds_a_model_from_canonical_parts(backend):
    """What an importer has: a spec, canonical parameters, state, optimizer slots and the
    update count; checked as a checkpoint's tensors are."""
    src = rs.train("mlp", OTHER[backend], dtype="float64", steps=2, progress=False)
    spec = models.get("mlp")
    opt = src.program.export_optimizer_state()
    model = rs.TrainedModel.from_state(spec, src.params, src.state, optimizer_state=opt,
                                       step=2, backend=backend, dtype="float64")
    assert model.step == 2 and model.backend == backend
    x = spec.data.load().x_test[:4]
    np.testing.assert_allclose(model.predict(x), src.predict(x), rtol=1e-10, atol=1e-12)
    src.fit(1, progress=False)
    model.fit(1, progress=False)
    np.testing.assert_allclose(model["final_loss"], src["final_loss"], rtol=1e-10)
    fresh = rs.TrainedModel.from_state(spec, spec.model.init_params(0), backend=backend)
    assert fresh.step == 0 and fresh["losses"] == []
    bad = dict(src.params)
    bad.pop(next(iter(bad)))
    with pytest.raises(CheckpointError, match="params: tensor .* is missing"):
        rs.TrainedModel.from_state(spec, bad, backend=backend)


def test_train_takes_spec_files_and_arrays(tmp_path):
    backend = BACKENDS[0]
    spec = models.get("linear")
    path = tmp_path / "lin.json"
    path.write_text(spec.dumps())
    a = rs.train(os.fspath(path), backend, steps=3, progress=False)
    b = rs.train(spec, backend, steps=3, progress=False)
    assert a["losses"] == b["losses"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 1))
    c = rs.train(spec, backend, data=(x, 2 * x), steps=3, progress=False)
    assert c.evaluate((x, 2 * x))["loss"] >= 0
    with pytest.raises(DataError, match="data must be a path"):
        rs.train(spec, backend, data=[x, x], steps=1, progress=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_checkpoint_written_before_format_versions_evaluates_and_resumes(backend, tmp_path):
    """tests/fixtures/checkpoint-v1-mlp-torch, written by the code before format versions were
    read (63d8f13): it evaluates to the metrics it recorded, and resumes on every backend."""
    from pathlib import Path

    fixture = Path(__file__).parents[1] / "fixtures" / "checkpoint-v1-mlp-torch"
    recorded = checkpoint.load(fixture).record["metrics"]
    model = rs.load(fixture, backend=backend)
    assert model.step == 3 and model["dtype"] == "float32"
    got = model.evaluate()
    assert got["accuracy"] == recorded["accuracy"]
    assert got["loss"] == pytest.approx(recorded["loss"], rel=1e-5)
    rec = train_record(None, backend, resume=fixture, steps=2, save=tmp_path / "run",
                       progress=False)
    assert rec["start_step"] == 3 and len(rec["losses"]) == 2
    assert checkpoint.load(tmp_path / "run").record["format"] == checkpoint.FORMAT
