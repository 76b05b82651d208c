"""Fuzzing with hypothesis: random valid specs lower on every backend and agree in float64;
random corruptions of valid specs raise SpecError, never a framework or Python error."""

from __future__ import annotations

import itertools
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rosetta as rs
from rosetta.conformance.fuzz import corrupt, random_model
from rosetta.conformance.oracle import sample_inputs, sample_targets
from rosetta.conformance.runner import record
from rosetta.conformance.suite import compare_trajectories
from rosetta.conformance.tiers import EXACT

from selection import BACKENDS


@st.composite
def specs(draw):
    model = random_model(draw, st)
    # random DAGs often give a parameter an exactly zero gradient (a bias that reaches a
    # BatchNorm through linear ops only); Adam divides its rounding noise by epsilon, so the fuzzer
    # uses epsilon 1e-3 to test the lowerings, not that amplification (see docs/conformance/float32.md)
    opt = draw(st.sampled_from([rs.optim.Adam(0.01, epsilon=1e-3),
                                rs.optim.SGD(0.05, momentum=0.9, nesterov=True)]))
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(0.1), optimizer=opt,
                        data=rs.DataSpec("images"), steps=2)


# ROSETTA_FUZZ_EXAMPLES raises the count for a long local run; CI keeps the default (5: each
# example compiles a step on every backend, about 40 s on the CI machine)
@settings(max_examples=int(os.environ.get("ROSETTA_FUZZ_EXAMPLES", "5")), deadline=None,
          derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs())
def test_random_valid_specs_agree_in_float64(spec):
    stream = [(sample_inputs(spec.model, 5, seed=t), sample_targets(spec, 5, seed=10 + t))
              for t in range(2)]
    trajs = [record(spec, b, dtype="float64", steps=2, stream=stream) for b in BACKENDS]
    for a, b in itertools.combinations(trajs, 2):
        r = compare_trajectories(a, b, EXACT)
        assert r.passed, f"{spec.model.summary()}\n{r.backend_a} vs {r.backend_b}: {r.where}"


def _valid_json():
    x = rs.Input((6, 6, 2))
    h = rs.Conv2D(4, 3, padding="same", name="conv")(x)
    h = rs.MaxPool2D(2, name="pool")(h)                                       # (3, 3, 4)
    h = rs.Transpose((2, 0, 1), name="perm")(h)                               # (4, 3, 3)
    h = rs.Slice(axes=(0,), starts=(1,), stops=(4,), steps=(1,), name="cut")(h)  # (3, 3, 3)
    h = rs.Pad(((0, 0), (1, 0), (0, 1)), value=0.5, name="pad")(h)           # (3, 4, 4)
    h = rs.Gather(1, indices=(0, -1), name="take")(h)                         # (3, 2, 4)
    h = rs.Squeeze((0,), name="squeeze")(rs.Unsqueeze((0,), name="unsqueeze")(h))
    h = rs.Cast("float", name="back")(rs.Cast("int", name="trunc")(h))
    h = rs.BatchNorm(name="bn")(h)
    h = rs.Flatten(name="flat")(h)
    y = rs.Dense(3, name="head")(h)
    spec = rs.TrainSpec(model=rs.Model(x, y, name="v"), loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(0.01), data=rs.DataSpec("images"))
    return spec.to_json()


VALID = _valid_json()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_corrupted_specs_raise_spec_error_only(data):
    d = corrupt(data.draw, st, VALID)
    try:
        spec = rs.TrainSpec.from_json(d)
    except rs.SpecError as e:
        assert str(e)
        return
    # a corruption that happens to be valid must still be a working spec (when it is small)
    if spec.model.param_count() > 10 ** 6 or spec.model.flops_per_example() > 10 ** 8:
        return
    out = spec.model.reference_forward(spec.model.init_params(0),
                                       np.zeros((1, *spec.model.inputs[0].shape)))
    assert np.isfinite(out).all()
