"""The training loop of a run (``rosetta.training``): batches in the run's order through a
``Program``'s ``train_step``, and the parts the loop calls: saving checkpoints (``Saver``),
logging scalars (``rosetta.logs.RunLog``) and held-out evaluation (``rosetta.evaluation``).

``run_loop`` continues from the program's update ``plan.start``: the batch order is the one
``rosetta.data.batches`` gives for (seed, batch size) from update 0, so a run continued here
(``TrainedModel.fit``, a resume) draws exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from rosetta.data import batches, take
from rosetta.evaluation import check_finite, evaluate, first_non_finite
from rosetta.progress import Progress
from rosetta.spec import TrainSpec


def checkpoint_spec(spec: TrainSpec) -> TrainSpec:
    """The spec a checkpoint stores: data paths absolute (the checkpoint may move away from the
    spec file they were relative to)."""
    resolved = getattr(spec.data, "resolved", None)
    if resolved is None:
        return spec
    return TrainSpec(spec.model, spec.loss, spec.optimizer, resolved(), spec.steps, spec.seed,
                     spec.description)


def save_program(path, program, plan, *, framework: str, metrics: dict, losses: list):
    """Write ``program``'s parameters, state, optimizer slots and dropout stream as the neutral
    checkpoint ``path`` (``rosetta.checkpoint``), with the run's data position and losses."""
    from rosetta import checkpoint

    step = program.step
    per_epoch = plan.per_epoch
    return checkpoint.save(
        path, checkpoint_spec(plan.run_spec),
        params=program.export_params(), state=program.export_state(),
        optimizer=program.export_optimizer_state(), rng=program.export_rng_state(),
        step=step, dtype=plan.dtype, backend=plan.backend,
        record={"mode": program.mode, "framework": framework,
                "device": plan.device, "data": {"seed": plan.seed,
                                                "batch_size": plan.batch_size,
                                                "n_train": plan.n_train,
                                                "epoch": step // per_epoch,
                                                "batch": step % per_epoch},
                "metrics": metrics, "losses": losses,
                "preprocessing": plan.preprocessing or {},
                "precision": program.precision, "loss_scale": program.export_loss_scale()})


class Saver:
    """Checkpoints of a run into its run folder (``plan.save_root``): every ``save_every``
    updates and at the end, the ``keep`` newest kept. Without a folder (``plan.gathers``: a
    worker other than the main one, its state sharded) it only takes part in the exports'
    gathering, in the same order as the main worker's ``save_program``."""

    def __init__(self, program, plan, framework: str):
        self.program, self.plan, self.framework = program, plan, framework

    def save(self, metrics: dict, losses: list) -> None:
        from rosetta import checkpoint

        root = self.plan.save_root
        if root is None:  # a worker that only takes part in gathering sharded state
            self.program.export_params(), self.program.export_optimizer_state()
            return
        save_program(checkpoint.step_dir(root, self.program.step), self.program, self.plan,
                     framework=self.framework, metrics=metrics, losses=losses)
        checkpoint.prune(root, self.plan.keep)


@dataclass
class LoopResult:
    losses: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    first_step_seconds: float | None = None


def run_loop(program, plan, arrays, *, t0: float, history=(), saver: Saver | None = None,
             progress: bool = True, label: str = "") -> LoopResult:
    """``plan.steps`` updates of ``program`` from update ``plan.start`` on ``arrays``
    (``TrainArrays``); held-out metrics at the end (and every ``plan.eval_every``), scalars to
    ``plan.log``, checkpoints through ``saver``. ``t0`` is when the run began (the compile
    counts in ``seconds``); ``history`` the losses before ``plan.start`` (saved with them)."""
    spec = plan.spec
    start, steps = plan.start, plan.steps
    history = list(history)
    res = LoopResult()
    losses = res.losses
    bar = Progress(steps, label=label, enabled=progress, start=t0)   # one clock (t0)
    evaluated = None  # the update count at the last evaluation
    run_log = None
    if plan.log is not None:
        from rosetta.logs import RunLog

        run_log = RunLog(plan.log, quiet=not progress)
    try:
        order = itertools.islice(batches(plan.n_train, plan.batch_size, plan.seed, plan.end),
                                 start, None)
        for i, (epoch, idx) in enumerate(order):
            t = start + i
            x, y = take(arrays.x_train, idx), arrays.y_train[idx]
            scalars = {}
            if run_log is not None and t % plan.log_every == 0:
                _, grads = program.gradients(x, y)
                scalars["train/grad_norm"] = np.sqrt(sum(float(np.sum(np.square(g)))
                                                         for g in grads.values()))
            loss = program.train_step(x, y)
            if res.first_step_seconds is None:
                res.first_step_seconds = time.perf_counter() - t0
            losses.append(loss)
            if not np.isfinite(loss):
                bar.close(f"loss {loss}")
                raise FloatingPointError(f"loss became {loss} at update {t}"
                                         f"{first_non_finite(program, t)}")
            info = f"epoch {epoch} loss {loss:.4f}"
            if run_log is not None:
                scalars["train/loss"] = loss
                scalars["train/lr"] = float(spec.optimizer.learning_rate(t, np))
                run_log.scalars(t, scalars)
            if plan.eval_every and (t + 1) % plan.eval_every == 0:
                res.metrics = evaluate(program, spec, arrays.x_test, arrays.y_test)
                check_finite(program, res.metrics, t + 1)
                evaluated = t + 1
                if run_log is not None:  # after t + 1 updates
                    run_log.scalars(t + 1, {f"eval/{k}": v for k, v in res.metrics.items()})
                info += " held-out " + " ".join(f"{k} {v:.4f}" for k, v in res.metrics.items())
            if saver is not None and plan.save_every and (t + 1) % plan.save_every == 0 \
                    and i + 1 < steps:
                saver.save(res.metrics, history + losses)
            bar.update(i + 1, info)
        res.seconds = time.perf_counter() - t0
        if evaluated != plan.end:
            res.metrics = evaluate(program, spec, arrays.x_test, arrays.y_test)
            if run_log is not None:
                run_log.scalars(plan.end, {f"eval/{k}": v for k, v in res.metrics.items()})
        check_finite(program, res.metrics, plan.end)
        if saver is not None:
            saver.save(res.metrics, history + losses)
    finally:
        if run_log is not None:
            run_log.close()
    bar.close(" ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()), seconds=res.seconds)
    return res
