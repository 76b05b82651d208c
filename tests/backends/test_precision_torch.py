"""Precision policies on torch: the types its step really computes in (a TorchDispatchMode
trace) against the policy, the dynamic loss scale of mixed_float16, and the planted traps of
the precision tier (each must fail, blamed on the right tensor)."""

from __future__ import annotations

import numpy as np
import pytest

from selection import BACKENDS

if "torch" not in BACKENDS:
    pytest.skip("the torch backend is not selected (ROSETTA_TEST_BACKENDS)",
                allow_module_level=True)

import torch  # noqa: E402

import rosetta as rs  # noqa: E402
from rosetta import checkpoint  # noqa: E402
from rosetta.backend_registry import get_backend  # noqa: E402
from rosetta.backends.torch import precision as tp  # noqa: E402
from rosetta.conformance.precision import (check_loss_scale, check_types,  # noqa: E402
                                           plant_late_growth, precision_tier)
from rosetta.errors import BackendUnavailable  # noqa: E402
from rosetta.run_loop import save_program  # noqa: E402

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


def _batch(scale=1.0):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N, 3, 4)).astype(np.float32) * scale,
            rng.integers(0, 2, N))


def _prog(precision, spec=None):
    return get_backend("torch").compile(spec or _spec(), dtype=precision)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "mixed_bfloat16",
                                       "mixed_float16"])
def test_the_step_computes_in_the_policys_types(precision):
    p = _prog(precision)
    tr = tp.trace(p, *_batch())
    assert check_types(tr, p.graph, p.policy) == []
    want = {"float32": "float32", "bfloat16": "bfloat16", "mixed_bfloat16": "bfloat16",
            "mixed_float16": "float16"}[precision]
    assert tr["nodes"]["d1"] == want
    # mixed: attention's softmax runs apart, in float32 (else SDPA's fused kernel)
    assert any(k[0] == "attn" and k[2] == "_softmax" and k[3] == ["float32"]
               for k in tr["kernels"]) == p.policy.mixed


@pytest.mark.parametrize("precision", ["bfloat16", "mixed_bfloat16"])
def test_dot_product_attention_computes_in_the_policys_types(precision):
    """SDPA over (T, D) per example with a float mask that has a gradient (its math kernel
    would run a bf16 product in float32): the policy's products, and under a mixed policy a
    separate float32 softmax."""
    x = rs.Input((3, 4), name="x")
    h = rs.Dense(4, name="d1")(x)
    h = rs.DotProductAttention(causal=True, name="attn")(h, h, h, rs.Dense(3, name="m")(x))
    spec = rs.TrainSpec(model=rs.Model(x, rs.Dense(2, name="d2")(rs.Flatten(name="f")(h)),
                                       name="dpa"),
                        loss=rs.losses.SoftmaxCrossEntropy(), optimizer=rs.optim.Adam(1e-2),
                        data=rs.DataSpec("digits"), steps=2, seed=0)
    p = _prog(precision, spec)
    tr = tp.trace(p, *_batch())
    assert check_types(tr, p.graph, p.policy) == []
    assert any(k[0] == "attn" and k[2] == "_softmax" and k[3] == ["float32"]
               for k in tr["kernels"]) == p.policy.mixed


def test_trap_policy_ignored_fails_on_the_first_product():
    p = _prog("mixed_bfloat16")
    p.model.set_precision({})                      # every node as it comes: all float32
    problems = check_types(tp.trace(p, *_batch()), p.graph, p.policy)
    assert problems[0].startswith("node 'd1' (Dense) output is float32, mixed_bfloat16 says "
                                  "bfloat16")


def test_trap_layernorm_in_bf16_fails_on_the_layernorm():
    p = _prog("mixed_bfloat16")
    rules = dict(p.model.precision)
    rules.pop(p.model.node_keys["ln"])            # LayerNorm takes d1's bf16 as it comes
    p.model.precision = rules
    problems = check_types(tp.trace(p, *_batch()), p.graph, p.policy)
    assert problems[0] == "node 'ln' (LayerNorm) output is bfloat16, mixed_bfloat16 says float32"
    assert any("native_layer_norm on bfloat16" in s for s in problems)


def test_trap_softmax_in_bf16_inside_attention_fails_on_attention():
    p = _prog("mixed_bfloat16")
    p.model.node_module("attn").float32_softmax = False   # SDPA's fused kernel, in bf16
    problems = check_types(tp.trace(p, *_batch()), p.graph, p.policy)
    assert problems == ["node 'attn' (MultiHeadAttention): no separate softmax ran; "
                        "mixed_bfloat16 runs its softmax in float32"]


def test_trap_master_weights_in_bf16_fails_on_the_parameters():
    p = _prog("mixed_bfloat16")
    with torch.no_grad():
        for path, s in p._params.items():     # the products' weights kept in bf16
            if path.startswith(("d1/", "d2/")):
                s.tensor.data = s.tensor.data.to(torch.bfloat16)
    problems = check_types(tp.trace(p, *_batch()), p.graph, p.policy)
    assert "parameter d1/kernel is bfloat16, mixed_bfloat16 keeps it in float32" in problems


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
    rule = p.loss_scale
    after = rule.after
    rule.after = lambda finite: after(finite) or True   # the state backs off, the update runs
    problems = check_loss_scale(p, _batch(), _batch(1e30))
    assert any(s.startswith("params/") and "moved on the skipped step 2" in s
               for s in problems), problems


def test_loss_scale_continues_from_the_checkpoint(tmp_path):
    spec = _spec()
    p = _prog("mixed_float16", spec)
    p.loss_scale.interval = 2
    x, y = _batch()
    for batch in (_batch(), _batch(1e30), _batch()):
        p.train_step(*batch)
    state = p.export_loss_scale()
    assert state == {"scale": 2.0 ** 14, "good": 1}

    class Plan:  # what save_program reads of a RunPlan
        run_spec, seed, batch_size, n_train, per_epoch, device = spec, 0, N, 8, 2, "cpu"
        dtype, backend, preprocessing = "float32", "torch", {}
    save_program(tmp_path / "c", p, Plan, framework="torch", metrics={}, losses=[])
    ck = checkpoint.load(tmp_path / "c")
    assert ck.precision == "mixed_float16" and ck.record["loss_scale"] == state
    q = _prog("mixed_float16", spec)
    checkpoint.restore(q, ck)
    assert q.export_loss_scale() == state and q.step == p.step
    for prog in (p, q):
        prog.loss_scale.interval = 2
        prog.train_step(x, y)
    assert q.export_loss_scale() == p.export_loss_scale() == {"scale": 2.0 ** 15, "good": 0}
    for k, v in p.export_params().items():
        np.testing.assert_array_equal(q.export_params()[k], v)


def test_backends_that_do_not_lower_a_policy_refuse_it_in_one_line():
    for b in ("mxnet",):   # tensorflow and jax lower them (test_precision_{tensorflow,jax}.py)
        if b not in BACKENDS:
            continue
        with pytest.raises(BackendUnavailable, match=f"{b} backend: precision 'mixed_float16' "
                                                     f"is not lowered here"):
            get_backend(b).compile(_spec(), dtype="mixed_float16")


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


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "bfloat16"])
def test_precision_tier_holds_an_honest_step(precision):
    r = precision_tier(_tier_spec(), "torch", precision, steps=1, runs=2)
    assert r.types == [] and r.passed, r.first_failure()
    keys = {k for _, k, _ in r.rows}
    assert {"nodes/d1", "nodes/ln", "nodes/attn", "nodes/d2", "loss", "grads/d1/kernel",
            "params/d1/kernel", "opt/m/d1/kernel"} <= keys


def test_precision_tier_trap_master_weights_in_bf16_fails_on_a_parameter():
    spec = _tier_spec()
    p = get_backend("torch").compile(spec, dtype="mixed_bfloat16")
    with torch.no_grad():
        for path, s in p._params.items():
            if path.startswith(("d1/", "d2/")):
                s.tensor.data = s.tensor.data.to(torch.bfloat16)
    r = precision_tier(spec, "torch", "mixed_bfloat16", steps=1, runs=2, program=p)
    assert "parameter d1/kernel is bfloat16, mixed_bfloat16 keeps it in float32" in r.types
    step, key, w = r.first_failure()
    assert key.startswith(("params/d1/", "params/d2/", "opt/")), key


def _recurrent_spec(op):
    """12 cluster features seen as 4 steps of 3 -> ``op`` (4 units, final state) -> Dense."""
    x = rs.Input((12,), name="x")
    h = getattr(rs, op)(4, name="rnn")(rs.Reshape((4, 3), name="r")(x))
    y = rs.Dense(2, name="d")(h)
    return rs.TrainSpec(model=rs.Model(x, y, name="tiny_rnn"),
                        loss=rs.losses.SoftmaxCrossEntropy(), optimizer=rs.optim.Adam(1e-2),
                        data=rs.DataSpec("clusters", 8, {"n": 64, "features": 12, "classes": 2}),
                        steps=1, seed=0)


@pytest.mark.parametrize("op,precision", [("LSTM", "mixed_bfloat16"), ("GRU", "mixed_float16")])
def test_recurrent_layers_run_in_the_low_type_under_a_mixed_policy(op, precision):
    """The fused kernel runs on weights cast from the float32 masters (CPU autocast would leave
    it in float32); the tier's types and numbers hold, gradients back in float32."""
    r = precision_tier(_recurrent_spec(op), "torch", precision, steps=1, runs=2)
    assert r.types == [] and r.passed, (r.types, r.first_failure())
    p = _prog(precision, _recurrent_spec(op))
    x = np.random.default_rng(0).standard_normal((8, 12)).astype(np.float32)
    tr = tp.trace(p, x, np.arange(8) % 2)
    low = precision.removeprefix("mixed_")
    assert tr["nodes"]["rnn"] == low and tr["grads"]["rnn/kernel"] == "float32"
