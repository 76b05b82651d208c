"""The training loop, the same for every backend: neutral data and batches, a backend ``Program``;
checkpoints, resume, logs and evaluation during training."""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np

from rosetta.backend import DTYPES, normalize_device
from rosetta.backend_registry import get_backend
from rosetta.data import as_inputs, batches, cast_inputs, take
from rosetta.datacheck import check_data  # noqa: F401  (re-exported for its callers)
from rosetta.display import RunRecord
from rosetta.errors import BackendUnavailable, CheckpointError, DataError
from rosetta.files import writable_folder
from rosetta.progress import Progress
from rosetta.spec import TrainSpec
from rosetta import validate


def prepare_labels(spec: TrainSpec, y: np.ndarray) -> np.ndarray:
    return y.astype(np.int64) if spec.loss.label_kind == "int" else y.astype(np.float64)


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


def _resume_settings(ckpt, seed, batch_size):
    """Seed and batch size of a resumed run: the checkpoint's (the data order continues)."""
    data = ckpt.record.get("data", {})
    for name, given in (("seed", seed), ("batch_size", batch_size)):
        kept = data.get(name)
        if given is not None and kept is not None and given != kept:
            flag = "--" + name.replace("_", "-")
            raise CheckpointError(f"{ckpt.path}: trained with {name} {kept}; resuming with "
                                  f"{flag} {given} would change the data order (leave "
                                  f"{flag} out)")
    return data.get("seed", seed), data.get("batch_size", batch_size)



def _positive(name, v, allow_none=True):
    if v is None and allow_none:
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DataError(f"{name} must be a positive integer, found {v!r}")
    return v


def train(spec: TrainSpec | None, backend: str, *, device: str = "cpu", dtype: str | None = None,
          steps: int | None = None, epochs: int | None = None, batch_size: int | None = None,
          seed: int | None = None, progress: bool = True, mode: str | None = None,
          save=None, save_every: int | None = None, keep: int | None = None, resume=None,
          log=None, log_every: int = 10, eval_every: int | None = None,
          remeasure: bool = False, devices: int = 1, batchnorm: str = "global",
          ignore_memory: bool = False) -> dict:
    """Train ``spec`` on ``backend`` (its step compiled in ``mode``, default the backend's first);
    returns the run record printed by ``rosetta train --json``.

    ``dtype`` defaults to float32 (a resumed run: the checkpoint's). ``save`` is a run folder:
    a checkpoint every ``save_every`` updates and at the end (``rosetta.checkpoint``), the
    ``keep`` newest kept. ``resume`` (a checkpoint or run folder) continues a run on any backend:
    its spec (``spec`` may be None; given, it must be the same model, loss and optimizer, and
    its data replaces the checkpoint's), parameters, state, optimizer state, update count and
    data position; ``steps`` then counts the updates to add (default: the rest of the spec's).
    ``log`` writes ``rosetta.logs`` scalars (gradient norm every ``log_every`` updates);
    ``eval_every`` evaluates on the held-out data during training. A run whose estimated memory
    exceeds the memory available is refused up front (``rosetta.validate.check_memory``) unless
    ``ignore_memory``. A run that makes a loss, parameter or held-out metric non-finite raises
    ``FloatingPointError`` naming the update and the first non-finite tensor (exit status 1).

    ``backend="auto"`` trains on the fastest backend for this spec on this machine among those
    that pass a short float64 check (``rosetta.conformance.auto``; the choice is cached,
    ``remeasure`` times again); the record's ``auto`` says what was measured.

    ``devices`` > 1 trains data-parallel on the backend's own engine (``rosetta.distributed``,
    DESIGN section 10): worker processes are started here (or, under torchrun / a TF_CONFIG / a
    JAX coordinator, this process is one of them), the global batch is split over the devices,
    and the record (without ``program``) comes from the main process, which alone prints,
    logs and saves. ``batchnorm="replica"`` normalises with each replica's own statistics.
    """
    from rosetta import checkpoint, distributed

    if devices != 1 or batchnorm != "global":
        distributed.check_devices(devices)
        distributed.check_batchnorm(batchnorm)
        if backend == "auto":
            raise DataError("--backend auto chooses among backends on one device; name the "
                            "backend to train on several devices")
        if not distributed.in_worker(backend):
            return distributed.train_in_workers(
                spec, backend, devices=devices, batchnorm=batchnorm, device=device,
                kwargs=dict(dtype=dtype, steps=steps, epochs=epochs, batch_size=batch_size,
                            seed=seed, progress=progress, mode=mode, save=save,
                            save_every=save_every, keep=keep, resume=resume, log=log,
                            log_every=log_every, eval_every=eval_every,
                            ignore_memory=ignore_memory))
    main = distributed.is_main_process(backend) if devices > 1 else True
    progress = progress and main

    for name, v in (("save_every", save_every), ("keep", keep), ("eval_every", eval_every),
                    ("steps", steps), ("epochs", epochs), ("batch_size", batch_size)):
        _positive(name, v)
    _positive("log_every", log_every, allow_none=False)
    if dtype is not None and dtype not in DTYPES:
        raise BackendUnavailable(f"dtype must be one of {', '.join(DTYPES)}, found {dtype!r}")
    if (save_every or keep) and save is None:
        raise DataError("save_every and keep need a folder to save in (--save DIR)")
    if steps is not None and epochs is not None:
        raise DataError("give steps or epochs, not both")
    device = normalize_device(device)

    ckpt = None
    if resume is not None:
        ckpt = checkpoint.load(resume, spec)
        spec = spec or ckpt.spec
        seed, batch_size = _resume_settings(ckpt, seed, batch_size)
    if spec is None:
        raise DataError("train needs a spec, or a checkpoint to resume (resume=DIR)")
    dtype = dtype or (ckpt.dtype if ckpt else "float32")
    seed = spec.seed if seed is None else seed
    batch_size = batch_size or spec.data.batch_size
    start = ckpt.step if ckpt else 0
    validate.check_seed(seed, "seed")
    validate.check_dtype_range(spec, dtype)
    validate.check_memory(spec, batch_size, dtype, ignore=ignore_memory)  # before any data

    ds = spec.data.load(model=spec.model)
    check_data(spec, ds, batch_size)
    n = ds.n_train
    per_epoch = n // batch_size
    if ckpt and ckpt.record.get("data", {}).get("n_train", n) != n:
        print(f"rosetta: note: {ckpt.path} was trained on {ckpt.record['data']['n_train']} "
              f"examples, this data has {n}: the batch order differs from the uninterrupted "
              f"run's", file=sys.stderr)
    if epochs is not None:
        steps = epochs * per_epoch
    if steps is None:
        steps = spec.steps - start
        if steps < 1:
            raise CheckpointError(f"{ckpt.path}: the run already made its {spec.steps} updates; "
                                  f"give the number of updates to add (--steps N)")
    if devices > 1:
        distributed.check_devices(devices, batch_size)
    if not main:  # the main process alone saves and logs
        save = log = None
    save_root = writable_folder(save, "--save", CheckpointError) if save is not None else None
    if log is not None:
        from rosetta.logs import RunLog, check_log_dir

        check_log_dir(log)

    auto = None
    if backend == "auto":  # the guard and the timing are the conformance suite's (lazily)
        from rosetta.conformance.auto import choose

        say = (lambda msg: print(msg, file=sys.stderr)) if progress else None
        auto = choose(spec, batch_size=batch_size, dtype=dtype, device=device,
                      remeasure=remeasure, log=say)
        print(auto["message"], file=sys.stderr)
        backend, mode = auto["backend"], mode or auto["mode"]
    be = get_backend(backend)
    validate.require_device([backend], device)
    run_spec = TrainSpec(spec.model, spec.loss, spec.optimizer, spec.data, start + steps, seed,
                         spec.description)
    t0 = time.perf_counter()
    if devices > 1:
        program = distributed.compile_program(backend, run_spec, devices=devices, dtype=dtype,
                                              device=device, mode=mode, batchnorm=batchnorm)
    else:
        program = be.compile(run_spec, dtype=dtype, device=device, mode=mode)
    if ckpt is not None:
        checkpoint.restore(program, ckpt)
    x_train = dataset_inputs(spec, ds.x_train, dtype)
    y_train = prepare_labels(spec, ds.y_train)
    x_test = dataset_inputs(spec, ds.x_test, dtype)
    y_test = prepare_labels(spec, ds.y_test)
    history = list(ckpt.record.get("losses", [])) if ckpt else []
    metrics = {}

    def save_checkpoint(step: int) -> None:
        checkpoint.save(
            checkpoint.step_dir(save_root, step), checkpoint_spec(run_spec),
            params=program.export_params(), state=program.export_state(),
            optimizer=program.export_optimizer_state(), rng=program.export_rng_state(),
            step=step, dtype=dtype, backend=backend,
            record={"mode": program.mode, "framework": be.version(),
                    "device": device, "data": {"seed": seed, "batch_size": batch_size,
                                               "n_train": n, "epoch": step // per_epoch,
                                               "batch": step % per_epoch},
                    "metrics": metrics, "losses": history + losses,
                    "preprocessing": ds.preprocessing_record()})
        checkpoint.prune(save_root, keep)

    label = f"{spec.name} on {backend}" + (f" from update {start}" if start else "")
    bar = Progress(steps, label=label, enabled=progress, start=t0)   # one clock (t0)
    losses = []
    first_step_seconds = None
    evaluated = None  # the update count at the last evaluation
    run_log = RunLog(log, quiet=not progress) if log is not None else None
    try:
        order = itertools.islice(batches(n, batch_size, seed, start + steps), start, None)
        for i, (epoch, idx) in enumerate(order):
            t = start + i
            x, y = take(x_train, idx), y_train[idx]
            scalars = {}
            if run_log is not None and t % log_every == 0:
                _, grads = program.gradients(x, y)
                scalars["train/grad_norm"] = np.sqrt(sum(float(np.sum(np.square(g)))
                                                         for g in grads.values()))
            loss = program.train_step(x, y)
            if first_step_seconds is None:
                first_step_seconds = time.perf_counter() - t0
            losses.append(loss)
            if not np.isfinite(loss):
                bar.close(f"loss {loss}")
                raise FloatingPointError(f"loss became {loss} at update {t}"
                                         f"{_first_non_finite(program, t)}")
            info = f"epoch {epoch} loss {loss:.4f}"
            if run_log is not None:
                scalars["train/loss"] = loss
                scalars["train/lr"] = float(spec.optimizer.learning_rate(t, np))
                run_log.scalars(t, scalars)
            if eval_every and (t + 1) % eval_every == 0:
                metrics = evaluate(program, spec, x_test, y_test)
                check_finite(program, metrics, t + 1)
                evaluated = t + 1
                if run_log is not None:  # after t + 1 updates
                    run_log.scalars(t + 1, {f"eval/{k}": v for k, v in metrics.items()})
                info += " held-out " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            if save_root is not None and save_every and (t + 1) % save_every == 0 \
                    and i + 1 < steps:
                save_checkpoint(t + 1)
            bar.update(i + 1, info)
        train_seconds = time.perf_counter() - t0
        if evaluated != start + steps:
            metrics = evaluate(program, spec, x_test, y_test)
            if run_log is not None:
                run_log.scalars(start + steps, {f"eval/{k}": v for k, v in metrics.items()})
        check_finite(program, metrics, start + steps)
        if save_root is not None:
            save_checkpoint(start + steps)
    finally:
        if run_log is not None:
            run_log.close()
    bar.close(" ".join(f"{k} {v:.4f}" for k, v in metrics.items()), seconds=train_seconds)
    sample = None
    if ds.vocab:  # a character language model: continue a held-out window
        from rosetta import text

        prompt = as_inputs(ds.x_test, [i.name for i in spec.model.inputs])
        sample = text.sample(program, spec.model, next(iter(prompt.values()))[0], 120, seed=seed)
    return RunRecord({
        "model": spec.name,
        "backend": backend,
        "mode": program.mode,
        "framework": be.version(),
        "device": device,
        "devices": devices,
        "dtype": dtype,
        "steps": steps,
        "start_step": start,
        "batch_size": batch_size,
        "seed": seed,
        "losses": [float(v) for v in losses],
        "final_loss": float(losses[-1]),
        "metrics": metrics,
        "seconds": train_seconds,
        "first_step_seconds": first_step_seconds,
        "resumed_from": str(ckpt.path) if ckpt else None,
        "auto": None if auto is None else {k: auto[k] for k in ("times", "excluded", "cached")},
        "saved": str(checkpoint.step_dir(save_root, start + steps)) if save_root else None,
        "sample": sample,
        "program": program,
    })


def _ordered(program, tensors: dict) -> list:
    """The names of ``tensors`` in the model's graph order (the same on every backend)."""
    g = program.spec.model
    order = {k: i for i, k in enumerate([*g.param_defs(), *g.state_defs()])}
    return sorted(tensors, key=lambda k: order.get(k, len(order)))


def _first_non_finite(program, t: int) -> str:
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


def checkpoint_spec(spec: TrainSpec) -> TrainSpec:
    """The spec a checkpoint stores: data paths absolute (the checkpoint may move away from the
    spec file they were relative to)."""
    resolved = getattr(spec.data, "resolved", None)
    if resolved is None:
        return spec
    return TrainSpec(spec.model, spec.loss, spec.optimizer, resolved(), spec.steps, spec.seed,
                     spec.description)
