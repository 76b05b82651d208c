"""``Program``: the lowered model, loss and optimizer, with the train step, gradients and forward.

The train step is the idiomatic eager torch step (zero_grad(set_to_none), forward, loss,
backward, optimizer.step, scheduler.step); nothing is re-created per step, the only host<->device
traffic is the batch in and the loss out (none for a ``Batch`` from ``prepare_batch``). ``mode``
``"eager"`` runs the module as is; ``"compile"`` runs the model's forward through
``torch.compile(dynamic=False)`` (AOTAutograd compiles its backward too), the way a torch user
compiles a model; the optimizer step stays eager in both.

Dropout: in training the program draws the keep-masks of the whole batch from its own
``torch.Generator`` (``DropoutRNG``, seeded from ``spec.seed``; the global torch RNG is untouched),
one per node with dropout in graph order (mask = (u >= rate), u ~ U[0, 1) of shape
(batch, *mask shape)), and sets them in the modules (the injected-mask path), so a data-parallel
program draws the same global masks and each rank uses its rows (docs/design.md section 10); a program
replays the same masks after ``load``. ``gradients`` and ``forward(training=True)`` draw the
masks the next ``train_step`` would use without advancing the stream. The stream's position is
its generator state (a ByteTensor): ``export_rng_state`` / ``load_rng_state`` carry it as
``{"torch_generator": uint8 array}``. The lowered ``nn.Module`` used without rosetta keeps
``nn.Dropout``'s own behaviour.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from rosetta import backend as contract
from rosetta.errors import CheckpointError
from rosetta.backends.torch import losses, optimizers, params
from rosetta.backends.torch.device import (full_float32_precision, resolve as torch_device,
                                           policy_dtype as torch_dtype)
from rosetta.backends.torch.model import batch_norms, build_model, running_stats_frozen
from rosetta.precision import FLOAT32, INNER_SOFTMAX, PRODUCT, family

RECURRENT = ("LSTM", "GRU", "SimpleRNN")


def precision_rules(graph, model, low: torch.dtype) -> dict:
    """How a mixed policy runs each node (``GraphModule.set_precision``): products under
    ``torch.autocast(dtype=low)`` (torch's CPU and CUDA lists cast linear, matmul and
    convolution), the recurrent layers with their input and weights cast to the low type
    explicitly (``NativeRecurrent.low``: CPU autocast leaves them in float32), float32 ops with their inputs cast to float32 and autocast off
    (torch's CPU autocast would leave a softmax or LayerNorm of bf16 inputs in bf16), the
    softmax inside attention in float32 (``float32_softmax``). Other nodes: their inputs'
    type."""
    rules = {}
    for node in graph.nodes:
        fam = family(node.op, node.attrs)
        if fam == PRODUCT and node.op in RECURRENT:
            # autocast leaves the recurrent kernel in float32: explicit casts (recurrent.py)
            model.node_module(node.name).low = low
        elif fam == PRODUCT:
            rules[node.name] = (low, False)
            if node.op in INNER_SOFTMAX:
                model.node_module(node.name).float32_softmax = True
        elif fam == FLOAT32:
            rules[node.name] = (None, True)
    return rules


class DropoutRNG:
    """A private RNG stream for dropout on one device, seeded from ``seed``: a ``torch.Generator``
    of its own (the global torch RNG is never touched) that draws the keep-masks."""

    def __init__(self, device: torch.device, seed: int):
        self.device = device
        self.seed = int(seed)
        self.generator = torch.Generator(device=device)
        self.reset()

    def reset(self):
        self.generator.manual_seed(self.seed)

    @property
    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def restore(self, state: np.ndarray):
        """Continue from ``state`` (a ``get_state()`` of a generator of this device type, as
        uint8): checked on a scratch generator first (CheckpointError if torch refuses it)."""
        a = np.asarray(state)
        shape = tuple(self.state.shape)
        if a.dtype != np.uint8 or a.shape != shape:
            raise CheckpointError(f"rng state: torch_generator must be uint8 of shape "
                                  f"{shape} (a {self.device.type} generator "
                                  f"state), found {a.dtype} {a.shape}")
        t = torch.from_numpy(a.copy())
        try:
            torch.Generator(device=self.device).set_state(t)
        except RuntimeError as e:
            raise CheckpointError(f"rng state: torch_generator is not a valid "
                                  f"{self.device.type} generator state: {e}") from None
        self.generator.set_state(t)

    def draw(self, draws, batch: int, dtype: torch.dtype, advance: bool) -> dict:
        """Keep-masks {node: (batch, *shape)} for ``draws`` (``rosetta.dropout.mask_draws``, in
        graph order): u ~ U[0, 1) from this stream, mask = (u >= rate); the stream keeps its
        position unless ``advance``."""
        saved = None if advance else self.generator.get_state()
        masks = {}
        for d in draws:
            u = torch.rand((batch, *d.shape), generator=self.generator, dtype=dtype,
                           device=self.device)
            masks[d.node] = (u >= d.rate).to(dtype)
        if saved is not None:
            self.generator.set_state(saved)
        return masks


# torch optimizer state key -> canonical slot name
_OPTIMIZER_SLOTS = optimizers.NATIVE_SLOTS


class Program(contract.BackendProgram):
    """A TrainSpec lowered to a ``GraphModule`` (``model``), a ``torch.optim`` optimizer
    (``optimizer``) with its ``ScheduleLR`` (``scheduler``) and a loss module (``loss_fn``)."""

    backend = "torch"

    def __init__(self, spec, dtype: str = "float32", device: str = "cpu", mode: str = "eager"):
        self._setup(spec, dtype, device, mode)
        self.torch_dtype = torch_dtype(self.policy.param)   # parameters, inputs, masks
        self.torch_device = torch_device(device)
        full_float32_precision()

        self.model = build_model(self.graph, self.torch_device, self.torch_dtype,
                                 empty_params=self.builds_sharded)
        if self.policy.mixed:
            self.model.set_precision(precision_rules(self.graph, self.model,
                                                     torch_dtype(self.policy.low)))
        self._place_model()
        self._params, self._state = params.slots(self.graph, self.model)
        self._param_tensors = [s.tensor for s in self._params.values()]
        # frozen parameters (``optim.frozen``): requires_grad False, outside the optimizer
        self._frozen = [s.tensor for p, s in self._params.items()
                        if spec.optimizer.is_frozen(p)]
        for t in self._frozen:
            t.requires_grad_(False)
        reached = self.graph.ancestors(self.graph.outputs)
        # parameters no output depends on get grad None from autograd; torch's optimizers would
        # skip them, while the canonical update still decays them: give them zero gradients
        self._unreached = [s.tensor for p, s in self._params.items()
                           if p.split("/")[0] not in reached and not spec.optimizer.is_frozen(p)]
        self._norms = batch_norms(self.model)
        self.loss_fn = losses.lower(spec.loss).to(self.torch_device)
        self._label_dtype = losses.label_dtype(spec.loss, self.torch_dtype)
        self._input_kinds = [(i.name, i.kind) for i in self.graph.inputs]
        self._rng = DropoutRNG(self.torch_device, spec.seed) if self._mask_draws else None
        # dynamic=False: every GraphModule shares one ``forward`` code object, and dynamo keys its
        # caches (and automatic dynamic shapes) on the code object, so with the default a second
        # model in the process would be recompiled with dynamic shapes (inductor then failed on
        # the zoo CNN: "cannot determine truth value of Relational"). The price: dynamo patches
        # its config around every call, measured at 1-8 % of the zoo MLP's forward + backward on
        # a CPU (rosetta bench: compile-mode ratio 1.01-1.08 against torch.compile(model)).
        self._run = torch.compile(self.model, dynamic=False) if mode == "compile" else self.model
        self.optimizer = self.scheduler = None
        self.load(self.graph.initial_params(spec.seed), self.graph.init_state())

    # the model's parameters are made sharded, before any value exists (the data-parallel
    # Program with ``shard_params``): ``build_model(empty_params=True)`` then ``_place_model``
    builds_sharded = False

    def _place_model(self) -> None:
        """Between building the model and reading its parameter slots: nothing here."""

    # --- parameters ---------------------------------------------------------------------------
    def load(self, params_: dict, state: dict) -> None:
        params.load(self._params, params_, "parameters")
        params.load(self._state, state, "state")
        self.optimizer, self.scheduler = optimizers.lower(
            self.spec.optimizer, self.spec.optimizer.trainable(
                {path: s.tensor for path, s in self._params.items()}))
        self.step = 0
        self._reset_loss_scale()
        if self._rng is not None:
            self._rng.reset()

    def export_params(self) -> dict[str, np.ndarray]:
        return params.export(self._params)

    def export_state(self) -> dict[str, np.ndarray]:
        return params.export(self._state)

    # --- steps --------------------------------------------------------------------------------
    def export_optimizer_state(self) -> dict[str, np.ndarray]:
        """torch's per-parameter state under canonical slot names (SGD ``momentum_buffer`` is
        the canonical v; Adam's ``exp_avg`` / ``exp_avg_sq`` are m / v), in canonical layout."""
        out = {}
        for path, slot in self._params.items():
            st = self.optimizer.state.get(slot.tensor, {})
            for native, name in _OPTIMIZER_SLOTS:
                if st.get(native) is not None:
                    out[f"{name}/{path}"] = slot.canonical(st[native])
        return out

    def _set_optimizer_state(self, checked: dict, step: int) -> None:
        """Resume after ``step`` updates (``load_optimizer_state``, after ``load``): ``checked``
        as ``export_optimizer_state`` names them (canonical layout, transposed here to torch's),
        already checked by the base. Sets every parameter's optimizer state through ``optimizer.load_state_dict`` (with torch's ``step``
        tensor = ``step`` for Adam, AdamW, RMSprop, Adagrad: their bias corrections and the
        epsilon-hat factor), the scheduler at ``last_epoch = step`` with lr(step) in each group,
        and ``program.step``. The dropout stream is ``load_rng_state``'s."""
        states = {}
        for name, a in checked.items():
            slot, path = name.split("/", 1)
            p = self._params[path]
            states.setdefault(p.tensor, {})[slot] = np.ascontiguousarray(p.to_native(a))
        optimizers.load_state(self.spec.optimizer, self.optimizer, self.scheduler, states,
                              int(step))
        self.step = int(step)

    rng_key = "torch_generator"  # the dropout stream's generator state, uint8

    def _rng_position(self) -> np.ndarray:
        return self._rng.state.numpy().copy()

    def _set_rng_position(self, a: np.ndarray) -> None:
        self._rng.restore(a)

    def _run_step(self, batch, masks) -> float:
        xs, y = batch
        self._mode(training=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._dropout(len(y), advance=True, masks=masks):
            loss = self._loss(self._run(*xs), y)
        scale = self.loss_scale.scale if self.loss_scale is not None else None
        if loss.requires_grad:  # False only for a model without parameters
            (loss if scale is None else loss * scale).backward()
        for p in self._param_tensors:   # unreached, or reached only through a cast to int:
            if p.grad is None and p.requires_grad:   # the canonical update sees a zero gradient
                p.grad = torch.zeros_like(p)
        if scale is not None and not self._unscaled_finite(
                [p.grad for p in self._param_tensors], scale):
            return loss.item()   # skipped: nothing moves, the update count stays
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return loss.item()

    def _loss(self, out, y):
        """The loss of the model output ``out``: in float32 under a mixed policy (the output of
        a product arrives in the low type), else in the output's type."""
        return self.loss_fn(out.float() if self.policy.mixed else out, y)

    def _unscaled_finite(self, grads, scale) -> bool:
        """Gradients of ``loss * scale`` divided by ``scale`` in place (float32, exact: a power of
        two), and ``LossScale.after`` told whether every element is finite."""
        finite = True
        for g in grads:
            if g is not None:
                g.mul_(1.0 / scale)
                finite = finite and bool(torch.isfinite(g).all())
        return self.loss_scale.after(finite)

    def _run_gradients(self, batch, masks) -> tuple[float, dict[str, np.ndarray]]:
        xs, y = batch
        self._mode(training=True)
        scale = self.loss_scale.scale if self.loss_scale is not None else None
        with self._frozen_differentiated():
            with running_stats_frozen(self._norms), \
                    self._dropout(len(y), advance=False, masks=masks):
                loss = self._loss(self._run(*xs), y)
            grads = (torch.autograd.grad(loss if scale is None else loss * scale,
                                         self._param_tensors, allow_unused=True)
                     if loss.requires_grad else [None] * len(self._param_tensors))
        if scale is not None:  # unscaled, the rule's state untouched
            grads = [None if g is None else g * (1.0 / scale) for g in grads]
        out = {}
        for (path, slot), g in zip(self._params.items(), grads):
            out[path] = slot.canonical(torch.zeros_like(slot.tensor) if g is None else g)
        return loss.item(), out

    def _run_forward(self, xs, training: bool, masks) -> np.ndarray:
        self._mode(training=training)
        ctx = running_stats_frozen(self._norms) if training else nullcontext()
        with torch.no_grad(), ctx, self._dropout(len(xs[0]) if xs else 0, advance=False,
                                                 training=training, masks=masks):
            out = self._run(*xs)
        return np.array(out.float().cpu().numpy() if out.dtype in (torch.bfloat16, torch.float16)
                        else out.cpu().numpy())

    # --- helpers ------------------------------------------------------------------------------
    @contextmanager
    def _frozen_differentiated(self):
        """Frozen parameters require grad for one ``gradients`` call (it reports the gradient
        of every parameter; the train step never computes theirs)."""
        try:
            for t in self._frozen:
                t.requires_grad_(True)
            yield
        finally:
            for t in self._frozen:
                t.requires_grad_(False)

    def _mode(self, training: bool):
        if self.model.training != training:
            self.model.train(training)

    def _dropout(self, batch: int, advance: bool, training: bool = True, masks=None):
        """The keep-masks of a training forward on ``batch`` examples: the given (checked)
        ``masks``, else drawn from the program's stream (``_drawn_masks``), put into the modules
        that use them."""
        if masks:
            return self._injected(masks)
        if self._rng is None or not training:
            return nullcontext()
        return self._injected(self._drawn_masks(batch, advance))

    def _drawn_masks(self, batch: int, advance: bool) -> dict:
        """The keep-masks of the next step, drawn for the whole batch in graph order."""
        return self._rng.draw(self._mask_draws, batch, self.torch_dtype, advance)

    @contextmanager
    def _injected(self, masks: dict):
        """Use the given keep-masks in the modules that draw them (Dropout, attention) for one
        forward."""
        mods = {name: self.model.node_module(name) for name in masks}
        try:
            for name, m in mods.items():
                mask = masks[name]
                m.set_mask(mask if isinstance(mask, torch.Tensor)
                           else self._tensor(mask, self.torch_dtype))
            yield
        finally:
            for m in mods.values():
                m.set_mask(None)

    def _native_inputs(self, x: dict) -> list[torch.Tensor]:
        """Checked host inputs (``BackendProgram.check_inputs``) as tensors on the device, in
        input order: floats in the program dtype, ids int64."""
        return [self._tensor(x[name], self.torch_dtype if kind == "float" else torch.int64)
                for name, kind in self._input_kinds]

    def _native_labels(self, y: np.ndarray) -> torch.Tensor:
        """Checked labels (class ids range-checked on the host: a bad id is a framework error
        on the CPU and a device assert on CUDA) as a tensor on the device."""
        return self._tensor(y, self._label_dtype)

    def _tensor(self, a, dtype: torch.dtype) -> torch.Tensor:
        a = np.asarray(a)
        if not a.flags.writeable:  # torch warns on read-only NumPy memory; copy it instead
            a = a.copy()
        return torch.as_tensor(a, dtype=dtype, device=self.torch_device)
