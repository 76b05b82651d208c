"""The parallel tier (docs/design.md sections 5 and 10) on CI's subset: mlp, the BatchNorm ResNet and the
transformer with dropout (injected masks), one device against 2 on every backend's own engine,
float64 within the exact bound; each planted data-parallel trap fails the tier and is blamed on
the right tensor; ``train(devices=2)`` saves a checkpoint another device count resumes.

Small cases prove the same rules as big ones: batch 4 (2 examples per replica), 2 steps. Each
N-device run starts worker processes (torch: 2 ranks; TensorFlow, JAX: one process with 2
devices), which costs seconds each: the runs are few.
"""

from __future__ import annotations

import pytest

import rosetta as rs
from rosetta import models
from rosetta.spec import TrainSpec
from rosetta.conformance.parallel import compare_runs as compare, record_parallel, run, tier
from rosetta.conformance.runner import record
from rosetta.training import train

from selection import BACKENDS

STEPS = 2
TIER = tier("float64")


def _bn_cnn(running_var="biased"):
    """A small BatchNorm CNN (the ResNet's conv-BatchNorm-ReLU rule at a CI-sized cost);
    ``running_var="unbiased"`` (torch's rule): n / (n - 1) with n the global batch's count."""
    model = rs.Sequential([rs.Conv2D(4, 3, padding="same", name="conv"),
                           rs.BatchNorm(running_var=running_var, name="bn"),
                           rs.Activation("relu", name="relu"),
                           rs.Flatten(name="flat"), rs.Dense(10, name="head")],
                          input_shape=(8, 8, 1), name="bn_cnn")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.SGD(0.05, momentum=0.9),
                        data=rs.DataSpec("digits", 4, {"layout": "image"}), steps=STEPS)


def _dropout_transformer():
    """The zoo's one-block transformer with dropout 0.1 on the attention weights and both
    residual branches (the rule is per mask, so one block proves it as two would)."""
    return models.get("transformer_dropout")


def _small(name, batch=4):
    own = {"bn_cnn": _bn_cnn, "bn_cnn_unbiased": lambda: _bn_cnn("unbiased"),
           "transformer": _dropout_transformer}
    spec = own.get(name, models.get)(*(() if name in own else (name,)))
    spec.data.batch_size = batch
    return spec


def test_backend_pairs_at_two_devices():
    """mlp: each backend 1 device vs 2, and every backend pair at 2 devices."""
    results, trajs = run(_small("mlp"), BACKENDS, devices=[1, 2], dtype="float64", steps=STEPS)
    assert len(results) == len(BACKENDS) + len(BACKENDS) * (len(BACKENDS) - 1) // 2
    for r in results:
        assert r.passed, f"{r.backend_a} vs {r.backend_b}: {r.where}"
        assert r.worst_rel <= 1e-10 and r.tolerance == 1e-10 and r.tier == "parallel"
        assert r.checked_steps == STEPS
    two = [t for t in trajs if t.meta["devices"] == 2]
    assert sorted(t.meta["backend"] for t in two) == sorted(BACKENDS)


# model, the trap planted in it, the blamed category and (for BatchNorm) the blamed node's op
CASES = [("mlp", "summed_gradients", "grads", None),
         ("bn_cnn", "replica_batchnorm", "state", "BatchNorm"),
         ("bn_cnn_unbiased", None, None, None),
         ("transformer", "same_dropout_mask", "grads", None)]


@pytest.mark.parametrize("backend,model,trap,category,op",
                         [(b, *c) for b in BACKENDS for c in CASES],
                         ids=[f"{b}-{c[0]}" for b in BACKENDS for c in CASES])
def test_one_device_equals_two_and_traps_fail(backend, model, trap, category, op):
    """On one backend: the BatchNorm CNN (global statistics; with torch's unbiased running
    variance, n of the global batch) and the transformer with injected dropout masks agree with
    one device within the exact bound (mlp: in the pairs test); the
    planted trap fails far above it and is blamed on the right tensor (a JAX jit over the global
    batch cannot have per-replica statistics: that trap is torch's and TensorFlow's)."""
    if backend == "jax" and trap == "replica_batchnorm":
        trap = None
    spec = _small(model)
    one = record(spec, backend, dtype="float64", steps=STEPS)
    if model != "mlp":
        many = record_parallel(spec, backend, 2, dtype="float64", steps=STEPS)
        r = compare(spec, one, many, TIER, "float64", None, "inject")
        assert r.passed and r.worst_rel <= 1e-10, f"{backend} {model}: {r.where}"
        if model.startswith("bn_cnn"):
            assert set(many.state) == {"bn/mean", "bn/var"}
        else:
            assert many.meta["dropout"] == "inject"
    if trap is None:
        return
    trapped = record_parallel(spec, backend, 2, dtype="float64", steps=STEPS, trap=trap)
    r = compare(spec, one, trapped, TIER, "float64", None, "inject")
    assert not r.passed and r.worst_rel > 1e-6, f"{backend} {trap} not caught"
    assert r.blame["step"] == 0 and r.blame["category"] == category, (trap, r.blame)
    if op is not None:  # a BatchNorm's running statistics
        ops = {n.name: n.op for n in spec.model.nodes}
        assert ops[r.blame["node"]] == op, r.blame


def test_train_on_two_devices_saves_what_one_device_resumes(tmp_path):
    """train(devices=2) on torch, saved, resumed on JAX on one device: the continued run equals
    the uninterrupted one-device run (float64, exact bound)."""
    backends = [b for b in ("torch", "jax") if b in BACKENDS]
    if len(backends) < 2:
        pytest.skip("needs torch and jax")
    spec = _bn_cnn()
    two = train(spec, "torch", devices=2, dtype="float64", steps=2, progress=False,
                save=tmp_path / "run")
    assert two["devices"] == 2 and two["program"] is None and len(two["losses"]) == 2
    resumed = train(None, "jax", dtype="float64", steps=1, progress=False,
                    resume=tmp_path / "run")
    straight = train(spec, "jax", dtype="float64", steps=3, progress=False)
    got, want = two["losses"] + resumed["losses"], straight["losses"]
    assert max(abs(a - b) / abs(b) for a, b in zip(got, want)) < 1e-10, (got, want)


def test_bench_devices_reports_throughput_and_efficiency():
    """``rosetta bench --devices 2``'s row: both step times measured through the same worker
    path, throughput and efficiency derived from them."""
    if "torch" not in BACKENDS:
        pytest.skip("torch not selected")
    from rosetta.conformance.bench.parallel import measure, table

    row = measure(_small("mlp"), "torch", 2, steps=3, warmup=1)
    assert row["devices"] == 2 and row["batch_size"] == 4
    assert row["step_ms_1"] > 0 and row["step_ms_n"] > 0
    assert row["examples_per_s_n"] == pytest.approx(4 / (row["step_ms_n"] / 1e3))
    assert row["scaling_efficiency"] == pytest.approx(
        row["examples_per_s_n"] / (2 * row["examples_per_s_1"]))
    assert "efficiency" in table([row])


def test_float32_teacher_forced_bn_cnn_passes_on_every_backend():
    """float32 (parallel_forced.py): the BatchNorm CNN's 2-device float32 steps, each from the
    float64 state, held against every backend's float64 step within the pooled one-device
    float32 noise: one device against 2, and every pair at 2, with the noise reported."""
    results, _ = run(_small("bn_cnn"), BACKENDS, devices=[1, 2], dtype="float32", steps=STEPS)
    assert len(results) == len(BACKENDS) + len(BACKENDS) * (len(BACKENDS) - 1) // 2
    for r in results:
        assert r.passed, f"{r.backend_a} vs {r.backend_b}: {r.where}"
        assert r.tier == "parallel" and r.dtype == "float32" and r.checked_steps == STEPS
        assert 0 <= r.worst_rel <= r.tolerance < 1e-3 and r.noise is not None
        assert {"loss", "grads", "params", "state", "opt", "eval"} <= set(r.per_category)
    assert results[0].backend_b.endswith("cpux2/float32")


# the float32 traps: model, trap, backend, the blamed category and node
TRAPS32 = [("bn_cnn", "replica_batchnorm", "torch", "state", "bn"),
           ("mlp", "summed_gradients", "jax", "grads", None)]


@pytest.mark.parametrize("model,trap,backend,category,node", TRAPS32,
                         ids=[f"{c[2]}-{c[1]}" for c in TRAPS32])
def test_float32_teacher_forced_traps_fail(model, trap, backend, category, node):
    """A planted data-parallel trap fails the float32 parallel tier far above its noise bound
    and is blamed on the first step and the right tensor."""
    if backend not in BACKENDS:
        pytest.skip(f"{backend} not selected")
    results, _ = run(_small(model), [backend], devices=[1, 2], dtype="float32", steps=STEPS,
                     trap=trap)
    (r,) = results
    assert not r.passed and r.worst_rel > 100 * r.tolerance, r.where
    assert r.blame["step"] == 0 and r.blame["category"] == category, r.blame
    if node is not None:
        assert r.blame["node"] == node, r.blame
