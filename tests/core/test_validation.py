"""The validation layer: every category of malformed input is one clear line (exit
status 2) before any framework is imported; files are written atomically; ``--json`` is JSON.
In-process (``cli_run``), except one real subprocess per kind of exit."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rosetta as rs
from rosetta import files, validate
from rosetta.errors import DataError, SpecError

from cli_run import check_contract, run_cli

BASE = {
    "format": "rosetta/1", "kind": "train",
    "model": {"format": "rosetta/1", "name": "lin",
              "inputs": [{"name": "x", "shape": [1], "kind": "float"}],
              "nodes": [{"name": "dense", "op": "Dense", "attrs": {"units": 1},
                         "inputs": ["x"]}],
              "outputs": ["dense"]},
    "loss": {"name": "mse"},
    "optimizer": {"name": "adam", "learning_rate": 0.01, "epsilon": 1e-7},
    "data": {"dataset": "regression", "batch_size": 8, "args": {"n": 40}},
    "steps": 2, "seed": 0}


def _spec_file(tmp_path, path=(), value=None, raw=None):
    d = copy.deepcopy(BASE)
    if path:
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    p = tmp_path / "spec.json"
    if raw is not None:
        p.write_bytes(raw)
    else:
        p.write_text(json.dumps(d))
    return str(p)


def refused(argv, *words):
    o = run_cli(argv)
    check_contract(o)
    assert o.status == 2, str(o)
    for w in words:
        assert w in o.err, str(o)
    return o.err


NAME_POSITIONS = [("model", "nodes", 0, "op"), ("loss", "name"), ("optimizer", "name"),
                  ("data", "dataset"), ("model", "inputs", 0, "name"), ("model", "outputs", 0),
                  ("model", "nodes", 0, "inputs", 0), ("model", "nodes", 0, "name"),
                  ("model", "name"), ("optimizer", "learning_rate")]


@pytest.mark.parametrize("path", NAME_POSITIONS, ids=lambda p: "/".join(map(str, p)))
@pytest.mark.parametrize("junk", [["Dense"], {"a": 1}, 3, None])
def test_wrong_type_in_a_name_position(tmp_path, path, junk):
    if path == ("optimizer", "learning_rate") and not isinstance(junk, (list, dict)):
        junk = [1]  # a number is a valid learning rate
    refused(["spec", _spec_file(tmp_path, path, junk)], "rosetta: error:")


@pytest.mark.parametrize("raw,words", [
    (b"[" * 100000 + b"]" * 100000, "nested deeper"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper"),
    (b'{"format": "\xff\xfe"}', "not UTF-8"),
    (b"", "not valid JSON"),
])
def test_unreadable_spec_files(tmp_path, raw, words):
    refused(["spec", _spec_file(tmp_path, raw=raw)], words)


def test_spec_path_that_is_a_folder(tmp_path):
    (tmp_path / "d.json").mkdir()
    (tmp_path / "d.py").mkdir()
    refused(["spec", str(tmp_path / "d.json")], "is a folder")
    refused(["spec", str(tmp_path / "d.py")], "is a folder")


@pytest.mark.parametrize("body,words", [
    ("import sys\nsys.exit(0)\n", "sys.exit(0)"),
    ("import sys\nsys.exit()\n", "sys.exit(None)"),
    ("x = 1\nraise ValueError('boom')\n", "line 2: ValueError: boom"),
    ("spec = 3\n", "must define `spec`"),
])
def test_py_spec_that_exits_or_raises(tmp_path, body, words):
    p = tmp_path / "s.py"
    p.write_text(body)
    refused(["train", str(p), "--backend", "torch"], words)


def test_py_spec_sys_exit_0_in_a_real_process(tmp_path):
    p = tmp_path / "s.py"
    p.write_text("import sys\nsys.exit(0)\n")
    r = subprocess.run([sys.executable, "-m", "rosetta.cli", "train", str(p), "--backend",
                        "torch"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "sys.exit(0)" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("path,value,words", [
    (("model", "name"), "lin\n", "found 'lin\\n'"),
    (("model", "nodes", 0, "name"), "dense\n", "a name is"),
    (("seed",), 2 ** 64 + 5, "seed"),
    (("seed",), 2 ** 63, "seed"),
    (("steps",), 10 ** 30, "steps"),
    (("optimizer", "learning_rate"), float("nan"), "learning_rate"),
    (("optimizer", "learning_rate"), float("inf"), "learning_rate"),
    (("optimizer", "epsilon"), 0.0, "epsilon must be > 0"),
    (("optimizer", "epsilon"), float("nan"), "epsilon"),
    (("optimizer", "clip_norm"), float("nan"), "clip_norm"),
    (("optimizer", "clip_value"), float("inf"), "clip_value"),
    (("optimizer", "beta1"), float("nan"), "beta1"),
    (("model", "nodes", 0, "attrs", "kernel_init"), {"name": "normal", "stddev": -1.0},
     "stddev"),
    (("model", "nodes", 0, "attrs", "kernel_init"), {"name": "normal", "stddev": float("inf")},
     "stddev"),
    (("model", "nodes", 0, "attrs", "kernel_init"), {"name": "uniform", "low": 1, "high": 0},
     "exceeds high"),
    (("data", "args"), {"n": -5}, "n must be an integer"),
    (("data", "args"), {"n": 10 ** 13}, "n must be an integer"),
    (("data", "args"), {"n": 3.5}, "n must be an integer"),
    (("data", "args"), {"noise": -1.0}, "noise must be a finite number >= 0"),
    (("data", "args"), {"noise": float("nan")}, "noise"),
    (("data", "args"), {"seed": 2 ** 64}, "seed"),
    (("data", "args"), {"bogus": 1}, "takes"),
    (("data", "batch_size"), 10 ** 30, "64-bit"),
])
def test_numbers_that_cannot_work_are_refused_up_front(tmp_path, path, value, words):
    refused(["spec", _spec_file(tmp_path, path, value)], words)


def test_numbers_beyond_float32_are_refused_in_a_float32_run(tmp_path):
    path = _spec_file(tmp_path, ("optimizer", "learning_rate"), 1e300)
    assert run_cli(["spec", path]).status == 0     # a float64 run may hold it
    refused(["train", path, "--backend", "torch", "--dtype", "float32"], "float32 range")


def test_weight_decay_and_momentum_nan(tmp_path):
    d = copy.deepcopy(BASE)
    d["optimizer"] = {"name": "sgd", "learning_rate": 0.1, "momentum": float("nan")}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(d))
    refused(["spec", str(p)], "momentum")
    d["optimizer"] = {"name": "adamw", "learning_rate": 0.1, "weight_decay": float("nan")}
    p.write_text(json.dumps(d))
    refused(["spec", str(p)], "weight_decay")
    d["optimizer"] = {"name": "rmsprop", "learning_rate": 0.1, "epsilon": 0}
    p.write_text(json.dumps(d))
    refused(["spec", str(p)], "epsilon must be > 0")


def test_dataset_too_big_as_a_whole():
    with pytest.raises(SpecError, match="more than"):
        rs.DataSpec("images", 8, {"n": 10 ** 6, "height": 512, "width": 512}).validate()


@pytest.mark.parametrize("flag", ["--save", "--log", "--data", "--resume"])
def test_empty_paths_are_refused(tmp_path, flag):
    refused(["train", _spec_file(tmp_path), "--backend", "torch", flag, ""], "empty")


def test_seed_option_out_of_range(tmp_path):
    refused(["train", _spec_file(tmp_path), "--backend", "torch", "--seed", str(2 ** 64)],
            "--seed")


# --- memory ------------------------------------------------------------------------------------

def _big_spec():
    x = rs.Input((40000,))
    h = x
    for i in range(3):
        h = rs.Dense(40000, name=f"d{i}")(h)
    return rs.TrainSpec(rs.Model(x, h, name="huge"), rs.losses.MeanSquaredError(),
                        rs.optim.Adam(1e-3), rs.DataSpec("regression"))


def test_memory_estimate_of_a_small_mlp():
    x = rs.Input((4,))
    h = rs.Dense(8, name="a")(x)
    y = rs.Dense(2, name="b")(h)
    spec = rs.TrainSpec(rs.Model(x, y, name="m"), rs.losses.MeanSquaredError(),
                        rs.optim.Adam(1e-3), rs.DataSpec("regression"))
    est = validate.memory_estimate(spec, batch_size=16, dtype="float64")
    n = 4 * 8 + 8 + 8 * 2 + 2
    assert est["parameters"] == est["gradients"] == n * 8
    assert est["optimizer slots"] == 2 * n * 8           # Adam: m and v
    assert est["activations"] == 2 * 16 * (8 + 2) * 8
    assert est["total"] == sum(v for k, v in est.items() if k != "total")


def test_a_spec_that_cannot_fit_is_refused_with_the_estimate(tmp_path):
    spec = _big_spec()
    p = tmp_path / "huge.json"
    p.write_text(spec.dumps())
    err = refused(["train", str(p), "--backend", "torch"], "needs at least", "GiB",
                  "--ignore-memory", "optimizer slots")
    assert "available" in err
    est = validate.check_memory(spec, 32, "float32", ignore=True)  # the flag: no refusal
    assert est["total"] > 4.8e9 * 4 * 4
    with pytest.raises(DataError):
        validate.check_memory(spec, 32, "float32")


# --- output paths checked before any work ------------------------------------------------------

@pytest.mark.parametrize("command", ["conformance", "bench"])
@pytest.mark.parametrize("flag,name,words", [
    ("--report", "r.txt", "ending in"), ("--plot", "p.jpg", "ending in"),
    ("--report", "file/r.json", "is not a folder"), ("--report", "adir", "ending in"),
    ("--plot", "file/p.png", "is not a folder"), ("--report", "", "an empty path"),
    ("--plot", "", "an empty path")])
def test_output_paths_are_checked_first(tmp_path, command, flag, name, words):
    (tmp_path / "file").write_text("x")
    (tmp_path / "adir").mkdir()
    refused([command, "linear", "--backends", "torch", flag, str(tmp_path / name) if name else ""],
            words)


def test_conformance_save_on_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    refused(["conformance", "linear", "--save", str(tmp_path / "file")], "not a folder")


@pytest.mark.parametrize("plot,save", [("out.png", "out.png"), ("out.png", "out.png/d")])
def test_outputs_that_overlap_are_refused(tmp_path, plot, save):
    refused(["conformance", "linear", "--plot", str(tmp_path / plot), "--save",
             str(tmp_path / save)], "overlap")
    assert not (tmp_path / save).exists()   # nothing made before the refusal


def test_a_plot_inside_the_save_folder_is_fine():
    validate.distinct_outputs({"--plot": "run/p.png", "--report": "run/r.json"}, {"--save": "run"})


def test_unwritable_report_folder(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/rosetta-test/r.json"   # root writes anywhere but /proc
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "r.json")
    refused(["conformance", "linear", "--report", target], "--report")


# --- --compare ----------------------------------------------------------------------------------

def _traj(path, steps=2, loss_len=None, params_len=None, **meta):
    m = {"backend": "torch", "dtype": "float64", "device": "cpu", "spec_hash": "h",
         "steps": steps, "model": "m", **meta}
    np.savez(path, loss=np.zeros(loss_len or steps), __meta__=np.array(json.dumps(m)),
             **{"params/a": np.zeros(((params_len or steps + 1), 3))})
    return str(path)


@pytest.mark.parametrize("kind,words", [
    ("junk", "not a rosetta trajectory"), ("nometa", "not a rosetta trajectory"),
    ("listmeta", "not a JSON object"), ("short_loss", "loss has shape"),
    ("short_params", "params/a has shape"), ("bad_steps", "'steps'"),
    ("dtype_list", "'dtype' must be a string"), ("folder", "rosetta: error"),
    ("missing", "no such trajectory")])
def test_malformed_trajectories_given_to_compare(tmp_path, kind, words):
    good = _traj(tmp_path / "good.npz")
    p = tmp_path / f"{kind}.npz"
    if kind == "junk":
        p.write_bytes(b"PK\x03\x04junk")
    elif kind == "nometa":
        np.savez(p, loss=np.zeros(2))
    elif kind == "listmeta":
        np.savez(p, loss=np.zeros(2), __meta__=np.array("[1, 2]"))
    elif kind == "short_loss":
        _traj(p, loss_len=5)
    elif kind == "short_params":
        _traj(p, params_len=7)
    elif kind == "bad_steps":
        _traj(p, steps="2", loss_len=2, params_len=3)
    elif kind == "dtype_list":
        _traj(p, dtype=["float64"])
    elif kind == "folder":
        p.mkdir()
    refused(["conformance", "--compare", good, str(p), "--quiet"], words)


def test_trajectories_of_different_shapes_are_not_comparable(tmp_path):
    a = _traj(tmp_path / "a.npz")
    b = tmp_path / "b.npz"
    m = {"backend": "jax", "dtype": "float64", "device": "cpu", "spec_hash": "h", "steps": 2,
         "model": "m"}
    np.savez(b, loss=np.zeros(2), __meta__=np.array(json.dumps(m)),
             **{"params/a": np.zeros((3, 4))})
    refused(["conformance", "--compare", a, str(b), "--quiet"], "not comparable")


# --- files: atomic writes, temporaries, JSON ----------------------------------------------------

def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_file(p) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]


def test_temporaries_of_a_killed_run_are_removed_on_the_next_start(tmp_path):
    # a child process makes a temporary and dies without removing it (os._exit: no cleanup)
    code = ("import os, tempfile, sys; from rosetta import files\n"
            "fd, t = tempfile.mkstemp(dir=sys.argv[1], prefix='.r.json.%d-' % os.getpid(), "
            "suffix='.tmp'); os.write(fd, b'half'); "
            "os.mkdir(os.path.join(sys.argv[1], '.tmp-ckpt-%d-abc' % os.getpid())); os._exit(9)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=60)
    left = sorted(os.listdir(tmp_path))
    assert len(left) == 2, left
    files.write_text(tmp_path / "r.json", "{}")        # the next write into the folder
    assert sorted(os.listdir(tmp_path)) == ["r.json"]
    assert (tmp_path / "r.json").read_text() == "{}"


def test_reports_are_written_atomically(tmp_path, monkeypatch):
    from rosetta.conformance import report

    p = tmp_path / "r.json"
    p.write_text("old")

    def broken(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(report, "markdown", broken)
    with pytest.raises(OSError):
        report.write(tmp_path / "r.md", [], {})
    report.write(p, [], {"nan": float("nan")})
    assert json.loads(p.read_text())["nan"] is None
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_dumps_json_writes_non_finite_as_null():
    text = files.dumps_json({"a": float("nan"), "b": [np.float32("inf"), 1.5],
                             "c": np.float64(-np.inf), "d": 2})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": None, "d": 2}


def test_injected_masks_are_checked_against_the_graphs_draws():
    """rosetta.dropout.check_masks: exactly one keep-mask per node with dropout, each
    (batch, *shape), returned in graph order; anything else a DataError naming it."""
    from rosetta import models
    from rosetta.dropout import check_masks, mask_draws

    draws = mask_draws(models.get("mlp_dropout").model)
    assert len(draws) >= 2 and all(0 < d.rate < 1 for d in draws)
    good = {d.node: np.ones((5, *d.shape)) for d in reversed(draws)}
    assert list(check_masks(draws, good, 5)) == [d.node for d in draws]
    with pytest.raises(DataError, match="must have shape"):
        check_masks(draws, good, 4)
    with pytest.raises(DataError, match=r"missing \[.+\], unknown \[\]"):
        check_masks(draws, {draws[0].node: good[draws[0].node]}, 5)
    with pytest.raises(DataError, match="has no dropout"):
        check_masks((), {"x": np.ones(1)}, 1)
