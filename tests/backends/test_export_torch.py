"""The torch backend's export formats (backends/torch/export.py): ``torch`` (torch.export .pt2 +
state_dict) and ``onnx`` (torch.onnx dynamo exporter, run by ONNX Runtime).

* artifact: mlp, cnn and lstm (sequence lengths), trained 3 steps, exported (float32 and float64
  for ``torch``, float32 for ``onnx``); the standalone loader runs in a fresh Python in which
  ``import rosetta`` fails, on held-out inputs of another batch size, and its ``y`` matches the
  NumPy float64 reference forward within 1e-5 (float32) / 1e-10 (float64), normwise;
* the export copy's rewrites: recurrent layers with lengths (bidirectional, sequences, GRU,
  SimpleRNN) run unpacked, and the ONNX average pool without ``divisor_override``, match the
  reference; without them, the export is a ``BackendUnavailable`` naming the node and the op,
  and nothing is written;
* refusals: ``onnx`` in float64, an unknown format; the state_dict is plain tensors
  (``torch.load(weights_only=True)``); the program is not changed by exporting it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from selection import BACKENDS

if "torch" not in BACKENDS:
    pytest.skip("the torch backend is not selected (ROSETTA_TEST_BACKENDS)",
                allow_module_level=True)

import torch  # noqa: E402

import rosetta as rs  # noqa: E402
from rosetta import models  # noqa: E402
from rosetta.data import sample_inputs  # noqa: E402
from rosetta.errors import BackendUnavailable  # noqa: E402
from rosetta.training import train  # noqa: E402
from rosetta.backends.torch import export as tx  # noqa: E402
from rosetta.backends.torch.recurrent import NativeRecurrent  # noqa: E402

from cases import BUILD  # noqa: E402

TOL = {"float32": 1e-5, "float64": 1e-10}
LOADERS = {fmt: pathlib.Path(tx.__file__).with_name(f"load_{fmt}.py") for fmt in tx.FORMATS}
DTYPES = {"torch": ("float32", "float64"), "onnx": ("float32",)}
# the check's fresh process: ``import rosetta`` fails; each job runs the loader as a script,
# ``python LOADER EXPORT_DIR INPUTS.npz OUT.npz``
BLOCKED = """
import json, runpy, sys
sys.modules['rosetta'] = None
for job in json.loads(sys.argv[1]):
    sys.argv = job
    try:
        runpy.run_path(job[0], run_name='__main__')
    except SystemExit as e:
        if e.code:
            raise
"""


@functools.cache
def _trained(name: str, dtype: str):
    spec = models.get(name)
    return spec, train(spec, "torch", steps=3, dtype=dtype, batch_size=8,
                       progress=False)["program"]


def _write_meta(d: pathlib.Path, fmt: str, graph, dtype: str):
    """export.json as core/export.py writes it (the keys the loaders read)."""
    meta = {"format": fmt, "model": graph.name, "dtype": dtype,
            "inputs": [{"name": i.name, "shape": list(i.shape),
                        "dtype": dtype if i.kind == "float" else "int64"} for i in graph.inputs],
            "output_shape": list(graph.output_type.shape)}
    (d / "export.json").write_text(json.dumps(meta))


def _cast(graph, inputs: dict, dtype: str) -> dict:
    return {k: np.asarray(v, dtype if graph.types[k].kind == "float" else np.int64)
            for k, v in inputs.items()}


def _reference(program, inputs):
    return program.graph.reference_forward(program.export_params(), inputs,
                                           state=program.export_state())


def _normwise(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def _export(program, fmt, d: pathlib.Path, example) -> list[str]:
    d.mkdir(parents=True, exist_ok=True)
    files = tx.export(program, fmt, d, example=example)
    assert sorted(files) == sorted(p.name for p in d.iterdir())
    _write_meta(d, fmt, program.graph, program.dtype)
    return files


def _load_module(fmt: str):
    """The loader imported in this process (for the quick in-process checks)."""
    spec = importlib.util.spec_from_file_location(f"_load_{fmt}", LOADERS[fmt])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fmt", tx.FORMATS)
def test_standalone_loader_matches_reference(fmt, tmp_path):
    """One fresh process per format runs the loader script on every export in turn (importing
    torch and torch.export's loader once: 4 s a process)."""
    exports = []
    for name in ("mlp", "cnn", "lstm"):
        for dtype in DTYPES[fmt]:
            spec, program = _trained(name, dtype)
            d = tmp_path / f"{name}-{dtype}"
            files = _export(program, fmt, d, sample_inputs(spec.model, 4, seed=0))
            assert files == (["model.pt2", "state_dict.pt"] if fmt == "torch"
                             else ["model.onnx"])
            x = _cast(spec.model, sample_inputs(spec.model, 5, seed=11), dtype)
            np.savez(d / "in.npz", **x)
            exports.append((name, dtype, spec, program, d, x))
    jobs = [[str(LOADERS[fmt]), str(d), str(d / "in.npz"), str(d / "out.npz")]
            for *_, d, _ in exports]
    r = subprocess.run([sys.executable, "-c", BLOCKED, json.dumps(jobs)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for name, dtype, spec, program, d, x in exports:
        with np.load(d / "out.npz") as f:
            y = f["y"]
        assert y.dtype == np.dtype(dtype) and y.shape == (5, *spec.model.output_type.shape)
        err = _normwise(y, _reference(program, x))
        assert err <= TOL[dtype], f"{name} {fmt} {dtype}: normwise error {err:.2e}"


@pytest.mark.parametrize("fmt", tx.FORMATS)
def test_batch_of_one(fmt, tmp_path):
    """An example of one row is doubled for tracing (torch.export specializes size 1); the
    artifact then runs batches of 1 and 3."""
    spec, program = _trained("lstm", "float32")
    _export(program, fmt, tmp_path, sample_inputs(spec.model, 1, seed=2))
    loader = _load_module(fmt)
    for batch in (1, 3):
        x = _cast(spec.model, sample_inputs(spec.model, batch, seed=batch), "float32")
        (y,) = loader.run(tmp_path, x)
        assert _normwise(y, _reference(program, x)) <= TOL["float32"]


@pytest.mark.parametrize("fmt,dtype,case", [
    ("torch", "float64", "lstm_bidirectional_sequences_lengths"),
    ("torch", "float64", "gru_bidirectional_lengths"),
    ("torch", "float64", "simple_rnn_relu_lengths"),
    ("torch", "float64", "lstm_sequences_lengths"),
    ("onnx", "float32", "lstm_bidirectional_sequences_lengths"),
    ("onnx", "float32", "avgpool_explicit_asym"),
    ("torch", "float64", "gru_reset_before_two_biases_bidirectional_sequences_lengths"),
    ("onnx", "float32", "gru_reset_before_two_biases_bidirectional_sequences_lengths"),
])
def test_export_rewrites_match_reference(fmt, dtype, case, tmp_path):
    """Recurrent layers with lengths run unpacked, and the ONNX average pool runs without
    ``divisor_override`` (see the export module's docstring): the same outputs."""
    spec = BUILD[case]()
    program = rs.get_backend("torch").compile(spec, dtype=dtype)
    _export(program, fmt, tmp_path, sample_inputs(spec.model, 4, seed=0))
    x = _cast(spec.model, sample_inputs(spec.model, 6, seed=7), dtype)
    (y,) = _load_module(fmt).run(tmp_path, x)
    assert _normwise(y, _reference(program, x)) <= TOL[dtype]


@pytest.mark.parametrize("fmt,case,op,node,rewrites", [
    ("torch", "lstm_bidirectional_lengths", "LSTM", "bilstm", []),
    ("onnx", "avgpool_explicit_asym", "AvgPool2D", "pool",
     [(NativeRecurrent, tx._unpacked_forward)]),
])
def test_unexpressible_op_is_named_and_nothing_written(fmt, case, op, node, rewrites,
                                                       monkeypatch, tmp_path):
    """Without its rewrite, packing (a bidirectional layer with lengths, the one the training
    lowering still packs: torch.export cannot trace pack_padded_sequence) and the
    dropped divisor_override (a wrong ONNX file, caught on the example) are refused, naming
    the node and the op."""
    monkeypatch.setitem(tx._REWRITES, fmt, rewrites)
    spec = BUILD[case]()
    program = rs.get_backend("torch").compile(spec)
    with pytest.raises(BackendUnavailable, match=rf"format '{fmt}' cannot express {op} "
                                                 rf"\(node '{node}'\)"):
        tx.export(program, fmt, tmp_path, example=sample_inputs(spec.model, 4))
    assert list(tmp_path.iterdir()) == []


def test_onnx_float64_and_unknown_format_are_refused(tmp_path):
    _, program = _trained("mlp", "float64")
    with pytest.raises(BackendUnavailable, match="float32 only.*Conv"):
        tx.export(program, "onnx", tmp_path, example=sample_inputs(program.graph, 2))
    with pytest.raises(BackendUnavailable, match="unknown export format 'tflite'"):
        tx.export(program, "tflite", tmp_path, example=sample_inputs(program.graph, 2))
    assert list(tmp_path.iterdir()) == []


def test_state_dict_is_plain_weights_and_program_is_untouched(tmp_path):
    spec, program = _trained("lstm", "float64")
    x = sample_inputs(spec.model, 3, seed=4)
    before = program.forward(x)
    training = program.model.training
    tx.export(program, "torch", tmp_path, example=x)
    state = torch.load(tmp_path / "state_dict.pt", weights_only=True)
    fresh = rs.get_backend("torch").compile(spec, dtype="float64")
    fresh.model.load_state_dict(state)
    assert all(v.dtype == torch.float64 for k, v in state.items() if v.is_floating_point())
    np.testing.assert_array_equal(fresh.forward(x), before)
    # the rewrites went to a copy: the program still packs, and computes what it did
    assert not any("forward" in vars(m) for m in program.model.modules()
                   if isinstance(m, NativeRecurrent))
    assert program.model.training == training
    np.testing.assert_array_equal(program.forward(x), before)
