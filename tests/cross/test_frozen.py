"""Frozen parameters across a run: a checkpoint written with a frozen body resumes on another
backend (no optimizer state for the frozen parameters, the same numbers at the exact tier), and
changing the frozen set between runs (``TrainedModel.freeze`` / ``unfreeze``) keeps every
parameter, the update count and the trainable parameters' state, and starts a newly trainable
parameter from fresh state. The per-step rule itself (no update, no state, no decay, outside
the clipping norm) is test_optim.py's ``*frozen*`` cases on every backend."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import rosetta as rs
from rosetta.conformance import compare_trees
from rosetta.conformance.tiers import EXACT

from selection import BACKENDS

pytestmark = pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends")


_rng = np.random.default_rng(0)
_x, _y = _rng.normal(size=(32, 4)), _rng.integers(0, 3, 32)
DATA = (_x, _y, _x[:8], _y[:8])   # a checkpoint keeps no arrays: fit(data=DATA) after load


def _spec():
    model = rs.Sequential([rs.Dense(6, activation="tanh", name="body"),
                           rs.Dense(5, activation="tanh", name="neck"), rs.Dense(3, name="head")],
                          input_shape=(4,), name="frozen_case")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.AdamW(0.05, weight_decay=0.1, clip_norm=0.5),
                        data=rs.DataSpec.from_arrays(*DATA, batch_size=8), steps=2, seed=3)


def _agree(a, b, what):
    for i, part in enumerate(("params", "optimizer state")):
        w = compare_trees(a[i], b[i], f"{what}: {part}", EXACT.tolerance)
        assert w.passed, str(w)


def _parts(m):
    return m.params, m.program.export_optimizer_state()


def test_freeze_resume_elsewhere_and_unfreeze(tmp_path):
    # torch and jax where selected: the cheapest compiles (TensorFlow's costs most here)
    first = "torch" if "torch" in BACKENDS else BACKENDS[0]
    other = "jax" if "jax" in BACKENDS and first != "jax" else next(
        b for b in BACKENDS if b != first)
    m = rs.train(_spec(), first, steps=2, dtype="float64", progress=False)
    before = m.params
    assert m.freeze("body/*") is m and m.spec.optimizer.frozen == ["body/*"]
    m.fit(2, progress=False)
    after = m.params
    assert all(np.array_equal(after[k], before[k]) for k in ("body/kernel", "body/bias"))
    assert not np.array_equal(after["neck/kernel"], before["neck/kernel"])
    slots = m.program.export_optimizer_state()
    assert "m/neck/kernel" in slots and not any(k.endswith(("body/kernel", "body/bias"))
                                                for k in slots)
    m.save(tmp_path / "ck")
    there = rs.load(tmp_path / "ck", backend=other)   # the frozen set travels in the spec
    assert there.spec.optimizer.frozen == ["body/*"] and there.step == 4
    _agree(_parts(m), _parts(there), f"resumed on {other}")
    m.fit(2, progress=False)
    there.fit(2, data=DATA, progress=False)
    _agree(_parts(m), _parts(there), f"{first} vs {other} after 2 frozen updates")
    assert np.array_equal(there.params["body/kernel"], before["body/kernel"])

    # unfreeze: the body trains again from fresh state, the rest carried, on both backends
    kept = m.program.export_optimizer_state()
    m.unfreeze()
    there.unfreeze("body/*")
    assert m.spec.optimizer.frozen == [] and m.step == there.step == 6
    fresh = m.program.export_optimizer_state()
    assert not fresh["m/body/kernel"].any() and not fresh["v/body/bias"].any()
    assert all(np.array_equal(fresh[k], v) for k, v in kept.items())
    m.fit(1, progress=False)
    there.fit(1, progress=False)
    _agree(_parts(m), _parts(there), f"{first} vs {other} after unfreezing")
    assert not np.array_equal(m.params["body/kernel"], before["body/kernel"])


def test_freeze_errors():
    m = rs.TrainedModel.from_state(_spec(), _spec().model.init_params(3), backend=BACKENDS[0],
                                   dtype="float64")
    with pytest.raises(rs.SpecError, match="'bdy/\\*' matches no parameter"):
        m.freeze("bdy/*")
    with pytest.raises(rs.SpecError, match="'neck/\\*' is not a frozen pattern"):
        m.freeze("body/*").unfreeze("neck/*")
    assert m.spec.optimizer.frozen == ["body/*"]


def test_gradients_report_frozen_parameters_on_every_backend():
    """``Program.gradients`` gives every parameter's gradient, a frozen one's too (the importers'
    certificate compares them with the source's): the same on each backend at the exact tier
    (TensorFlow's tape watches a trainable=False variable only when asked)."""
    spec = _spec()
    spec = dataclasses.replace(spec, optimizer=spec.optimizer.with_frozen(["body/*"]))
    got = {}
    for b in BACKENDS:
        m = rs.train(spec, b, steps=1, dtype="float64", progress=False)
        got[b] = m.program.gradients(_x[:8], _y[:8])[1]
        assert np.abs(got[b]["body/kernel"]).max() > 0, b
    for b in BACKENDS[1:]:
        w = compare_trees(got[BACKENDS[0]], got[b], f"gradients {BACKENDS[0]} vs {b}",
                          EXACT.tolerance)
        assert w.passed, str(w)
