"""Data parallel on JAX: one ``jax.jit`` step over a ``Mesh`` of N devices (docs/design.md section 10).

The one-device ``Program``'s jitted functions run unchanged on global arrays: parameters, batch
statistics and optimizer state are replicated over the mesh (``NamedSharding(mesh, P())``), the
batch, labels and injected masks are split along the batch axis (``NamedSharding(mesh,
P("data"))``), and XLA's SPMD partitioner inserts the collectives that the global-batch math
needs: the mean loss and its gradient over the global batch, BatchNorm's global statistics (the
flax BatchNorm reduces over the whole batch axis), dropout drawn by global position (threefry
keys are partitionable, so the masks are the one-device masks). Per-replica BatchNorm statistics
would need a ``shard_map`` of the model: ``batchnorm="replica"`` is refused on JAX.

Sharded parameters and optimizer state (``shard_params``, ``--shard-params``): each parameter,
and each optimizer-state array (optax keeps them shaped as the parameters), is placed with
``NamedSharding(mesh, P(...))`` by one rule (``state_spec``): the largest axis whose length
divides by N is split over the mesh (the first such axis on a tie); an array with no axis that
divides by N (and every scalar, e.g. optax's ``count``) is replicated. The jitted step
constrains its new state to the same placements (``with_sharding_constraint``), so the state
stays sharded. Inside the step each node that has parameters runs as ``sharded_node`` (ZeRO-3 /
FSDP): its parameters are gathered whole where it runs, forward and again backward, and its
gradients are reduced to their shards before the backward pass moves on, so a device holds one
node's whole parameters and partial gradients at a time, not the model's (a node with state,
BatchNorm, or drawing its own dropout mask is left to XLA's partitioner, which gathers what it
reads); the math is the replicated step's up to summation order. Batch statistics stay
replicated. Exports gather the whole arrays (on several hosts with
``multihost_utils.process_allgather``), so checkpoints are the canonical whole arrays.

On a CPU the N devices are host devices, configured by ``XLA_FLAGS=
--xla_force_host_platform_device_count=N`` before JAX initialises (``rosetta.distributed.launch``
sets it for the worker process). Several hosts: every host runs the same program after
``jax.distributed.initialize`` (coordinator address, process count and id from
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), and the mesh spans every
process's devices.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rosetta.distributed import await_step, check_batchnorm, probe_wait, worker_timeout
from rosetta.errors import BackendUnavailable
from rosetta.backends.jax import params as params_mod
from rosetta.backends.jax import program as single
from rosetta.backends.jax.optimizers import slots

AXIS = "data"


def setup(devices: int, device: str) -> None:
    """Several hosts: ``jax.distributed.initialize`` from the environment (before anything
    initialises JAX's backend: ``rosetta.distributed.join`` calls this first), with gloo's
    collectives between the CPU processes; one host: nothing (the host devices come from
    ``XLA_FLAGS``, set before JAX initialised).

    JAX's heartbeat declares a silent process lost, and its runtime then ends every other
    process at once (a fatal log, status -6), without rosetta's lost-worker line. So rosetta
    finds the loss first: a peer killed mid-run closes its gloo sockets and the survivors' next
    collective mostly fails at once, but sometimes waits for good, so a step of several
    processes is awaited at most ``worker_timeout()`` seconds (``Program._await``); either way
    ``rosetta.distributed.abandon`` probes and names the lost worker. A survivor may reach its
    collective up to a worker timeout after the loss (it was busy), so the heartbeat fires only
    after ``2 * worker_timeout() + probe_wait()``: the backstop for what no step sees."""
    if "JAX_COORDINATOR_ADDRESS" in os.environ and not jax.distributed.is_initialized():
        if device == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        timeout = worker_timeout()
        jax.distributed.initialize(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                                   process_id=int(os.environ["JAX_PROCESS_ID"]),
                                   heartbeat_timeout_seconds=math.ceil(2 * timeout
                                                                       + probe_wait()),
                                   shutdown_timeout_seconds=max(1, round(timeout)))


def teardown() -> None:
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


def _client():
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state.client


def collective_failure(error: BaseException) -> bool:
    """True when ``error`` is a failed collective (gloo between the processes) or a report of
    the coordination service (a missed heartbeat), not the run's own error."""
    text = str(error)
    return isinstance(error, jax.errors.JaxRuntimeError) and any(
        w in text for w in ("Gloo", "gloo", "UNAVAILABLE", "heartbeat", "coordination"))


def board_set(key: str) -> None:
    """Mark ``key`` in the coordination service's key-value store
    (``rosetta.distributed.lost_workers``)."""
    _client().key_value_set(key, "1")


def board_has(key: str) -> bool:
    try:
        _client().key_value_try_get(key)
        return True
    except Exception as e:  # noqa: BLE001 - XLA raises its own error type for NOT_FOUND
        if "NOT_FOUND" in str(e).upper().replace(" ", "_"):
            return False
        raise


def mesh_of(devices: int, device: str) -> Mesh:
    platform = "gpu" if device in ("gpu", "cuda") else "cpu"
    found = jax.devices(platform)
    if len(found) < devices:
        hint = (" (on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX "
                "starts; rosetta's launcher sets it)" if platform == "cpu" else "")
        raise BackendUnavailable(f"jax sees {len(found)} {platform} devices, {devices} asked"
                                 f"{hint}")
    return Mesh(np.array(found[:devices]), (AXIS,))


def compile(spec, *, devices: int, dtype: str = "float32", device: str = "cpu",
            mode: str | None = None, batchnorm: str = "global",
            shard_params: bool = False) -> "Program":
    if check_batchnorm(batchnorm) != "global":
        raise BackendUnavailable("jax data parallel is one jit over the global batch: its "
                                 "BatchNorm statistics are global; batchnorm='replica' is not "
                                 "offered on jax")
    return Program(spec, dtype=dtype, device=device, devices=devices,
                   shard_params=shard_params)


def state_spec(shape, n: int) -> P:
    """Where an array of parameters or optimizer state of ``shape`` lives over a mesh of ``n``
    devices: split along its largest axis whose length divides by ``n`` (the first on a tie),
    or replicated (``P()``) when none does (scalars included)."""
    best = None
    for axis, size in enumerate(shape):
        if size % n == 0 and size >= n and (best is None or size > shape[best]):
            best = axis
    if best is None:
        return P()
    return P(*([None] * best + [AXIS]))


def _after(x, *trees):
    """``x`` unchanged (bit for bit: NaN and signed zeros included) but computed after the
    arrays of ``trees``: a select on a predicate that is False whatever the values (no float,
    NaN included, compares greater than +inf), made of the maximum of each of their float
    arrays (the whole array: the partitioner can compute one element of a sum over devices
    without the sum, not its maximum), which XLA cannot fold away. Orders what XLA would otherwise schedule
    freely (optimization barriers do not survive to the CPU scheduler)."""
    leaves = [t for t in jax.tree.leaves(trees)
              if t.size and jnp.issubdtype(t.dtype, jnp.floating)]
    if not leaves or not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    never = jnp.max(jnp.stack([jnp.max(t).astype(jnp.float32) for t in leaves])) > jnp.inf
    return jnp.where(never, jnp.zeros((), x.dtype), x)


def sharded_node(f, params, xs, parts, whole):
    """``f(params, xs)`` (a node with parameters, ``model.node_function``) with its sharded
    parameters (placed by ``parts``, a tree of shardings like ``params``) gathered whole
    (``whole``) only while the node runs (ZeRO-3 / FSDP):

    * forward: gather, run, drop the whole copy; only the shards and the inputs are kept for
      the backward pass;
    * backward, when the output's gradient arrives: gather again, the node's own backward
      (its forward recomputed), each parameter's gradient constrained to its parameter's
      placement right there (the partitioner reduces the devices' partial gradients over their
      rows and keeps this device's part) before the gradient flows on to the node's inputs.

    XLA's CPU scheduler and its collective combiner would otherwise hoist every gather to the
    start of the step and merge every reduction into one at its end, holding a whole model of
    gathered parameters and of partial gradients; ``_after`` orders them."""
    def gather(p, after):
        # the shard made to depend on ``after`` and kept split (else the partitioner gathers
        # the stored argument itself, which XLA schedules at the start of the step), then
        # gathered
        return jax.tree.map(lambda a, part: a if part.spec == P() else
                            jax.lax.with_sharding_constraint(jax.lax.with_sharding_constraint(
                                _after(a, *after), part), whole), p, parts)

    @jax.custom_vjp
    def node(p, xs):
        return f(gather(p, xs), xs)

    def forward(p, xs):
        return node(p, xs), (p, xs)

    def backward(saved, cotangent):
        p, xs = saved
        _, vjp = jax.vjp(f, gather(p, (cotangent,)), xs)
        grads, cxs = vjp(cotangent)
        grads = jax.tree.map(jax.lax.with_sharding_constraint, grads, parts)
        return grads, [_after(c, grads) for c in cxs]

    node.defvjp(forward, backward)
    return node(params, list(xs))


class Program(single.Program):
    """The one-device JAX Program with its state replicated and its batches sharded over a
    ``Mesh`` (``mesh``) of ``devices`` devices."""

    def __init__(self, spec, *, dtype: str = "float32", device: str = "cpu", devices: int,
                 shard_params: bool = False):
        self.mesh = mesh_of(devices, device)
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        self.devices = devices
        self.shard_params = bool(shard_params)
        super().__init__(spec, dtype=dtype, device=device, mode="jit")

    def _await(self, out) -> None:
        """Several processes: wait for a step's result at most ``worker_timeout()`` seconds
        (``rosetta.distributed.await_step``), as torch's process-group timeout bounds a
        collective; past it ``CollectiveTimeout``, which the run handles as a failed collective
        (``setup`` says why)."""
        if jax.process_count() > 1:
            await_step(out.is_ready)

    # --- sharded parameters and optimizer state -------------------------------------------------
    def state_sharding(self, shape) -> NamedSharding:
        """The placement of a parameter or optimizer-state array (``state_spec``)."""
        return NamedSharding(self.mesh, state_spec(tuple(shape), self.devices))

    def _place_state(self, tree):
        """``tree`` (parameters or optimizer state) placed by ``state_sharding``; unchanged
        when the state is not sharded."""
        if not self.shard_params:
            return tree

        def place(a):
            sharding = self.state_sharding(np.shape(a))
            if jax.process_count() == 1:
                return jax.device_put(a, sharding)
            host = np.asarray(a.addressable_data(0) if isinstance(a, jax.Array) else a)
            return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

        return jax.tree.map(place, tree)

    def _placed(self, step):
        if not self.shard_params:
            return step

        def constrain(tree):
            return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(
                a, self.state_sharding(a.shape)), tree)

        def placed(*args):
            params, stats, opt_state, *rest = step(*args)
            # batch statistics stay replicated: left to itself the partitioner may split them
            # (then no process could fetch them whole on several hosts)
            stats = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, self.replicated),
                                 stats)
            return (constrain(params), stats, constrain(opt_state), *rest)

        return placed

    def _step_model(self, model):
        """Sharded: the model with each node that has parameters run by ``sharded_node``
        (``GraphModule.run_node``)."""
        return model.clone(run_node=self._run_node) if self.shard_params else model

    def _run_node(self, f, params, xs):
        parts = jax.tree.map(lambda a: self.state_sharding(a.shape), params)
        return sharded_node(f, params, xs, parts, self.replicated)

    def _put_state(self, tree):
        return self._place_state(tree) if self.shard_params else self._put(tree)

    def _init_optimizer_state(self, params):
        """Sharded: optax's ``init`` jitted with the state's placements as its output
        shardings, so each device only ever holds its shards of the zeros (never a whole
        replicated copy first)."""
        if not self.shard_params:
            return super()._init_optimizer_state(params)
        shapes = jax.eval_shape(self.optimizer.init, params)
        out = jax.tree.map(lambda s: self.state_sharding(s.shape), shapes)
        return jax.jit(self.optimizer.init, out_shardings=out)(params)

    def _set_optimizer_state(self, checked: dict, step: int) -> None:
        super()._set_optimizer_state(checked, step)
        self.opt_state = self._place_state(self.opt_state)

    def _whole(self, tree):
        """Sharded state over several processes, gathered whole on every process (each calls
        this); otherwise ``tree`` itself (the device fetch gathers it)."""
        if not self.shard_params or jax.process_count() == 1:
            return tree
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)

    def export_params(self):
        return params_mod.export(self._whole(self.params))

    def export_optimizer_state(self):
        return {f"{slot}/{path}": arr for slot, tree in slots(self._whole(self.opt_state)).items()
                for path, arr in params_mod.export(tree).items()}

    def _run_gradients(self, batch, masks):
        loss, grads = self._gradients(self.params, self.batch_stats, self._step, self.rng,
                                      *batch, self._native_masks(masks), self._scale())
        return float(loss), params_mod.export(self._whole(grads))

    def step_memory(self, inputs, labels) -> dict:
        """XLA's own account of one device's memory in the update step on this batch (the
        compiled step's ``memory_analysis``, per device under the partitioner): its arguments
        (parameters, statistics, optimizer state, this device's rows), temporaries (whatever
        the step holds between them: activations, gradients, parameters gathered whole) and
        the part of its outputs that reuses the donated arguments. For the memory table
        (``rosetta.conformance.shard_memory``); the update with no random draws only."""
        if self._mask_draws:
            raise BackendUnavailable("step_memory: the model draws dropout masks")
        x, y = self._to_device(self._native_batch(*self.check_batch(inputs, labels)))
        m = self._train_step_plain.lower(self.params, self.batch_stats, self.opt_state, x, y,
                                         self._scale()).compile().memory_analysis()
        return {"arguments": int(m.argument_size_in_bytes),
                "temporaries": int(m.temp_size_in_bytes),
                "outputs_not_aliased": int(m.output_size_in_bytes - m.alias_size_in_bytes)}

    def held_bytes(self) -> dict:
        """Bytes of parameters and of optimizer state on each device of this process
        ({"params": [...], "optimizer": [...]}, one entry per mesh device here), for the
        memory table (``rosetta.conformance.shard_memory``)."""
        mine = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]

        def per_device(tree):
            held = {d: 0 for d in mine}
            for leaf in jax.tree.leaves(tree):
                if isinstance(leaf, jax.Array) and leaf.ndim > 0:
                    for shard in leaf.addressable_shards:
                        held[shard.device] += shard.data.nbytes
            return [held[d] for d in mine]

        return {"params": per_device(self.params), "optimizer": per_device(self.opt_state)}

    # the base class places state with ``jax.device_put(tree, self.jax_device)``: here that is
    # the replicated sharding over the mesh
    @property
    def jax_device(self):
        return self.replicated

    @jax_device.setter
    def jax_device(self, value):
        pass

    def __repr__(self):
        shard = ", sharded" if self.shard_params else ""
        return (f"Program(jax, {self.graph.name}, dtype={self.dtype}, {self.devices} "
                f"devices{shard})")

    def _shard(self, tree):
        """Global host arrays split along the batch axis over the mesh. Every process holds
        the whole global batch (the data order is the same everywhere), and each places its own
        devices' rows (``make_array_from_callback``), which also works when the mesh spans
        several processes."""
        if tree is None:
            return None
        return jax.tree.map(lambda a: jax.make_array_from_callback(
            a.shape, self.sharded, lambda index: a[index]), tree)

    def _put(self, tree):
        """Host arrays replicated over the mesh. One process: ``jax.device_put``; a mesh over
        several processes (hosts): each process places its own devices' copies
        (``make_array_from_callback``; every process holds the same values)."""
        if jax.process_count() == 1:
            return jax.device_put(tree, self.replicated)
        return jax.tree.map(lambda a: jax.make_array_from_callback(
            np.shape(a), self.replicated, lambda index: np.asarray(a)[index]), tree)

    def _put_key(self, key):
        if jax.process_count() == 1:
            return jax.device_put(key, self.replicated)
        return jax.random.wrap_key_data(self._put(np.asarray(jax.random.key_data(key))))

    def replica_masks(self, masks: dict | None) -> dict | None:
        """Global keep-masks, split by global example over the mesh (as the batch is)."""
        return masks

    def _native_batch(self, x, y):
        x, y = super()._native_batch(x, y)
        if len(y) % self.devices:
            raise BackendUnavailable(f"a batch of {len(y)} examples does not split evenly "
                                     f"over {self.devices} devices")
        return self._shard(x), self._shard(y)

    def _native_masks(self, masks):
        return self._shard(super()._native_masks(self.replica_masks(masks)))

    def _to_device(self, batch):
        return batch  # sharded over the mesh already
