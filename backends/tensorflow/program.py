"""``Program``: the lowered model, loss and optimizer with XLA-compiled steps.

Every step is one ``tf.function(jit_compile=True)`` (mode ``"xla"``, the default; mode
``"function"`` leaves ``jit_compile`` off and runs TensorFlow's graph runtime) with a fixed input
signature (the batch axis left open), so it traces once; XLA compiles once per batch size. The
steps are placed on the program's device; inputs cross from the host once per call (never, for a
``Batch`` from ``prepare_batch``) and only the loss (and, where asked, gradients or outputs)
comes back.

Dropout: in training the step draws the keep-masks of the whole batch from the model's
``tf.random.Generator`` (seeded from ``spec.seed``, reset by ``load``), one per node with dropout
in graph order (``draw_masks``: mask = (u >= rate), u ~ U[0, 1) of shape (batch, *mask shape)),
and runs the model with them, so a data-parallel program draws the same global masks and gives
each replica its rows (docs/design.md section 10). ``gradients`` and ``forward(training=True)`` restore
the generator state after their draws, so they see the masks the next ``train_step`` will use and
leave the stream where it was. With ``masks`` (conformance mode: {node with dropout: keep-mask}),
the given masks replace the draws; each step then has a second compiled variant that takes them
as inputs. The generator's position is its state variable: ``export_rng_state`` /
``load_rng_state`` carry it as ``{"tf_generator": int64 array}`` (Philox counter and key),
restored bitwise.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rosetta import backend as contract
from rosetta.backends.tensorflow import device as tf_device
from rosetta.backends.tensorflow import losses, optimizers, params
from rosetta.backends.tensorflow.model import GraphModule
from rosetta.errors import CheckpointError

ZERO = tf.UnconnectedGradients.ZERO  # a parameter the loss does not reach has gradient 0


def draw_masks(rng: tf.random.Generator, draws, batch, dtype: tf.DType) -> dict:
    """Keep-masks {node: (batch, *shape)} for ``draws`` (``rosetta.dropout.mask_draws``, graph
    order): 64 random bits per element from ``rng.uniform_full_int``, u = (bits >> 11) · 2⁻⁵³
    (exact in float64, uniform on [0, 1)), mask = (u >= rate) as 0/1 of ``dtype``.

    The integer draws are the same compiled by XLA and in TensorFlow's graph runtime, so the
    one-device XLA step and the data-parallel step (no XLA) draw the same masks; TensorFlow's
    float draws are not (measured on tensorflow 2.21, CPU, float64 with a dynamic batch:
    ``Generator.uniform`` and ``stateless_uniform`` with ``alg="philox"`` give other numbers
    under XLA)."""
    masks = {}
    for d in draws:
        shape = tf.concat([tf.reshape(tf.cast(batch, tf.int32), [1]),
                           tf.constant(d.shape, tf.int32)], axis=0)
        bits = rng.uniform_full_int(shape, dtype=tf.uint64)
        u = tf.cast(tf.bitwise.right_shift(bits, tf.constant(11, tf.uint64)),
                    tf.float64) * 2.0 ** -53
        masks[d.node] = tf.cast(u >= d.rate, dtype)
    return masks


class Compiled:
    """``fn`` as one ``tf.function`` (XLA-compiled unless ``jit_compile`` is False) traced once:
    the batch axis is open in the signature (XLA compiles once per batch size). AutoGraph is off:
    the bodies have no data-dependent Python control flow.

    Calls go to the traced ``ConcreteFunction`` with the arguments flattened to positional
    tensors: ``tf.function``'s own call path binds and checks nested arguments against the
    signature on every call, which costs 0.1 to 0.3 ms a call on a CPU (more than a whole XLA
    step of a small model); the concrete function runs the same graph without it. It is traced
    on the first call. ``function`` is the ``tf.function`` (flat positional tensors, in the order
    of ``tf.nest.flatten`` of ``input_signature``) for use without rosetta.
    """

    def __init__(self, fn, input_signature, jit_compile: bool = True):
        self.signature = list(input_signature)
        structure = self.signature

        def flat(*tensors):
            return fn(*tf.nest.pack_sequence_as(structure, list(tensors)))

        flat.__name__ = getattr(fn, "__name__", "step")
        self.function = tf.function(flat, jit_compile=jit_compile, autograph=False,
                                    input_signature=tf.nest.flatten(structure))
        # every Program traces its own functions once, which TensorFlow's frequent-retracing
        # detector (keyed by the Python code, shared by all Programs) would misreport as
        # retracing: no public switch (SavedModel loading sets this too)
        self.function._omit_frequent_tracing_warning = True
        self._concrete = None

    def __call__(self, *args):
        if self._concrete is None:
            self._concrete = self.function.get_concrete_function()
        return self._concrete(*tf.nest.flatten(list(args)))


def compiled(fn, input_signature, jit_compile: bool = True) -> Compiled:
    return Compiled(fn, input_signature, jit_compile)


class Program(contract.BackendProgram):
    """A ``TrainSpec`` lowered to TensorFlow on one device and dtype.

    ``model`` is a ``GraphModule`` (tf.Module) and ``optimizer`` a tf.Module optimizer with
    ``apply_gradients``; both are usable without rosetta.
    """

    backend = "tensorflow"

    def __init__(self, spec, dtype: str = "float32", device: str = "cpu", mode: str = "xla"):
        self._setup(spec, dtype, device, mode)
        # the variables' type (the policy's parameters: bf16 under bfloat16, float32 masters
        # under the mixed policies) and the type arrays cross in (float32 for the low policies)
        self.tf_dtype = tf_device.policy_dtype(self.policy.param)
        self.host_dtype = tf_device.policy_dtype(self.policy.host)
        self.tf_device = tf_device.resolve(device)
        # TensorFlow places a call on the first GPU if there is one, else on the CPU; a step on
        # any other device needs an explicit tf.device scope (which costs ~50 us a call)
        self._pinned = self.tf_device != tf_device.default_device()
        graph = self.graph
        with tf.device(self.tf_device):
            self.model = GraphModule(graph, self.tf_dtype, spec.seed, self.policy,
                                     frozen=spec.optimizer.frozen)
            self.param_vars = self.model.param_variables()
            # frozen parameters (``optim.frozen``): variables made with trainable=False, outside
            # the optimizer and the train step's tape; ``gradients`` still reports theirs
            self.differentiated = list(self.param_vars.values())
            self.trainable = list(spec.optimizer.trainable(self.param_vars).values())
            self.optimizer = optimizers.lower(spec.optimizer, self.trainable)
            # mixed_float16: the loss scale the compiled steps read (the rule itself, and its
            # state, is the host's ``loss_scale``: rosetta.precision.LossScale)
            self._scale = (tf.Variable(self.loss_scale.scale, dtype=tf.float32,
                                       trainable=False, name="loss_scale")
                           if self.loss_scale is not None else None)
        self.loss_fn = losses.lower(spec.loss)

        self.input_signature = {
            i.name: tf.TensorSpec((None, *i.shape),
                                  self.host_dtype if i.kind == "float" else tf.int64,
                                  name=i.name)
            for i in graph.inputs}
        out_shape = graph.output_type.shape
        if spec.loss.label_kind == "int":
            self.label_dtype, self.label_shape = tf.int64, tuple(out_shape[:-1])
            self.classes = out_shape[-1]
        else:
            self.label_dtype, self.label_shape = self.host_dtype, tuple(out_shape)
        labels = tf.TensorSpec((None, *self.label_shape), self.label_dtype, name="labels")
        # every op that draws a keep-mask in training (Dropout, attention weights) declares its
        # per-example shape; rate-0 ops draw nothing and take no mask
        self.mask_draws = self._mask_draws
        self.dropout_nodes = tuple(d.node for d in self.mask_draws)
        self.mask_signature = {
            d.node: tf.TensorSpec((None, *d.shape), self.host_dtype, name=f"mask_{d.node}")
            for d in self.mask_draws}
        sig = [self.input_signature, labels]
        masked = [self.input_signature, labels, self.mask_signature]
        xla = mode == "xla"
        self._train = {False: compiled(self._train_step, sig, xla),
                       True: compiled(self._train_step, masked, xla)}
        self._grads_fn = {False: compiled(self._loss_and_grads, sig, xla),
                       True: compiled(self._loss_and_grads, masked, xla)}
        if self._scale is not None:
            self._scaled = {False: compiled(self._scaled_step, sig, xla),
                            True: compiled(self._scaled_step, masked, xla)}
            self._apply = compiled(self._apply_update, [[
                tf.TensorSpec(v.shape, v.dtype) for v in self.trainable]], xla)
        self._forward_eval_fn = compiled(self._forward_eval, [self.input_signature], xla)
        self._forward_train = {
            False: compiled(self._forward_training, [self.input_signature], xla),
            True: compiled(self._forward_training, [self.input_signature, self.mask_signature],
                           xla)}
        self.load(graph.init_params(spec.seed), graph.init_state())

    # --- the compiled bodies ---------------------------------------------------------------------
    def _forward_eval(self, inputs):
        return self.model(inputs, training=False)

    def _forward_training(self, inputs, masks=None):
        masks = self._masks_or_draw(inputs, masks, advance=False)
        return self.model(inputs, training=True, update_state=False, masks=masks)

    def _train_step(self, inputs, labels, masks=None):
        loss, grads = self._grads(inputs, labels, masks, training_step=True)
        self.optimizer.apply_gradients(zip(grads, self.trainable))
        return loss

    def _loss_and_grads(self, inputs, labels, masks=None):
        return self._grads(inputs, labels, masks, training_step=False)

    def _grads(self, inputs, labels, masks, training_step: bool):
        """The loss and the gradients (dense, the parameters' type) of a training forward; a
        ``training_step`` advances the dropout stream and updates the model state. Under
        mixed_float16 the gradients are those of loss · scale, divided by the scale (float32,
        exact: a power of two)."""
        masks = self._masks_or_draw(inputs, masks, advance=training_step)
        with tf.GradientTape() as tape:
            if not training_step:   # frozen variables (trainable=False) are not watched
                tape.watch(self.differentiated)
            out = self.model(inputs, training=True, update_state=training_step, masks=masks)
            loss = self._loss(out, labels)
            scaled = loss if self._scale is None else loss * self._scale
        # a training step differentiates the trainable variables; ``gradients`` reports every
        # parameter's, frozen ones included (``optim.frozen``)
        grads = tape.gradient(scaled, self.trainable if training_step else self.differentiated,
                              unconnected_gradients=ZERO)
        grads = [tf.convert_to_tensor(g) for g in grads]
        if self._scale is not None:
            inverse = 1.0 / self._scale
            grads = [g * inverse for g in grads]
        return loss, grads

    def _loss(self, out, labels):
        """The loss of the model output: in float32 under a mixed policy (a product's output
        arrives in the low type), else in the output's type; float targets in that type."""
        if self.policy.mixed:
            out = tf.cast(out, tf.float32)
        if labels.dtype.is_floating and labels.dtype != out.dtype:
            labels = tf.cast(labels, out.dtype)
        return self.loss_fn(out, labels)

    def _scaled_step(self, inputs, labels, masks=None):
        """mixed_float16's step up to the update: (loss, whether every unscaled gradient
        element is finite, the unscaled gradients); the host's ``LossScale`` decides whether
        ``_apply_update`` runs."""
        loss, grads = self._grads(inputs, labels, masks, training_step=True)
        finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
                               if grads else tf.constant(True))
        return loss, finite, grads

    def _apply_update(self, grads):
        self.optimizer.apply_gradients(zip(grads, self.trainable))
        return self.optimizer.step

    def _traced_step(self, inputs, labels, masks=None):
        """One whole training step as the precision tier traces it (``precision.trace``):
        the loss and the gradients the update receives."""
        loss, grads = self._grads(inputs, labels, masks, training_step=True)
        self.optimizer.apply_gradients(zip(grads, self.trainable))
        return loss, grads

    def _masks_or_draw(self, inputs, masks, advance: bool):
        """The given keep-masks, else (with dropout) those of the whole batch drawn from the
        model's generator, which keeps its position unless ``advance`` (in-graph)."""
        if masks is not None or not self.dropout_nodes:
            return masks
        saved = None if advance else self._rng_snapshot()
        batch = tf.shape(next(iter(inputs.values())))[0]
        drawn = draw_masks(self.model.rng, self.mask_draws, batch, self.host_dtype)
        self._rng_restore(saved)
        return drawn

    def _rng_snapshot(self):
        """The dropout generator's state before a draw that must not advance it (in-graph)."""
        return self.model.rng.state.read_value() if self.dropout_nodes else None

    def _rng_restore(self, saved):
        if saved is not None:
            self.model.rng.state.assign(saved)

    # --- host side -------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """Updates applied since ``load`` (the optimizer's int64 step variable)."""
        return int(self.optimizer.step.numpy())

    def _native_inputs(self, x: dict) -> dict[str, np.ndarray]:
        """Checked inputs (the base's check: shapes, dtypes, Embedding ids in range, which XLA
        would clamp) as the step's signature takes them: floats in the program dtype, ids
        int64."""
        return {name: np.asarray(x[name], dtype=tspec.dtype.as_numpy_dtype)
                for name, tspec in self.input_signature.items()}

    def _native_labels(self, y: np.ndarray) -> np.ndarray:
        """Checked labels (class ids range-checked: XLA would give a NaN loss) as int64 ids or
        float targets."""
        return np.asarray(y, dtype=self.label_dtype.as_numpy_dtype)

    def _native_masks(self, masks: dict | None) -> dict[str, np.ndarray] | None:
        """Checked keep-masks in the program dtype; None without any."""
        if masks is None:
            return None
        return {name: np.asarray(m, dtype=self.host_dtype.as_numpy_dtype)
                for name, m in masks.items()}

    def load(self, params_in, state) -> None:
        """Set parameters and state; reset the optimizer (slots, step) and the dropout generator
        (to the spec's seed, so a reloaded program replays the same masks)."""
        params.load(self.model, params_in, state)
        self.optimizer.reset()
        self._reset_loss_scale()
        self.model.rng.reset_from_seed(self.spec.seed)

    def export_params(self):
        return params.export_params(self.model)

    def export_state(self):
        return params.export_state(self.model)

    def export_optimizer_state(self):
        return self.optimizer.export()

    def _set_optimizer_state(self, checked: dict, step: int) -> None:
        """Resume after ``step`` updates (``load_optimizer_state``, after ``load``): ``checked``
        as ``export_optimizer_state`` names them (checked by the base), assigned to the slot
        variables; the optimizer's
        ``step`` variable (lr(step), bias corrections, epsilon-hat factor) set to ``step``. The
        compiled steps read these variables: nothing is retraced. The dropout stream is
        ``load_rng_state``'s."""
        self.optimizer.load(checked, int(step))

    rng_key = "tf_generator"  # the dropout generator's state variable, int64

    def _rng_position(self) -> np.ndarray:
        return self.model.rng.state.numpy().copy()

    def _set_rng_position(self, a: np.ndarray) -> None:
        var = self.model.rng.state
        if a.dtype.kind not in "iu" or a.shape != tuple(var.shape):
            raise CheckpointError(f"rng state: tf_generator must be integers of shape "
                                  f"{tuple(var.shape)}, found {a.dtype} {a.shape}")
        var.assign(a.astype(var.dtype.as_numpy_dtype))

    def _native_batch(self, x, y) -> list:
        return [self._native_inputs(x), self._native_labels(y)]

    def _to_device(self, batch) -> list:
        with tf.device(self.tf_device):
            return [tf.nest.map_structure(tf.convert_to_tensor, a) for a in batch]

    def _run_step(self, batch, masks) -> float:
        masks = self._native_masks(masks)
        masked, args = masks is not None, list(batch) + ([masks] if masks is not None else [])
        if self.loss_scale is not None:
            return self._run_scaled_step(masked, args)
        if not self._pinned:
            return float(self._train[masked](*args))
        with tf.device(self.tf_device):
            return float(self._train[masked](*args))

    def _run_scaled_step(self, masked, args) -> float:
        """mixed_float16: the scaled gradients, then ``LossScale.after`` (the one rule, on the
        host) decides whether the update runs; a skipped step moves nothing and does not
        count (the optimizer's ``step`` stays)."""
        with tf.device(self.tf_device):
            self._scale.assign(self.loss_scale.scale)
            loss, finite, grads = self._scaled[masked](*args)
            if self.loss_scale.after(bool(finite)):
                self._apply(grads)
        return float(loss)

    def _run_gradients(self, batch, masks):
        masks = self._native_masks(masks)
        masked, args = masks is not None, list(batch) + ([masks] if masks is not None else [])
        with tf.device(self.tf_device):
            if self._scale is not None:   # unscaled, the rule's state untouched
                self._scale.assign(self.loss_scale.scale)
            loss, grads = self._grads_fn[masked](*args)
        return float(loss), {path: params.to_host(g) for path, g in zip(self.param_vars, grads)}

    def _run_forward(self, x, training: bool, masks):
        with tf.device(self.tf_device):
            if training:
                masks = self._native_masks(masks)
                args = [x] + ([masks] if masks is not None else [])
                out = self._forward_train[masks is not None](*args)
            else:
                out = self._forward_eval_fn(x)
        return ([params.to_host(o) for o in out] if isinstance(out, list)
                else params.to_host(out))
