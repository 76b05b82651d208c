"""The ``savedmodel`` (TensorFlow) and ``jax`` export formats, checked without rosetta.

* artifacts: for the zoo's mlp, cnn and lstm (two inputs: int64 token ids and sequence lengths)
  and a small Conv2D + BatchNorm + Dropout model (running statistics as model state, dropout
  off in eval), a program trained 3 updates (float32) is exported by its backend's
  ``export.py`` in float32 and float64; the standalone loader (``load_savedmodel.py`` /
  ``load_jax.py``) runs in a fresh Python process where ``import rosetta`` fails (one process
  per format and dtype, every model in it), on inputs of batch 5 and of batch 1 (the export's
  example had 8: the batch axis is open), and its ``y`` has the export's dtype and equals the NumPy float64 reference forward
  (eval mode) from the program's own parameters and state: normwise relative error
  ``max|y - ref| / max|ref|`` within 1e-5 (float32) and 1e-10 (float64);
* an op the format cannot express (a lowering that needs a concrete batch size, planted) is a
  ``BackendUnavailable`` naming the node and the op, and nothing is written;
* an unknown format is refused, and ``backends/tensorflow/export.py`` hands ``keras`` to
  ``rosetta.backends.keras.model.export_keras``.

Every (backend, format) pair runs where its backend is under test (``selection.BACKENDS``), so
none is skipped. export.json is written here as ``rosetta.export`` writes it (the loaders read
its ``inputs`` and ``dtype``). The reference gets the state in float64: ``reference_forward``
uses the state arrays as given, and float32 running statistics would put float32 rounding
(6e-8 on the zoo resnet) into the float64 reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import rosetta as rs
from rosetta import models
from rosetta.errors import BackendUnavailable

from helpers import random_inputs, random_targets
from selection import BACKENDS

FORMATS = [(b, f) for b, f in (("tensorflow", "savedmodel"), ("jax", "jax")) if b in BACKENDS]
MODELS = ("mlp", "cnn", "lstm", "bn_dropout")
TOL = {"float32": 1e-5, "float64": 1e-10}
EXAMPLE_BATCH = 8
CHECK_BATCH = 5
MODE = {"tensorflow": "function"}  # the compile mode; others: the default
# the loader as the check runs it, in a process where rosetta cannot be imported:
# ``python -c BLOCKED LOADER (EXPORT_DIR INPUTS.npz OUT.npz)...`` runs it once per triple
BLOCKED = """
import runpy, sys
sys.modules["rosetta"] = None
loader, jobs = sys.argv[1], sys.argv[2:]
for i in range(0, len(jobs), 3):
    sys.argv = [loader, *jobs[i:i + 3]]
    try:
        runpy.run_path(loader, run_name="__main__")
    except SystemExit as e:
        if e.code:
            raise
"""


def _bn_dropout_spec():
    model = rs.Sequential([rs.Conv2D(3, 3, padding="same", name="conv"),
                           rs.BatchNorm(momentum=0.5, name="bn"), rs.ReLU(name="act"),
                           rs.Flatten(name="flat"), rs.Dropout(0.3, name="drop"),
                           rs.Dense(4, name="out")], input_shape=(5, 5, 2), name="bn_dropout")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(0.01), data=rs.DataSpec("images"), steps=3)


def _trained(backend: str, model: str):
    """(spec, a float32 program of ``model`` trained 3 updates on random batches of 8).
    TensorFlow runs its ``function`` mode (graph runtime): the SavedModel is traced from the
    same model either way, and its XLA step would cost seconds of compile per model."""
    spec = _bn_dropout_spec() if model == "bn_dropout" else models.get(model)
    program = rs.get_backend(backend).compile(spec, dtype="float32", mode=MODE.get(backend))
    for step in range(3):
        program.train_step(random_inputs(spec.model, 8, seed=step),
                           random_targets(spec, 8, seed=10 + step))
    return spec, program


def _inputs(spec, batch: int, dtype: str, seed: int) -> dict:
    """Held-out inputs as the check gives them: floats in ``dtype``, ids and lengths int64."""
    x = random_inputs(spec.model, batch, seed=seed)
    kinds = {i.name: i.kind for i in spec.model.inputs}
    return {k: np.asarray(v, dtype if kinds[k] == "float" else np.int64) for k, v in x.items()}


def _export(backend: str, fmt: str, program, spec, dtype: str, out: Path) -> list[str]:
    """``backends/<backend>/export.py`` into ``out`` and the export.json beside it."""
    from importlib import import_module

    module = import_module(f"rosetta.backends.{backend}.export")
    assert fmt in module.FORMATS
    out.mkdir(parents=True)
    files = module.export(program, fmt, out, example=_inputs(spec, EXAMPLE_BATCH, dtype, 7))
    meta = {"format": fmt, "model": spec.name, "dtype": dtype,
            "inputs": [{"name": i.name, "shape": list(i.shape),
                        "dtype": dtype if i.kind == "float" else "int64"}
                       for i in spec.model.inputs],
            "output_shape": list(spec.model.output_type.shape), "files": sorted(files)}
    (out / "export.json").write_text(json.dumps(meta))
    return files


def _loader(backend: str, fmt: str) -> Path:
    """The standalone loader script beside the backend's export.py (its module imports only
    json, numpy and the standard library at the top)."""
    from importlib import import_module

    return Path(import_module(f"rosetta.backends.{backend}.load_{fmt}").__file__)


def _reference(spec, params, state, x):
    state = {k: np.asarray(v, np.float64) for k, v in state.items()}
    return spec.model.reference_forward(params, x, state=state)


def _normwise(y, ref) -> float:
    return float(np.max(np.abs(np.asarray(y, np.float64) - ref)) / np.max(np.abs(ref)))


@pytest.mark.skipif("jax" not in BACKENDS, reason="jax is not under test")
def test_jax_names_node_and_op_it_cannot_lower(monkeypatch, tmp_path):
    """A lowering that reads the batch size as a Python int cannot take the symbolic batch
    axis: BackendUnavailable names the node and the op, and nothing is written."""
    from rosetta.backends.jax import export as jax_export
    from rosetta.backends.jax import layers

    spec = models.get("cnn")
    program = rs.get_backend("jax").compile(spec, dtype="float32")
    flat = next(n for n in spec.model.nodes if n.op == "Flatten")

    def concrete_flatten(node, xs, ctx):
        return xs[0].reshape(int(xs[0].shape[0]), -1)

    monkeypatch.setitem(layers.LOWERINGS, "Flatten", concrete_flatten)
    out = tmp_path / "export"
    out.mkdir()
    with pytest.raises(BackendUnavailable) as err:
        jax_export.export(program, "jax", out, example=None)
    assert f"{flat.name} (Flatten)" in str(err.value), str(err.value)
    assert list(out.iterdir()) == []


@pytest.mark.skipif("tensorflow" not in BACKENDS, reason="tensorflow is not under test")
def test_savedmodel_names_node_and_op_it_cannot_store(monkeypatch, tmp_path):
    """A lowering that runs Python (tf.py_function: a SavedModel keeps only a token for the
    callable) is refused, naming the node and the op, and nothing is written."""
    import tensorflow as tf

    from rosetta.backends.tensorflow import export as tf_export
    from rosetta.backends.tensorflow import shape

    spec = models.get("cnn")
    program = rs.get_backend("tensorflow").compile(spec, dtype="float32", mode="function")
    flat = next(n for n in spec.model.nodes if n.op == "Flatten")
    plain = shape.Flatten.__call__

    def python_flatten(self, xs, training=False, update_state=False):
        y = plain(self, xs, training, update_state)
        z = tf.py_function(lambda t: t, [y], y.dtype)
        z.set_shape(y.shape)
        return z

    monkeypatch.setattr(shape.Flatten, "__call__", python_flatten)
    out = tmp_path / "export"
    out.mkdir()
    with pytest.raises(BackendUnavailable) as err:
        tf_export.export(program, "savedmodel", out, example=None)
    assert f"{flat.name} (Flatten)" in str(err.value), str(err.value)
    assert "EagerPyFunc" in str(err.value)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("backend,fmt", FORMATS, ids=[f for _, f in FORMATS])
def test_unknown_format_is_refused(backend, fmt, tmp_path):
    from importlib import import_module

    module = import_module(f"rosetta.backends.{backend}.export")
    with pytest.raises(BackendUnavailable, match="torch"):
        module.export(object(), "torch", tmp_path, example=None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif("tensorflow" not in BACKENDS, reason="tensorflow is not under test")
def test_tensorflow_dispatches_keras(monkeypatch, tmp_path):
    """fmt "keras" goes to ``rosetta.backends.keras.model.export_keras(program, out,
    example=...)``, imported only when asked for (a stand-in module here: the Keras exporter has its own tests)."""
    from rosetta.backends.tensorflow import export as tf_export

    calls = []
    stub = types.ModuleType("rosetta.backends.keras.model")
    stub.export_keras = lambda program, out, *, example: calls.append((program, out, example)) \
        or ["model.keras"]
    monkeypatch.setitem(sys.modules, "rosetta.backends.keras.model", stub)
    assert tf_export.FORMATS == ("savedmodel", "keras")
    program, example = object(), {"x": np.zeros((1, 2))}
    assert tf_export.export(program, "keras", tmp_path, example=example) == ["model.keras"]
    assert calls == [(program, tmp_path, example)]


# last in the file: pytest-xdist hands each worker two consecutive tests first, and these two
# (the slow ones) should land on different workers
@pytest.mark.parametrize("backend,fmt", FORMATS, ids=[f for _, f in FORMATS])
def test_artifacts_run_without_rosetta(backend, fmt, tmp_path):
    """Each model trained once in float32 and exported in float32 from that program and in
    float64 from a float64 program loaded with its parameters and state (as ``rosetta export``
    does from a float32 checkpoint); every loader of one dtype then runs in one fresh process
    (the framework imported once; the float64 one starts with jax's x64 off) on a batch of
    CHECK_BATCH and a batch of 1."""
    jobs = {dtype: [] for dtype in TOL}
    expected = {}
    for model in MODELS:
        spec, trained = _trained(backend, model)
        params, state = trained.export_params(), trained.export_state()
        for dtype in TOL:
            program = trained
            if dtype != "float32":
                program = rs.get_backend(backend).compile(spec, dtype=dtype,
                                                          mode=MODE.get(backend))
                program.load(params, state)
            out = tmp_path / dtype / model
            files = _export(backend, fmt, program, spec, dtype, out)
            written = sorted(p.name for p in out.iterdir() if p.name != "export.json")
            assert sorted(files) == written
            for batch in (CHECK_BATCH, 1):
                x = _inputs(spec, batch, dtype, seed=3 + batch)
                inputs = tmp_path / dtype / f"{model}-{batch}.npz"
                result = tmp_path / dtype / f"{model}-{batch}-y.npz"
                np.savez(inputs, **x)
                jobs[dtype] += [str(out), str(inputs), str(result)]
                expected[(dtype, model, batch)] = (result, _reference(spec, params, state, x))
    for dtype, args in jobs.items():
        r = subprocess.run([sys.executable, "-c", BLOCKED, str(_loader(backend, fmt)), *args],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{fmt} {dtype} loader:\n{r.stderr[-3000:]}"
    errors = {dtype: {} for dtype in TOL}
    for (dtype, model, batch), (result, ref) in expected.items():
        y = np.load(result)["y"]
        assert y.dtype == np.dtype(dtype) and y.shape == ref.shape, (dtype, model, batch,
                                                                      y.dtype, y.shape)
        errors[dtype][f"{model} batch {batch}"] = _normwise(y, ref)
    for dtype, errs in errors.items():
        assert max(errs.values()) <= TOL[dtype], f"{fmt} {dtype}: normwise errors {errs}"
