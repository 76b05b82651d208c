"""The ``keras`` export: a Keras 3 model of Keras layers (``rosetta.backends.keras.model.export_keras``), loaded by
``load_keras.py`` in fresh processes where ``import rosetta`` fails, under every Keras backend.

* match: mlp, cnn and gru (TensorFlow float32 programs trained 3 steps, ``function`` mode) and
  ``tricky`` (an untrained spec of the traps: a masked LSTM whose output feeds an unmasked one,
  a masked bidirectional reset-before GRU,
  attention with key lengths after a position embedding, asymmetric 'same' average pooling,
  explicit max-pool pads) and ``tied`` (tensors shared by the batch: a Parameter table read by a
  Gather and, transposed, by the head; padding rows) are exported once; one subprocess per ``KERAS_BACKEND`` (tensorflow,
  jax, torch: those whose framework is a selected backend) runs ``load_keras.py`` on each: every
  output is within 1e-5 normwise of the NumPy float64 reference of the program's parameters. The
  jax run (else the tensorflow one) also ``--fit``\\ s the gru export (compile, 2 epochs, save,
  reload) and its JSON summary says ok.
* the artifact is Keras built-ins only: no ``Lambda``, every class from the ``keras`` package.
* one Keras SGD step of the tied export (``fit``) moves every weight as the spec's step does.
* refused before anything is written: a float64 program, a strided dilated Conv2DTranspose,
  a BatchNorm with torch's running variance (``running_var="unbiased"``).

Cost: the export fixture (3 short TF trainings, 4 exports) is built once and shared by the xdist
workers (a file lock per model, so two workers build two models at once); each loader subprocess
pays one keras + backend import (5 to 15 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from selection import BACKENDS

pytestmark = pytest.mark.skipif("tensorflow" not in BACKENDS,
                                reason="the keras export is written by the tensorflow backend")

import rosetta as rs  # noqa: E402
from rosetta.errors import BackendUnavailable  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LOADER = REPO / "backends" / "tensorflow" / "load_keras.py"
MODELS = ("mlp", "cnn", "gru", "tricky", "tied")
FIT_MODEL = "gru"
# a Keras backend is its framework: tested where that framework is a selected rosetta backend
KERAS_BACKENDS = [b for b in ("tensorflow", "jax", "torch") if b in BACKENDS]
FIT_BACKEND = "jax" if "jax" in KERAS_BACKENDS else "tensorflow"


def _tricky_spec():
    """Two inputs branches joined: the sequence traps and the pooling traps (and the ops no zoo
    model holds)."""
    from rosetta import layers as L

    x = rs.Input((5, 4), name="seq")
    n = rs.Input((), kind="int", name="lengths")
    img = rs.Input((7, 6, 2), name="img")
    h = rs.PositionEmbedding(6, name="pos")(x)
    h = rs.MultiHeadAttention(2, 2, name="attn")(h, h, n)
    h = rs.LSTM(3, return_sequences=True, name="masked")(h, n)   # output mask must not leak
    h = rs.LSTM(2, name="unmasked")(h)                            # runs over all 5 steps
    a = rs.AvgPool2D(3, strides=2, padding="same", name="avg")(img)   # pads (1, 1), (0, 1)
    a = rs.MaxPool2D(2, strides=1, padding=((1, 0), (0, 1)), name="max")(a)
    a = rs.HardSwish(name="hswish")(a)
    g = rs.Reshape((1, 1, 2), name="squeeze")(rs.GlobalAvgPool2D(name="gap")(a))
    g = rs.Activation("hard_sigmoid", name="hsig")(g)
    a = rs.Activation("relu6", name="relu6")(rs.Multiply(name="gate")([a, g]))  # broadcast
    a = L.GlobalMaxPool2D(name="gmp")(a)
    # tensor math (keras.ops operations): MatMul 2-D and 1-D, var, a mask with -inf into Softmax
    m = rs.Dense(4, name="m_pre")(x)                                          # (5, 4)
    v = rs.Reduce("var", (0,), correction=1, name="m_var")(m)                # (4,)
    mv = rs.MatMul(name="m_mv")(m, v)                                         # (5,)
    mm = rs.MatMul(name="m_mm")(m, rs.Reshape((4, 4), name="m_sq")(rs.Dense(16, name="m_w")(v)))
    low = rs.Equal(name="m_low")(mm, rs.Reduce("min", (-1,), keepdims=True, name="m_min")(mm))
    t = rs.Softmax(name="m_softmax")(rs.Where(x=float("-inf"), name="m_mask")(low, mm))
    t = rs.Subtract(constant=1.0, reverse=True, name="m_rsub")(t)
    t = rs.Divide(name="m_div")(t, rs.Add(constant=1.0, name="m_one")(rs.Unary("square",
                                                                               name="m_sq2")(mm)))
    t = rs.Maximum(name="m_maximum")(t, rs.Unary("erf", name="m_erf")(mm))
    t = rs.Minimum(name="m_minimum")(t, rs.Power(constant=2.0, name="m_pow")(mm))
    t = rs.Cumsum(0, name="m_cumsum")(rs.Multiply(constant=0.5, name="m_half")(t))
    t = rs.LogSoftmax(axis=0, name="m_logsm")(t)
    r = rs.Reduce("sum", (0,), name="m_sum")(t)                              # (4,)
    # a reset-before GRU (Keras's reset_after=False, one bias), bidirectional, with lengths
    rb = rs.GRU(2, reset_after=False, recurrent_bias=False, bidirectional=True,
                bias_init="normal", name="gru_rb")(x, n)
    y = rs.Dense(3, name="head")(rs.Concatenate(name="cat")([h, a, r, mv, rb]))
    return rs.TrainSpec(model=rs.Model([x, n, img], y, name="tricky"),
                        loss=rs.losses.SoftmaxCrossEntropy(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("images"), steps=1)


def _tied_spec():
    """Tensors shared by the batch (size-1 batch axis in Keras): a Parameter table read by a
    Gather of the ids and, transposed, by the output MatMul (GPT-2's tied head), a position
    Parameter added, a class token Expanded to the batch and concatenated, a Constant added, and
    Constant indices gathering from a batched tensor; padding rows (torch's ``padding_idx``) on
    the Gather and on an Embedding."""
    ids = rs.Input((5,), kind="int", name="ids")
    table = rs.Parameter((7, 4), "normal", name="wte")()
    h = rs.Add(name="embed")([rs.Gather(0, padding_idx=1, name="tok")(table, ids),
                              rs.Parameter((5, 4), "normal", name="wpe")(),
                              rs.Embedding(7, 4, padding_idx=0, name="seg")(ids)])
    cls = rs.Expand((1, 4), name="cls_b")(rs.Parameter((1, 4), "normal", name="cls")())
    h = rs.Concatenate(axis=0, name="with_cls")([cls, h])                          # (6, 4)
    c = rs.Constant(np.array([[0.5, -1.0, 2.0, 0.0]] * 6), name="shift")()
    h = rs.Add(name="plus")([h, c])
    logits = rs.MatMul(name="head")(h, rs.Transpose((1, 0), name="wte_t")(table))  # (6, 7)
    rows = rs.Gather(0, name="rows")(h, rs.Constant(np.array([0, 2, 1]), name="pick")())
    y = rs.Concatenate(name="out")([rs.Flatten(name="f1")(logits), rs.Flatten(name="f2")(rows)])
    return rs.TrainSpec(model=rs.Model([ids], y, name="tied"),
                        loss=rs.losses.MeanSquaredError(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("images"), steps=1)


def _program(name):
    """A float32 TensorFlow program: a zoo model trained 3 steps, or the tricky or tied spec at
    init."""
    from rosetta import models
    from rosetta.backend_registry import get_backend
    from rosetta.training import train

    if name in ("tricky", "tied"):
        spec = _tricky_spec() if name == "tricky" else _tied_spec()
        return get_backend("tensorflow").compile(spec, dtype="float32")
    return train(models.get(name), "tensorflow", steps=3, batch_size=8, mode="function",
                 progress=False)["program"]


def _write_export(program, out: Path) -> None:
    """export_keras + export.json + INPUTS.npz + the float64 reference (REF.npz)."""
    from rosetta.backends.keras.model import export_keras
    from rosetta.data import sample_inputs

    graph = program.graph
    raw = sample_inputs(graph, 6, seed=7)
    inputs = {i.name: np.asarray(raw[i.name], np.float32 if i.kind == "float" else np.int64)
              for i in graph.inputs}
    out.mkdir(parents=True)
    files = export_keras(program, out, example=inputs)
    assert files == ["model.keras"]
    meta = {"format": "keras", "model": graph.name, "dtype": "float32",
            "inputs": [{"name": i.name, "shape": list(i.shape),
                        "dtype": "float32" if i.kind == "float" else "int64"}
                       for i in graph.inputs],
            "output_shape": list(graph.output_type.shape), "files": files}
    (out / "export.json").write_text(json.dumps(meta))
    params = {k: np.asarray(v, np.float64) for k, v in program.export_params().items()}
    state = {k: np.asarray(v, np.float64) for k, v in program.export_state().items()}
    ref = graph.reference_forward(params, {k: (v.astype(np.float64) if v.dtype.kind == "f"
                                               else v) for k, v in inputs.items()}, state=state)
    np.savez(out / "INPUTS.npz", **inputs,
             __labels__=np.arange(len(ref)) % graph.output_type.shape[-1])
    np.savez(out / "REF.npz", y=ref)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, worker_id):
    """{model: export folder}, built once per test session and shared by the xdist workers: a
    lock per model, each worker builds the ones no other worker holds, then waits for the rest."""
    from filelock import FileLock, Timeout

    shared = (tmp_path_factory.getbasetemp() if worker_id == "master"
              else tmp_path_factory.getbasetemp().parent)
    root = shared / "keras_exports"
    root.mkdir(exist_ok=True)
    locks = {m: FileLock(str(root / f"{m}.lock")) for m in MODELS}
    for m in MODELS:       # first pass: build what nobody else is building
        try:
            with locks[m].acquire(timeout=0):
                if not (root / m / "REF.npz").exists():
                    _write_export(_program(m), root / m)
        except Timeout:
            pass
    for m in MODELS:       # second pass: wait for the others' builds
        with locks[m]:
            assert (root / m / "REF.npz").exists(), f"the export of {m} failed in another worker"
    return {m: root / m for m in MODELS}


def _run_loader(backend: str, runs: list[list[str]], cwd: Path) -> subprocess.CompletedProcess:
    """One fresh process under KERAS_BACKEND=backend, ``import rosetta`` blocked, running
    ``load_keras.py`` as ``__main__`` once per argument list (the import of keras is paid once)."""
    code = ("import runpy, sys\n"
            "sys.modules['rosetta'] = None\n"
            f"for argv in {runs!r}:\n"
            f"    sys.argv = [{str(LOADER)!r}, *argv]\n"
            "    try:\n"
            f"        runpy.run_path({str(LOADER)!r}, run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        if e.code:\n"
            "            raise\n")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300, cwd=str(cwd))


def _normwise(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("backend", KERAS_BACKENDS)
def test_loader_matches_reference_on_every_keras_backend(exports, backend, tmp_path):
    runs = [[str(exports[m]), str(exports[m] / "INPUTS.npz"), str(tmp_path / f"{m}.npz")]
            for m in MODELS]
    fit = backend == FIT_BACKEND
    if fit:
        runs.append([str(exports[FIT_MODEL]), str(exports[FIT_MODEL] / "INPUTS.npz"),
                     str(tmp_path / "fit.npz"), "--fit"])
    r = _run_loader(backend, runs, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for m in MODELS:
        want = np.load(exports[m] / "REF.npz")["y"]
        got = np.load(tmp_path / f"{m}.npz")["y"]
        assert got.shape == want.shape and got.dtype == np.float32, (m, got.shape, got.dtype)
        err = _normwise(got, want)
        assert err <= 1e-5, f"{m} under KERAS_BACKEND={backend}: normwise error {err:.2e}"
    if fit:
        summary = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
        assert summary["ok"] and summary["backend"] == backend, summary
        assert len(summary["losses"]) == 2 and all(np.isfinite(summary["losses"]))
        assert summary["weights_changed"] == summary["trainable_weights"] > 0
        assert Path(summary["saved"]).is_file() and summary["reload_max_diff"] <= 1e-6
        # the prediction written before fitting is still the exported model's
        assert _normwise(np.load(tmp_path / "fit.npz")["y"],
                         np.load(exports[FIT_MODEL] / "REF.npz")["y"]) <= 1e-5


def test_artifact_is_keras_builtins_only(exports):
    for m in MODELS:
        with zipfile.ZipFile(exports[m] / "model.keras") as z:
            config = json.loads(z.read("config.json"))
        classes = []

        def walk(obj):
            if isinstance(obj, dict):
                if "class_name" in obj and "module" in obj:
                    classes.append((obj["module"] or "", obj["class_name"]))
                for v in obj.values():
                    walk(v)
            elif isinstance(obj, list):
                for v in obj:
                    walk(v)

        walk(config)
        assert classes and all(mod.startswith("keras") for mod, _ in classes), classes
        assert not any(cls == "Lambda" for _, cls in classes)
        # each graph node with weights or a window is a Keras layer of the node's name
        names = {layer["name"] for layer in config["config"]["layers"]}
        if m == "tricky":
            assert {"masked", "unmasked", "attn", "avg", "max", "head"} <= names, names


def test_shared_tensors_fit_as_the_spec_trains(tmp_path):
    """One Keras SGD step of the tied export (``fit`` in this process's Keras) moves every
    Parameter and the Embedding as the spec's step does: the table read by the Gather and by the
    head gets both gradients, and no padding row gets one from a lookup (an untied copy, a
    gradient lost through the shared batch axis, or a padding row trained is off by about lr * g,
    which the step itself must exceed for the check to mean anything)."""
    import keras
    from rosetta.backends.keras.model import export_keras

    program = _program("tied")
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 7, (4, 5))
    labels = rng.normal(size=(4, *program.graph.output_type.shape)).astype(np.float32)
    export_keras(program, tmp_path, example={"ids": ids})
    model = keras.saving.load_model(tmp_path / "model.keras")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(ids.astype(np.int32), labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
    before = {k: np.asarray(v, np.float64) for k, v in program.export_params().items()}
    program.train_step({"ids": ids}, labels)
    after = {k: np.asarray(v, np.float64) for k, v in program.export_params().items()}
    assert {0, 1} <= set(ids.ravel().tolist())          # both padding ids are read
    for name, key in [("wte", "wte/value"), ("wpe", "wpe/value"), ("cls", "cls/value"),
                      ("seg", "seg/embedding")]:
        got = np.asarray(model.get_layer(name).get_weights()[0], np.float64)
        assert _normwise(after[key] - before[key], before[key]) > 1e-3, name   # it moved
        assert _normwise(got.reshape(after[key].shape), after[key]) <= 1e-6, name


def test_float64_program_is_refused(tmp_path):
    from rosetta import models
    from rosetta.backend_registry import get_backend
    from rosetta.backends.keras.model import export_keras

    program = get_backend("tensorflow").compile(models.get("linear"), dtype="float64")
    with pytest.raises(BackendUnavailable, match="float32 only"):
        export_keras(program, tmp_path, example=None)
    assert list(tmp_path.iterdir()) == []


def test_strided_dilated_transpose_is_refused_naming_node_and_op(tmp_path):
    from rosetta.backend_registry import get_backend
    from rosetta.backends.keras.model import export_keras

    model = rs.Sequential([rs.Conv2DTranspose(2, 2, strides=(2, 1), dilation=2, name="up"),
                           rs.Flatten(name="flat")], input_shape=(3, 3, 2), name="tr")
    spec = rs.TrainSpec(model=model, loss=rs.losses.MeanSquaredError(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=1)
    program = get_backend("tensorflow").compile(spec, dtype="float32")
    with pytest.raises(BackendUnavailable, match=r"tr/up \(Conv2DTranspose\)"):
        export_keras(program, tmp_path, example=None)
    assert list(tmp_path.iterdir()) == []


def _gru(reset_after):
    """A GRU with the bias count Keras's GRU(reset_after) lacks."""
    return rs.Sequential([rs.GRU(2, reset_after=reset_after, recurrent_bias=not reset_after,
                                 name="g")], input_shape=(3, 2), name="gb")


# what Keras's built-in layers cannot hold, refused in one line naming the node, nothing written
REFUSED = {
    "batchnorm_torch_running_variance": (
        lambda: rs.Sequential([rs.Dense(3, name="d"),
                               rs.BatchNorm(running_var="unbiased", name="bn")],
                              input_shape=(4,), name="bnu"),
        r"bnu/bn \(BatchNorm\): Keras's BatchNormalization stores the biased"),
    "gru_reset_after_one_bias": (
        lambda: _gru(True), r"gb/g \(GRU\): Keras's GRU\(reset_after=True\) has"),
    "gru_reset_before_two_biases": (
        lambda: _gru(False), r"gb/g \(GRU\): Keras's GRU\(reset_after=False\) has"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_keras_layers_cannot_hold_is_refused(case, tmp_path):
    from rosetta.backend_registry import get_backend
    from rosetta.backends.keras.model import export_keras

    build, says = REFUSED[case]
    spec = rs.TrainSpec(model=build(), loss=rs.losses.MeanSquaredError(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=1)
    program = get_backend("tensorflow").compile(spec, dtype="float32")
    with pytest.raises(BackendUnavailable, match=says):
        export_keras(program, tmp_path, example=None)
    assert list(tmp_path.iterdir()) == []
