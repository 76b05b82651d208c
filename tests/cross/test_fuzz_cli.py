"""Property-based tests of the command line's contract (docs/design.md section 6): for any
generated spec file, option or number, ``rosetta`` never shows a traceback; bad input exits 2
with exactly one line; a run exits 0 only with finite results; and every installed backend
gives the same exit status for the same input.

CI runs a modest number of examples (derandomized, so CI is reproducible); a long fuzz session
multiplies them: ``ROSETTA_FUZZ_CLI_SCALE=50 pytest tests/cross/test_fuzz_cli.py`` (and
``ROSETTA_FUZZ_CLI_RANDOM=1`` for fresh random examples instead of the fixed ones).
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from cli_run import check_contract, run_cli
from selection import BACKENDS

SCALE = float(os.environ.get("ROSETTA_FUZZ_CLI_SCALE", "1"))


def checked(o):
    """``check_contract``, and the exit status counted in hypothesis's statistics
    (``--hypothesis-show-statistics``): how many inputs ran, were refused or failed."""
    check_contract(o)
    event(f"{o.argv[0]} exit {o.status}")
    return o


def fuzz_settings(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None,
                    derandomize=not os.environ.get("ROSETTA_FUZZ_CLI_RANDOM"),
                    suppress_health_check=list(HealthCheck))


# two tiny specs: a regression (SGD) and a classifier (Adam) on small built-in datasets
LINEAR = {
    "format": "rosetta/1", "kind": "train",
    "model": {"format": "rosetta/1", "name": "lin",
              "inputs": [{"name": "x", "shape": [1], "kind": "float"}],
              "nodes": [{"name": "dense", "op": "Dense",
                         "attrs": {"units": 1, "kernel_init": "glorot_uniform"},
                         "inputs": ["x"]}],
              "outputs": ["dense"]},
    "loss": {"name": "mse"},
    "optimizer": {"name": "sgd", "learning_rate": {"schedule": "constant", "value": 0.1},
                  "momentum": 0.5, "weight_decay": 0.0},
    "data": {"dataset": "regression", "batch_size": 8, "args": {"n": 40}},
    "steps": 2, "seed": 0, "description": ""}
CLASSIFIER = {
    "format": "rosetta/1", "kind": "train",
    "model": {"format": "rosetta/1", "name": "clf",
              "inputs": [{"name": "x", "shape": [4], "kind": "float"}],
              "nodes": [{"name": "hidden", "op": "Dense",
                         "attrs": {"units": 5, "activation": "tanh",
                                   "kernel_init": {"name": "normal", "stddev": 0.5}},
                         "inputs": ["x"]},
                        {"name": "head", "op": "Dense", "attrs": {"units": 3},
                         "inputs": ["hidden"]}],
              "outputs": ["head"]},
    "loss": {"name": "softmax_cross_entropy", "label_smoothing": 0.0},
    "optimizer": {"name": "adam", "learning_rate": 0.01, "epsilon": 1e-7, "clip_norm": 1.0},
    "data": {"dataset": "clusters", "batch_size": 8,
             "args": {"n": 40, "features": 4, "classes": 3}},
    "steps": 2, "seed": 0, "description": ""}
BASES = [LINEAR, CLASSIFIER]
PLAUSIBLE = st.floats(1e-4, 2.0) | st.integers(1, 16)  # numbers that often make a valid spec

NUMBERS = [0, 1, -1, 2, 0.5, -0.5, 1e-12, 1e-320, 1e20, 1e30, 3.5e38, 1e308, float("nan"),
           float("inf"), float("-inf"), 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64 + 1, -2 ** 63,
           10 ** 30, True, False]
STRINGS = ["", "x", "dense", "mse", "adam", "sgd", "clusters", "regression", "Dense", "relu",
           "lin\n", "é", "\x00", "../x", "a" * 300]
json_values = st.recursive(
    st.none() | st.booleans() | st.sampled_from(NUMBERS) | st.integers() | st.floats()
    | st.sampled_from(STRINGS) | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6) | st.sampled_from(
        ["name", "units", "stddev", "n", "epsilon", "value"]), c, max_size=3),
    max_leaves=6)


def _paths(d, prefix=()):
    """Every (path, value) of a JSON tree, the root excluded."""
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else []
    for k, v in items:
        yield prefix + (k,), v
        yield from _paths(v, prefix + (k,))


def _set(d, path, value):
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


@st.composite
def mutated_specs(draw, numbers_only=False):
    """A base spec with one to three mutations: a value replaced (by an interesting number,
    a string or any JSON), a key deleted, or a key added."""
    d = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, v in _paths(d)]
        if numbers_only:
            paths = [p for p, v in _paths(d) if isinstance(v, (int, float))
                     and p[-1] not in ("units", "features", "classes", "shape")]
        path = draw(st.sampled_from(paths))
        what = "number" if numbers_only else draw(st.sampled_from(
            ["number", "number", "string", "json", "delete", "add"]))
        if what == "number":
            _set(d, path, draw(st.sampled_from(NUMBERS) | st.floats() | st.integers()
                               | PLAUSIBLE))
        elif what == "string":
            _set(d, path, draw(st.sampled_from(STRINGS) | st.text(max_size=8)))
        elif what == "json":
            _set(d, path, draw(json_values))
        elif what == "delete":
            parent = d
            for k in path[:-1]:
                parent = parent[k]
            del parent[path[-1]]
        else:
            parent = d
            for k in path[:-1]:
                parent = parent[k]
            if isinstance(parent, dict):
                parent[draw(st.sampled_from(["bogus", "name", "seed", "clip_value"]))] = \
                    draw(json_values)
    return d


def _write(tmp_path, d, name="spec.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(d))  # NaN and Infinity as Python writes them: rosetta reads them
    return str(p)


# --- spec files: loading and validation only (no framework) ----------------------------------

@fuzz_settings(150)
@given(mutated_specs())
def test_any_spec_json_loads_or_is_one_line(tmp_path_factory, d):
    path = _write(tmp_path_factory.mktemp("spec"), d)
    o = checked(run_cli(["spec", path]))
    assert o.status in (0, 2), str(o)
    if o.status == 0:
        assert json.loads(o.out)["format"] == "rosetta/1"


RAW = [b"", b"{", b"\xff\xfe{}", b"[" * 5000 + b"]" * 5000, b'{"a": ' * 40 + b"1" + b"}" * 40,
       b"null", b"[]", b'"x"', b"NaN", b'{"format": "rosetta/1"}', "{\"format\": \"é\"}".encode(
           "latin-1"), b"\x00\x01\x02"]


@fuzz_settings(40)
@given(st.sampled_from(RAW) | st.binary(max_size=40))
def test_any_bytes_as_a_spec_file_are_one_line(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("raw") / "spec.json"
    p.write_bytes(raw)
    o = checked(run_cli(["spec", str(p)]))
    assert o.status == 2, str(o)


# --- training: one backend, any spec, any option --------------------------------------------

def _path_option(tmp, kind):
    return {"json": tmp / "out.json", "md": tmp / "out.md", "txt": tmp / "out.txt",
            "png": tmp / "out.png", "jpg": tmp / "out.jpg", "under_file": tmp / "f.txt" / "r.json",
            "dir": tmp, "new": tmp / "new" / "sub" / "r.json", "empty": "",
            "proc": "/proc/rosetta/r.json"}[kind]


PATHS = ["json", "md", "txt", "png", "jpg", "under_file", "dir", "new", "empty", "proc"]
INTS = st.sampled_from(["1", "2", "0", "-1", "x", "1.5", "nan", "99999999999999999999999",
                        str(2 ** 63), "", "3"])


@st.composite
def train_options(draw, tmp):
    opts = []
    for flag in draw(st.lists(st.sampled_from(
            ["--steps", "--seed", "--batch-size", "--epochs", "--eval-every", "--save", "--log",
             "--data", "--save-every", "--keep", "--dtype", "--device", "--mode", "--json",
             "--label", "--resume", "--ignore-memory"]), max_size=3, unique=True)):
        if flag in ("--json", "--ignore-memory"):
            opts.append(flag)
        elif flag in ("--save", "--log", "--data", "--resume"):
            opts += [flag, _path_option(tmp, draw(st.sampled_from(PATHS)))]
        elif flag == "--dtype":
            opts += [flag, draw(st.sampled_from(["float32", "float64", "float16", ""]))]
        elif flag == "--device":
            opts += [flag, draw(st.sampled_from(["cpu", "gpu", "cuda", "tpu"]))]
        elif flag == "--mode":
            opts += [flag, draw(st.sampled_from(["eager", "jit", "xla", "bogus"]))]
        elif flag == "--label":
            opts += [flag, "label"]
        elif flag == "--steps":
            opts += [flag, draw(st.sampled_from(["1", "2", "0", "-3", "x", str(10 ** 30)]))]
        elif flag == "--epochs":
            opts += [flag, draw(st.sampled_from(["1", "0", "x"]))]
        else:
            opts += [flag, draw(INTS)]
    if not any(o in ("--steps", "--epochs") for o in opts):
        opts += ["--steps", "1"]
    return opts


@fuzz_settings(40)
@given(st.data())
def test_train_any_spec_and_options_keeps_the_contract(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("train")
    (tmp / "f.txt").write_text("not a folder")
    d = data.draw(st.one_of(mutated_specs(), st.sampled_from(BASES)))
    argv = ["train", _write(tmp, d), "--backend", BACKENDS[0], "--quiet",
            *data.draw(train_options(tmp))]
    checked(run_cli(argv))


@st.composite
def report_options(draw, tmp, command):
    opts = []
    for flag in draw(st.lists(st.sampled_from(["--report", "--plot", "--save", "--device",
                                               "--compare"]), max_size=2, unique=True)):
        if flag == "--device":
            opts += [flag, draw(st.sampled_from(["cpu", "gpu", "tpu"]))]
        elif flag == "--compare":
            if command == "conformance":
                a, b = draw(st.lists(st.sampled_from(["junk", "empty", "missing", "dir"]),
                                     min_size=2, max_size=2))
                opts += [flag, *(_trajectory_file(tmp, k) for k in (a, b))]
        elif flag == "--save" and command == "bench":
            continue
        else:
            opts += [flag, _path_option(tmp, draw(st.sampled_from(PATHS)))]
    return opts


def _trajectory_file(tmp, kind):
    p = tmp / f"{kind}.npz"
    if kind == "junk":
        p.write_bytes(b"PK\x03\x04junk")
    elif kind == "empty":
        np.savez(p, loss=np.zeros(2))
    elif kind == "dir":
        p.mkdir(exist_ok=True)
    return p


@fuzz_settings(6)
@given(st.data())
def test_conformance_and_bench_options_keep_the_contract(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("conf")
    (tmp / "f.txt").write_text("not a folder")
    command = data.draw(st.sampled_from(["conformance", "bench"]))
    spec = _write(tmp, data.draw(st.one_of(st.sampled_from(BASES), mutated_specs())))
    if command == "conformance":
        base = ["conformance", spec, "--backends", *BACKENDS[:2], "--steps", "1", "--dtype",
                "float64", "--no-oracle", "--quiet"]
    else:
        base = ["bench", spec, "--backends", BACKENDS[0], "--steps", "1", "--warmup", "1",
                "--block", "1", "--no-native", "--quiet"]
    checked(run_cli(base + data.draw(report_options(tmp, command))))


# --- the same verdict on every backend ------------------------------------------------------

@fuzz_settings(10)
@given(mutated_specs(numbers_only=True))
def test_every_backend_gives_the_same_verdict(tmp_path_factory, d):
    path = _write(tmp_path_factory.mktemp("same"), d)
    outcomes = []
    for b in BACKENDS:
        o = run_cli(["train", path, "--backend", b, "--quiet", "--steps", "2", "--json"])
        outcomes.append(checked(o))
    statuses = {o.status for o in outcomes}
    assert len(statuses) == 1, "backends disagree:\n" + "\n".join(map(str, outcomes))
    if outcomes[0].status == 2:  # refused before any framework: the very same line
        assert len({o.err for o in outcomes}) == 1


def _embedding_spec(tmp, vocab):
    d = {"format": "rosetta/1", "kind": "train",
         "model": {"format": "rosetta/1", "name": "emb",
                   "inputs": [{"name": "tokens", "shape": [3], "kind": "int"}],
                   "nodes": [{"name": "embed", "op": "Embedding",
                              "attrs": {"vocab_size": vocab, "dim": 2}, "inputs": ["tokens"]},
                             {"name": "flat", "op": "Flatten", "attrs": {},
                              "inputs": ["embed"]},
                             {"name": "head", "op": "Dense", "attrs": {"units": 2},
                              "inputs": ["flat"]}],
                   "outputs": ["head"]},
         "loss": {"name": "softmax_cross_entropy"},
         "optimizer": {"name": "sgd", "learning_rate": 0.1},
         "data": {"path": "data.npz", "batch_size": 4}, "steps": 1, "seed": 0}
    return _write(tmp, d, "emb.json")


_CHECKPOINT = {}


def _embedding_checkpoint(tmp_path_factory) -> str:
    """A run folder of the embedding model (trained once, on valid ids)."""
    if "run" not in _CHECKPOINT:
        tmp = tmp_path_factory.mktemp("emb_ckpt")
        np.savez(tmp / "data.npz", x=np.arange(36).reshape(12, 3) % 5, y=np.arange(12) % 2)
        o = run_cli(["train", _embedding_spec(tmp, 5), "--backend", BACKENDS[0], "--quiet",
                     "--save", tmp / "run"])
        assert o.status == 0, str(o)
        _CHECKPOINT["run"] = str(tmp / "run")
    return _CHECKPOINT["run"]


@fuzz_settings(1)
@given(st.lists(st.sampled_from([-1, 0, 1, 4, 5, 6, 2 ** 40]), min_size=1, max_size=3))
@example([0, 4]).via("valid ids")
@example([5]).via("one past the vocabulary")
def test_embedding_ids_get_the_same_verdict(tmp_path_factory, ids):
    """Ids outside [0, vocab_size) are refused by the core (exit 2) on every backend, in the
    training data and in ``predict``'s input file."""
    tmp = tmp_path_factory.mktemp("emb")
    x = np.zeros((12, 3), np.int64)
    x.flat[:len(ids)] = ids
    np.savez(tmp / "data.npz", x=x, y=np.arange(12) % 2)
    np.save(tmp / "input.npy", x)
    path = _embedding_spec(tmp, 5)
    run = _embedding_checkpoint(tmp_path_factory)
    outcomes = [run_cli(argv) for b in BACKENDS for argv in (
        ["train", path, "--backend", b, "--quiet", "--steps", "1"],
        ["predict", run, "--backend", b, "--input", tmp / "input.npy", "--output",
         tmp / f"out-{b}.npy"])]
    for o in outcomes:
        checked(o)
    bad = any(not 0 <= i < 5 for i in ids)
    assert {o.status for o in outcomes} == {2 if bad else 0}, "\n".join(map(str, outcomes))


@pytest.mark.parametrize("lr", [1e30, 3e38])
def test_a_run_that_ends_non_finite_exits_1_with_json(tmp_path, lr):
    """The last update makes the parameters non-finite: exit 1 on every backend, naming the
    update and the tensor; ``--json`` still prints JSON."""
    d = copy.deepcopy(LINEAR)
    d["optimizer"] = {"name": "sgd", "learning_rate": lr}
    path = _write(tmp_path, d)
    for b in BACKENDS:
        o = run_cli(["train", path, "--backend", b, "--quiet", "--steps", "2", "--json"])
        check_contract(o)
        assert o.status == 1, str(o)
        assert "update" in o.err, str(o)
        if lr > 1e38:  # the first update overflows the kernel: named
            assert "'dense/" in o.err, str(o)
        record = json.loads(o.out.strip().splitlines()[-1])
        assert record["status"] == 1 and "update" in record["error"]


def test_numbers_beyond_float32_are_refused_by_conformance_and_bench(tmp_path):
    d = copy.deepcopy(LINEAR)
    d["optimizer"]["learning_rate"] = 1e300
    path = _write(tmp_path, d)
    for argv in (["conformance", path, "--backends", *BACKENDS, "--quiet"],
                 ["bench", path, "--backends", BACKENDS[0], "--quiet"]):
        o = run_cli(argv)
        check_contract(o)
        assert o.status == 2 and "float32 range" in o.err, str(o)


def test_gpu_asked_on_a_machine_without_one_is_one_line():
    from rosetta.backend_registry import get_backend

    if any("gpu" in get_backend(b).devices() for b in BACKENDS):
        pytest.skip("this machine has a GPU: nothing to refuse")
    for argv in (["bench", "linear", "--device", "gpu", "--backends", *BACKENDS, "--steps", "1",
                  "--no-native", "--quiet"],
                 ["conformance", "linear", "--device", "gpu", "--backends", *BACKENDS,
                  "--quiet"],
                 *(["train", "linear", "--backend", b, "--device", "cuda", "--quiet"]
                   for b in BACKENDS)):
        o = run_cli(argv)
        check_contract(o)
        assert o.status == 2 and "gpu" in o.err, str(o)


@fuzz_settings(15)
@given(st.data())
def test_predict_any_input_file_keeps_the_contract(tmp_path_factory, data):
    """Any array (dtype, shape, values) or bytes as ``predict``'s input: outputs or one line."""
    from hypothesis.extra import numpy as hnp

    run = _embedding_checkpoint(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("pred")
    kind = data.draw(st.sampled_from(["npy", "npz", "bytes"]))
    p = tmp / f"input.{'npz' if kind == 'npz' else 'npy'}"
    if kind == "bytes":
        p.write_bytes(data.draw(st.binary(max_size=64)))
    else:
        a = data.draw(hnp.arrays(st.sampled_from([np.int64, np.int32, np.float64, np.bool_,
                                                  np.uint8]),
                                 hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
        np.save(p, a) if kind == "npy" else np.savez(
            p, **{data.draw(st.sampled_from(["tokens", "x", "other"])): a})
    o = checked(run_cli(["predict", run, "--backend", BACKENDS[-1], "--input", p, "--output",
                         tmp / "out.npy"]))
    if o.status == 0:
        assert np.isfinite(np.load(tmp / "out.npy")).all()
