"""The first stage of a run: resolve the spec, the settings and the data (``rosetta.training``).

``plan_run`` checks every setting, reads a checkpoint to resume, loads and checks the data, and
returns a ``RunPlan`` (what to run: the spec, dtype, seed, batch size, first update and number of
updates, where to save and log) and the ``Dataset``; nothing of a framework is imported.
``TrainArrays.of`` turns the dataset into the arrays the loop and the evaluation read.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rosetta import validate
from rosetta.backend import normalize_device
from rosetta.datacheck import check_data
from rosetta.errors import BackendUnavailable, CheckpointError, DataError
from rosetta.evaluation import dataset_inputs, prepare_labels
from rosetta.files import writable_folder
from rosetta.precision import PRECISIONS, policy, resolve as resolve_precision
from rosetta.spec import TrainSpec


@dataclass
class RunPlan:
    """What one run trains: resolved from the arguments of ``train`` and a checkpoint."""

    spec: TrainSpec           # the spec whose data is trained on
    backend: str              # a backend name, or "auto" until ``build_program`` chooses
    device: str
    dtype: str
    seed: int
    batch_size: int
    start: int                # the first update's number (a resumed run: the checkpoint's step)
    steps: int                # updates to make
    n_train: int
    mode: str | None = None
    ckpt: object = None       # the rosetta.checkpoint.Checkpoint resumed, or None
    save_root: Path | None = None
    save_every: int | None = None
    keep: int | None = None
    log: object = None
    log_every: int = 10
    eval_every: int | None = None
    devices: int = 1
    batchnorm: str = "global"
    shard_params: bool = False  # parameters and optimizer state sharded over the devices
    # a worker other than the main one whose exports are collectives (sharded state): it takes
    # part in every checkpoint's gathering, and the main worker alone writes it
    gathers: bool = False
    preprocessing: dict | None = None  # what the data source applied (rosetta.preprocessing)
    precision: str | None = None  # the policy (rosetta.precision); dtype is its host type

    def __post_init__(self):
        self.precision = self.precision or self.dtype

    @property
    def per_epoch(self) -> int:
        return self.n_train // self.batch_size

    @property
    def end(self) -> int:
        """The update count after the run."""
        return self.start + self.steps

    @property
    def run_spec(self) -> TrainSpec:
        """The spec compiled and saved: ``steps`` is the update count the run ends at (the
        spec's own for a model at update 0: a spec makes at least one)."""
        s = self.spec
        return TrainSpec(s.model, s.loss, s.optimizer, s.data, self.end or s.steps, self.seed,
                         s.description)

    def then(self, steps: int) -> "RunPlan":
        """The plan of ``steps`` more updates after this run (``TrainedModel.fit``): the same
        data order; no run folder or log (``save`` writes a checkpoint when asked)."""
        return replace(self, start=self.end, steps=steps, ckpt=None, save_root=None, log=None,
                       save_every=None, keep=None)


@dataclass
class TrainArrays:
    """A dataset's splits as the loop and the evaluation read them."""

    x_train: dict
    y_train: np.ndarray
    x_test: dict
    y_test: np.ndarray

    @classmethod
    def of(cls, spec: TrainSpec, ds, dtype: str) -> "TrainArrays":
        return cls(dataset_inputs(spec, ds.x_train, dtype), prepare_labels(spec, ds.y_train),
                   dataset_inputs(spec, ds.x_test, dtype), prepare_labels(spec, ds.y_test))


def positive(name, v, allow_none=True):
    if v is None and allow_none:
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise DataError(f"{name} must be a positive integer, found {v!r}")
    return v


def resumes_itself(resume, save) -> bool:
    """``--save DIR --resume DIR``: the same command starts the run and, after a restart (a
    launcher's ``--max-restarts``, a job restarted by its scheduler), continues it from the
    newest checkpoint in DIR; its ``--steps`` / ``--epochs`` are then the run's total."""
    if resume is None or save is None:
        return False
    return Path(resume).resolve() == Path(save).resolve()


def resume_settings(ckpt, seed, batch_size):
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


def check_settings(*, dtype, steps, epochs, batch_size, save, save_every, keep, log_every,
                   eval_every) -> None:
    """The settings of ``train`` that need nothing else to be checked."""
    for name, v in (("save_every", save_every), ("keep", keep), ("eval_every", eval_every),
                    ("steps", steps), ("epochs", epochs), ("batch_size", batch_size)):
        positive(name, v)
    positive("log_every", log_every, allow_none=False)
    if dtype is not None and dtype not in PRECISIONS:
        raise BackendUnavailable(f"dtype must be one of {', '.join(PRECISIONS)}, found {dtype!r}")
    if (save_every or keep) and save is None:
        raise DataError("save_every and keep need a folder to save in (--save DIR)")
    if steps is not None and epochs is not None:
        raise DataError("give steps or epochs, not both")


def plan_run(spec: TrainSpec | None, backend: str, *, device: str = "cpu",
             dtype: str | None = None, steps: int | None = None, epochs: int | None = None,
             batch_size: int | None = None, seed: int | None = None, mode: str | None = None,
             save=None, save_every: int | None = None, keep: int | None = None, resume=None,
             log=None, log_every: int = 10, eval_every: int | None = None,
             ignore_memory: bool = False, devices: int = 1, batchnorm: str = "global",
             main: bool = True, precision: str | None = None, shard_params: bool = False):
    """(``RunPlan``, ``Dataset``): every setting checked, the checkpoint to resume read and
    verified, the data loaded and checked against the spec (``rosetta.datacheck``), the save
    and log folders checked; see ``rosetta.training.train`` for the arguments."""
    from rosetta import checkpoint, distributed

    dtype = resolve_precision(dtype, precision, default=None)  # --dtype: its alias
    check_settings(dtype=dtype, steps=steps, epochs=epochs, batch_size=batch_size, save=save,
                   save_every=save_every, keep=keep, log_every=log_every, eval_every=eval_every)
    device = normalize_device(device)
    ckpt = None
    itself = resumes_itself(resume, save)
    if itself and not checkpoint.saved_steps(save):
        resume = None  # its first start: nothing saved yet
    if resume is not None:
        ckpt = checkpoint.load(resume, spec)
        spec = spec or ckpt.spec
        seed, batch_size = resume_settings(ckpt, seed, batch_size)
    if spec is None:
        raise DataError("train needs a spec, or a checkpoint to resume (resume=DIR)")
    precision = dtype or (ckpt.precision if ckpt else "float32")
    dtype = policy(precision).host   # the type arrays are stored and fed in
    seed = spec.seed if seed is None else seed
    batch_size = batch_size or spec.data.batch_size
    start = ckpt.step if ckpt else 0
    validate.check_seed(seed, "seed")
    validate.check_dtype_range(spec, dtype)
    validate.check_memory(spec, batch_size, dtype, ignore=ignore_memory)  # before any data

    ds = spec.data.load(model=spec.model)
    check_data(spec, ds, batch_size)
    n = ds.n_train
    if ckpt and ckpt.record.get("data", {}).get("n_train", n) != n:
        print(f"rosetta: note: {ckpt.path} was trained on {ckpt.record['data']['n_train']} "
              f"examples, this data has {n}: the batch order differs from the uninterrupted "
              f"run's", file=sys.stderr)
    if epochs is not None:
        steps = epochs * (n // batch_size)
    if itself and ckpt and steps is not None:  # the run's total, whichever start this is
        if steps <= start:
            raise CheckpointError(f"{ckpt.path}: the run already made its {steps} updates")
        steps -= start
    if steps is None:
        steps = spec.steps - start
        if steps < 1:
            raise CheckpointError(f"{ckpt.path}: the run already made its {spec.steps} updates; "
                                  f"give the number of updates to add (--steps N)")
    if devices > 1:
        distributed.check_devices(devices, batch_size)
        distributed.check_precision(backend, precision)
    gathers = not main and shard_params and save is not None
    if not main:  # the main process alone saves and logs
        save = log = None
    save_root = writable_folder(save, "--save", CheckpointError) if save is not None else None
    if log is not None:
        from rosetta.logs import check_log_dir

        check_log_dir(log)
    plan = RunPlan(spec=spec, backend=backend, device=device, dtype=dtype, seed=seed,
                   batch_size=batch_size, start=start, steps=steps, n_train=n, mode=mode,
                   ckpt=ckpt, save_root=save_root, save_every=save_every, keep=keep, log=log,
                   log_every=log_every, eval_every=eval_every, devices=devices,
                   batchnorm=batchnorm, shard_params=shard_params, gathers=gathers,
                   preprocessing=ds.preprocessing_record(),
                   precision=precision)
    return plan, ds
