"""Data parallel on JAX: one ``jax.jit`` step over a ``Mesh`` of N devices (docs/design.md section 10).

The one-device ``Program``'s jitted functions run unchanged on global arrays: parameters, batch
statistics and optimizer state are replicated over the mesh (``NamedSharding(mesh, P())``), the
batch, labels and injected masks are split along the batch axis (``NamedSharding(mesh,
P("data"))``), and XLA's SPMD partitioner inserts the collectives that the global-batch math
needs: the mean loss and its gradient over the global batch, BatchNorm's global statistics (the
flax BatchNorm reduces over the whole batch axis), dropout drawn by global position (threefry
keys are partitionable, so the masks are the one-device masks). Per-replica BatchNorm statistics
would need a ``shard_map`` of the model: ``batchnorm="replica"`` is refused on JAX.

On a CPU the N devices are host devices, configured by ``XLA_FLAGS=
--xla_force_host_platform_device_count=N`` before JAX initialises (``rosetta.distributed.launch``
sets it for the worker process). Several hosts: every host runs the same program after
``jax.distributed.initialize`` (coordinator address, process count and id from
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), and the mesh spans every
process's devices.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rosetta.distributed import check_batchnorm, worker_timeout
from rosetta.errors import BackendUnavailable
from rosetta.backends.jax import program as single

AXIS = "data"


def setup(devices: int, device: str) -> None:
    """Several hosts: ``jax.distributed.initialize`` from the environment (before anything
    initialises JAX's backend: ``rosetta.distributed.join`` calls this first), with gloo's
    collectives between the CPU processes and a heartbeat that declares a silent process lost
    after ``rosetta.distributed.worker_timeout()`` seconds; one host: nothing (the host devices
    come from ``XLA_FLAGS``, set before JAX initialised)."""
    if "JAX_COORDINATOR_ADDRESS" in os.environ and not jax.distributed.is_initialized():
        if device == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        timeout = max(1, round(worker_timeout()))
        jax.distributed.initialize(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                                   process_id=int(os.environ["JAX_PROCESS_ID"]),
                                   heartbeat_timeout_seconds=timeout,
                                   shutdown_timeout_seconds=timeout)


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
            mode: str | None = None, batchnorm: str = "global") -> "Program":
    if check_batchnorm(batchnorm) != "global":
        raise BackendUnavailable("jax data parallel is one jit over the global batch: its "
                                 "BatchNorm statistics are global; batchnorm='replica' is not "
                                 "offered on jax")
    return Program(spec, dtype=dtype, device=device, devices=devices)


class Program(single.Program):
    """The one-device JAX Program with its state replicated and its batches sharded over a
    ``Mesh`` (``mesh``) of ``devices`` devices."""

    def __init__(self, spec, *, dtype: str = "float32", device: str = "cpu", devices: int):
        self.mesh = mesh_of(devices, device)
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        self.devices = devices
        super().__init__(spec, dtype=dtype, device=device, mode="jit")

    # the base class places state with ``jax.device_put(tree, self.jax_device)``: here that is
    # the replicated sharding over the mesh
    @property
    def jax_device(self):
        return self.replicated

    @jax_device.setter
    def jax_device(self, value):
        pass

    def __repr__(self):
        return f"Program(jax, {self.graph.name}, dtype={self.dtype}, {self.devices} devices)"

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
