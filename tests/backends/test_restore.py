"""Resuming: ``load`` + ``load_optimizer_state`` + ``load_rng_state`` put a fresh program where
the one that exported them was, for every optimizer of test_optim.py (schedules, epsilon hat,
lr_scale, decay masks, clipping) on every backend.

* resume: a program trained 3 steps exports, then trains 3 more; a fresh compile of the same spec
  loads the export and trains on the same 3 batches, dropout drawn from the backend's own
  stream: losses, parameters, model state, optimizer state and the stream are identical, bit for
  bit (float64; float32 for the optimizers with the most state) (jax: the step is traced once);
* reference: optimizer state of the NumPy reference (random values) loaded at update count 5,
  then one step, equals ``spec.optimizer.update(params, grads, state, 5)`` fed the backend's own
  gradients (1e-12): the slot names, their layouts and the step mapping (lr(5), bias corrections,
  epsilon-hat factor) mean what the reference means;
* bad input: a missing, unknown or misshapen slot, or another backend's rng state, is a
  ``CheckpointError`` naming it, and the program is left as it was.

The model has a Conv2D (torch's transposed kernel layout), a BatchNorm (model state) and a
Dropout (the rng stream). Cost: each optimizer is a new compiled step on TensorFlow and JAX
(0.7 to 1 s of XLA each), so in the optimizer table TensorFlow runs its ``function`` mode (graph
runtime, a quarter of the compile time; loading assigns the same variables in both modes), jax
resumes in the program that exported (restored from the export and replaying the 3 updates: a
jax Program's whole state is params, batch_stats, opt_state and its step counters, which
``load`` and ``load_optimizer_state`` replace, and a missed one keeps its later value, which
shows as surely as a fresh program's initial one), and every gradient comes from one SGD program
per backend (gradients do not depend on the optimizer;
``test_shared_gradients_are_each_programs_own`` checks that). The float32 and bad-input tests
use a fresh compile in the default (XLA) mode on every backend.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import rosetta as rs
from rosetta.conformance import compare_trees
from rosetta.conformance.tiers import ORACLE_OPTIMIZER

from helpers import random_inputs, random_targets
from selection import BACKENDS
from test_optim import OPTIMIZERS

K = 3         # updates before the checkpoint, and after it
AT = 5        # the update count the reference state is loaded at
BATCH = 4
RNG_KEYS = {"torch": "torch_generator", "tensorflow": "tf_generator", "jax": None, "mxnet": None}
TABLE_MODE = {"tensorflow": "function"}  # the optimizer table's mode; others: the default
REPLAY = ("jax",)  # resumed in the program itself in the optimizer table (see the docstring)


def _spec(opt):
    # node names match the lr_scale patterns of test_optim's table ("hidden/*", "out/*", ...);
    # no conv bias: before a BatchNorm its gradient is 0 up to rounding, noise Lion's sign and
    # Adam's division amplify, which would leave this model useless to compare across backends
    model = rs.Sequential([rs.Conv2D(2, 3, use_bias=False, name="hidden"),
                           rs.BatchNorm(name="bn"), rs.ReLU(name="act"), rs.Flatten(name="flat"),
                           rs.Dropout(0.4, name="drop"), rs.Dense(3, name="out")],
                          input_shape=(4, 4, 2), name="restore_case")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(0.05), optimizer=opt,
                        data=rs.DataSpec("images"), steps=2 * K)


def _compile(spec, backend, dtype="float64", mode=None):
    return rs.get_backend(backend).compile(spec, dtype=dtype, device="cpu", mode=mode)


def _batches(spec, n, dtype="float64", first=0):
    return [({k: v.astype(dtype) for k, v in random_inputs(spec.model, BATCH, t).items()},
             random_targets(spec, BATCH, 100 + t)) for t in range(first, first + n)]


def _checkpoint(prog):
    return (prog.export_params(), prog.export_state(), prog.export_optimizer_state(), prog.step,
            prog.export_rng_state())


def _restore(prog, ckpt):
    params, state, slots, step, rng = ckpt
    prog.load(params, state)
    prog.load_optimizer_state(slots, step)
    prog.load_rng_state(rng)
    return prog


def _assert_same(a: dict, b: dict, what: str):
    assert sorted(a) == sorted(b), what
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}: {k}")


def _traces(prog):
    """How many times jax traced the program's train step (None on other backends)."""
    cache = getattr(getattr(prog, "_train_step", None), "_cache_size", None)
    return cache() if cache else None


def _check_resume(spec, backend, dtype, mode, fresh=True):
    """Train K steps, export, K more steps; then a fresh compile of the spec (``fresh``) or the
    same program restored from the export runs the K steps again: the same losses, parameters,
    model state, optimizer state and stream, bit for bit. Returns the first program."""
    batches = _batches(spec, 2 * K, dtype)
    first = _compile(spec, backend, dtype, mode)
    for x, y in batches[:K]:
        first.train_step(x, y)
    ckpt = _checkpoint(first)
    assert ckpt[3] == K
    key = RNG_KEYS[backend]
    assert sorted(ckpt[4]) == ([] if key is None else [key])
    losses = [first.train_step(x, y) for x, y in batches[K:]]
    end = _checkpoint(first)
    assert end[3] == 2 * K

    resumed = _restore(_compile(spec, backend, dtype, mode) if fresh else first, ckpt)
    assert resumed.step == K
    _assert_same(resumed.export_optimizer_state(), ckpt[2], "optimizer state as loaded")
    for t, (x, y) in enumerate(batches[K:]):
        loss = resumed.train_step(x, y)
        assert loss == losses[t], f"update {K + t}: loss {losses[t]} uninterrupted, {loss} resumed"
    again = _checkpoint(resumed)
    for i, what in enumerate(("params", "state", "optimizer state")):
        _assert_same(again[i], end[i], what)
    assert again[3] == 2 * K
    _assert_same(again[4], end[4], "rng state")
    # jax: the loaded optax state has the structure, shapes and dtypes of the one it replaced,
    # so the step was traced once, for the first call, whether the program is fresh or has run
    assert _traces(resumed) in (None, 1)
    return first


@functools.cache
def _gradient_program(backend, mode):
    """One SGD program of the same model and seed: the gradients every optimizer's step sees."""
    return _compile(_spec(rs.optim.SGD(0.1)), backend, "float64", mode)


def _gradients_at(backend, mode, params, state, x, y):
    """Loss gradients at ``params`` with the dropout masks of update ``AT`` of a program just
    loaded (torch and TensorFlow: the stream as ``load`` seeds it; jax: folded with ``AT``)."""
    prog = _gradient_program(backend, mode)
    prog.load(params, state)
    prog.load_optimizer_state({}, AT)
    return prog.gradients(x, y)[1]


def _reference_state(opt, params, seed=7):
    """The reference's optimizer state at random values: any sign for moments and velocities,
    small centered means (v - mg^2 > 0), positive second moments and accumulators."""
    rng = np.random.default_rng(seed)

    def fill(tree, slot):
        if isinstance(tree, dict):
            return {k: fill(v, k if isinstance(v, dict) else slot) for k, v in tree.items()}
        if slot == "mg":
            return rng.uniform(-0.1, 0.1, tree.shape)
        if slot in ("v", "accumulator"):
            return rng.uniform(0.2, 1.0, tree.shape)
        return rng.standard_normal(tree.shape)

    # SGD (velocity), Adagrad (accumulator) and Lion (m) keep one flat {path: array}
    flat = {"sgd": "velocity", "adagrad": "accumulator", "lion": "m"}.get(opt.kind)
    return fill(opt.init_state(params), flat)


def _check_reference(prog, spec, backend, mode):
    """Load the reference's state at update count AT into ``prog``, step once: the reference."""
    opt = spec.optimizer
    params, state = spec.model.init_params(spec.seed), spec.model.init_state()
    prog.load(params, state)
    ref = _reference_state(opt, params)
    prog.load_optimizer_state(opt.slots(ref), AT)
    assert prog.step == AT
    _assert_same(prog.export_optimizer_state(), opt.slots(ref), "reference state as loaded")
    x, y = _batches(spec, 1, first=AT)[0]
    grads = _gradients_at(backend, mode, params, state, x, y)
    expected, ref = opt.update(params, grads, ref, AT)
    prog.train_step(x, y)
    assert prog.step == AT + 1
    w = compare_trees(prog.export_params(), expected, f"{opt.kind} params @ update {AT}")
    w = w.max(compare_trees(prog.export_optimizer_state(), opt.slots(ref),
                            f"{opt.kind} state @ update {AT}"))
    w.tolerance = ORACLE_OPTIMIZER
    assert w.passed, str(w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_resume_is_exact_and_state_means_the_reference(opt, backend):
    spec = _spec(OPTIMIZERS[opt]())
    mode = TABLE_MODE.get(backend)
    prog = _check_resume(spec, backend, "float64", mode, fresh=backend not in REPLAY)
    _check_reference(prog, spec, backend, mode)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt", ["adam_hat_warmup", "rmsprop_centered_momentum_step",
                                 "adagrad_initial_exponential"])
def test_resume_is_bitwise_float32(opt, backend):
    _check_resume(_spec(OPTIMIZERS[opt]()), backend, "float32", None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_gradients_are_each_programs_own(backend):
    """The gradients ``_check_reference`` takes from the SGD program are those an Adam program
    loaded the same way computes itself (same loss, masks and parameters), in both modes."""
    spec = _spec(OPTIMIZERS["adam_hat_warmup"]())
    params, state = spec.model.init_params(spec.seed), spec.model.init_state()
    x, y = _batches(spec, 1, first=AT)[0]
    for mode in {TABLE_MODE.get(backend), None}:
        prog = _compile(spec, backend, "float64", mode)
        prog.load_optimizer_state(spec.optimizer.slots(_reference_state(spec.optimizer, params)),
                                  AT)
        _assert_same(prog.gradients(x, y)[1],
                     _gradients_at(backend, mode, params, state, x, y), "gradients")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_optimizer_state_is_refused_whole(backend):
    spec = _spec(OPTIMIZERS["adamw_kernels_lr_scale_cosine"]())
    prog = _compile(spec, backend)
    x, y = _batches(spec, 1)[0]
    prog.train_step(x, y)
    before = _checkpoint(prog)
    good = before[2]
    # values unlike the program's, so that anything assigned before the check fails shows;
    # missing, unknown, a transposed (torch-layout) kernel, a cut one
    scrambled = {k: v + 1.0 for k, v in good.items()}
    cases = [({k: v for k, v in scrambled.items() if k != "v/out/bias"}, "missing v/out/bias"),
             ({**scrambled, "velocity/out/kernel": good["m/out/kernel"]},
              "unknown slot velocity/out/kernel"),
             ({**scrambled, "m/out/kernel": good["m/out/kernel"].T.copy()},
              r"m/out/kernel has shape \(3, 8\)"),
             ({**scrambled, "v/hidden/kernel": good["v/hidden/kernel"][..., :1]},
              r"v/hidden/kernel has shape \(3, 3, 2, 1\)")]
    for slots, message in cases:
        with pytest.raises(rs.CheckpointError, match=message):
            prog.load_optimizer_state(slots, 7)
    with pytest.raises(rs.CheckpointError, match="update count"):
        prog.load_optimizer_state(scrambled, -1)
    for other, key in RNG_KEYS.items():
        if other != backend and key:
            with pytest.raises(rs.CheckpointError, match=key):
                prog.load_rng_state({key: np.zeros(3, np.int64)})
    after = _checkpoint(prog)
    for i, what in enumerate(("params", "state", "optimizer state")):
        _assert_same(after[i], before[i], what)
    assert after[3] == before[3] == 1
    _assert_same(after[4], before[4], "rng state")
    # and it steps on as a program restored from ``before`` does
    twin = _restore(_compile(spec, backend), before)
    x, y = _batches(spec, 1, first=1)[0]
    assert prog.train_step(x, y) == twin.train_step(x, y)
    _assert_same(prog.export_params(), twin.export_params(), "params after a step")


@pytest.mark.parametrize("backend", BACKENDS)
def test_rng_state_round_trip_and_no_dropout(backend):
    """The exported stream position is restored bit for bit, {} leaves it where it is; a
    program without dropout exports {} and refuses a stream; plain SGD loads only a count."""
    spec = _spec(rs.optim.SGD(0.1))
    prog = _gradient_program(backend, None)
    prog.load(spec.model.init_params(spec.seed), spec.model.init_state())
    x, y = _batches(spec, 1)[0]
    rng = prog.export_rng_state()
    prog.train_step(x, y)
    key = RNG_KEYS[backend]
    if key:
        assert rng[key].dtype == {"torch": np.uint8, "tensorflow": np.int64}[backend]
        assert not np.array_equal(rng[key], prog.export_rng_state()[key])
        with pytest.raises(rs.CheckpointError, match=key):
            prog.load_rng_state({key: rng[key][:2]})
    prog.load_rng_state(rng)
    _assert_same(prog.export_rng_state(), rng, "restored rng state")
    prog.load_rng_state({})
    _assert_same(prog.export_rng_state(), rng, "rng state after {}")

    plain = rs.Sequential([rs.Dense(3, name="out")], input_shape=(4,), name="plain")
    prog = _compile(rs.TrainSpec(model=plain, loss=rs.losses.MeanSquaredError(),
                                 optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images")),
                    backend)
    assert prog.export_rng_state() == {}
    prog.load_rng_state({})
    if key:
        with pytest.raises(rs.CheckpointError, match="no dropout"):
            prog.load_rng_state(rng)
    prog.load_optimizer_state({}, 4)
    assert prog.step == 4
    with pytest.raises(rs.CheckpointError, match="unknown slot velocity/out/kernel"):
        prog.load_optimizer_state({"velocity/out/kernel": np.zeros((4, 3))}, 4)
