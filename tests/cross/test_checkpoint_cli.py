"""The user's workflow from the command line: their data file in, a checkpoint out, resumed on
another framework, evaluated, used for predictions; and every bad file a clean exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rosetta import checkpoint

from selection import BACKENDS

pytestmark = pytest.mark.cross
A, B = BACKENDS[0], BACKENDS[1]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rosetta.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def last_json(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``rosetta data cnn`` -> digits.npz; 6 updates of the zoo CNN on A saved every 3."""
    d = tmp_path_factory.mktemp("cli")
    r = run_cli("data", "cnn", "--out", d / "digits.npz")
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "cnn", "--backend", A, "--data", d / "digits.npz", "--steps", "6",
                "--dtype", "float64", "--save", d / "ck", "--save-every", "3", "--keep", "2",
                "--json", "--quiet")
    return d, last_json(r)


def test_train_resume_on_another_backend_eval_predict(trained):
    d, rec_a = trained
    assert [s for s, _ in checkpoint.saved_steps(d / "ck")] == [3, 6]
    assert rec_a["saved"].endswith("step-00000006")
    # resume the half-way checkpoint on B: its 3 losses are A's last 3 (float64, exact tier)
    r = run_cli("train", "--resume", d / "ck" / "step-00000003", "--backend", B, "--json",
                "--quiet")
    rec_b = last_json(r)
    assert rec_b["start_step"] == 3 and rec_b["steps"] == 3 and rec_b["dtype"] == "float64"
    np.testing.assert_allclose(rec_b["losses"], rec_a["losses"][3:], rtol=1e-10)
    # continue the newest checkpoint of the run folder for 2 more updates on B
    r = run_cli("train", "--resume", d / "ck", "--backend", B, "--steps", "2", "--json",
                "--quiet", "--save", d / "ck2")
    rec_c = last_json(r)
    assert rec_c["start_step"] == 6 and rec_c["steps"] == 2
    assert checkpoint.load(d / "ck2").step == 8
    # eval: the held-out metrics of the checkpoint equal the run's own, on any backend
    r = run_cli("eval", d / "ck", "--backend", B, "--json")
    ev = last_json(r)
    assert ev["step"] == 6
    assert ev["metrics"]["loss"] == pytest.approx(rec_a["metrics"]["loss"], rel=1e-10)
    # eval --data on a file without held-out arrays evaluates every example of it
    with np.load(d / "digits.npz") as z:
        np.savez(d / "test_only.npz", x=z["x_test"], y=z["y_test"])
    ev2 = last_json(run_cli("eval", d / "ck", "--backend", A, "--data", d / "test_only.npz",
                            "--json"))
    assert ev2["examples"] == ev["examples"]
    assert ev2["metrics"]["loss"] == pytest.approx(ev["metrics"]["loss"], rel=1e-10)
    # predict: the outputs of a .npy of inputs, equal on both backends
    with np.load(d / "digits.npz") as z:
        x = z["x_test"][:10]
    np.save(d / "x.npy", x)
    outs = []
    for be in (A, B):
        r = run_cli("predict", d / "ck", "--backend", be, "--input", d / "x.npy", "--output",
                    d / f"y-{be}.npy")
        assert r.returncode == 0, r.stderr
        outs.append(np.load(d / f"y-{be}.npy"))
    assert outs[0].shape == (10, 10) and outs[0].dtype == np.float64
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-10, atol=1e-12)


def _tamper_flip(ck):
    f = ck / "params.safetensors"
    b = bytearray(f.read_bytes())
    b[-3] ^= 0x10
    f.write_bytes(bytes(b))


def _tamper_truncate(ck):
    f = ck / "optimizer.safetensors"
    f.write_bytes(f.read_bytes()[:100])


@pytest.mark.parametrize("case", ["flipped", "truncated", "other_spec", "nothing_there"])
def test_tampered_checkpoints_exit_2_with_one_line(trained, tmp_path, case):
    import shutil

    d, _ = trained
    ck = tmp_path / "ck"
    shutil.copytree(d / "ck" / "step-00000003", ck)
    args = ["train", "--resume", ck, "--backend", B, "--quiet"]
    words = {"flipped": "params.safetensors: SHA-256 does not match",
             "truncated": "optimizer.safetensors: SHA-256 does not match",
             "other_spec": "written for another spec",
             "nothing_there": "no such checkpoint"}[case]
    if case == "flipped":
        _tamper_flip(ck)
    elif case == "truncated":
        _tamper_truncate(ck)
    elif case == "other_spec":
        args = ["train", "mlp", "--resume", ck, "--backend", B, "--quiet"]
    else:
        args[2] = tmp_path / "missing"
    r = run_cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_bad_data_file_exits_2_before_any_framework(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((40, 63)), y=np.zeros(40, np.int64))
    r = run_cli("train", "mlp", "--backend", A, "--data", tmp_path / "bad.npz", "--quiet")
    assert r.returncode == 2 and "bad.npz" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    x = np.random.default_rng(0).random((40, 64))
    x[17, 5] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.zeros(40, np.int64))
    r = run_cli("train", "mlp", "--backend", A, "--data", tmp_path / "nan.npz", "--quiet")
    assert r.returncode == 2 and "nan.npz" in r.stderr and "17" in r.stderr, r.stderr


def test_save_into_a_file_fails_before_training(tmp_path):
    (tmp_path / "f").write_text("x")
    r = run_cli("train", "linear", "--backend", A, "--steps", "2", "--save", tmp_path / "f",
                "--quiet")
    assert r.returncode == 2 and "not a folder" in r.stderr, r.stderr
