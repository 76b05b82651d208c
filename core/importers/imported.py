"""``from_torch`` and the object it returns: the spec, canonical weights, the optimizer's state,
the map from every source name to its canonical path, ``save`` and ``certify``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rosetta.importers import patterns
from rosetta.importers.errors import ImportRefused
from rosetta.trained import TrainedModel


class Imported(TrainedModel):
    """A model read from elsewhere, and the Python API's ``TrainedModel`` of it: ``predict``,
    ``evaluate``, ``fit`` and ``save`` work as on a model ``rosetta.train`` returns, on
    ``backend`` (default torch; set ``imp.backend = "jax"`` to move it, trained values kept).
    The backend program is compiled on first use; until then the import's own arrays are
    served. ``spec`` is a ``TrainSpec``; ``params``/``state`` are canonical arrays by path;
    ``optimizer_state`` holds ``<slot>/<path>`` arrays of a run in progress (empty before its
    first update) and ``step`` its update count; ``names`` maps every source parameter and
    buffer name to its canonical path. ``replace_head(num_classes)`` swaps the classifier for
    fine-tuning; ``certify`` proves the import against its source."""

    def __init__(self, spec, params, state, optimizer_state, step, names, dtype,
                 node_source=None, source=None, notes=None, backend="torch",
                 inference_only=""):
        super().__init__({"model": spec.name, "backend": backend, "dtype": dtype, "steps": 0,
                          "start_step": int(step), "losses": [], "final_loss": None,
                          "metrics": {}, "seconds": 0.0, "program": None}, plan=None)
        self._spec, self._backend = spec, backend
        self._parts = (dict(params), dict(state), dict(optimizer_state), int(step))
        self._data_given = False
        self.names, self.dtype = dict(names), dtype
        self.node_source = dict(node_source or {})
        self.source = source           # what certify() runs: see _Source
        self.notes = list(notes or [])
        # why training this model is refused ("" if it is not): an ONNX graph whose BatchNorm
        # the exporter folded into the convolution computes the eval function only
        self.inference_only = inference_only
        # the source's own frozen set: certify() compares training with it
        self._source_frozen = list(spec.optimizer.frozen)

    # --- the import's parts, or the compiled program's -------------------------------------------
    @property
    def compiled(self) -> bool:
        return self.get("program") is not None

    @property
    def program(self):
        """The backend ``Program``, compiled from the import's parts on first use."""
        if not self.compiled:
            params, state, opt, step = self._parts
            tm = TrainedModel.from_state(self._spec, params, state,
                                         optimizer_state=opt or None, step=step,
                                         backend=self._backend, dtype=self.dtype)
            self.update(tm)
            old, self._plan, self._framework = self._plan, tm._plan, tm._framework
            if old is not None and self._arrays is not None:   # the data fit has read
                self._plan.n_train = old.n_train
        return self["program"]

    def _snapshot(self):
        """The parts from the compiled program (its training kept); the program dropped."""
        if self.compiled:
            p = self["program"]
            self._parts = (p.export_params(), p.export_state(), p.export_optimizer_state(),
                           int(p.step))
            self._spec = self._plan.spec
            self["program"] = None

    @property
    def spec(self):
        return self._plan.spec if self.compiled else self._spec

    @spec.setter
    def spec(self, spec):
        self._snapshot()
        self._spec = spec

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str):
        """Move the model to backend ``name`` (parameters, state, optimizer state and update
        count kept; compiled there on next use)."""
        self._snapshot()
        self._backend = self["backend"] = name

    @property
    def params(self) -> dict:
        return self.program.export_params() if self.compiled else self._parts[0]

    @property
    def state(self) -> dict:
        return self.program.export_state() if self.compiled else self._parts[1]

    @property
    def optimizer_state(self) -> dict:
        return self.program.export_optimizer_state() if self.compiled else self._parts[2]

    @property
    def step(self) -> int:
        return int(self.program.step) if self.compiled else self._parts[3]

    # --- using it --------------------------------------------------------------------------------
    def fit(self, steps=None, data=None, **kwargs):
        """``TrainedModel.fit``; an import holds no training data, so the first ``fit`` needs
        ``data`` (a path or arrays)."""
        from rosetta.errors import DataError

        if data is None and not self._data_given:
            raise DataError("fit: an imported model has no training data: give data= (a path "
                            "or (x, y) arrays)")
        self.refuse_training()
        self._data_given = True
        self.program   # noqa: B018  (compiled first: fit runs on its plan)
        return super().fit(steps, data, **kwargs)

    def evaluate(self, data=None, batch_size: int = 512) -> dict:
        from rosetta.errors import DataError

        if data is None and not self._data_given:
            raise DataError("evaluate: an imported model has no held-out data: give data=")
        self.program   # noqa: B018
        return super().evaluate(data, batch_size)

    def save(self, path) -> Path:
        """Write a neutral checkpoint directory (atomically; see ``rosetta.checkpoint``):
        ``rosetta.load``, ``rosetta train --resume``, ``eval`` and ``predict`` read it."""
        from rosetta import checkpoint

        if self.compiled:
            return super().save(path)
        params, state, opt, step = self._parts
        return checkpoint.save(path, self._spec, params=params, state=state, optimizer=opt,
                               step=step, dtype=self.dtype, backend=self._backend,
                               record={"imported_from": self.source.description
                                       if self.source else "", "names": self.names,
                                       "inference_only": self.inference_only})

    def _respec(self, new) -> None:
        """``TrainedModel.freeze``/``unfreeze`` on the import's parts (compiled on next use)."""
        self._snapshot()
        params, state, opt, step = self._parts
        if opt:
            opt = new.optimizer.carried_slots(params, opt)
        self._spec, self._parts = new, (params, state, opt, step)

    def replace_head(self, num_classes: int, *, seed: int = 0) -> "Imported":
        """Replace the classifier (the ``Dense`` node that is the model's output) with a fresh
        one of ``num_classes`` outputs, initialised by its spec initializers from ``seed``, its
        optimizer state reset; every other parameter, its state and the update count are kept.
        The model no longer computes its source's function: ``certify`` refuses afterwards.
        Returns the model (for ``imp.replace_head(3).fit(...)``)."""
        from rosetta import checkpoint
        from rosetta.errors import SpecError
        from rosetta.spec import TrainSpec

        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise SpecError(f"replace_head: num_classes must be an integer >= 1, found "
                            f"{num_classes!r}", where="replace_head")
        self._snapshot()
        spec = self._spec
        g = spec.model
        head = next(n for n in g.nodes if n.name == g.outputs[0]) \
            if g.outputs[0] in {n.name for n in g.nodes} else None
        if head is None or head.op != "Dense":
            raise SpecError(f"replace_head: the model's output {g.outputs[0]} is "
                            f"{'an input' if head is None else 'a ' + head.op}, not a Dense "
                            f"classifier", where="replace_head")
        d = spec.to_json()
        for n in d["model"]["nodes"]:
            if n["name"] == head.name:
                n["attrs"]["units"] = num_classes
        new = TrainSpec.from_json(d)
        params, state, opt, step = self._parts
        fresh = new.model.init_params(seed)
        paths = {f"{head.name}/{k}" for k in head.params}
        params = {k: (fresh[k] if k in paths else v) for k, v in params.items()}
        if opt:
            init = checkpoint.initial_optimizer_state(new, params)
            opt = {k: (init[k] if k.split("/", 1)[1] in paths else v) for k, v in opt.items()}
        x = spec.data.load(model=spec.model).x_train_all
        x = np.asarray(next(iter(x.values())) if isinstance(x, dict) else x)
        x = x[:spec.data.batch_size]
        new = TrainSpec(new.model, new.loss, new.optimizer, _example_data(new.model, new.loss, x),
                        new.steps, new.seed, new.description)
        self._spec, self._parts = new, (params, state, opt, step)
        self.names = {k: v for k, v in self.names.items() if v not in paths}
        self._arrays, self._data_given = None, False   # labels of the old classes
        self.source = None
        self.notes.append(f"head {head.name} replaced: {num_classes} classes (the certificate "
                          f"no longer applies)")
        return self

    def certify(self, backends=None, *, dtype=None, steps=3,
                seed=0, out=None, progress=None, dropout="inject", isolate=False):
        """Run the certificate (``rosetta.importers.certificate``); returns a ``Certificate``.
        ``dtype``: "float64" (the exact tier, 1e-10, free-running), "float32" (teacher-forced
        at the measured float32 noise bounds), None: the source's own dtype.
        ``dropout``: "inject" (neutral masks on both sides) or "off" (every rate 0). An ONNX
        import runs ``rosetta.importers.onnx_certificate`` (forward against ``onnx.reference``
        and onnxruntime; ``dtype`` is then that of the rows against its torch source).
        ``isolate``: each backend certified in a process of its own from the saved source run
        (float64; for a model whose frameworks together do not fit in memory)."""
        from rosetta.errors import RosettaError

        forward = getattr(self.source, "forward_certificate", None)
        if forward is not None and isolate:
            raise RosettaError("certify(isolate=True) runs the training certificate; an ONNX "
                               "graph's forward certificate runs in one process, without it")
        if forward is not None:      # a graph without gradients (ONNX): its own certificate
            return forward(self, backends, seed=seed, out=out, progress=progress, steps=steps,
                           dtype=dtype)
        self.refuse_training()
        from rosetta.importers.certificate import certify

        if self.source is None:
            raise RosettaError("certify: this model no longer computes its source's function "
                               "(its head was replaced); certify the import before replace_head")
        if self.spec.optimizer.frozen != self._source_frozen:
            raise RosettaError(f"certify: the frozen parameters changed since the import "
                               f"({self._source_frozen or 'none'} in the source, "
                               f"{self.spec.optimizer.frozen or 'none'} now), so training no "
                               f"longer follows the source's; certify before freeze/unfreeze")
        return certify(self, backends, dtype=dtype, steps=steps, seed=seed, out=out,
                       progress=progress, dropout=dropout, isolate=isolate)

    def refuse_training(self) -> None:
        """Raise ``RosettaError`` (one line) where this model cannot be trained as its source
        was (``inference_only``)."""
        if self.inference_only:
            from rosetta.errors import RosettaError
            raise RosettaError(f"{self.spec.name}: inference only, training refused: "
                               f"{self.inference_only}")

    def source_name(self, path: str) -> str:
        """The source name of a canonical path (``slot/path`` for optimizer state too)."""
        from rosetta.importers.certificate import _source_name
        return _source_name(self.names, path)

    def __repr__(self):
        return (f"<Imported {self.spec.name}: {self.spec.model.param_count():,} parameters, "
                f"{type(self.spec.optimizer).__name__}, step {self.step}, on {self.backend}>")

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


def _example_data(graph, loss, x):
    """A DataSpec of the example inputs ``x`` (canonical layout) with zero labels of the loss's
    kind: the import's spec needs data; ``fit``/``evaluate`` take the user's."""
    from rosetta.spec import DataSpec

    n = x.shape[0]
    out_shape = graph.output_type.shape
    y = (np.zeros(n, np.int64) if loss.label_kind == "int"
         else np.zeros((n, *out_shape)))
    return DataSpec.from_arrays(np.ascontiguousarray(x), y, x, y, batch_size=n)


@dataclass
class _Source:
    """What the certificate needs of the source: the module, its example inputs, optimizer,
    loss, the layouts of its parameters, and which traced node each spec node reads."""

    module: object
    example_inputs: tuple
    optimizer: object
    loss: object
    layouts: dict
    slots: dict           # canonical slot -> torch optimizer state key
    fx_nodes: dict
    input_layout: str
    description: str = ""
    scheduler: object = None   # the torch LR scheduler driving ``optimizer`` (None: none)
    constant_buffers: tuple = ()   # buffers folded into Constants: the certificate keeps them
    framework = "torch"            # the source's framework, named in the certificate
    float32_certificate = True     # certify32 runs this source's float32 steps


def _dtype_of(module) -> str:
    import torch

    dts = {p.dtype for p in module.parameters()}
    if dts == {torch.float64}:
        return "float64"
    if dts <= {torch.float32}:
        return "float32"
    raise ImportRefused([f"<root> ({type(module).__name__}): parameters in "
                         f"{sorted(map(str, dts))} (float32 or float64 only)"])


def from_torch(module, example_inputs=None, *, optimizer=None, loss=None, scheduler=None, name=None,
               step=None):
    """Import ``module`` (a ``torch.nn.Module``, an ``ExportedProgram`` or the path of a ``.pt2``
    file: ``rosetta.importers.pt2``) with ``example_inputs`` (a tensor or a tuple of one; None:
    the program's own), its ``torch.optim`` optimizer (state included), its LR ``scheduler`` (stepped once per
    update; its position carried) and its loss. Returns ``Imported``;
    raises ``ImportRefused`` listing every module, call or setting the spec cannot reproduce
    exactly. ``step`` overrides the update count (torch's SGD does not keep one)."""
    import torch

    from rosetta.importers.torch_graph import capture
    from rosetta.importers.torch_optim import map_loss, map_optimizer
    from rosetta.spec import TrainSpec

    if isinstance(module, (str, Path)) or isinstance(module, torch.export.ExportedProgram):
        from rosetta.importers.pt2 import load_pt2, pt2_module

        if isinstance(module, torch.export.ExportedProgram):
            given = module.example_inputs[0] if module.example_inputs else None
            module = pt2_module(module)
        else:
            name = name or Path(module).stem
            module, given = load_pt2(module)
        example_inputs = given if example_inputs is None else example_inputs
        if example_inputs is None:
            raise ImportRefused(["<root> (ExportedProgram): it keeps no example inputs: give "
                                 "example_inputs"])
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    name = name or type(module).__name__.lower()
    dtype = _dtype_of(module)
    cap = capture(module, example_inputs, model_name=name)
    problems = []
    spec_loss = map_loss(loss, problems.append)
    if scheduler is not None and optimizer is None:
        problems.append(f"scheduler ({type(scheduler).__name__}): given without its optimizer")
    spec_opt, slots, count, slot_keys = map_optimizer(optimizer, module, cap.names, cap.layouts,
                                                      problems.append, scheduler, step)
    if problems:
        raise ImportRefused(problems)
    x = example_inputs[0].detach().cpu().numpy()
    if cap.input_layout == "nchw":
        x = x.transpose(0, 2, 3, 1)
    try:
        spec = TrainSpec(cap.graph, spec_loss, spec_opt,
                         _example_data(cap.graph, spec_loss, x), steps=1,
                         description=f"imported from torch {type(module).__name__}")
    except Exception as e:
        raise ImportRefused([f"<root> ({type(module).__name__}): {e}"]) from None
    src = _Source(module, tuple(example_inputs), optimizer, loss, cap.layouts, slot_keys,
                  cap.fx_nodes, cap.input_layout,
                  f"torch {type(module).__module__}.{type(module).__name__}", scheduler,
                  cap.constant_buffers)
    notes = []
    if cap.ignored_buffers:
        notes.append(f"buffers without spec state (not read by the graph's math): "
                     f"{', '.join(cap.ignored_buffers)}")
    hard = [n.name for n in cap.graph.nodes
            if n.op == "Activation" and n.attrs["fn"] == "hard_sigmoid"]
    if hard:
        notes.append(f"hard_sigmoid ({', '.join(hard)}): torch's Hardsigmoid backward multiplies "
                     f"by the float32 constant 1.0f/6.0f even in float64 (relative gradient "
                     f"error 3e-8); the spec's is 1/6. A float64 certificate runs the source's "
                     f"nn.Hardsigmoid modules as relu6(x + 3) / 6 (the same function, its "
                     f"backward in float64); a functional hardsigmoid call keeps torch's "
                     f"kernel and diverges there at that level (the forward is exact)")
    if cap.folded:
        notes.append(f"{cap.folded} input-independent calls folded into constants at the "
                     f"example's shapes: the spec takes inputs of shape "
                     f"{tuple(example_inputs[0].shape[1:])} only")
    if fused_note := patterns.note(cap.fused):
        notes.append(fused_note)
    if loss is None:
        notes.append("no loss given: softmax cross-entropy")
    if optimizer is None:
        notes.append("no optimizer given: SGD(lr=0.01)")
    return Imported(spec, cap.params, cap.state, dict(slots), count, cap.names, dtype,
                    cap.node_source, src, notes)
