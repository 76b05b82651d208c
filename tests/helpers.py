"""Shared test helpers: building small specs and programs, finite differences."""

from __future__ import annotations

import numpy as np

import rosetta as rs
from rosetta.backend_registry import get_backend


def spec_for(model, loss=None, optimizer=None, dataset="images", steps=5, seed=0):
    return rs.TrainSpec(model=model, loss=loss or rs.losses.MeanSquaredError(),
                        optimizer=optimizer or rs.optim.SGD(0.1), data=rs.DataSpec(dataset),
                        steps=steps, seed=seed)


def compile_spec(spec, backend, dtype="float64"):
    return get_backend(backend).compile(spec, dtype=dtype, device="cpu")


def random_inputs(graph, batch, seed=0, int_high=None):
    rng = np.random.default_rng(seed)
    out = {}
    for i in graph.inputs:
        if i.kind == "int":
            out[i.name] = rng.integers(0, int_high or 5, (batch, *i.shape)).astype(np.int64)
        else:
            out[i.name] = rng.standard_normal((batch, *i.shape))
    return out


def random_targets(spec, batch, seed=1):
    rng = np.random.default_rng(seed)
    out = spec.model.output_type.shape
    if spec.loss.label_kind == "int":
        return rng.integers(0, out[-1], (batch, *out[:-1])).astype(np.int64)
    if spec.loss.kind == "binary_cross_entropy":
        return (rng.random((batch, *out)) > 0.5).astype(np.float64)
    return rng.standard_normal((batch, *out))


def reference_loss(spec, params, inputs, labels, state=None):
    out = spec.model.reference_forward(params, inputs, state=dict(state or spec.model.init_state()),
                                       training=True)
    return spec.loss.reference(out, labels)


def finite_difference(spec, params, inputs, labels, path, h=1e-6, max_entries=12, seed=0):
    """Central differences of the NumPy reference loss for some entries of ``params[path]``."""
    p = params[path]
    rng = np.random.default_rng(seed)
    flat = rng.permutation(p.size)[:max_entries]
    idx = [np.unravel_index(int(i), p.shape) for i in flat]
    grads = []
    for i in idx:
        up = {k: v.copy() for k, v in params.items()}
        dn = {k: v.copy() for k, v in params.items()}
        up[path][i] += h
        dn[path][i] -= h
        grads.append((reference_loss(spec, up, inputs, labels)
                      - reference_loss(spec, dn, inputs, labels)) / (2 * h))
    return idx, np.array(grads)
