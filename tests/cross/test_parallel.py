"""The parallel tier (DESIGN sections 5 and 10) on CI's subset: mlp, the BatchNorm ResNet and the
transformer with dropout (injected masks), one device against 2 on every backend's own engine,
float64 within the exact bound; each planted data-parallel trap fails the tier and is blamed on
the right tensor; ``train(devices=2)`` saves a checkpoint another device count resumes.

Small cases prove the same rules as big ones: batch 4 (2 examples per replica), 2 steps. Each
N-device run starts worker processes (torch: 2 ranks; TensorFlow, JAX: one process with 2
devices), which costs seconds each: the runs are few.
"""

from __future__ import annotations

import pytest

from rosetta import models
from rosetta.conformance.parallel import run
from rosetta.train import train

from selection import BACKENDS

STEPS = 2


def _small(name, batch=4):
    spec = models.get(name)
    spec.data.batch_size = batch
    return spec


@pytest.mark.parametrize("model", ["mlp", "resnet", "transformer"])
def test_one_device_equals_two(model):
    spec = _small(model)
    results, trajs = run(spec, BACKENDS, devices=[1, 2], dtype="float64", steps=STEPS)
    pairs = len(BACKENDS) + len(BACKENDS) * (len(BACKENDS) - 1) // 2
    assert len(results) == pairs
    for r in results:
        assert r.passed, f"{r.backend_a} vs {r.backend_b}: {r.where}"
        assert r.worst_rel <= 1e-10 and r.tolerance == 1e-10 and r.tier == "parallel"
        assert r.checked_steps == STEPS
    two = [t for t in trajs if t.meta["devices"] == 2]
    assert sorted(t.meta["backend"] for t in two) == sorted(BACKENDS)
    if model == "resnet":  # the BatchNorm running statistics are compared
        assert any(k.endswith("/mean") or "mean" in k for k in two[0].state)
    if model == "transformer":
        assert two[0].meta["dropout"] == "inject"


TRAPS = [  # (backend, trap, model, blamed category, blamed node)
    ("torch", "summed_gradients", "mlp", "grads", None),
    ("tensorflow", "summed_gradients", "mlp", "grads", None),
    ("jax", "summed_gradients", "mlp", "grads", None),
    ("torch", "replica_batchnorm", "resnet", "state", "BatchNorm"),
    ("tensorflow", "replica_batchnorm", "resnet", "state", "BatchNorm"),
    ("jax", "same_dropout_mask", "transformer", "grads", None),
    ("torch", "same_dropout_mask", "transformer", "grads", None),
    ("tensorflow", "same_dropout_mask", "transformer", "grads", None),
]


@pytest.mark.parametrize("backend,trap,model,category,node", TRAPS,
                         ids=[f"{b}-{t}" for b, t, *_ in TRAPS])
def test_planted_trap_fails_and_is_blamed(backend, trap, model, category, node):
    if backend not in BACKENDS:
        pytest.skip(f"{backend} not selected (ROSETTA_TEST_BACKENDS)")
    results, _ = run(_small(model), [backend], devices=[1, 2], dtype="float64", steps=STEPS,
                     trap=trap)
    (r,) = results
    assert not r.passed
    assert r.worst_rel > 1e-6  # a semantic error, far above summation order
    assert r.blame["step"] == 0 and r.blame["category"] == category, r.blame
    if node is not None:  # a BatchNorm's running statistics
        ops = {n.name: n.op for n in models.get(model).model.nodes}
        assert ops[r.blame["node"]] == node, r.blame
