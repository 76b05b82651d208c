"""``Program``: the Gluon blocks, the loss and the canonical optimizer, with the train step,
gradients and forward.

The train step is the idiomatic Gluon step: ``autograd.record()``, the hybridized training block
(``model_train``) and the hybridized loss, ``loss.backward()``, then the optimizer update on the
parameters' NDArrays (``optimizers.update``), and the BatchNorm running statistics folded from
the batch statistics the training block returns: running = m * running + (1 - m) * batch.
``gradients`` and ``forward`` run the same blocks without touching parameters, state or
optimizer state. Mode ``hybrid`` (default) hybridizes the blocks (MXNet's compiled graph, cached
on the first call); ``imperative`` runs them op by op.

Dropout: the training block takes one scale per node that draws a keep-mask (keep / (1 - rate)).
Given ``masks`` (conformance mode) they are those; otherwise the program draws them with NumPy
from (spec.seed, update count, node), so update t always uses the same masks, ``gradients`` /
``forward(training=True)`` before update t see the masks update t will use, and a resumed program
draws what the uninterrupted one would: there is no stream to save (``export_rng_state`` is {}).
MXNet's own ``Dropout`` draws from a process-global RNG whose position cannot be read back.
"""

from __future__ import annotations

import numpy as np
from mxnet import autograd, nd

from rosetta import backend as contract
from rosetta.errors import SpecError
from rosetta.spec import TrainSpec

from rosetta.backends.mxnet import optimizers, params as params_mod
from rosetta.backends.mxnet.device import resolve as mx_context
from rosetta.backends.mxnet.losses import lower as lower_loss
from rosetta.backends.mxnet.model import build_model


class Program(contract.BackendProgram):
    """A TrainSpec lowered to Gluon blocks: ``model`` (eval) and ``model_train`` (training),
    sharing the node blocks' parameters, ``loss_fn`` and the canonical ``optimizer`` (the spec's
    ``rosetta.optim`` rule, applied by ``optimizers.update``)."""

    backend = "mxnet"

    def __init__(self, spec: TrainSpec, *, dtype: str = "float32", device: str = "cpu",
                 mode: str = "hybrid"):
        # the base checks Embedding ids on the host: MXNet's Embedding clips an out-of-range id
        self._setup(spec, dtype, device, mode)
        self.context = mx_context(self.device)
        if len(self.graph.outputs) != 1:
            raise SpecError("the mxnet backend trains graphs with one output",
                            where=self.graph.name)
        self.nodes, self.model_train, self.model = build_model(
            self.graph, dtype, self.context, hybridize=mode == "hybrid")
        self._params, self._state = params_mod.slots(self.graph, self.nodes)
        self.loss_fn = lower_loss(spec.loss, self.graph.output_type.shape[-1])
        if mode == "hybrid":
            self.loss_fn.hybridize()
        self.optimizer = spec.optimizer
        self._stat_momentum = {n.name: n.attrs["momentum"] for n in self.graph.nodes
                               if n.opdef.running_stats}
        self.load(self.graph.init_params(spec.seed), self.graph.init_state())

    # --- parameters ---------------------------------------------------------------------------
    def load(self, params: dict, state: dict) -> None:
        params_mod.load(self._params, params, "parameters", self.dtype)
        params_mod.load(self._state, state, "state", self.dtype)
        self.opt_state = optimizers.lower(self.optimizer, self._arrays())
        self.step = 0

    def export_params(self) -> dict:
        return params_mod.export(self._params)

    def export_state(self) -> dict:
        return params_mod.export(self._state)

    def export_optimizer_state(self) -> dict:
        return {f"{slot}/{path}": a.asnumpy() for slot, by_path in self.opt_state.items()
                for path, a in by_path.items()}

    def _set_optimizer_state(self, checked: dict, step: int) -> None:
        """Resume after ``step`` updates (``load_optimizer_state``, after ``load``): ``checked``
        slots (checked by the base) copied into the state NDArrays; the next update is number
        ``step`` (its lr, bias corrections and dropout masks)."""
        for name, a in checked.items():
            slot, path = name.split("/", 1)
            self.opt_state[slot][path][:] = nd.array(a, dtype=self.dtype, ctx=self.context)
        self.step = int(step)

    # --- steps --------------------------------------------------------------------------------
    def _run_step(self, batch, masks) -> float:
        xs, y = batch
        loss, stats = self._backward(xs, y, masks)
        optimizers.update(self.optimizer, self._arrays(), self._grads(), self.opt_state,
                          self.step)
        self._fold_stats(stats)
        self.step += 1
        return float(loss.asscalar())

    def _run_gradients(self, batch, masks) -> tuple[float, dict]:
        loss, _ = self._backward(*batch, masks)
        return float(loss.asscalar()), {k: g.asnumpy() for k, g in self._grads().items()}

    def _run_forward(self, xs, training: bool, masks) -> np.ndarray:
        if not training:
            return self.model(*xs).asnumpy()
        outs = self.model_train(*xs, *self._scales(masks, xs[0].shape[0]))
        return (outs[0] if isinstance(outs, (list, tuple)) else outs).asnumpy()

    # --- helpers ------------------------------------------------------------------------------
    def _arrays(self) -> dict:
        return {k: p.data() for k, p in self._params.items()}

    def _grads(self) -> dict:
        return {k: p.grad() for k, p in self._params.items()}

    def _backward(self, xs, y, masks):
        scales = self._scales(masks, y.shape[0])
        with autograd.record(train_mode=True):
            outs = self.model_train(*xs, *scales)
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            loss = self.loss_fn(outs[0], y)
        if self._params:
            loss.backward()
        return loss, outs[1:]

    def _fold_stats(self, stats):
        """running = m * running + (1 - m) * batch, for each node with running statistics
        (mean, var)."""
        for i, name in enumerate(self.model_train.stat_nodes):
            m = self._stat_momentum[name]
            for j, which in enumerate(("mean", "var")):
                running = self._state[f"{name}/{which}"].data()
                running[:] = m * running + (1.0 - m) * stats[2 * i + j]

    def _scales(self, masks, batch: int) -> list:
        """The dropout scales (keep-mask / (1 - rate)) of this step, one per dropout node:
        the injected ``masks`` (checked by the base), else drawn from (spec.seed, update count,
        node)."""
        out = []
        for i, d in enumerate(self._mask_draws):
            if masks:
                m = np.asarray(masks[d.node])
            else:
                rng = np.random.default_rng([self.spec.seed, self.step, i])
                m = rng.random((batch, *d.shape)) >= d.rate
            out.append(nd.array(m / (1.0 - d.rate), dtype=self.dtype, ctx=self.context))
        return out

    def _native_inputs(self, x: dict) -> list:
        """Checked inputs (the base's check) as NDArrays in input order."""
        return [nd.array(x[inp.name], dtype=self.dtype, ctx=self.context)
                for inp in self.graph.inputs]

    def _native_labels(self, y) -> "nd.NDArray":
        return nd.array(y, dtype=self.dtype, ctx=self.context)


__all__ = ["Program"]
