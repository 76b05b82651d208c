"""The training loop, the same for every backend: neutral data and batches, a backend ``Program``."""

from __future__ import annotations

import time

import numpy as np

from rosetta.backend import DTYPES, normalize_device
from rosetta.backend_registry import get_backend
from rosetta.data import as_inputs, batches, cast_inputs, take
from rosetta.errors import BackendUnavailable, DataError
from rosetta.progress import Progress
from rosetta.spec import TrainSpec


def prepare_labels(spec: TrainSpec, y: np.ndarray) -> np.ndarray:
    return y.astype(np.int64) if spec.loss.label_kind == "int" else y.astype(np.float64)


def check_data(spec: TrainSpec, ds) -> None:
    """The dataset must fit the model's inputs and the loss's labels: say where it does not."""
    g = spec.model
    given = ds.input_shapes
    want = {i.name: tuple(i.shape) for i in g.inputs}
    if None in given:  # one unnamed array feeds a single-input model
        if len(want) != 1:
            raise DataError(f"dataset {ds.name!r} gives one input array; model {g.name!r} has "
                            f"inputs {list(want)}")
        given = {next(iter(want)): given[None]}
    if set(given) != set(want):
        raise DataError(f"dataset {ds.name!r} gives inputs {sorted(given)} but model {g.name!r} "
                        f"takes {sorted(want)}")
    for name, shape in want.items():
        if given[name] != shape:
            raise DataError(f"dataset {ds.name!r} gives input {name!r} of shape {given[name]} "
                            f"but model {g.name!r} expects {shape} (set the dataset arguments, "
                            f"e.g. layout='image' for digits as images)")
    out = g.output_type.shape
    if spec.loss.label_kind == "int":
        try:
            spec.loss.check_labels(ds.y_train, out[-1])
        except DataError as e:
            raise DataError(f"dataset {ds.name!r} does not fit model {g.name!r} "
                            f"({out[-1]} classes): {e}") from None
    elif tuple(ds.y_train.shape[1:]) != tuple(out):
        raise DataError(f"dataset {ds.name!r} gives targets of shape {ds.y_train.shape[1:]} but "
                        f"the model outputs {tuple(out)}")


def dataset_inputs(spec: TrainSpec, x, dtype: str) -> dict:
    """A dataset split's inputs as {input name: array}, floats in ``dtype``, ints as int64."""
    return cast_inputs(as_inputs(x, [i.name for i in spec.model.inputs]), dtype)


def evaluate(program, spec: TrainSpec, x: dict, y: np.ndarray, batch_size: int = 512):
    """Held-out loss and metrics, computed in NumPy from the backend's eval-mode outputs.
    ``x`` is {input name: array} (see ``dataset_inputs``)."""
    n = len(y)
    outs = [program.forward(take(x, slice(i, i + batch_size)), training=False)
            for i in range(0, n, batch_size)]
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
    n = ds.n_train
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
    x_train = dataset_inputs(spec, ds.x_train, dtype)
    y_train = prepare_labels(spec, ds.y_train)

    bar = Progress(steps, label=f"{spec.name} on {backend}", enabled=progress)
    losses = []
    first_step_seconds = None
    for i, (epoch, idx) in enumerate(batches(n, batch_size, seed, steps)):
        loss = program.train_step(take(x_train, idx), y_train[idx])
        if first_step_seconds is None:
            first_step_seconds = time.perf_counter() - t0
        losses.append(loss)
        if not np.isfinite(loss):
            bar.close(f"loss {loss}")
            raise FloatingPointError(f"loss became {loss} at step {i}")
        bar.update(i + 1, f"epoch {epoch} loss {loss:.4f}")
    train_seconds = time.perf_counter() - t0
    metrics = evaluate(program, spec, dataset_inputs(spec, ds.x_test, dtype),
                       prepare_labels(spec, ds.y_test))
    bar.close(" ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    sample = None
    if ds.vocab:  # a character language model: continue a held-out window
        from rosetta import text

        prompt = as_inputs(ds.x_test, [i.name for i in spec.model.inputs])
        sample = text.sample(program, spec.model, next(iter(prompt.values()))[0], 120, seed=seed)
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
        "sample": sample,
        "program": program,
    }
