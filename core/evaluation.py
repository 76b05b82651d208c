"""Held-out evaluation and the finiteness checks of a run: the parts of the training loop that
read a ``Program``'s outputs and tensors (``rosetta.training``, ``rosetta.trained``)."""

from __future__ import annotations

import numpy as np

from rosetta.data import as_inputs, cast_inputs, take
from rosetta.spec import TrainSpec


def prepare_labels(spec: TrainSpec, y: np.ndarray) -> np.ndarray:
    """A dataset split's labels as the loss takes them: int64 class ids or float64 targets."""
    return y.astype(np.int64) if spec.loss.label_kind == "int" else y.astype(np.float64)


def dataset_inputs(spec: TrainSpec, x, dtype: str) -> dict:
    """A dataset split's inputs as {input name: array}, floats in ``dtype``, ints as int64."""
    return cast_inputs(as_inputs(x, [i.name for i in spec.model.inputs]), dtype)


def outputs(program, x: dict, batch_size: int = 512) -> np.ndarray:
    """The eval-mode outputs of ``program`` on {input name: array}, ``batch_size`` rows at a
    time, concatenated."""
    n = len(next(iter(x.values())))
    return np.concatenate([program.forward(take(x, slice(i, i + batch_size)), training=False)
                           for i in range(0, n, batch_size)])


def evaluate(program, spec: TrainSpec, x: dict, y: np.ndarray, batch_size: int = 512):
    """Held-out loss and metrics, computed in NumPy from the backend's eval-mode outputs.
    ``x`` is {input name: array} (see ``dataset_inputs``)."""
    out = outputs(program, x, batch_size).astype(np.float64)
    metrics = {"loss": spec.loss.reference(out, y)}
    metrics.update(spec.loss.metrics(out, y))
    return metrics


def _ordered(program, tensors: dict) -> list:
    """The names of ``tensors`` in the model's graph order (the same on every backend)."""
    g = program.spec.model
    order = {k: i for i, k in enumerate([*g.param_defs(), *g.state_defs()])}
    return sorted(tensors, key=lambda k: order.get(k, len(order)))


def first_non_finite(program, t: int) -> str:
    """Where a non-finite loss at update ``t`` came from: the first non-finite parameter before
    that update (made by update t - 1), or none (the forward pass itself overflowed)."""
    params = program.export_params()
    bad = next((k for k in _ordered(program, params) if not np.all(np.isfinite(params[k]))),
               None)
    if bad is not None:
        return f": parameter {bad!r} was already non-finite (made so by update {t - 1})"
    return " from finite parameters (the forward pass or the loss overflowed)"


def check_finite(program, metrics: dict, step: int) -> None:
    """A run whose last update left a non-finite parameter, or whose held-out metrics are not
    finite, failed (exit 1), whatever its losses said: name the first such tensor or metric."""
    tensors = [("parameter", program.export_params()), ("model state", program.export_state())]
    bad = next(((what, k) for what, d in tensors for k in _ordered(program, d)
                if not np.all(np.isfinite(d[k]))), None)
    if bad is not None:
        raise FloatingPointError(f"{bad[0]} {bad[1]!r} is not finite after update {step - 1}")
    bad = next((k for k, v in metrics.items() if not np.isfinite(v)), None)
    if bad is not None:
        raise FloatingPointError(f"held-out {bad} is {metrics[bad]} after {step} updates")
