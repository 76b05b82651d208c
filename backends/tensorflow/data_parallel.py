"""Data parallel on TensorFlow: ``tf.distribute`` (docs/design.md section 10).

``MirroredStrategy`` over N devices of one process (on a CPU: N logical CPU devices, configured
by ``setup`` before TensorFlow initialises, hence a fresh worker process);
``MultiWorkerMirroredStrategy`` when a ``TF_CONFIG`` describes several hosts. The program is the
one-device ``Program`` built under the strategy's scope (its variables mirrored, each updated
with the value of the first replica, which every replica computes alike after the all-reduce),
and its steps run ``strategy.run`` over the replicas, each taking its rows of the global batch
(``replica_id_in_sync_group``):

* gradients: tf.distribute *sums* the replicas' gradients (``ReplicaContext.all_reduce(SUM)``),
  so each replica's loss, the mean over its B/N examples, is scaled by 1/N first: the sum of
  the scaled gradients is the gradient of the global-batch mean;
* BatchNorm with global statistics: the lowering's ``global_moments`` all-reduces Σx and
  Σ(x − mean)² over the replicas (``ReplicaContext.all_reduce``, differentiable: its gradient is
  again an all-reduce); ``batchnorm="replica"`` keeps each replica's own statistics;
* dropout masks are indexed by global example: injected masks (conformance) are global, and
  without them the step draws the one-device masks of the global batch
  (``single.draw_masks``) in cross-replica context, before ``strategy.run``: there the mirrored
  ``tf.random.Generator`` advances every copy alike and does not mix the replica id into its key
  (as it does in replica context), so it draws what the one-device generator draws; each
  replica takes its rows;
* the loss returned is the global mean (all-reduced, outside the gradient).

Steps run as ``tf.function`` without XLA (mode ``"function"``): the per-replica function calls
collectives that one XLA cluster cannot hold.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from rosetta.distributed import check_batchnorm, check_precision
from rosetta.errors import BackendUnavailable
from rosetta.backends.tensorflow import program as single

SUM = tf.distribute.ReduceOp.SUM


def setup(devices: int, device: str) -> None:
    """N logical CPU devices on one machine (before TensorFlow initialises); nothing with a
    TF_CONFIG (one CPU or GPU per worker, MultiWorkerMirroredStrategy reads it)."""
    if "TF_CONFIG" in os.environ or device in ("gpu", "cuda"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    if tf.config.get_logical_device_configuration(cpu) is not None:
        return  # configured already (setup is called by the worker and by compile)
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])


def teardown() -> None:
    pass


def collective_failure(error: BaseException) -> bool:
    """True when ``error`` is an aborted or unreachable collective (a peer is gone), not the
    run's own error."""
    return isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError,
                              tf.errors.CancelledError, tf.errors.DeadlineExceededError)) or (
        "Collective ops is aborted" in str(error))


def board_set(key: str) -> None:
    """Mark ``key`` in the coordination service's key-value store
    (``rosetta.distributed.lost_workers``)."""
    from tensorflow.python.eager import context

    context.context().set_config_key_value(key, "1")


def board_has(key: str) -> bool:
    from tensorflow.python.eager import context

    try:
        context.context().get_config_key_value(key, timeout_in_ms=50)
        return True
    except tf.errors.DeadlineExceededError:
        return False


def strategy_for(devices: int, device: str) -> tf.distribute.Strategy:
    if "TF_CONFIG" in os.environ:
        workers = len(json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"])
        if workers != devices:
            raise BackendUnavailable(f"asked for {devices} devices, TF_CONFIG lists {workers} "
                                     f"workers (one device each)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    kind = "GPU" if device in ("gpu", "cuda") else "CPU"
    found = [d.name for d in tf.config.list_logical_devices(kind)]
    if len(found) < devices:
        raise BackendUnavailable(f"tensorflow sees {len(found)} {kind} devices, {devices} "
                                 f"asked (on a CPU rosetta's launcher configures N logical "
                                 f"devices before TensorFlow starts)")
    ops = tf.distribute.ReductionToOneDevice() if kind == "CPU" else None
    return tf.distribute.MirroredStrategy(found[:devices], cross_device_ops=ops)


def global_moments(x, axes):
    """Mean and biased variance over ``axes`` of every replica's batch (equal shards)."""
    ctx = tf.distribute.get_replica_context()
    count = tf.cast(tf.size(x) // tf.shape(x)[-1] * ctx.num_replicas_in_sync, x.dtype)
    mean = ctx.all_reduce(SUM, tf.reduce_sum(x, axis=list(axes))) / count
    d = x - mean
    var = ctx.all_reduce(SUM, tf.reduce_sum(d * d, axis=list(axes))) / count
    return mean, var


def _first_replica(next_creator, **kwargs):
    """Mirrored variables updated in replica context take the first replica's value."""
    kwargs["aggregation"] = tf.VariableAggregation.ONLY_FIRST_REPLICA
    return next_creator(**kwargs)


def compile(spec, *, devices: int, dtype: str = "float32", device: str = "cpu",
            mode: str | None = None, batchnorm: str = "global") -> "Program":
    if mode not in (None, "function"):
        raise BackendUnavailable("tensorflow data parallel runs in mode 'function' (tf.function "
                                 "without XLA)")
    check_precision("tensorflow", dtype)  # Engine.precisions (the capability table's row)
    return Program(spec, dtype=dtype, device=device, devices=devices, batchnorm=batchnorm)


class Program(single.Program):
    """The one-device TensorFlow Program under ``strategy`` (a tf.distribute strategy of
    ``devices`` replicas), taking global batches."""

    def __init__(self, spec, dtype: str = "float32", device: str = "cpu", *, devices: int,
                 batchnorm: str = "global"):
        self.strategy = strategy_for(devices, device)
        self.devices = devices
        self.batchnorm = check_batchnorm(batchnorm)
        with self.strategy.scope(), tf.variable_creator_scope(_first_replica):
            super().__init__(spec, dtype=dtype, device=device, mode="function")
        moments = global_moments if batchnorm == "global" else None
        for m in self.model.submodules:
            if hasattr(m, "global_moments"):
                m.global_moments = moments

    def __repr__(self):
        return (f"Program(tensorflow, {self.graph.name}, dtype={self.dtype}, "
                f"{self.devices} replicas of {type(self.strategy).__name__})")

    def replica_loss_factor(self, replicas):
        """tf.distribute sums the replicas' gradients: each replica's mean loss is scaled by
        1/N so that the sum is the gradient of the global-batch mean."""
        return 1.0 / replicas

    # --- per replica --------------------------------------------------------------------------
    def _local(self, inputs, labels=None, masks=None):
        ctx = tf.distribute.get_replica_context()
        n, r = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
        batch = tf.shape(next(iter(inputs.values())))[0]
        per = batch // n
        lo, hi = r * per, (r + 1) * per
        cut = lambda t: t[lo:hi]  # noqa: E731
        return (ctx, tf.nest.map_structure(cut, inputs),
                None if labels is None else cut(labels),
                None if masks is None else self.replica_masks(masks, cut, per))

    def replica_masks(self, masks, cut, per):
        """This replica's rows of global keep-masks (indexed by global example)."""
        return tf.nest.map_structure(cut, masks)

    def _run(self, fn, *args):
        out = self.strategy.run(fn, args=args)
        return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[0],
                                     out)

    def _replica_grads(self, inputs, labels, masks, update_state):
        ctx, x, y, m = self._local(inputs, labels, masks)
        with tf.GradientTape() as tape:
            if not update_state:   # frozen variables (trainable=False) are not watched
                tape.watch(self.differentiated)
            loss = self.loss_fn(self.model(x, training=True, update_state=update_state,
                                           masks=m), y)
            scaled = loss * tf.cast(self.replica_loss_factor(ctx.num_replicas_in_sync), loss.dtype)
        # the train step differentiates the trainable variables, ``gradients`` every parameter
        variables = self.trainable if update_state else self.differentiated
        grads = tape.gradient(scaled, variables, unconnected_gradients=single.ZERO)
        grads = ctx.all_reduce(SUM, [tf.convert_to_tensor(g) for g in grads])
        mean_loss = ctx.all_reduce(SUM, loss) / ctx.num_replicas_in_sync
        return mean_loss, grads

    # --- the compiled bodies (traced by the base class's ``compiled``) --------------------------
    def _train_step(self, inputs, labels, masks=None):
        masks = self._masks_or_draw(inputs, masks, advance=True)

        def replica(inputs, labels, masks):
            loss, grads = self._replica_grads(inputs, labels, masks, update_state=True)
            self.optimizer.apply_gradients(zip(grads, self.trainable))
            return loss
        return self._run(replica, inputs, labels, masks)

    def _loss_and_grads(self, inputs, labels, masks=None):
        masks = self._masks_or_draw(inputs, masks, advance=False)

        def replica(inputs, labels, masks):
            return self._replica_grads(inputs, labels, masks, update_state=False)
        return self._run(replica, inputs, labels, masks)

    def _forward_training(self, inputs, masks=None):
        masks = self._masks_or_draw(inputs, masks, advance=False)

        def replica(inputs, masks):
            ctx, x, _, m = self._local(inputs, None, masks)
            out = self.model(x, training=True, update_state=False, masks=m)
            return ctx.all_gather(out, axis=0)
        return self._run(replica, inputs, masks)
