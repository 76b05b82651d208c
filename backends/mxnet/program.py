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
from rosetta.datacheck import check_embedding_ids, embedding_vocab
from rosetta.dropout import check_masks, mask_draws
from rosetta.errors import CheckpointError, DataError, SpecError
from rosetta.ops.normalization import check_unbiased_batch, unbiased_cells
from rosetta.spec import TrainSpec

from rosetta.backends.mxnet import optimizers, params as params_mod
from rosetta.backends.mxnet.device import dtype as check_dtype, resolve as mx_context
from rosetta.backends.mxnet.losses import lower as lower_loss
from rosetta.backends.mxnet.model import build_model


class Program(contract.Program):
    """A TrainSpec lowered to Gluon blocks: ``model`` (eval) and ``model_train`` (training),
    sharing the node blocks' parameters, ``loss_fn`` and the canonical ``optimizer`` (the spec's
    ``rosetta.optim`` rule, applied by ``optimizers.update``)."""

    backend = "mxnet"

    def __init__(self, spec: TrainSpec, *, dtype: str = "float32", device: str = "cpu",
                 mode: str = "hybrid"):
        if not isinstance(spec, TrainSpec):
            raise SpecError(f"compile takes a rosetta TrainSpec, found {type(spec).__name__}")
        self.spec = spec
        self.graph = spec.model
        self.mode = mode
        self.dtype = check_dtype(dtype)
        self.device = contract.normalize_device(device)
        self.context = mx_context(self.device)
        # Embedding ids are checked on the host: MXNet's Embedding clips an out-of-range id
        self._index_limits = embedding_vocab(self.graph)
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
        self._mask_draws = mask_draws(self.graph)
        self._stat_momentum = {n.name: n.attrs["momentum"] for n in self.graph.nodes
                               if n.opdef.running_stats}
        self._unbiased_cells = unbiased_cells(self.graph)
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

    def load_optimizer_state(self, slots: dict, step: int) -> None:
        """Resume after ``step`` updates (call after ``load``): ``slots`` checked against the
        NumPy reference's names and the parameter shapes before anything is set
        (``CheckpointError`` naming the first missing, unknown or misshapen one), then copied
        into the state NDArrays; the next update is number ``step`` (its lr, bias corrections
        and dropout masks)."""
        checked = self.spec.optimizer.check_slots(self._param_shapes, slots, step)
        for name, a in checked.items():
            slot, path = name.split("/", 1)
            self.opt_state[slot][path][:] = nd.array(a, dtype=self.dtype, ctx=self.context)
        self.step = int(step)

    def export_rng_state(self) -> dict:
        """{}: dropout masks follow from (spec.seed, update count), nothing to save."""
        return {}

    def load_rng_state(self, arrays: dict) -> None:
        if arrays:
            raise CheckpointError(f"rng state: {', '.join(sorted(arrays))} is not mxnet's "
                                  f"(mxnet derives dropout masks from the seed and the update "
                                  f"count and keeps no stream: it reads only {{}})")

    # --- steps --------------------------------------------------------------------------------
    def prepare_batch(self, inputs, labels) -> contract.Batch:
        xs, y = self._inputs(inputs), self._labels(labels)
        return contract.Batch(self, (xs, y), y.shape[0])

    def train_step(self, inputs, labels=None, masks=None) -> float:
        if isinstance(inputs, contract.Batch):
            xs, y = inputs.check(self, masks)
        else:
            xs, y = self._inputs(inputs), self._labels(labels)
        check_unbiased_batch(self._unbiased_cells, y.shape[0])
        loss, stats = self._backward(xs, y, masks)
        optimizers.update(self.optimizer, self._arrays(), self._grads(), self.opt_state,
                          self.step)
        self._fold_stats(stats)
        self.step += 1
        return float(loss.asscalar())

    def gradients(self, inputs, labels, masks=None) -> tuple[float, dict]:
        loss, _ = self._backward(self._inputs(inputs), self._labels(labels), masks)
        return float(loss.asscalar()), {k: g.asnumpy() for k, g in self._grads().items()}

    def forward(self, inputs, training: bool = False, masks=None) -> np.ndarray:
        xs = self._inputs(inputs)
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
        the injected ``masks``, else drawn from (spec.seed, update count, node)."""
        if masks:
            masks = check_masks(self._mask_draws, masks, batch)
        out = []
        for i, d in enumerate(self._mask_draws):
            if masks:
                m = np.asarray(masks[d.node])
            else:
                rng = np.random.default_rng([self.spec.seed, self.step, i])
                m = rng.random((batch, *d.shape)) >= d.rate
            out.append(nd.array(m / (1.0 - d.rate), dtype=self.dtype, ctx=self.context))
        return out

    def _inputs(self, inputs) -> list:
        given = self.graph.as_input_dict(inputs)
        out = []
        for inp in self.graph.inputs:
            x = np.asarray(given[inp.name])
            where = f"input {inp.name!r}"
            if x.ndim != len(inp.shape) + 1 or tuple(x.shape[1:]) != tuple(inp.shape):
                raise DataError(f"{where}: expected a batch of shape "
                                f"(N, {', '.join(map(str, inp.shape))}), found {x.shape}")
            if inp.kind == "int" and not np.issubdtype(x.dtype, np.integer):
                raise DataError(f"{where}: expected integer indices, found {x.dtype}")
            check_embedding_ids(self._index_limits, inp.name, x)
            out.append(nd.array(x, dtype=self.dtype, ctx=self.context))
        return out

    def _labels(self, labels):
        y = np.asarray(labels)
        out_shape = self.graph.output_type.shape
        if self.spec.loss.label_kind == "int":
            expected = (y.shape[0], *out_shape[:-1]) if y.ndim else None
            if not np.issubdtype(y.dtype, np.integer) or y.shape != expected:
                raise DataError(f"labels: expected integer class ids of shape "
                                f"(N{''.join(', ' + str(s) for s in out_shape[:-1])}), "
                                f"found {y.dtype} {y.shape}")
            self.spec.loss.check_labels(y, out_shape[-1])
        elif y.ndim != len(out_shape) + 1 or tuple(y.shape[1:]) != tuple(out_shape):
            raise DataError(f"labels: expected targets shaped like the output "
                            f"(N, {', '.join(map(str, out_shape))}), found {y.shape}")
        return nd.array(y, dtype=self.dtype, ctx=self.context)

    def __repr__(self):
        return (f"Program(mxnet, {self.graph.name}, dtype={self.dtype}, device={self.device}, "
                f"step={self.step}, mode={self.mode})")


__all__ = ["Program"]
