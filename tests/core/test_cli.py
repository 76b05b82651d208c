"""The command line's bad-input paths: exit status 2, one clear line, no traceback."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rosetta.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args,words", [
    (["train", "resnet9000", "--backend", "torch"], "unknown model"),
    (["train", "mlp", "--backend", "caffe2"], "invalid choice"),
    pytest.param(["train", "mlp", "--backend", "mxnet"], "its own environment",
                 marks=pytest.mark.skipif(importlib.util.find_spec("mxnet") is not None,
                                          reason="mxnet is installed here (its environment)")),
    (["train", "mlp", "--backend", "torch", "--steps", "-3"], "positive integer"),
    (["train", "mlp", "--backend", "torch", "--dtype", "float16"], "invalid choice"),
    (["train", "missing.json", "--backend", "torch"], "no such file"),
    (["train", "mlp", "--backend", "torch", "--steps", "3", "--epochs", "1"], "not both"),
    (["train", "mlp"], "--backend"),
])
def test_bad_input_exit_2_one_line(args, words):
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_malformed_and_invalid_json_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    r = run_cli("train", str(bad), "--backend", "torch")
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "line 1" in r.stderr
    invalid = tmp_path / "invalid.json"
    out = run_cli("spec", "mlp").stdout.replace('"units": 128', '"units": -4', 1)
    invalid.write_text(out)
    r = run_cli("train", str(invalid), "--backend", "torch")
    assert r.returncode == 2 and "hidden1" in r.stderr and "units" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_py_spec_file(tmp_path):
    f = tmp_path / "my.py"
    f.write_text("x = 1\n")
    r = run_cli("spec", str(f))
    assert r.returncode == 2 and "must define `spec`" in r.stderr
    f.write_text("import rosetta as rs\n"
                 "spec = rs.TrainSpec(model=rs.Sequential([rs.Dense(1)], (1,), name='tiny'),\n"
                 "    loss=rs.losses.MeanSquaredError(), optimizer=rs.optim.SGD(0.1),\n"
                 "    data=rs.DataSpec('regression'))\n")
    r = run_cli("spec", str(f))
    assert r.returncode == 0 and '"name": "tiny"' in r.stdout


def test_models_lists_the_zoo():
    from rosetta import models

    r = run_cli("models")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert set(rows) == set(models.ZOO)
    for row in models.describe():   # parameter count, FLOPs per example, dataset
        assert rows[row["name"]][1:4] == [f"{row['params']:,}", f"{row['flops']:,}",
                                          row["dataset"]]
        assert row["params"] > 0 and row["flops"] > 0


def test_backends_lists_every_backend():
    r = run_cli("backends")
    assert r.returncode == 0, r.stderr
    for name in ("torch", "tensorflow", "jax"):
        assert name in r.stdout
