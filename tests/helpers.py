"""Shared test helpers: thin names over the conformance oracle's sampling and references."""

from __future__ import annotations

import subprocess
import sys

from rosetta.backend_registry import get_backend
from rosetta.conformance.oracle import sample_inputs, sample_targets

import rosetta as rs


def spec_for(model, loss=None, optimizer=None, dataset="images", steps=5, seed=0):
    return rs.TrainSpec(model=model, loss=loss or rs.losses.MeanSquaredError(),
                        optimizer=optimizer or rs.optim.SGD(0.1), data=rs.DataSpec(dataset),
                        steps=steps, seed=seed)


def compile_spec(spec, backend, dtype="float64"):
    return get_backend(backend).compile(spec, dtype=dtype, device="cpu")


def random_inputs(graph, batch, seed=0, int_high=None):
    return sample_inputs(graph, batch, seed, int_high)


def random_targets(spec, batch, seed=1):
    return sample_targets(spec, batch, seed)


FRAMEWORKS = {"torch", "tensorflow", "jax", "flax", "optax", "keras", "mxnet"}


def imported_after(code: str) -> set[str]:
    probe = (code + "\nimport sys\n"
             f"print('IMPORTED:', *sorted({FRAMEWORKS!r} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.strip().splitlines()[-1].split()[1:])
