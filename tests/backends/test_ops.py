"""Every op on every backend: forward against the NumPy float64 reference, gradients against
central finite differences of that reference."""

from __future__ import annotations

import numpy as np
import pytest

from rosetta.conformance import compare_arrays, compare_trees
from rosetta.conformance.oracle import check_forward, check_gradients
from rosetta.conformance.tiers import ORACLE_FORWARD as FORWARD_RTOL

from cases import BUILD, IDS
from helpers import compile_spec, random_inputs, random_targets
from selection import BACKENDS

BATCH = 4


def _setup(case, backend):
    spec = BUILD[case]()
    prog = compile_spec(spec, backend, "float64")
    x = random_inputs(spec.model, BATCH, int_high=7)
    y = random_targets(spec, BATCH)
    return spec, prog, x, y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", IDS)
def test_forward_matches_reference(case, backend):
    w = check_forward(BUILD[case](), backend)
    assert w.passed, str(w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", IDS)
def test_gradients_match_finite_differences(case, backend):
    w = check_gradients(BUILD[case](), backend)
    assert w.passed, str(w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_eval_uses_loaded_running_stats(backend):
    spec, prog, x, _ = _setup("batchnorm_image", backend)
    params = spec.model.init_params(0)
    rng = np.random.default_rng(3)
    state = {k: (rng.random(v.shape) + 0.5 if k.endswith("var") else rng.standard_normal(v.shape))
             for k, v in spec.model.init_state().items()}
    prog.load(params, state)
    w = compare_arrays(prog.forward(x), spec.model.reference_forward(params, x, state=dict(state)),
                       "bn eval output", FORWARD_RTOL)
    assert w.passed, str(w)
    assert compare_trees(prog.export_state(), state, "state", 0.0).passed


RUNNING_STATS_CASES = ["batchnorm_dense", "batchnorm_image_unbiased", "instancenorm_image"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", RUNNING_STATS_CASES)
def test_running_stats_follow_canonical_rule(case, backend):
    """momentum weights the old value, and the stored variance is the op's (BatchNorm: the
    biased batch variance, or the unbiased one with running_var="unbiased"; InstanceNorm2D:
    the unbiased per-example one, averaged)."""
    spec, prog, x, y = _setup(case, backend)
    state = spec.model.init_state()
    expected = dict(state)
    for _ in range(3):
        ref_params = prog.export_params()
        spec.model.reference_forward(ref_params, x, state=expected, training=True)
        prog.train_step(x, y)
    w = compare_trees(prog.export_state(), expected, "bn state", 1e-10)
    assert w.passed, str(w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", RUNNING_STATS_CASES)
def test_gradients_and_forward_change_nothing(case, backend):
    spec, prog, x, y = _setup(case, backend)
    before_p, before_s = prog.export_params(), prog.export_state()
    prog.gradients(x, y)
    prog.forward(x, training=True)
    prog.forward(x, training=False)
    assert compare_trees(prog.export_params(), before_p, "params", 0.0).passed
    assert compare_trees(prog.export_state(), before_s, "state", 0.0).passed
    assert prog.step == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_is_inverted_and_off_in_eval(backend):
    import rosetta as rs
    from helpers import spec_for
    spec = spec_for(rs.Sequential([rs.Dropout(0.5, name="drop")], input_shape=(2000,), name="d"))
    prog = compile_spec(spec, backend)
    x = {"x": np.ones((2, 2000))}
    np.testing.assert_array_equal(prog.forward(x, training=False), x["x"])
    out = prog.forward(x, training=True)
    assert set(np.unique(out)) <= {0.0, 2.0}
    kept = float(np.mean(out == 2.0))
    assert 0.45 < kept < 0.55, kept


@pytest.mark.parametrize("backend", BACKENDS)
def test_stochastic_depth_drops_whole_examples_and_is_off_in_eval(backend):
    """The program's own draws: each example is kept whole (scaled by 1 / (1 - rate)) or
    dropped whole."""
    import rosetta as rs
    from helpers import spec_for
    spec = spec_for(rs.Sequential([rs.StochasticDepth(0.5, name="sd")], input_shape=(3, 2, 2),
                                  name="d"))
    prog = compile_spec(spec, backend)
    x = {"x": np.ones((400, 3, 2, 2))}
    np.testing.assert_array_equal(prog.forward(x, training=False), x["x"])
    out = prog.forward(x, training=True).reshape(400, -1)
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert (out.min(axis=1) == out.max(axis=1)).all()
    kept = float(np.mean(out[:, 0] == 2.0))
    assert 0.4 < kept < 0.6, kept


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_export_roundtrip(backend):
    spec, prog, _, _ = _setup("image_concat_add", backend)
    rng = np.random.default_rng(5)
    params = {k: rng.standard_normal(v.shape) for k, v in spec.model.init_params(0).items()}
    prog.load(params, spec.model.init_state())
    got = prog.export_params()
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in params.items()}
    assert compare_trees(got, params, "params", 0.0).passed


@pytest.mark.parametrize("backend", BACKENDS)
def test_injected_dropout_masks_match_reference(backend):
    """Conformance mode: a neutral keep-mask replaces the RNG, after a conv (NCHW in torch);
    a stochastic depth's mask has one value per example."""
    import rosetta as rs
    from rosetta.conformance.runner import dropout_masks
    from helpers import spec_for
    model = rs.Sequential([rs.Conv2D(3, 3, padding="same", name="conv"),
                           rs.Dropout(0.4, name="drop"), rs.StochasticDepth(0.5, name="sd"),
                           rs.Flatten(name="flat"),
                           rs.Dropout(0.25, name="drop2"), rs.Dense(2, name="head")],
                          input_shape=(5, 4, 2), name="dropped")
    spec = spec_for(model)
    prog = compile_spec(spec, backend)
    x = random_inputs(model, 3)
    y = random_targets(spec, 3)
    masks = dropout_masks(model, seed=0, step=0, batch=3)
    params = model.init_params(0)
    ref = model.reference_forward(params, x, training=True, dropout_masks=masks)
    w = compare_arrays(prog.forward(x, training=True, masks=masks), ref, "output", FORWARD_RTOL)
    assert w.passed, str(w)
    loss, _ = prog.gradients(x, y, masks=masks)
    assert compare_arrays(loss, spec.loss.reference(ref, y), "loss", FORWARD_RTOL).passed
    assert compare_arrays(prog.train_step(x, y, masks=masks), loss, "loss", FORWARD_RTOL).passed


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbiased_running_var_over_one_value_is_refused(backend):
    """running_var="unbiased" with n == 1 value per channel (factor n / (n - 1) infinite; torch
    raises): a DataError on every backend, the state untouched."""
    import rosetta as rs
    from helpers import spec_for
    spec = spec_for(rs.Sequential([rs.Dense(3, name="pre"),
                                   rs.BatchNorm(running_var="unbiased", name="bn")],
                                  input_shape=(2,), name="bn1"))
    prog = compile_spec(spec, backend, "float64")
    before = prog.export_state()
    with pytest.raises(rs.DataError, match="more than 1 value per channel"):
        prog.train_step({"x": np.ones((1, 2))}, np.zeros((1, 3)))
    assert compare_trees(prog.export_state(), before, "state", 0.0).passed
