"""Precision policies on TensorFlow: the types its step really computes in (read from the traced
step's graph) against the policy, the dynamic loss scale of mixed_float16 (and a torch
mixed_float16 checkpoint continuing on TensorFlow), and the planted traps of the precision tier
(each must fail, blamed on the right tensor)."""

from __future__ import annotations

import numpy as np
import pytest

from selection import BACKENDS

if "tensorflow" not in BACKENDS:
    pytest.skip("the tensorflow backend is not selected (ROSETTA_TEST_BACKENDS)",
                allow_module_level=True)

import tensorflow as tf  # noqa: E402

import rosetta as rs  # noqa: E402
from rosetta.backend_registry import get_backend  # noqa: E402
from rosetta.backends.tensorflow import optimizers  # noqa: E402
from rosetta.backends.tensorflow import precision as tp  # noqa: E402
from rosetta.conformance.precision import (LOW_FLOOR, LOW_ULPS, check_loss_scale,  # noqa: E402
                                           check_types, plant_late_growth, precision_tier)
from rosetta.conformance.noise import unit_roundoff  # noqa: E402
from rosetta.errors import BackendUnavailable  # noqa: E402

N = 4


def _spec(optimizer=None):
    """x (3, 4) -> Dense -> LayerNorm -> self-attention -> Dense: a product, a float32
    normalisation and the softmax inside attention."""
    x = rs.Input((3, 4), name="x")
    h = rs.Dense(4, name="d1")(x)
    h = rs.LayerNorm(name="ln")(h)
    h = rs.MultiHeadAttention(2, 2, name="attn")(h, h)
    y = rs.Dense(2, name="d2")(rs.Flatten(name="flat")(h))
    return rs.TrainSpec(model=rs.Model(x, y, name="tiny"),
                        loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=optimizer or rs.optim.Adam(1e-2), data=rs.DataSpec("digits"),
                        steps=2, seed=0)


def _small_spec():
    """x (3, 4) -> Dense -> Dense: what the loss-scale rule needs (quick to trace)."""
    x = rs.Input((3, 4), name="x")
    y = rs.Dense(2, name="d2")(rs.Flatten(name="flat")(rs.Dense(4, name="d1")(x)))
    return rs.TrainSpec(model=rs.Model(x, y, name="small"),
                        loss=rs.losses.SoftmaxCrossEntropy(), optimizer=rs.optim.Adam(1e-2),
                        data=rs.DataSpec("digits"), steps=2, seed=0)


def _batch(scale=1.0):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N, 3, 4)).astype(np.float32) * scale,
            rng.integers(0, 2, N))


def _prog(precision, spec=None):
    """mode "function": the same step bodies without XLA's compile time (the zoo's tier runs
    the XLA step: docs/guide/precision.md)."""
    return get_backend("tensorflow").compile(spec or _spec(), dtype=precision, mode="function")


def _bf16_masters(p, prefixes=("d1/", "d2/")):
    """Trap: the products' parameters kept as bf16 variables (and the optimizer rebuilt on
    them), the master weights a mixed policy keeps in float32."""
    for path, var in list(p.param_vars.items()):
        if path.startswith(prefixes):
            node, name = path.split("/", 1)
            low = tf.Variable(tf.cast(var, tf.bfloat16), name=path)
            setattr(p.model.layers[node], name, low)
            p.param_vars[path] = low
    p.trainable = list(p.param_vars.values())
    p.optimizer = optimizers.lower(p.spec.optimizer, p.trainable)


def test_tensorflow_declares_every_policy():
    from rosetta.precision import PRECISIONS

    assert set(get_backend("tensorflow").precisions) == set(PRECISIONS)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "mixed_bfloat16",
                                       "mixed_float16"])
def test_the_step_computes_in_the_policys_types(precision):
    p = _prog(precision)
    tr = tp.trace(p, *_batch())
    assert check_types(tr, p.graph, p.policy) == []
    want = {"float32": "float32", "bfloat16": "bfloat16", "mixed_bfloat16": "bfloat16",
            "mixed_float16": "float16"}[precision]
    assert tr["nodes"]["d1"] == want and tr["kernels"][0][:3] == ("d1", "product", "MatMul")
    assert tr["nodes"]["ln"] == ("float32" if p.policy.mixed else want)
    # attention's softmax in float32 under a mixed policy, in bf16 under bfloat16
    assert ("attn", "softmax", "Softmax", ["float32" if p.policy.mixed else want]) \
        in tr["kernels"]
    assert set(tr["grads"].values()) == set(tr["opt"].values()) == {p.policy.param}


def test_trap_policy_ignored_fails_on_the_first_product():
    p = _prog("mixed_bfloat16")
    p.model.precision = {}                      # every node as it comes: all float32
    problems = check_types(tp.trace(p, *_batch()), p.graph, p.policy)
    assert problems[0] == "node 'd1' (Dense) output is float32, mixed_bfloat16 says bfloat16"


def test_trap_layernorm_in_bf16_fails_on_the_layernorm():
    p = _prog("mixed_bfloat16")
    p.model.precision["ln"] = ("widest", None)  # LayerNorm in d1's bf16, its scale cast down
    problems = check_types(tp.trace(p, *_batch()), p.graph, p.policy)
    assert problems[0] == "node 'ln' (LayerNorm) output is bfloat16, mixed_bfloat16 says float32"
    assert "node 'ln' (LayerNorm): Mean on bfloat16 inputs, mixed_bfloat16 computes it in " \
           "float32" in problems


def test_trap_softmax_in_bf16_inside_attention_fails_on_attention():
    p = _prog("mixed_bfloat16")
    p.model.layers["attn"].float32_softmax = False
    problems = check_types(tp.trace(p, *_batch()), p.graph, p.policy)
    assert problems == ["node 'attn' (MultiHeadAttention): Softmax on bfloat16 inputs, "
                        "mixed_bfloat16 computes it in float32"]


def test_trap_master_weights_in_bf16_fails_on_the_parameters():
    p = _prog("mixed_bfloat16")
    _bf16_masters(p)
    problems = check_types(tp.trace(p, *_batch()), p.graph, p.policy)
    assert "parameter d1/kernel is bfloat16, mixed_bfloat16 keeps it in float32" in problems
    assert "optimizer slot m/d1/kernel is bfloat16, mixed_bfloat16 keeps it in float32" \
        in problems


def test_loss_scale_rule_with_growth_interval_2_and_a_planted_infinite_gradient():
    p = _prog("mixed_float16", _small_spec())
    assert check_loss_scale(p, _batch(), _batch(1e30)) == []
    assert (p.loss_scale.scale, p.loss_scale.good, p.step) == (2.0 ** 16, 0, 4)
    # the arrays crossing the API: float32 (the masters, the slots, the gradients)
    assert {a.dtype for a in p.export_params().values()} == {np.dtype(np.float32)}
    assert {a.dtype for a in p.gradients(*_batch())[1].values()} == {np.dtype(np.float32)}


def test_pure_bfloat16_runs_in_bf16_and_crosses_the_api_in_float32():
    p = _prog("bfloat16", _small_spec())
    assert np.isfinite(p.train_step(*_batch())) and p.step == 1
    assert {v.dtype for v in p.param_vars.values()} == {tf.bfloat16}
    out = p.forward(_batch()[0])
    assert out.dtype == np.float32 and np.array_equal(out, out.astype(tf.bfloat16.as_numpy_dtype)
                                                       .astype(np.float32))
    assert {a.dtype for a in p.export_optimizer_state().values()} == {np.dtype(np.float32)}


def test_trap_growth_counter_off_by_one_fails_on_the_scale():
    p = _prog("mixed_float16", _small_spec())
    plant_late_growth(p.loss_scale)   # grows one good step late
    problems = check_loss_scale(p, _batch(), _batch(1e30))
    assert problems[0].startswith("loss_scale/scale after step 1: 32768.0, the rule gives "
                                  "65536.0")


def test_trap_update_applied_on_a_skipped_step_fails_on_the_parameters():
    p = _prog("mixed_float16", _small_spec())
    rule = p.loss_scale
    after = rule.after
    rule.after = lambda finite: after(finite) or True   # the state backs off, the update runs
    problems = check_loss_scale(p, _batch(), _batch(1e30))
    assert any(s.startswith("params/") and "moved on the skipped step 2" in s
               for s in problems), problems


def test_data_parallel_refuses_a_low_precision_in_one_line():
    from rosetta.backends.tensorflow import data_parallel

    with pytest.raises(BackendUnavailable, match="tensorflow data parallel: precision "
                                                 "'mixed_bfloat16' is not lowered on several "
                                                 "devices"):
        data_parallel.compile(_spec(), devices=2, dtype="mixed_bfloat16")


@pytest.mark.skipif("torch" not in BACKENDS, reason="needs the torch backend")
def test_a_torch_mixed_float16_checkpoint_continues_on_tensorflow(tmp_path):
    """torch trains through a planted non-finite step and saves; TensorFlow resumes: the
    parameters, slots, update count and loss scale exactly, then the same next steps (one
    skipped) keep the scale and counter exact and the parameters within the precision tier's
    float16 rounding bound of torch's own continuation."""
    from rosetta import checkpoint
    from rosetta.run_loop import save_program

    spec = _small_spec()
    t = get_backend("torch").compile(spec, dtype="mixed_float16")
    t.loss_scale.interval = 2
    for batch in (_batch(), _batch(1e30), _batch()):
        t.train_step(*batch)
    assert t.export_loss_scale() == {"scale": 2.0 ** 14, "good": 1}

    class Plan:  # what save_program reads of a RunPlan
        run_spec, seed, batch_size, n_train, per_epoch, device = spec, 0, N, 8, 2, "cpu"
        dtype, backend, preprocessing = "float32", "torch", {}
    save_program(tmp_path / "c", t, Plan, framework="torch", metrics={}, losses=[])
    ck = checkpoint.load(tmp_path / "c")
    f = _prog("mixed_float16", spec)
    checkpoint.restore(f, ck)
    assert f.export_loss_scale() == t.export_loss_scale() and f.step == t.step == 2
    for k, v in t.export_params().items():
        np.testing.assert_array_equal(f.export_params()[k], v)
    for k, v in t.export_optimizer_state().items():
        np.testing.assert_array_equal(f.export_optimizer_state()[k], v)
    for prog in (t, f):
        prog.loss_scale.interval = 2
        for batch in (_batch(), _batch(1e30), _batch()):
            prog.train_step(*batch)
    assert f.export_loss_scale() == t.export_loss_scale() == {"scale": 2.0 ** 14, "good": 1}
    assert f.step == t.step == 4
    want, got = t.export_params(), f.export_params()
    scale = max(float(np.max(np.abs(v))) for v in want.values())
    u = unit_roundoff("float16")
    for k, v in want.items():
        err = np.abs(got[k].astype(np.float64) - v)
        bound = u * (LOW_ULPS * np.abs(v) + LOW_FLOOR * scale)
        assert (err <= bound).all(), (k, float(np.max(err - bound)))
    assert any(not np.array_equal(got[k], v) for k, v in want.items())  # two frameworks


def _tier_spec():
    """``_spec``'s layers on 12 cluster features seen as (3, 4), 2 classes, batches of 8."""
    x = rs.Input((12,), name="x")
    h = rs.Dense(4, name="d1")(rs.Reshape((3, 4), name="r")(x))
    h = rs.LayerNorm(name="ln")(h)
    h = rs.MultiHeadAttention(2, 2, name="attn")(h, h)
    y = rs.Dense(2, name="d2")(rs.Flatten(name="flat")(h))
    return rs.TrainSpec(model=rs.Model(x, y, name="tiny"), loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(1e-2),
                        data=rs.DataSpec("clusters", 8, {"n": 64, "features": 12, "classes": 2}),
                        steps=1, seed=0)


def test_precision_tier_holds_an_honest_mixed_bfloat16_step():
    spec = _tier_spec()
    r = precision_tier(spec, "tensorflow", "mixed_bfloat16", steps=1, runs=2,
                       program=_prog("mixed_bfloat16", spec))
    assert r.types == [] and r.passed, r.first_failure()
    keys = {k for _, k, _ in r.rows}
    assert {"nodes/d1", "nodes/ln", "nodes/attn", "nodes/d2", "loss", "grads/d1/kernel",
            "params/d1/kernel", "opt/m/d1/kernel"} <= keys



@pytest.mark.parametrize("mode", ["xla", "function"])
def test_the_bias_gradient_accumulates_in_float32(mode):
    """A bias gradient is a reduction over the batch: accumulated in float32, rounded once to
    the bias's type (the rule of every backend). The graph runtime's bf16 ``BiasAddGrad``
    accumulated 1024 equal rows in bf16 (-1.0 where float64 gives -3.37)."""
    x = rs.Input((3,), name="x")
    spec = rs.TrainSpec(model=rs.Model(x, rs.Dense(2, name="d")(x), name="tiny"),
                        loss=rs.losses.MeanSquaredError(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("digits"), steps=1, seed=0)
    xs, ys = np.full((1024, 3), 0.5, np.float32), np.full((1024, 2), 3.0, np.float32)
    be = get_backend("tensorflow")
    _, want = be.compile(spec, dtype="float64").gradients(xs, ys)
    _, got = be.compile(spec, dtype="mixed_bfloat16", mode=mode).gradients(xs, ys)
    np.testing.assert_allclose(np.asarray(got["d/bias"], np.float64),
                               np.asarray(want["d/bias"], np.float64), rtol=2 ** -7)
