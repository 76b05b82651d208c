"""Training a spec on a backend, the same for every backend, in the stages of a run:

1. resolve the spec, the settings and the data (``rosetta.run_plan.plan_run``);
2. dispatch to worker processes for a data-parallel run (``rosetta.distributed``);
3. build the program: choose the backend (``choose_backend``: ``auto``), compile and restore
   a checkpoint (``build_program``);
4. the loop (``rosetta.run_loop.run_loop``), which calls saving (``Saver``), logging
   (``rosetta.logs.RunLog``) and held-out evaluation (``rosetta.evaluation``);

then the run record (``run_record``). ``train`` composes them (stages 3 and 4:
``run_planned``); the Python API
(``rosetta.trained``) and the importers reuse each stage.
"""

from __future__ import annotations

import sys
import time

from rosetta.backend_registry import get_backend
from rosetta.datacheck import check_data  # noqa: F401  (re-exported for its callers)
from rosetta.display import RunRecord
from rosetta.errors import DataError
from rosetta.precision import resolve as resolve_precision
from rosetta.evaluation import (  # noqa: F401  (re-exported for their callers)
    check_finite, dataset_inputs, evaluate, prepare_labels,
)
from rosetta.run_loop import Saver, checkpoint_spec, run_loop  # noqa: F401
from rosetta.run_plan import RunPlan, TrainArrays, plan_run
from rosetta.spec import TrainSpec
from rosetta import validate


def train(spec: TrainSpec | None, backend: str, *, device: str = "cpu", dtype: str | None = None,
          steps: int | None = None, epochs: int | None = None, batch_size: int | None = None,
          seed: int | None = None, progress: bool = True, mode: str | None = None,
          save=None, save_every: int | None = None, keep: int | None = None, resume=None,
          log=None, log_every: int = 10, eval_every: int | None = None,
          remeasure: bool = False, devices: int = 1, batchnorm: str = "global",
          ignore_memory: bool = False, precision: str | None = None,
          shard_params: bool = False) -> dict:
    """Train ``spec`` on ``backend`` (its step compiled in ``mode``, default the backend's first);
    returns the run record printed by ``rosetta train --json``.

    ``precision`` is the precision policy (``rosetta.precision``: float32, float64, bfloat16,
    mixed_bfloat16, mixed_float16); ``dtype`` is its alias (float32 or float64); the default is
    float32 (a resumed run: the checkpoint's). ``save`` is a run folder:
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
    docs/design.md section 10): worker processes are started here (or, under torchrun / a TF_CONFIG / a
    JAX coordinator, this process is one of them), the global batch is split over the devices,
    and the record (without ``program``) comes from the main process, which alone prints,
    logs and saves. ``batchnorm="replica"`` normalises with each replica's own statistics.
    ``shard_params`` shards parameters and optimizer state over the devices with the engine's
    own machinery (torch FSDP2, JAX ``NamedSharding``; ``Backend.shard_params``, refused in one
    line elsewhere); checkpoints are still whole and canonical (gathered on save).
    """
    from rosetta import distributed

    if devices != 1 or batchnorm != "global" or shard_params:  # the workers plan again
        distributed.check_devices(devices)
        distributed.check_batchnorm(batchnorm)
        if backend == "auto":
            raise DataError("--backend auto chooses among backends on one device; name the "
                            "backend to train on several devices")
        if shard_params:
            distributed.check_shard_params(backend, devices)
        asked = resolve_precision(dtype, precision, default=None)
        if devices > 1 and asked is not None:  # (a resumed run's own: its workers check it)
            distributed.check_precision(backend, asked)
        if not distributed.in_worker(backend):
            return distributed.train_in_workers(
                spec, backend, devices=devices, batchnorm=batchnorm, device=device,
                shard_params=shard_params,
                kwargs=dict(dtype=dtype, steps=steps, epochs=epochs, batch_size=batch_size,
                            seed=seed, progress=progress, mode=mode, save=save,
                            save_every=save_every, keep=keep, resume=resume, log=log,
                            log_every=log_every, eval_every=eval_every,
                            ignore_memory=ignore_memory, precision=precision))
    main = True
    if devices > 1:  # a worker: join the world before anything touches the framework
        distributed.join(backend, devices, device)
        main = distributed.is_main_process(backend)
    progress = progress and main

    plan, ds = plan_run(spec, backend, device=device, dtype=dtype, steps=steps, epochs=epochs,
                        batch_size=batch_size, seed=seed, mode=mode, save=save,
                        save_every=save_every, keep=keep, resume=resume, log=log,
                        log_every=log_every, eval_every=eval_every,
                        ignore_memory=ignore_memory, devices=devices, batchnorm=batchnorm,
                        main=main, precision=precision, shard_params=shard_params)
    try:
        record = run_planned(plan, ds, progress=progress, remeasure=remeasure).record
    except Exception as e:
        if devices > 1 and distributed.world_from_env(backend)[1] > 1:
            distributed.abandon(backend, e)  # a lost peer: one line, this worker ends
        raise
    if devices > 1 and distributed.launched(backend) and not distributed.spawned():
        distributed.leave(backend)  # torchrun / TF_CONFIG / JAX coordinator: a clean end
    return record


class Run:
    """A run made by ``run_planned``: its record, plan, arrays, framework versions and every
    loss since update 0 (a resumed run's earlier ones included)."""

    def __init__(self, record, plan, arrays, framework, history):
        self.record, self.plan, self.arrays = record, plan, arrays
        self.framework, self.history = framework, history


def run_planned(plan: RunPlan, ds, *, progress: bool = True, remeasure: bool = False) -> Run:
    """Stages 3 and 4 of a planned run (``plan_run``): choose the backend, build the program,
    run the loop (saving through ``Saver`` when the plan has a run folder), make the record."""
    be, auto = choose_backend(plan, progress=progress, remeasure=remeasure)
    t0 = time.perf_counter()  # the run's seconds count the compile
    program = build_program(plan, be)
    framework = be.version()
    arrays = TrainArrays.of(plan.spec, ds, plan.dtype)
    history = list(plan.ckpt.record.get("losses", [])) if plan.ckpt else []
    saver = (Saver(program, plan, framework)
             if plan.save_root is not None or plan.gathers else None)
    label = f"{plan.spec.name} on {plan.backend}" + (f" from update {plan.start}"
                                                      if plan.start else "")
    res = run_loop(program, plan, arrays, t0=t0, history=history, saver=saver,
                   progress=progress, label=label)
    sample = None
    if ds.vocab:  # a character language model: continue a held-out window
        sample = text_sample(program, plan, ds)
    record = run_record(plan, program, framework, res, auto=auto, sample=sample)
    return Run(record, plan, arrays, framework, history + record["losses"])


def choose_backend(plan: RunPlan, *, progress: bool = True, remeasure: bool = False):
    """(the ``Backend``, the auto record or None): ``plan.backend`` or, for ``auto``, the one
    ``rosetta.conformance.auto`` chooses (it sets ``plan.backend`` and ``plan.mode``); the
    device checked."""
    auto = None
    if plan.backend == "auto":  # the guard and the timing are the conformance suite's (lazily)
        from rosetta.conformance.auto import choose

        say = (lambda msg: print(msg, file=sys.stderr)) if progress else None
        auto = choose(plan.spec, batch_size=plan.batch_size, dtype=plan.dtype,
                      device=plan.device, remeasure=remeasure, log=say)
        print(auto["message"], file=sys.stderr)
        plan.backend, plan.mode = auto["backend"], plan.mode or auto["mode"]
    be = get_backend(plan.backend)
    validate.require_device([plan.backend], plan.device)
    return be, auto


def build_program(plan: RunPlan, be):
    """``plan.run_spec`` compiled on the backend ``be`` (data-parallel for ``plan.devices`` >
    1), with the checkpoint ``plan.ckpt`` restored into it."""
    from rosetta import checkpoint, distributed

    if plan.devices > 1:
        program = distributed.compile_program(plan.backend, plan.run_spec,
                                              devices=plan.devices, dtype=plan.precision,
                                              device=plan.device, mode=plan.mode,
                                              batchnorm=plan.batchnorm,
                                              shard_params=plan.shard_params)
    else:
        program = be.compile(plan.run_spec, dtype=plan.precision, device=plan.device,
                             mode=plan.mode)
    if plan.ckpt is not None:
        checkpoint.restore(program, plan.ckpt)
    return program


def text_sample(program, plan: RunPlan, ds) -> str:
    """A character language model's continuation of a held-out window (120 characters)."""
    from rosetta import text
    from rosetta.data import as_inputs

    prompt = as_inputs(ds.x_test, [i.name for i in plan.spec.model.inputs])
    return text.sample(program, plan.spec.model, next(iter(prompt.values()))[0], 120,
                       seed=plan.seed)


def run_record(plan: RunPlan, program, framework: str, res, *, auto=None, sample=None):
    """The record ``train`` returns (``rosetta train --json`` prints it, ``program`` aside)."""
    from rosetta import checkpoint

    return RunRecord({
        "model": plan.spec.name,
        "backend": plan.backend,
        "mode": program.mode,
        "framework": framework,
        "device": plan.device,
        "devices": plan.devices,
        "dtype": plan.dtype,
        "precision": plan.precision,
        "steps": plan.steps,
        "start_step": plan.start,
        "batch_size": plan.batch_size,
        "seed": plan.seed,
        "losses": [float(v) for v in res.losses],
        "final_loss": float(res.losses[-1]),
        "metrics": res.metrics,
        "seconds": res.seconds,
        "first_step_seconds": res.first_step_seconds,
        "resumed_from": str(plan.ckpt.path) if plan.ckpt else None,
        "auto": None if auto is None else {k: auto[k] for k in ("times", "excluded", "cached")},
        # the update count names the checkpoint: a mixed_float16 step skipped on a non-finite
        # gradient used its batch but made no update (rosetta.precision.LossScale)
        "saved": (str(checkpoint.step_dir(plan.save_root, program.step)) if plan.save_root
                  else None),
        "sample": sample,
        "program": program,
    })
