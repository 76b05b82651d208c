"""The float32 tier's noise runs take the batch's examples in a random order
(``noise.measure_step``), which is only noise if the order changes no float64 result. Proved here on
every backend on a step with every op that reduces over the batch or draws per example: a
convolution's and a Dense layer's weight gradients, BatchNorm's batch statistics (forward, backward
and running statistics), a dropout mask, the mean loss, and Adam's update from them."""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs
from rosetta.backend_registry import get_backend
from rosetta.conformance.noise import Start, reorder, run_step
from rosetta.conformance.runner import batch_stream, dropout_masks

from selection import BACKENDS


def _spec():
    model = rs.Sequential([
        rs.Conv2D(4, 3, padding="same", use_bias=False, name="conv"),
        rs.BatchNorm(momentum=0.5, name="bn"),
        rs.ReLU(name="relu"),
        rs.Flatten(name="flat"),
        rs.Dropout(0.25, name="drop"),
        rs.Dense(10, name="head"),
    ], input_shape=(8, 8, 1), name="noise_order")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(0.01),
                        data=rs.DataSpec("digits", 8, {"layout": "image"}), steps=1)


def test_reorder_takes_examples_in_order_everywhere():
    order = np.array([2, 0, 1])
    x = {"a": np.arange(6).reshape(3, 2), "b": np.array([5, 6, 7])}
    out = reorder(x, order)
    assert (out["a"] == x["a"][order]).all() and (out["b"] == [7, 5, 6]).all()
    assert reorder(None, order) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_order_changes_no_float64_step(backend):
    spec = _spec()
    x, y = next(batch_stream(spec, 1, spec.seed, "float64"))
    masks = dropout_masks(spec.model, spec.seed, 0, len(y))
    prog = get_backend(backend).compile(spec, dtype="float64")
    start = Start(prog.export_params(), prog.export_state(), {}, 0)
    ref = run_step(prog, start, x, y, masks)
    order = np.random.default_rng(0).permutation(len(y))
    assert (order != np.arange(len(y))).any()
    got = run_step(prog, start, reorder(x, order), reorder(y, order), reorder(masks, order))
    assert set(got) == set(ref)
    for k in ref:
        scale = max(float(np.max(np.abs(ref[k]))), 1e-300)
        assert np.max(np.abs(got[k] - ref[k])) / scale < 1e-12, k
    # the order mattered to the masks: without reordering them the step is another step
    other = run_step(prog, start, reorder(x, order), reorder(y, order), masks)
    assert not np.allclose(other["grads/head/kernel"], ref["grads/head/kernel"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_update_reference_is_each_backends_float64_update(backend):
    """The float32 tier holds the parameters and optimizer state after a step against the NumPy
    update of the step's own gradients (``noise.update_reference``); on a float64 program that
    reference is the program's own update, from a start with optimizer state (step 1: Adam's
    slots read back through ``Optimizer.state_from_slots``)."""
    from rosetta.conformance.noise import given_own_gradients, update_reference
    from rosetta.conformance.runner import record

    spec = _spec()
    data = [b for _, b in zip(range(2), batch_stream(spec, 2, spec.seed, "float64"))]
    traj = record(spec, backend, dtype="float64", steps=2, seed=spec.seed, stream=data)
    prog = get_backend(backend).compile(spec, dtype="float64")
    start = Start.of(traj, 1)
    masks = dropout_masks(spec.model, spec.seed, 1, len(data[1][1]))
    got = run_step(prog, start, *data[1], masks)
    ref = update_reference(spec.optimizer, start, got)
    assert {k for k in got if k.startswith(("params/", "opt/"))} == set(ref)
    for k, v in given_own_gradients(got, spec.optimizer, start).items():
        if k in ref:
            assert np.max(np.abs(v)) <= 1e-13 * max(1.0, float(np.max(np.abs(ref[k])))), k
