"""``Program``: the flax model, the optax optimizer and the compiled steps for one spec.

The state of a program lives on its device as JAX arrays and never round-trips through NumPy
between steps: ``params`` and ``batch_stats`` (flax variable collections), ``opt_state`` (optax)
and a step counter. ``train_step`` is one ``jax.jit``ted pure function

    (params, batch_stats, opt_state, step, rng, inputs, labels)
        -> (params, batch_stats, opt_state, step + 1, loss)

(without ``step`` and ``rng`` for a model that has no dropout: nothing in it is random)
that donates the old state buffers (so arrays read from ``program.params`` before a step are
deleted by it); per call, only the batch goes to the device and the loss comes back. The batch is
handed to the jitted function as NumPy arrays already in the program dtype: jit copies them onto
the device of the committed state in its C++ dispatch path, which costs less than a separate
``jax.device_put``. ``gradients`` and ``forward`` are jitted too and return new values without
touching the stored ones (BatchNorm statistics computed in training mode are dropped).

Dropout: masks come from ``jax.random.fold_in(jax.random.key(spec.seed), step)``, so update
number t always uses the same masks, and ``gradients`` / ``forward(training=True)`` called before
update t see the masks that update t will use. They cannot match other backends' masks. With
``masks`` (conformance mode: {node with dropout: keep-mask}) the injected masks replace the rng;
they are one more argument of the same compiled functions (one extra trace, for the masked form).
Since the masks are a function of (seed, update count), there is no stream position to save:
``export_rng_state`` is {} and a resumed program (``load_optimizer_state`` sets the device step
counter) draws the masks the uninterrupted one would have.

Precision policies (``rosetta.backends.jax.precision``, docs/guide/precision.md): the state is
kept in the policy's parameter type (float32 masters under a mixed policy), the product nodes'
parameters are cast to the low type inside the step, the loss runs in float32 under a mixed
policy, and under ``mixed_float16`` the steps take the loss scale as one more argument and
return whether the unscaled gradients were all finite: a non-finite step moves no parameter or
optimizer slot and does not advance the device step counter, and the host's ``LossScale``
(checkpointed, neutral) decides the scale and the update count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rosetta import backend as contract
from rosetta.spec import TrainSpec

from rosetta.backends.jax import params as params_mod
from rosetta.backends.jax.device import resolve as jax_device
from rosetta.backends.jax.losses import lower as lower_loss
from rosetta.backends.jax.model import build_model
from rosetta.backends.jax import optimizers
from rosetta.backends.jax import precision as lowp
from rosetta.backends.jax.optimizers import lower as lower_optimizer, slots

STEP_DTYPE = np.int32


class Program(contract.BackendProgram):
    backend = "jax"
    # a mixed_float16 step whose gradients are not all finite moves nothing (the loss-scale
    # rule); False only to plant the precision tier's "update on a skipped step" trap
    _skip_nonfinite = True

    def __init__(self, spec: TrainSpec, *, dtype: str = "float32", device: str = "cpu",
                 mode: str = "jit"):
        self._setup(spec, dtype, device, mode)
        self.jax_device = jax_device(self.device)
        self._np_dtype = self.np_dtype

        pol = self.policy
        self._param_dtype = jnp.dtype(pol.param)   # parameters, batch stats, optimizer state
        self.model = build_model(self.graph, self.precision)
        self.optimizer = lower_optimizer(spec.optimizer, pol.param)
        self.loss_fn = lower_loss(spec.loss)
        params_mod.check_structure(self.graph, self.model, self._example_inputs())
        self.rng = self._put_key(jax.random.key(spec.seed))
        self._compile_steps()
        self.load(self.graph.initial_params(spec.seed), self.graph.init_state())

    # --- the pure functions, compiled once ------------------------------------------------------
    def _compile_steps(self):
        """The jitted steps of the current ``model``; under a low precision compiled with
        ``xla_allow_excess_precision`` off (``precision.COMPILER_OPTIONS``), so XLA rounds to the
        type each op is written in instead of keeping float32 between fused bf16 ops."""
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        pol, param_dtype = self.policy, self._param_dtype
        to_low = lowp.product_caster(self.graph, pol)
        model = self._step_model(model)
        skip_nonfinite = self._skip_nonfinite

        def run(params, batch_stats, inputs, train, rng, masks=None, every=False):
            """Model output and the batch statistics after this call (unchanged in eval)."""
            inputs = lowp.cast_floats(inputs, param_dtype)
            variables = {params_mod.PARAMS: to_low(params), params_mod.STATE: batch_stats}
            if not train:
                return model.apply(variables, inputs, train=False, every=every), batch_stats
            out, mutated = model.apply(variables, inputs, train=True, masks=masks,
                                       rngs=None if rng is None else {"dropout": rng},
                                       mutable=[params_mod.STATE], every=every)
            return out, mutated.get(params_mod.STATE, batch_stats)

        self._apply = run
        self._every_node = None   # the precision tier's every-node forward, compiled on use

        def loss_and_grads(params, batch_stats, step, rng, inputs, labels, masks, scale):
            """(loss, gradients, new batch statistics, all gradients finite); with ``scale``
            (mixed_float16) the gradients of loss * scale, divided by scale in float32."""
            step_rng = None if rng is None else jax.random.fold_in(rng, step)

            def objective(p):
                out, new_stats = run(p, batch_stats, inputs, True, step_rng, masks)
                loss = lowp.loss(loss_fn, out, labels, pol)
                return (loss if scale is None else loss * scale), (loss, new_stats)

            (_, (loss, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
            if scale is None:
                return loss, grads, new_stats, None
            grads = jax.tree.map(lambda g: g * (1.0 / scale), grads)
            return loss, grads, new_stats, lowp.all_finite(grads)

        def update(params, opt_state, grads, finite):
            """The optimizer's update; skipped (nothing moves) when ``finite`` is False."""
            updates, new_opt = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            if finite is None or not skip_nonfinite:
                return new_params, new_opt
            return lowp.select(finite, new_params, params), lowp.select(finite, new_opt,
                                                                        opt_state)

        def train_step(params, batch_stats, opt_state, step, rng, inputs, labels, masks,
                       scale):
            loss, grads, new_stats, finite = loss_and_grads(params, batch_stats, step, rng,
                                                            inputs, labels, masks, scale)
            params, opt_state = update(params, opt_state, grads, finite)
            step = step + (1 if finite is None else finite.astype(step.dtype))
            return params, new_stats, opt_state, step, loss, finite

        def gradients(params, batch_stats, step, rng, inputs, labels, masks, scale):
            loss, grads, _, _ = loss_and_grads(params, batch_stats, step, rng, inputs, labels,
                                               masks, scale)
            return loss, grads

        def forward_eval(params, batch_stats, inputs):
            return run(params, batch_stats, inputs, False, None)[0]

        def forward_train(params, batch_stats, step, rng, inputs, masks):
            return run(params, batch_stats, inputs, True, jax.random.fold_in(rng, step),
                       masks)[0]

        def train_step_plain(params, batch_stats, opt_state, inputs, labels, scale):
            """The step of a model that draws nothing at random (no dropout): no rng and no
            step counter to pass in and out (each argument costs the dispatch ~1-2 us)."""
            loss, grads, new_stats, finite = loss_and_grads(params, batch_stats, None, None,
                                                            inputs, labels, None, scale)
            params, opt_state = update(params, opt_state, grads, finite)
            return params, new_stats, opt_state, loss, finite

        # the Python functions, for the precision trace's jaxpr (``precision.trace``)
        self._raw = {"train_step": train_step, "train_step_plain": train_step_plain}
        jit = lowp.jit_for(pol)
        self._train_step = jit(self._placed(train_step), donate_argnums=(0, 1, 2, 3))
        self._train_step_plain = jit(self._placed(train_step_plain), donate_argnums=(0, 1, 2))
        self._gradients = jit(gradients)
        self._forward_eval = jit(forward_eval)
        self._forward_train = jit(forward_train)

    def _placed(self, step):
        """``step`` (returning parameters, batch statistics and optimizer state first) with its
        new state placed as the program keeps it: here as the inputs are (a data-parallel
        program that shards its state constrains it)."""
        return step

    def _step_model(self, model):
        """The flax module the steps run: ``model`` here; a data-parallel program with sharded
        parameters runs it with each node's parameters gathered whole where the node reads them
        (``GraphModule.run_node``)."""
        return model

    # --- state ------------------------------------------------------------------------------------
    def load(self, params, state):
        variables = params_mod.load(self.graph, params, state, self._param_dtype)
        put = self._put
        self.params = self._put_state(variables[params_mod.PARAMS])
        self.batch_stats = put(variables[params_mod.STATE])
        self.opt_state = self._init_optimizer_state(self.params)
        self.step = 0
        self._step = put(np.asarray(0, STEP_DTYPE))
        self._reset_loss_scale()

    def export_params(self):
        return params_mod.export(self.params)

    def export_state(self):
        return params_mod.export(self.batch_stats)

    def export_optimizer_state(self):
        return {f"{slot}/{path}": arr for slot, tree in slots(self.opt_state).items()
                for path, arr in params_mod.export(tree).items()}

    def _set_optimizer_state(self, checked: dict, step: int) -> None:
        """Resume after ``step`` updates (``load_optimizer_state``, after ``load``): ``checked``
        as ``export_optimizer_state`` names them (checked by the base), written into the optax
        state by the ``_SLOTS`` table; every optax ``count`` (bias corrections, schedule, epsilon hat) set to ``step``,
        as are ``program.step`` and the device step counter the dropout masks are folded from.
        The new state has the old one's structure, shapes and dtypes, on the program's device:
        the jitted steps are not retraced."""
        opt_state = optimizers.load_state(self.opt_state, checked, int(step))
        put = self._put
        self.opt_state = put(opt_state)
        self.step = int(step)
        self._step = put(np.asarray(step, STEP_DTYPE))

    def _put(self, tree):
        """Host arrays (a tree) on the program's device (a data-parallel program: replicated
        over its mesh)."""
        return jax.device_put(tree, self.jax_device)

    def _put_state(self, tree):
        """Parameters (host arrays) on the device: ``_put`` here; sharded over the mesh in a
        data-parallel program with ``shard_params``."""
        return self._put(tree)

    def _init_optimizer_state(self, params):
        """optax's initial state for ``params``, placed as ``_put`` places."""
        return self._put(self.optimizer.init(params))

    def _put_key(self, key):
        """A typed PRNG key placed as ``_put`` places arrays."""
        return jax.device_put(key, self.jax_device)

    # --- steps ------------------------------------------------------------------------------------
    def _to_device(self, batch):
        return jax.device_put(batch, self.jax_device)

    def _scale(self):
        """The loss scale as the steps take it: a float32 scalar (mixed_float16), else None."""
        return None if self.loss_scale is None else np.float32(self.loss_scale.scale)

    def _after(self, finite) -> None:
        """Count the update; with a loss scale, ``LossScale.after`` decides (a skipped step,
        whose gradients were not finite, does not count)."""
        if finite is None or self.loss_scale.after(bool(finite)):
            self.step += 1

    def _run_step(self, batch, masks):
        x, y = batch
        if not self._mask_draws:  # nothing random: the counter only counts (on the host)
            (self.params, self.batch_stats, self.opt_state, loss, finite) = \
                self._train_step_plain(self.params, self.batch_stats, self.opt_state, x, y,
                                       self._scale())
        else:
            (self.params, self.batch_stats, self.opt_state, self._step, loss, finite) = \
                self._train_step(self.params, self.batch_stats, self.opt_state, self._step,
                                 self.rng, x, y, self._native_masks(masks), self._scale())
        self._await(loss)
        self._after(finite)
        return float(loss)

    def _await(self, out) -> None:
        """Before the host reads a step's result: nothing here (``float`` waits); the
        data-parallel program of several processes bounds the wait."""

    def _run_gradients(self, batch, masks):
        loss, grads = self._gradients(self.params, self.batch_stats, self._step, self.rng,
                                      *batch, self._native_masks(masks), self._scale())
        return float(loss), params_mod.export(grads)

    def _run_forward(self, x, training: bool, masks):
        if training:
            out = self._forward_train(self.params, self.batch_stats, self._step, self.rng, x,
                                      self._cast_masks(masks))
        else:
            out = self._forward_eval(self.params, self.batch_stats, x)
        out = jax.device_get(out)
        return ([params_mod.host(o) for o in out] if isinstance(out, list)
                else params_mod.host(out))

    # --- checked host arrays as the jitted functions take them: casts, no transfer yet ----------
    def _native_masks(self, masks: dict | None) -> dict | None:
        """The keep-masks of a step or gradients (a data-parallel program shards them)."""
        return self._cast_masks(masks)

    def _cast_masks(self, masks: dict | None) -> dict | None:
        """Checked keep-masks in the program dtype; None without any (then the compiled step
        draws masks from the dropout rng)."""
        if masks is None:
            return None
        return {name: np.asarray(m).astype(self._np_dtype, copy=False)
                for name, m in masks.items()}

    def _native_inputs(self, x: dict) -> dict:
        """Floats already in the program dtype; ids as int32 (JAX's default index type)."""
        return {inp.name: (x[inp.name].astype(np.int32, copy=False) if inp.kind == "int"
                           else x[inp.name]) for inp in self.graph.inputs}

    def _native_labels(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.int32, copy=False) if self._int_labels else y

    def _example_inputs(self) -> dict:
        return {i.name: jax.ShapeDtypeStruct((1, *i.shape),
                                             jnp.int32 if i.kind == "int" else self._np_dtype)
                for i in self.graph.inputs}
