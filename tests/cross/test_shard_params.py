"""Sharded parameters and optimizer state (``--shard-params``; docs/guide/distributed.md):

* the parallel tier holds with them: torch FSDP2 and JAX ``NamedSharding`` on 2 devices against
  one device, float64 within the exact bound 1e-10, and the main worker holds about half of
  the parameter bytes (its shards);
* a sharded torch run's checkpoint is whole and canonical: it resumes on 1 JAX device equal to
  the uninterrupted run within 1e-10;
* TensorFlow and MXNet refuse it in one line naming the backend, before any framework runs
  (``Backend.shard_params``), as does one device.

Every multi-process run is bounded by ``rosetta.distributed.launch``'s timeout. Tiny mlp,
float64, batch 4, 2 steps.
"""

from __future__ import annotations

import numpy as np
import pytest

from rosetta import checkpoint, models
from rosetta.backend_registry import backend_class, backend_names
from rosetta.conformance.parallel import compare_runs, record_parallel, tier
from rosetta.conformance.runner import record
from rosetta.errors import BackendUnavailable, DataError
from rosetta.training import train

from selection import BACKENDS

SHARDING = [b for b in BACKENDS if backend_class(b).shard_params is not None]


def _mlp(steps=2):
    spec = models.get("mlp")
    spec.data.batch_size = 4
    spec.steps = steps
    return spec


@pytest.mark.parametrize("backend", SHARDING)
def test_the_parallel_tier_holds_sharded(backend):
    spec = _mlp()
    one = record(spec, backend, dtype="float64", steps=2)
    many = record_parallel(spec, backend, 2, dtype="float64", steps=2, shard_params=True)
    r = compare_runs(spec, one, many, tier("float64"), "float64", None, "inject")
    assert r.passed and r.worst_rel <= 1e-10 and r.checked_steps == 2, r.where
    whole = 8 * sum(int(np.prod(d.shape)) for d in spec.model.param_defs().values())
    held = many.meta["held_bytes"]["params"]
    for part in held if isinstance(held, list) else [held]:  # each JAX device, torch rank 0
        assert 0.45 * whole <= part <= 0.55 * whole, (part, whole)


def test_a_sharded_torch_checkpoint_resumes_on_one_jax_device(tmp_path):
    if not {"torch", "jax"} <= set(BACKENDS):
        pytest.skip("needs torch and jax")
    run = tmp_path / "run"
    train(_mlp(3), "torch", dtype="float64", devices=2, steps=2, shard_params=True,
          save=run, progress=False)
    saved = checkpoint.load(run)
    assert saved.step == 2 and sorted(saved.params) == sorted(_mlp().model.param_defs())
    on_jax = train(None, "jax", resume=run, steps=1, progress=False)
    straight = train(_mlp(3), "jax", dtype="float64", progress=False)["losses"]
    assert on_jax["start_step"] == 2
    assert abs(on_jax["losses"][0] - straight[2]) <= 1e-10 * abs(straight[2])


@pytest.mark.parametrize("backend", [b for b in backend_names()
                                     if backend_class(b).shard_params is None])
def test_backends_without_sharding_refuse_it_in_one_line(backend):
    with pytest.raises(BackendUnavailable, match=f"^{backend} cannot shard parameters "
                                                 f"\\(--shard-params\\): [^\\n]+$"):
        train(_mlp(), backend, devices=2, shard_params=True, progress=False)


def test_one_device_has_nothing_to_shard_over():
    with pytest.raises(DataError, match="--shard-params .* --devices N with N >= 2"):
        train(_mlp(), SHARDING[0] if SHARDING else "torch", shard_params=True, progress=False)


def test_the_docs_table_is_derived_from_the_backends():
    from pathlib import Path

    from rosetta.capabilities import row_markdown

    table = row_markdown("sharded parameters")
    for name in backend_names():
        cls = backend_class(name)
        row = next(ln for ln in table.splitlines() if ln.startswith(f"| {name} |"))
        assert ("refused: " in row) == (cls.shard_params is None), row
    page = Path(__file__).resolve().parents[2] / "docs" / "guide" / "distributed.md"
    assert "<!-- capability: sharded parameters -->" in page.read_text()
