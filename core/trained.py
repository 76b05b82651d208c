"""The Python API's trained model: ``rosetta.train`` and ``rosetta.load`` return a
``TrainedModel``.

    import numpy as np, rosetta as rs
    model = rs.train("cnn", "jax", data="digits.npz", steps=300)   # Keras-like fit
    print(model.evaluate("digits.npz"))                            # held-out loss, accuracy
    y = model.predict(np.load("digits.npz")["x_test"][:8])         # arrays in, arrays out
    model.save("ck")                                               # a neutral checkpoint
    again = rs.load("ck", backend="torch")                         # another framework
    net = again.module                                             # a real torch.nn.Module

A ``TrainedModel`` is the run record ``rosetta.training.train`` returns (a dict:
``model["final_loss"]``, ``model["metrics"]``, ``model["program"]``), with methods on the
``Program`` inside it: ``predict``, ``evaluate``, ``save``, ``fit`` (more updates of the same
run: equal to one run of all of them), and its native objects (``module``, ``optimizer``), the
canonical ``params`` and ``state``, ``spec``, ``backend`` and ``record``. It is built by the
stages of ``rosetta.training`` (plan, build, loop), from a checkpoint (``load``), or from parts
(``from_state``: what a model importer has).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from rosetta.display import RunRecord
from rosetta.errors import DataError, SpecError
from rosetta.spec import DataSpec, TrainSpec


def resolve_spec(spec) -> TrainSpec:
    """A ``TrainSpec`` from a zoo name, a ``.py`` or ``.json`` spec file, or a TrainSpec."""
    if isinstance(spec, TrainSpec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        from rosetta.cli import load_spec

        return load_spec(os.fspath(spec))
    raise SpecError(f"spec must be a zoo name, a .py or .json spec file or a rosetta.TrainSpec, "
                    f"found {type(spec).__name__}", where="rosetta.train")


def data_spec(data, batch_size: int, where: str) -> DataSpec:
    """``data`` as a DataSpec: a path (a file or folder ``rosetta.datafiles`` reads), (x, y),
    or (x, y, x_test, y_test) arrays; x an array or {input name: array}."""
    if isinstance(data, DataSpec):
        return data
    if isinstance(data, (str, os.PathLike)):
        return DataSpec.from_path(data, batch_size=batch_size)
    if isinstance(data, tuple) and len(data) in (2, 4):
        return DataSpec.from_arrays(*data, batch_size=batch_size)
    raise DataError(f"{where}: data must be a path, (x, y) or (x, y, x_test, y_test) arrays, "
                    f"found {type(data).__name__}")


def with_data(spec: TrainSpec, data) -> TrainSpec:
    """``spec`` training on ``data`` (see ``data_spec``); None: unchanged."""
    if data is None:
        return spec
    return TrainSpec(spec.model, spec.loss, spec.optimizer,
                     data_spec(data, spec.data.batch_size, "data"), spec.steps, spec.seed,
                     spec.description)


def train(spec, backend: str, *, data=None, **kwargs) -> "TrainedModel":
    """Train ``spec`` (a zoo name, a ``.py``/``.json`` spec file, or a ``TrainSpec``) on
    ``backend`` (a backend name, or ``"auto"``: the fastest that passes a short float64 check)
    and return the ``TrainedModel``. ``data`` replaces the spec's data: a path
    (``.npz``, ``.csv``, a folder of ``.npy`` files or of images) or arrays ``(x, y)`` /
    ``(x, y, x_test, y_test)``. Every other keyword is ``rosetta.training.train``'s (``steps``,
    ``epochs``, ``batch_size``, ``seed``, ``dtype``, ``device``, ``mode``, ``save``, ``log``,
    ``progress``, ``resume``, ...)."""
    from rosetta.training import plan_run, run_planned

    if kwargs.get("devices", 1) != 1:
        raise DataError("rosetta.train trains on one device (devices=1); for a data-parallel "
                        "run use rosetta.training.train or 'rosetta train --devices N'")
    spec = None if spec is None and kwargs.get("resume") else resolve_spec(spec)
    if spec is not None:
        spec = with_data(spec, data)
    elif data is not None:
        raise DataError("data= with resume= and no spec: give the spec too")
    progress = kwargs.pop("progress", True)
    remeasure = kwargs.pop("remeasure", False)
    plan, ds = plan_run(spec, backend, **kwargs)
    run = run_planned(plan, ds, progress=progress, remeasure=remeasure)
    return TrainedModel(run.record, plan=run.plan, arrays=run.arrays, framework=run.framework,
                        history=run.history)


def load(ckpt, backend: str | None = None, *, dtype: str | None = None, device: str = "cpu",
         mode: str | None = None) -> "TrainedModel":
    """The model of a neutral checkpoint (a checkpoint folder or a run folder: its newest) on
    ``backend`` (default: the backend that wrote it): parameters, state, optimizer state and update count, ready to ``predict``,
    ``evaluate``, ``fit`` (continuing the run exactly) or ``save``."""
    from rosetta import checkpoint

    ck = checkpoint.load(ckpt)
    backend = backend or ck.backend
    data = ck.record.get("data", {})
    model = TrainedModel.from_state(
        ck.spec, ck.params, ck.state, optimizer_state=ck.optimizer, step=ck.step,
        backend=backend, dtype=dtype or ck.precision, device=device, mode=mode,
        seed=data.get("seed"), batch_size=data.get("batch_size"),
        rng=ck.rng if ck.backend == backend else None,
        loss_scale=ck.record.get("loss_scale") if (dtype or ck.precision) == ck.precision
        else None)
    model["resumed_from"] = str(ck.path)
    model["metrics"] = dict(ck.record.get("metrics", {}))
    model._history = list(ck.record.get("losses", []))
    from rosetta.preprocessing import of_checkpoint
    model._plan.preprocessing = of_checkpoint(ck)
    return model


class TrainedModel(RunRecord):
    """A trained model on one backend: the run record (a dict) and the ``Program`` in it."""

    def __init__(self, record: dict, *, plan, arrays=None, framework: str = "",
                 history=()):
        super().__init__(record)
        self._plan = plan
        self._arrays = arrays           # the run's TrainArrays (loaded on first need)
        self._framework = framework
        self._history = list(history)   # every loss since update 0 that this object knows

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def from_state(cls, spec, params: dict, state: dict | None = None,
                   optimizer_state: dict | None = None, step: int = 0, *,
                   backend: str, dtype: str = "float32", device: str = "cpu",
                   mode: str | None = None, seed: int | None = None,
                   batch_size: int | None = None, rng: dict | None = None,
                   loss_scale: dict | None = None) -> "TrainedModel":
        """A model from canonical parts: ``spec`` (anything ``rosetta.train`` takes), its
        parameters and model state by canonical path, the optimizer slots
        (``<slot>/<parameter path>``; None: the optimizer's initial state) and the update count
        ``step`` (the next update is number ``step``), compiled on ``backend``. The arrays are
        checked as a checkpoint's are (names, shapes, finite values); ``seed`` and
        ``batch_size`` (default the spec's) fix the data order ``fit`` continues. ``dtype`` is
        a precision policy (``rosetta.precision``): the arrays are in its host type (float32
        masters for the low ones), and ``loss_scale`` (a checkpoint's, mixed_float16) continues
        the dynamic loss scale."""
        from rosetta import checkpoint
        from rosetta.backend_registry import get_backend
        from rosetta.errors import CheckpointError
        from rosetta.run_plan import RunPlan, check_settings

        spec = resolve_spec(spec)
        check_settings(dtype=dtype, steps=None, epochs=None, batch_size=batch_size, save=None,
                       save_every=None, keep=None, log_every=10, eval_every=None)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise CheckpointError(f"step must be a non-negative integer, found {step!r}")
        state = {} if state is None else state
        want = checkpoint.expected_tensors(spec)
        from rosetta.precision import policy

        precision, dtype = dtype, policy(dtype).host   # the policy; the arrays' type
        cast = lambda d: {k: np.asarray(v).astype(dtype) for k, v in d.items()}  # noqa: E731
        params, state = cast(params), cast(state)
        opt = (checkpoint.initial_optimizer_state(spec, params) if optimizer_state is None
               else {**checkpoint.initial_optimizer_state(spec, params), **optimizer_state})
        opt = cast(opt)
        for name, tensors in (("params", params), ("state", state), ("optimizer", opt)):
            checkpoint._check_tensors(Path(name), tensors, want[name], dtype)
        seed = spec.seed if seed is None else seed
        plan = RunPlan(spec=spec, backend=backend, device=device, dtype=dtype, seed=seed,
                       batch_size=batch_size or spec.data.batch_size, start=int(step), steps=0,
                       n_train=0, mode=mode, precision=precision)
        be = get_backend(backend)
        from rosetta import validate

        validate.require_device([backend], plan.device)
        program = be.compile(plan.run_spec, dtype=precision, device=plan.device, mode=mode)
        program.load(params, state)
        program.load_optimizer_state(opt, int(step))
        if loss_scale is not None:
            program.load_loss_scale(loss_scale)
        if rng:
            program.load_rng_state(rng)
        record = {"model": spec.name, "backend": backend, "mode": program.mode,
                  "framework": be.version(), "device": plan.device, "devices": 1,
                  "dtype": dtype, "precision": precision, "steps": 0, "start_step": int(step),
                  "batch_size": plan.batch_size, "seed": seed, "losses": [],
                  "final_loss": None, "metrics": {}, "seconds": 0.0,
                  "first_step_seconds": None, "resumed_from": None, "auto": None,
                  "saved": None, "sample": None, "program": program}
        return cls(record, plan=plan, framework=be.version())

    # --- the native objects ----------------------------------------------------------------------
    @property
    def program(self):
        """The backend ``Program`` (``rosetta.program``)."""
        return self["program"]

    @property
    def module(self):
        """The native model: a ``torch.nn.Module``, a ``tf.Module``, a ``flax.linen.Module``
        (its variables: ``program.params`` and ``program.batch_stats``), Gluon blocks."""
        return self.program.model

    @property
    def optimizer(self):
        """The native optimizer (``torch.optim.Optimizer``, an optax transformation, ...)."""
        return self.program.optimizer

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Trainable parameters as canonical NumPy arrays, by path."""
        return self.program.export_params()

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Model state (BatchNorm running statistics) as canonical NumPy arrays, by path."""
        return self.program.export_state()

    @property
    def spec(self) -> TrainSpec:
        return self._plan.spec

    @property
    def backend(self) -> str:
        return self._plan.backend

    @property
    def step(self) -> int:
        """Updates applied: the next update is number ``step``."""
        return int(self.program.step)

    @property
    def record(self) -> dict:
        """The run record as ``rosetta train --json`` prints it (without the program)."""
        return {k: v for k, v in self.items() if k != "program"}

    # --- using it ----------------------------------------------------------------------------------
    def predict(self, x, batch_size: int = 512) -> np.ndarray:
        """Eval-mode outputs (N, *output shape) for ``x``: an array (a single-input model), a
        dict {input name: array}, or a file: ``.npy``/``.npz``, or raw inputs through the
        preprocessing the training data applied (an image file or folder, a ``.csv``)."""
        from rosetta.evaluation import outputs
        from rosetta.preprocessing import inputs_from_files

        graph = self.spec.model
        if isinstance(x, (str, os.PathLike)):
            label = getattr(self.spec.data, "label", None) or "label"
            inputs, _ = inputs_from_files(x, graph, self._plan.preprocessing or {}, label,
                                          flag="predict")
        else:
            inputs = graph.as_input_dict(x)
        return outputs(self.program, inputs, batch_size)

    def evaluate(self, data=None, batch_size: int = 512) -> dict:
        """Held-out loss and metrics (``accuracy`` for a classifier), in NumPy from eval-mode
        outputs: on the run's own held-out examples (None), on a data path (its held-out
        arrays, or all of it when it has none), or on arrays ``(x, y)``."""
        from rosetta.evaluation import dataset_inputs, evaluate, prepare_labels

        spec = self.spec
        if data is None:
            arrays = self._train_arrays()
            x, y = arrays.x_test, arrays.y_test
        elif isinstance(data, tuple) and len(data) == 2:
            x, y = dataset_inputs(spec, data[0], self.program.dtype), \
                prepare_labels(spec, np.asarray(data[1]))
            return evaluate(self.program, spec, x, y, batch_size)
        else:
            from rosetta.datacheck import check_data

            spec = with_data(spec, data)
            ds = spec.data.load(model=spec.model)
            check_data(spec, ds, 1)
            held = ds.held_out_given or not isinstance(data, (str, os.PathLike))
            x, y = (ds.x_test, ds.y_test) if held else (ds.x_train_all, ds.y_train_all)
            x, y = dataset_inputs(spec, x, self.program.dtype), prepare_labels(spec, y)
        return evaluate(self.program, spec, x, y, batch_size)

    def save(self, path) -> Path:
        """A neutral checkpoint at ``path`` (atomically; ``rosetta train --resume``,
        ``rosetta eval`` and ``rosetta predict`` read it, on any backend)."""
        from rosetta.run_loop import save_program

        plan = self._plan
        if not plan.n_train:
            self._train_arrays()
        return save_program(path, self.program, plan, framework=self._framework,
                            metrics=dict(self.get("metrics") or {}), losses=self._history)

    def fit(self, steps: int | None = None, data=None, *, epochs: int | None = None,
            progress: bool = True, eval_every: int | None = None) -> "TrainedModel":
        """``steps`` (or ``epochs``) more updates of the same run, in the data order the run
        follows (seed and batch size kept), on its data or on ``data`` (a path or arrays):
        ``fit(a)`` then ``fit(b)`` makes the updates of one run of a + b. Updates the record
        (``losses``, ``final_loss``, ``metrics``, ``steps``); returns the model."""
        from rosetta.run_loop import run_loop
        from rosetta.run_plan import TrainArrays, check_settings

        check_settings(dtype=None, steps=steps, epochs=epochs, batch_size=None, save=None,
                       save_every=None, keep=None, log_every=10, eval_every=eval_every)
        if steps is None and epochs is None:
            raise DataError("fit needs steps or epochs")
        if data is not None:
            from rosetta.datacheck import check_data

            spec = with_data(self.spec, data)
            ds = spec.data.load(model=spec.model)
            check_data(spec, ds, self._plan.batch_size)
            self._plan.spec = spec
            self._plan.n_train = ds.n_train
            self._arrays = TrainArrays.of(spec, ds, self._plan.dtype)
        arrays = self._train_arrays()
        start = self.step
        if epochs is not None:
            steps = epochs * self._plan.per_epoch
        plan = self._plan.then(steps)
        plan.start, plan.eval_every = start, eval_every
        label = f"{plan.spec.name} on {plan.backend} from update {start}"
        res = run_loop(self.program, plan, arrays, t0=time.perf_counter(),
                       history=self._history, progress=progress, label=label)
        self._plan = plan
        self._history += [float(v) for v in res.losses]
        self["losses"] = list(self["losses"]) + [float(v) for v in res.losses]
        self["steps"] = int(self.get("steps") or 0) + steps
        self["final_loss"] = float(res.losses[-1])
        self["metrics"] = res.metrics
        self["seconds"] = float(self.get("seconds") or 0.0) + res.seconds
        return self

    # --- fine-tuning: the frozen set ----------------------------------------------------------
    def freeze(self, *patterns: str) -> "TrainedModel":
        """Freeze the parameters whose paths match ``patterns`` (glob patterns over canonical
        paths, ``*`` crossing ``/``: ``"features/*"``), added to the optimizer's ``frozen``
        patterns: from the next update they do not move, keep no optimizer state and leave the
        clipping norm (``rosetta.optim.Optimizer``). A pattern that matches no parameter is a
        ``SpecError`` naming it. Returns the model (``model.freeze("features/*").fit(...)``)."""
        current = self.spec.optimizer.frozen
        return self._with_frozen(list(dict.fromkeys([*current, *patterns])))

    def unfreeze(self, *patterns: str) -> "TrainedModel":
        """Remove ``patterns`` (as given to ``freeze``) from the frozen patterns; none: unfreeze
        every parameter. A parameter trainable again starts from fresh optimizer state (zeros,
        Adagrad's initial accumulator) at the run's update count: its moments are not the ones
        it would have had, and Adam's bias correction uses the run's count. Returns the
        model."""
        current = self.spec.optimizer.frozen
        unknown = [p for p in patterns if p not in current]
        if unknown:
            raise SpecError(f"unfreeze: {unknown[0]!r} is not a frozen pattern (frozen: "
                            f"{current or 'none'})", where="unfreeze")
        return self._with_frozen([p for p in current if patterns and p not in patterns])

    def _with_frozen(self, frozen: list) -> "TrainedModel":
        """The model with the optimizer's frozen patterns ``frozen``: parameters, model state,
        update count and dropout stream kept, optimizer slots carried (``carried_slots``), the
        program compiled again."""
        for p in frozen:
            if not isinstance(p, str) or not p:
                raise SpecError(f"freeze: patterns are non-empty strings, found {p!r}",
                                where="freeze")
        spec = self.spec
        new = TrainSpec(spec.model, spec.loss, spec.optimizer.with_frozen(frozen), spec.data,
                        spec.steps, spec.seed, spec.description)
        self._respec(new)
        return self

    def _respec(self, new: TrainSpec) -> None:
        """Compile ``new`` (this spec with another optimizer) from the program's arrays."""
        p = self.program
        params = p.export_params()
        slots = new.optimizer.carried_slots(params, p.export_optimizer_state())
        plan = self._plan
        tm = TrainedModel.from_state(new, params, p.export_state(), optimizer_state=slots,
                                     step=int(p.step), backend=plan.backend, dtype=self["dtype"],
                                     device=plan.device, mode=p.mode, seed=plan.seed,
                                     batch_size=plan.batch_size, rng=p.export_rng_state())
        self["program"] = tm["program"]
        plan.spec = new

    def _train_arrays(self):
        """The run's data as arrays (read from the spec's data the first time)."""
        if self._arrays is None:
            from rosetta.datacheck import check_data
            from rosetta.run_plan import TrainArrays

            spec = self.spec
            ds = spec.data.load(model=spec.model)
            check_data(spec, ds, self._plan.batch_size)
            self._plan.n_train = ds.n_train
            self._arrays = TrainArrays.of(spec, ds, self._plan.dtype)
        return self._arrays

    def __repr__(self):
        return (f"TrainedModel({self.spec.name} on {self.backend}, {self['dtype']}, "
                f"update {self.step})")
