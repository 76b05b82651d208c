"""``from_torch`` and the object it returns: the spec, canonical weights, the optimizer's state,
the map from every source name to its canonical path, ``save`` and ``certify``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rosetta.importers.errors import ImportRefused


@dataclass
class Imported:
    """A model read from elsewhere. ``spec`` is a ``TrainSpec``; ``params``/``state`` are
    canonical arrays by path; ``optimizer_state`` holds ``<slot>/<path>`` arrays of a run in
    progress (empty before its first update) and ``step`` its update count; ``names`` maps every
    source parameter and buffer name to its canonical path. The lead joins this to the
    ``TrainedModel`` class; until then ``save`` writes the neutral checkpoint that ``rosetta
    train --resume``, ``eval`` and ``predict`` read."""

    spec: object
    params: dict
    state: dict
    optimizer_state: dict
    step: int
    names: dict
    dtype: str
    node_source: dict = field(default_factory=dict)   # spec node -> source label
    source: object = field(default=None, repr=False)  # what certify() runs: see _Source
    notes: list = field(default_factory=list)

    def save(self, path) -> Path:
        """Write a neutral checkpoint directory (atomically; see ``rosetta.checkpoint``)."""
        from rosetta import checkpoint

        return checkpoint.save(path, self.spec, params=self.params, state=self.state,
                               optimizer=self.optimizer_state, step=self.step, dtype=self.dtype,
                               backend="import:torch",
                               record={"imported_from": self.source.description
                                       if self.source else "", "names": self.names})

    def certify(self, backends=None, *, dtype="float64", steps=3,
                seed=0, out=None, progress=None, dropout="inject"):
        """Run the certificate (``rosetta.importers.certificate``); returns a ``Certificate``.
        ``dropout``: "inject" (neutral masks on both sides) or "off" (every rate 0)."""
        from rosetta.importers.certificate import certify
        return certify(self, backends, dtype=dtype, steps=steps, seed=seed, out=out,
                       progress=progress, dropout=dropout)

    def source_name(self, path: str) -> str:
        """The source name of a canonical path (``slot/path`` for optimizer state too)."""
        rev = {v: k for k, v in self.names.items()}
        if path in rev:
            return rev[path]
        slot, _, rest = path.partition("/")
        return f"{slot} of {rev[rest]}" if rest in rev else path

    def __repr__(self):
        return (f"<Imported {self.spec.name}: {self.spec.model.param_count():,} parameters, "
                f"{type(self.spec.optimizer).__name__}, step {self.step}>")


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


def _dtype_of(module) -> str:
    import torch

    dts = {p.dtype for p in module.parameters()}
    if dts == {torch.float64}:
        return "float64"
    if dts <= {torch.float32}:
        return "float32"
    raise ImportRefused([f"<root> ({type(module).__name__}): parameters in "
                         f"{sorted(map(str, dts))} (float32 or float64 only)"])


def from_torch(module, example_inputs, *, optimizer=None, loss=None, name=None, step=None):
    """Import ``module`` (a ``torch.nn.Module``) with ``example_inputs`` (a tensor or a tuple of
    one), its ``torch.optim`` optimizer (state included) and its loss. Returns ``Imported``;
    raises ``ImportRefused`` listing every module, call or setting the spec cannot reproduce
    exactly. ``step`` overrides the update count (torch's SGD does not keep one)."""
    import torch

    from rosetta.importers.torch_graph import capture
    from rosetta.importers.torch_optim import map_loss, map_optimizer
    from rosetta.spec import DataSpec, TrainSpec

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    name = name or type(module).__name__.lower()
    dtype = _dtype_of(module)
    cap = capture(module, example_inputs, model_name=name)
    problems = []
    spec_loss = map_loss(loss, problems.append)
    spec_opt, slots, count, slot_keys = map_optimizer(optimizer, module, cap.names, cap.layouts,
                                                      problems.append)
    if problems:
        raise ImportRefused(problems)
    x = example_inputs[0].detach().cpu().numpy()
    if cap.input_layout == "nchw":
        x = x.transpose(0, 2, 3, 1)
    out_shape = cap.graph.output_type.shape
    n = x.shape[0]
    y = (np.zeros(n, np.int64) if spec_loss.label_kind == "int"
         else np.zeros((n, *out_shape)))
    data = DataSpec.from_arrays(np.ascontiguousarray(x), y, x, y, batch_size=n)
    try:
        spec = TrainSpec(cap.graph, spec_loss, spec_opt, data, steps=1,
                         description=f"imported from torch {type(module).__name__}")
    except Exception as e:
        raise ImportRefused([f"<root> ({type(module).__name__}): {e}"]) from None
    if step is not None:
        count = int(step)
    src = _Source(module, tuple(example_inputs), optimizer, loss, cap.layouts, slot_keys,
                  cap.fx_nodes, cap.input_layout,
                  f"torch {type(module).__module__}.{type(module).__name__}")
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
    if loss is None:
        notes.append("no loss given: softmax cross-entropy")
    if optimizer is None:
        notes.append("no optimizer given: SGD(lr=0.01)")
    return Imported(spec, cap.params, cap.state, dict(slots), count, cap.names, dtype,
                    cap.node_source, src, notes)
