"""The training loop, the same for every backend: neutral data and batches, a backend ``Program``."""

from __future__ import annotations

import time

import numpy as np

from rosetta.backend import DTYPES, normalize_device
from rosetta.backend_registry import get_backend
from rosetta.data import batches
from rosetta.errors import BackendUnavailable, DataError
from rosetta.progress import Progress
from rosetta.spec import TrainSpec


def prepare_labels(spec: TrainSpec, y: np.ndarray) -> np.ndarray:
    return y.astype(np.int64) if spec.loss.label_kind == "int" else y.astype(np.float64)


def check_data(spec: TrainSpec, ds) -> None:
    """The dataset must fit the model's input and the loss's labels: say where it does not."""
    g = spec.model
    if len(g.inputs) != 1:
        raise DataError(f"built-in datasets feed one input; model {g.name!r} has "
                        f"{[i.name for i in g.inputs]}")
    want = g.inputs[0].shape
    if ds.input_shape != tuple(want):
        raise DataError(f"dataset {ds.name!r} gives inputs of shape {ds.input_shape} but model "
                        f"{g.name!r} expects {tuple(want)} (set the dataset arguments, e.g. "
                        f"layout='image' for digits as images)")
    out = g.output_type.shape
    if spec.loss.label_kind == "int":
        n_classes = out[-1]
        if ds.y_train.max() >= n_classes:
            raise DataError(f"dataset {ds.name!r} has labels up to {int(ds.y_train.max())} but "
                            f"the model outputs {n_classes} classes")
    elif tuple(ds.y_train.shape[1:]) != tuple(out):
        raise DataError(f"dataset {ds.name!r} gives targets of shape {ds.y_train.shape[1:]} but "
                        f"the model outputs {tuple(out)}")


def evaluate(program, spec: TrainSpec, x: np.ndarray, y: np.ndarray, batch_size: int = 512):
    """Held-out loss and metrics, computed in NumPy from the backend's eval-mode outputs."""
    name = spec.model.inputs[0].name
    outs = [program.forward({name: x[i:i + batch_size]}, training=False)
            for i in range(0, len(x), batch_size)]
    out = np.concatenate(outs).astype(np.float64)
    metrics = {"loss": spec.loss.reference(out, y)}
    metrics.update(spec.loss.metrics(out, y))
    return metrics


def train(spec: TrainSpec, backend: str, *, device: str = "cpu", dtype: str = "float32",
          steps: int | None = None, epochs: int | None = None, batch_size: int | None = None,
          seed: int | None = None, progress: bool = True, mode: str | None = None) -> dict:
    """Train ``spec`` on ``backend`` (its step compiled in ``mode``, default the backend's first);
    returns the run record printed by ``rosetta train --json``."""
    if dtype not in DTYPES:
        raise BackendUnavailable(f"dtype must be one of {', '.join(DTYPES)}, found {dtype!r}")
    device = normalize_device(device)
    seed = spec.seed if seed is None else seed
    batch_size = batch_size or spec.data.batch_size
    ds = spec.data.load()
    check_data(spec, ds)
    n = len(ds.x_train)
    if batch_size > n:
        raise DataError(f"--batch-size {batch_size} exceeds the {n} training examples")
    if epochs is not None:
        steps = epochs * (n // batch_size)
    steps = steps or spec.steps

    be = get_backend(backend)
    run_spec = TrainSpec(spec.model, spec.loss, spec.optimizer, spec.data, steps, seed,
                         spec.description)
    t0 = time.perf_counter()
    program = be.compile(run_spec, dtype=dtype, device=device, mode=mode)
    name = spec.model.inputs[0].name
    x_train = ds.x_train.astype(dtype)
    y_train = prepare_labels(spec, ds.y_train)

    bar = Progress(steps, label=f"{spec.name} on {backend}", enabled=progress)
    losses = []
    first_step_seconds = None
    for i, (epoch, idx) in enumerate(batches(n, batch_size, seed, steps)):
        loss = program.train_step({name: x_train[idx]}, y_train[idx])
        if first_step_seconds is None:
            first_step_seconds = time.perf_counter() - t0
        losses.append(loss)
        if not np.isfinite(loss):
            bar.close(f"loss {loss}")
            raise FloatingPointError(f"loss became {loss} at step {i}")
        bar.update(i + 1, f"epoch {epoch} loss {loss:.4f}")
    train_seconds = time.perf_counter() - t0
    metrics = evaluate(program, spec, ds.x_test.astype(dtype), prepare_labels(spec, ds.y_test))
    bar.close(" ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return {
        "model": spec.name,
        "backend": backend,
        "mode": program.mode,
        "framework": be.version(),
        "device": device,
        "dtype": dtype,
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "losses": [float(v) for v in losses],
        "final_loss": float(losses[-1]),
        "metrics": metrics,
        "seconds": train_seconds,
        "first_step_seconds": first_step_seconds,
        "program": program,
    }
