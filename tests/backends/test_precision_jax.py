"""Precision policies on JAX: the types its step really computes in (read from the jaxpr)
against the policy, the dynamic loss scale of mixed_float16, the planted traps of the precision
tier (each must fail, blamed on the right tensor), and a mixed_float16 checkpoint written on
torch resumed on JAX."""

from __future__ import annotations

import numpy as np
import pytest

from selection import BACKENDS

if "jax" not in BACKENDS:
    pytest.skip("the jax backend is not selected (ROSETTA_TEST_BACKENDS)",
                allow_module_level=True)

import jax.numpy as jnp  # noqa: E402

import rosetta as rs  # noqa: E402
from rosetta.backend_registry import get_backend  # noqa: E402
from rosetta.backends.jax import precision as jp  # noqa: E402
from rosetta.conformance.precision import (check_loss_scale, check_types,  # noqa: E402
                                           plant_late_growth)

N = 4


def _spec():
    """x (3, 4) -> Dense -> LayerNorm -> self-attention -> Dense: a product, a float32
    normalisation and the softmax inside attention (the torch tests' model)."""
    x = rs.Input((3, 4), name="x")
    h = rs.Dense(4, name="d1")(x)
    h = rs.LayerNorm(name="ln")(h)
    h = rs.MultiHeadAttention(2, 2, name="attn")(h, h)
    y = rs.Dense(2, name="d2")(rs.Flatten(name="flat")(h))
    return rs.TrainSpec(model=rs.Model(x, y, name="tiny"), loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(1e-2), data=rs.DataSpec("digits"), steps=2,
                        seed=0)


def _batch(scale=1.0):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N, 3, 4)).astype(np.float32) * scale,
            rng.integers(0, 2, N))


def _prog(precision, spec=None):
    return get_backend("jax").compile(spec or _spec(), dtype=precision)


def _problems(p):
    return check_types(jp.trace(p, *_batch()), p.graph, p.policy)


@pytest.mark.parametrize("precision", ["bfloat16", "mixed_bfloat16", "mixed_float16"])
def test_a_comparisons_integer_output_is_not_a_policy_type(precision):
    """Greater's keep-mask is int32 on JAX under every policy: not reported as a node the
    policy says is bfloat16 / float16 (it was)."""
    x = rs.Input((3, 4), name="x")
    h = rs.Dense(4, name="d1")(x)
    h = rs.Where(y=0.0, name="relu_by_where")(rs.Greater(constant=0.0, name="pos")(h), h)
    y = rs.Dense(2, name="d2")(rs.Flatten(name="flat")(h))
    spec = rs.TrainSpec(model=rs.Model(x, y, name="cmp"),
                        loss=rs.losses.SoftmaxCrossEntropy(), optimizer=rs.optim.Adam(1e-2),
                        data=rs.DataSpec("digits"), steps=2, seed=0)
    p = _prog(precision, spec)
    trace = jp.trace(p, *_batch())
    assert trace["nodes"]["pos"] == "int32"
    assert check_types(trace, p.graph, p.policy) == []


def test_jax_lowers_every_policy():
    assert set(get_backend("jax").precisions) == {"float32", "float64", "bfloat16",
                                                  "mixed_bfloat16", "mixed_float16"}


@pytest.mark.parametrize("precision", ["bfloat16", "mixed_bfloat16", "mixed_float16"])
def test_the_step_computes_in_the_policys_types(precision):
    p = _prog(precision)
    tr = jp.trace(p, *_batch())
    assert check_types(tr, p.graph, p.policy) == []
    low = p.policy.low
    assert tr["nodes"]["d1"] == low and tr["nodes"]["ln"] == (
        "float32" if p.policy.mixed else low)
    # every product of the step, forward and backward, on low inputs; the attention softmax
    # seen in the jaxpr, in float32 under a mixed policy
    products = [k for k in tr["kernels"] if k[1] == "product"]
    assert len(products) >= 10 and all(k[3] == [low, low] for k in products)
    soft = {tuple(k[3]) for k in tr["kernels"] if k[:2] == ("attn", "softmax")}
    assert soft == {("float32",) if p.policy.mixed else (low,)}
    assert set(tr["params"].values()) == set(tr["opt"].values()) == {p.policy.param}
    loss = p.train_step(*_batch())
    assert np.isfinite(loss) and p.step == 1
    assert all(v.dtype == np.float32 for v in p.export_params().values())


def _mixed_with(**fields):
    p = _prog("mixed_bfloat16")
    p.model = p.model.clone(**fields)
    p._compile_steps()
    return p


def test_trap_policy_ignored_fails_on_the_first_product():
    p = _mixed_with(types=(), float32_softmax=False)   # every node as it comes: float32
    problems = _problems(p)
    assert problems[0].startswith("node 'd1' (Dense) output is float32, mixed_bfloat16 says "
                                  "bfloat16")


def test_trap_layernorm_in_bf16_fails_on_the_layernorm():
    p = _prog("mixed_bfloat16")
    types = tuple((n, "bfloat16", True) if n == "ln" else (n, t, c)
                  for n, t, c in p.model.types)
    p.model = p.model.clone(types=types)
    p._compile_steps()
    problems = _problems(p)
    assert problems[0] == "node 'ln' (LayerNorm) output is bfloat16, mixed_bfloat16 says float32"
    assert "node 'ln' (LayerNorm): LayerNorm on bfloat16 inputs, mixed_bfloat16 computes it in " \
           "float32" in problems


def test_trap_softmax_in_bf16_inside_attention_fails_on_attention():
    problems = _problems(_mixed_with(float32_softmax=False))
    assert problems == ["node 'attn' (MultiHeadAttention): softmax exp on bfloat16 inputs, "
                        "mixed_bfloat16 computes it in float32"]


def test_trap_master_weights_in_bf16_fails_on_the_parameters():
    p = _prog("mixed_bfloat16")
    p.params = {n: ({k: v.astype(jnp.bfloat16) for k, v in leaves.items()}
                    if n in ("d1", "d2") else leaves) for n, leaves in p.params.items()}
    problems = _problems(p)
    assert "parameter d1/kernel is bfloat16, mixed_bfloat16 keeps it in float32" in problems
    assert "gradient d1/kernel is bfloat16, mixed_bfloat16 keeps it in float32" in problems


def test_loss_scale_rule_with_growth_interval_2_and_a_planted_infinite_gradient():
    p = _prog("mixed_float16")
    assert check_loss_scale(p, _batch(), _batch(1e30)) == []
    assert (p.loss_scale.scale, p.loss_scale.good, p.step) == (2.0 ** 16, 0, 4)


def test_trap_growth_counter_off_by_one_fails_on_the_scale():
    p = _prog("mixed_float16")
    plant_late_growth(p.loss_scale)   # grows one good step late
    problems = check_loss_scale(p, _batch(), _batch(1e30))
    assert problems[0].startswith("loss_scale/scale after step 1: 32768.0, the rule gives "
                                  "65536.0")


def test_trap_update_applied_on_a_skipped_step_fails_on_the_parameters():
    p = _prog("mixed_float16")
    p._skip_nonfinite = False          # the compiled step applies every update
    p._compile_steps()
    rule = p.loss_scale
    after = rule.after
    rule.after = lambda finite: after(finite) or True   # the state backs off, the count runs
    problems = check_loss_scale(p, _batch(), _batch(1e30))
    assert any(s.startswith("params/") and "moved on the skipped step 2" in s
               for s in problems), problems


@pytest.mark.skipif("torch" not in BACKENDS, reason="needs torch to write the checkpoint")
def test_a_torch_mixed_float16_checkpoint_continues_on_jax(tmp_path):
    """torch trains three steps (one skipped) with growth interval 2 and saves; JAX resumes:
    the masters, Adam's slots and the loss scale are the checkpoint's exactly; the next step's
    gradients and parameters are within the precision tier's bound of the float64 step from
    the same state, with torch's own distance from that step as the measured spread (JAX is
    as close to float64 as torch is); the scale and its counter then move in lockstep through
    another planted infinite gradient."""
    from rosetta import checkpoint
    from rosetta.conformance.noise import _worst
    from rosetta.conformance.precision import LOW_FLOOR, LOW_MULTIPLE, LOW_ULPS, _units
    from rosetta.run_loop import save_program

    spec = _spec()
    t = get_backend("torch").compile(spec, dtype="mixed_float16")
    t.loss_scale.interval = 2
    for batch in (_batch(), _batch(1e30), _batch()):
        t.train_step(*batch)

    class Plan:  # what save_program reads of a RunPlan
        run_spec, seed, batch_size, n_train, per_epoch, device = spec, 0, N, 8, 2, "cpu"
        dtype, backend, preprocessing = "float32", "torch", {}
    save_program(tmp_path / "c", t, Plan, framework="torch", metrics={}, losses=[])
    ck = checkpoint.load(tmp_path / "c")
    j, ref = _prog("mixed_float16", spec), _prog("float64", spec)
    checkpoint.restore(j, ck)
    checkpoint.restore(ref, ck)
    assert j.export_loss_scale() == t.export_loss_scale() == {"scale": 2.0 ** 14, "good": 1}
    assert j.step == t.step == 2
    for got, want in ((j.export_params(), t.export_params()),
                      (j.export_optimizer_state(), t.export_optimizer_state())):
        assert got.keys() == want.keys()
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v)

    x, y = _batch(0.5)
    out = {}
    for name, prog in (("torch", t), ("jax", j), ("float64", ref)):
        if prog.loss_scale is not None:
            prog.loss_scale.interval = 2
        _, grads = prog.gradients(x, y)
        prog.train_step(x, y)
        out[name] = {**{f"grads/{k}": v for k, v in grads.items()},
                     **{f"params/{k}": v for k, v in prog.export_params().items()}}
    unit = _units(j.policy, spec.model)
    for k, want in out["float64"].items():
        spread = np.full(want.shape, np.max(np.abs(out["torch"][k] - want), initial=0.0))
        w = _worst(out["jax"][k], want, spread, float(np.max(np.abs(want), initial=0.0)), k,
                   LOW_MULTIPLE, LOW_FLOOR, LOW_ULPS, unit(k))
        assert w.passed, w
    assert j.export_loss_scale() == t.export_loss_scale() == {"scale": 2.0 ** 15, "good": 0}
    for batch in (_batch(1e30), _batch(), _batch()):
        for prog in (t, j):
            prog.train_step(*batch)
        assert j.export_loss_scale() == t.export_loss_scale() and j.step == t.step
    assert (j.export_loss_scale(), j.step) == ({"scale": 2.0 ** 15, "good": 0}, 5)


def test_node_outputs_are_the_training_forward_of_every_node():
    p = _prog("mixed_bfloat16")
    x, _ = _batch()
    outs = jp.node_outputs(p, x)
    assert set(outs) == {"d1", "ln", "attn", "flat", "d2"}
    assert all(v.dtype == np.float64 for v in outs.values())
    np.testing.assert_allclose(outs["d2"], p.forward(x, training=True), rtol=2 ** -8,
                               atol=2 ** -8 * float(np.max(np.abs(outs["d2"]))))


def test_the_bias_gradient_accumulates_in_float32(precision="mixed_bfloat16"):
    """A bias gradient is a reduction over the batch: accumulated in float32, rounded once to
    the bias's type (as torch and TensorFlow's XLA step do). Summed in bf16, 1024 equal
    addends of the Dense bias came out 2.6 % off on XLA:CPU."""
    x = rs.Input((3,), name="x")
    spec = rs.TrainSpec(model=rs.Model(x, rs.Dense(2, name="d")(x), name="tiny"),
                        loss=rs.losses.MeanSquaredError(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("digits"), steps=1, seed=0)
    n = 1024
    xs = np.full((n, 3), 0.5, np.float32)
    ys = np.full((n, 2), 3.0, np.float32)
    _, want = _prog("float64", spec).gradients(xs, ys)
    _, got = _prog(precision, spec).gradients(xs, ys)
    want, got = np.asarray(want["d/bias"], np.float64), np.asarray(got["d/bias"], np.float64)
    np.testing.assert_allclose(got, want, rtol=2 ** -7)
