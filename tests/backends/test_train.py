"""Training through the CLI and the Python API on every backend: it learns, it reports, it fails
cleanly on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import rosetta as rs
from rosetta import models
from rosetta.training import train

from selection import BACKENDS


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "rosetta.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_recovers_slope(backend):
    rec = train(models.get("linear"), backend, progress=False)
    p = rec["program"].export_params()
    assert abs(float(p["dense/kernel"][0, 0]) - 2.0) < 0.05
    assert rec["final_loss"] < 0.05
    assert rec["metrics"]["loss"] < 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_learns_digits(backend):
    rec = train(models.get("mlp"), backend, steps=300, progress=False)
    assert rec["metrics"]["accuracy"] > 0.9, rec["metrics"]
    assert rec["losses"][-1] < rec["losses"][0] / 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_train_json_record(backend):
    r = run_cli("train", "cnn", "--backend", backend, "--steps", "20", "--seed", "3", "--json",
                "--quiet", "--threads", "1")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("backend", "device", "dtype", "steps", "losses", "final_loss", "metrics",
                "seconds"):
        assert key in rec
    assert rec["backend"] == backend and rec["device"] == "cpu" and rec["dtype"] == "float32"
    assert rec["steps"] == 20 and len(rec["losses"]) == 20 and rec["seed"] == 3
    assert rec["final_loss"] == rec["losses"][-1]
    assert 0.0 <= rec["metrics"]["accuracy"] <= 1.0
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_json_spec_file_and_epochs(backend, tmp_path):
    path = tmp_path / "lin.json"
    path.write_text(models.get("linear").dumps())
    r = run_cli("train", str(path), "--backend", backend, "--epochs", "2", "--batch-size", "64",
                "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["steps"] == 2 * (410 // 64) and rec["batch_size"] == 64


@pytest.mark.parametrize("backend", BACKENDS)
def test_unavailable_device_is_bad_input(backend):
    be = rs.get_backend(backend)
    if "gpu" in be.devices():
        pytest.skip(reason="this machine has a GPU: the missing-device error cannot be provoked")
    r = run_cli("train", "linear", "--backend", backend, "--device", "gpu", "--steps", "2")
    assert r.returncode == 2
    assert "gpu" in r.stderr.lower() and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_losses(backend):
    a = train(models.get("mlp"), backend, steps=5, seed=1, progress=False)["losses"]
    b = train(models.get("mlp"), backend, steps=5, seed=1, progress=False)["losses"]
    c = train(models.get("mlp"), backend, steps=5, seed=2, progress=False)["losses"]
    assert a == b
    assert a != c


@pytest.mark.parametrize("backend", BACKENDS)
def test_character_model_prints_a_sample(backend):
    """A character model trained on the stdlib text returns a sampled continuation of a
    held-out window: 120 characters of the dataset's alphabet."""
    from rosetta.text import VOCAB

    tokens = rs.Input((16,), name="tokens", kind="int")
    h = rs.Embedding(len(VOCAB), 8, name="embed")(tokens)
    h = rs.MultiHeadAttention(2, 4, causal=True, name="attn")(h, h)
    spec = rs.TrainSpec(model=rs.Model(tokens, rs.Dense(len(VOCAB), name="logits")(h),
                                       name="tiny_lm"),
                        loss=rs.losses.SequenceCrossEntropy(), optimizer=rs.optim.Adam(1e-2),
                        data=rs.DataSpec("text", 8, {"length": 16, "n": 200}), steps=3)
    run = train(spec, backend, steps=3, progress=False)
    assert isinstance(run["sample"], str) and len(run["sample"]) == 120
    assert set(run["sample"]) <= set(VOCAB)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_last_update_that_breaks_the_parameters_is_a_training_failure(backend, tmp_path):
    """The loss of every step is finite (it is computed before its update), but the last
    update makes the parameters (or, at least, the held-out loss) infinite: a training failure
    naming the tensor or metric, and no checkpoint written."""
    model = rs.Sequential([rs.Dense(1, name="out")], input_shape=(1,), name="lin")
    spec = rs.TrainSpec(model, rs.losses.MeanSquaredError(), rs.optim.SGD(1e308),
                        rs.DataSpec("regression", batch_size=8), steps=1)
    with pytest.raises(FloatingPointError, match="parameter 'out/|held-out loss is inf"):
        train(spec, backend, dtype="float64", save=tmp_path / "ck", progress=False)
    assert not list((tmp_path / "ck").glob("step-*"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_program_refuses_out_of_range_embedding_ids_with_the_core_message(backend):
    """A Program used directly (no CLI check before it) refuses Embedding ids outside
    [0, vocab) on every backend with the core's one message (datacheck.check_embedding_ids):
    torch raises its own IndexError, XLA clamps, JAX reads a zero row."""
    from rosetta.backend_registry import get_backend
    from rosetta.errors import DataError

    spec = models.get("lstm")
    vocab = next(n.attrs["vocab_size"] for n in spec.model.nodes if n.op == "Embedding")
    prog = get_backend(backend).compile(spec, dtype="float32")
    x = {i.name: np.ones((2, *i.shape), np.int64) for i in spec.model.inputs}
    y = np.zeros(2, np.int64)
    ids = next(i.name for i in spec.model.inputs if i.name in
               {n.inputs[0] for n in spec.model.nodes if n.op == "Embedding"})
    x[ids][1, 3] = vocab
    with pytest.raises(DataError, match=rf"input '{ids}': Embedding ids must be in "
                                        rf"\[0, {vocab}\), found 1\.\.{vocab}"):
        prog.gradients(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_program_refuses_wrong_injected_masks_with_the_core_message(backend):
    """Injected keep-masks (conformance mode) are checked by the core on every backend
    (rosetta.dropout.check_masks): a missing or unknown node, a wrong shape, masks for a model
    without dropout: one DataError, the same text (torch had no check of its own)."""
    from rosetta.backend_registry import get_backend
    from rosetta.dropout import mask_draws
    from rosetta.errors import DataError

    spec = models.get("mlp_dropout")
    prog = get_backend(backend).compile(spec, dtype="float32")
    x = {i.name: np.zeros((3, *i.shape), np.float32) for i in spec.model.inputs}
    y = np.zeros(3, np.int64)
    draws = mask_draws(spec.model)
    good = {d.node: np.ones((3, *d.shape)) for d in draws}
    first = draws[0].node
    with pytest.raises(DataError, match=rf"missing \['{first}'\], unknown \['nope'\]"):
        prog.gradients(x, y, masks={**{k: v for k, v in good.items() if k != first},
                                    "nope": good[first]})
    with pytest.raises(DataError, match=rf"masks: '{first}' must have shape \(3, "):
        prog.train_step(x, y, masks={**good, first: np.ones((2, *draws[0].shape))})
    plain = get_backend(backend).compile(models.get("mlp"), dtype="float32")
    with pytest.raises(DataError, match=r"masks: this model has no dropout, found \['drop'\]"):
        plain.forward(x, training=True, masks={"drop": np.ones((3, 4))})
