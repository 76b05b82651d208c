"""Data parallel on torch: ``torch.distributed`` + ``DistributedDataParallel`` (docs/design.md section 10).

One process per device (rank), as torchrun starts them: the process group is initialised from
the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``,
``LOCAL_RANK``; ``rosetta.distributed.launch`` sets the same on one machine), with gloo on a CPU
and nccl on GPUs. The ``Program`` takes global batches like the one-device one and keeps its
replica's rows (``rosetta.distributed.replica_rows``):

* gradients: ``DistributedDataParallel`` averages the replicas' gradients of their local mean
  losses, (1/N) Σ_r ∇L_r, which is the gradient of the global-batch mean for equal shards;
* BatchNorm with global statistics: torch's ``SyncBatchNorm`` runs on GPUs only, so on every
  device the BatchNorm lowering (``CanonicalBatchNorm.global_moments``) reduces Σx and
  Σ(x − mean)² over the replicas with ``torch.distributed.nn.functional.all_reduce`` (torch's
  own collective, differentiable: its backward all-reduces the gradient, as SyncBatchNorm's
  does); ``batchnorm="replica"`` keeps each replica's own statistics;
* dropout masks are indexed by global example: injected masks (conformance) are global, and
  without them every rank draws the keep-masks of the *global* batch from the one-device
  stream (same seed, same draws in the same order: ``single.DropoutRNG.draw``), so all ranks
  hold the one-device masks and each uses its rows;
* the loss returned is the global mean (an ``all_reduce`` of the replicas' losses, outside the
  gradient); parameters, state and optimizer state are the same on every rank and exported from
  the local replica.

Sharded parameters and optimizer state (``shard_params``, ``--shard-params``): instead of DDP,
FSDP2 (``torch.distributed.fsdp.fully_shard``) on every node's module that holds parameters and
on the whole model. Each parameter becomes a ``DTensor`` split along its first native dimension
over the ranks (``Shard(0)``: rank r holds rows [r·⌈n/N⌉, (r+1)·⌈n/N⌉), the last rank fewer or
none), and so does its optimizer state (torch's optimizers keep state shaped as the
parameter); FSDP2 all-gathers a module's parameters for its forward and backward and frees them
after, and reduce-scatters the gradients with the mean over the ranks, the gradient DDP would
give (each rank's local mean loss, averaged). BatchNorm buffers stay whole on every rank.
The model is built with its parameters on the meta device and sharded before they get memory
(``Program._place_model``), and the initial values are drawn one array at a time, so no rank
holds the whole model at any moment (FSDP2's meta-device initialisation). Exports gather the whole tensors (``DTensor.full_tensor``: every rank calls them, in the same
order), so checkpoints are the canonical whole arrays.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from rosetta.distributed import check_batchnorm, replica_rows, worker_timeout
from rosetta.errors import BackendUnavailable
from rosetta.backends.torch import program as single
from rosetta.backends.torch.model import materialize, running_stats_frozen


STARTUP = 300.0  # seconds the ranks may take to meet (the default of torch's own rendezvous)


def setup(devices: int, device: str) -> None:
    """Join the process group the environment describes (torchrun's variables)."""
    if not dist.is_initialized():
        # joining waits for every rank to start (imports, a restarted host): STARTUP at least;
        # then a collective gives up on a lost peer after the worker timeout
        timeout = worker_timeout()
        startup = timedelta(seconds=max(timeout, STARTUP))
        dist.init_process_group("nccl" if device in ("gpu", "cuda") else "gloo",
                                timeout=startup, **_attempt_store(startup))
        dist.distributed_c10d._set_pg_timeout(timedelta(seconds=timeout))
    if device in ("gpu", "cuda"):
        import os

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _attempt_store(timeout) -> dict:
    """Under torchrun (the ranks meet in the agent's store): the process group's rendezvous
    under a prefix of its own round, so that after a restart (``--max-restarts``, or an agent
    that restarts its workers because another host rejoined, which does not count as a restart
    and so is not in ``TORCHELASTIC_RESTART_COUNT``) the new ranks never read the addresses
    that the ranks of an earlier round left there (their gloo connections would be refused).
    Every rank of a round adds 1 to one counter once, so round = (count - 1) // world.
    Otherwise nothing (``env://`` as torchrun sets it)."""
    import os

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          is_master=False, timeout=timeout)
    round_ = (store.add("rosetta/joined", 1) - 1) // world
    return {"store": dist.PrefixStore(f"rosetta/round-{round_}", store), "rank": rank,
            "world_size": world}


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def collective_failure(error: BaseException) -> bool:
    """True when ``error`` is a failed collective or store call (a peer is gone), not the
    run's own error: torch's distributed errors, and gloo's transport errors (RuntimeError)."""
    text = str(error).lower()
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and ("gloo" in text or "connection" in text))


def board_set(key: str) -> None:
    """Mark ``key`` in the process group's own c10d store (``rosetta.distributed.lost_workers``)."""
    dist.distributed_c10d._get_default_store().set(key, "1")


def board_has(key: str) -> bool:
    return dist.distributed_c10d._get_default_store().check([key])


def global_moments(x: torch.Tensor, group=None):
    """Mean and biased variance per channel (axis 1) over every replica's batch: two
    differentiable all-reduces of per-replica sums (equal shards on every rank)."""
    from torch.distributed.nn.functional import all_reduce

    dims = [0, *range(2, x.ndim)]
    count = x.numel() // x.shape[1] * dist.get_world_size(group)
    mean = all_reduce(x.sum(dims), group=group) / count
    d = x - mean.view((1, -1) + (1,) * (x.ndim - 2))
    var = all_reduce((d * d).sum(dims), group=group) / count
    return mean, var


def compile(spec, *, devices: int, dtype: str = "float32", device: str = "cpu",
            mode: str | None = None, batchnorm: str = "global",
            shard_params: bool = False) -> "Program":
    if mode not in (None, "eager"):
        raise BackendUnavailable("torch data parallel runs in mode 'eager' (DDP with "
                                 "torch.compile is not lowered here)")
    return Program(spec, dtype=dtype, device=device, devices=devices, batchnorm=batchnorm,
                   shard_params=shard_params)


def shard_model(model) -> None:
    """FSDP2 on ``model`` (a ``GraphModule``): ``fully_shard`` on every module that holds
    parameters of its own, innermost first (so one all-gather per native layer, and only one
    layer's whole parameters are held at a time; the model calls those modules themselves, the
    containers of a chain of layers it may unroll), then on the model (the root)."""
    from torch.distributed.fsdp import fully_shard

    for module in reversed(list(model.modules())):  # descendants before their ancestors
        if module is not model and any(True for _ in module.parameters(recurse=False)):
            fully_shard(module)
    fully_shard(model)


def local_bytes(tensors) -> int:
    """Bytes of ``tensors`` held by this rank (a sharded ``DTensor``: its local shard)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        t = t.to_local() if isinstance(t, DTensor) else t
        total += t.numel() * t.element_size()
    return total


class Program(single.Program):
    """The one-device torch Program, its model wrapped in ``DistributedDataParallel``
    (``ddp``), taking global batches."""

    def __init__(self, spec, dtype: str = "float32", device: str = "cpu", *, devices: int,
                 batchnorm: str = "global", shard_params: bool = False):
        if not dist.is_initialized():
            raise BackendUnavailable("torch data parallel needs a process group: run under "
                                     "torchrun or rosetta's launcher (--devices N)")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if self.world != devices:
            raise BackendUnavailable(f"asked for {devices} devices, but the process group has "
                                     f"{self.world} ranks (WORLD_SIZE)")
        self.batchnorm = check_batchnorm(batchnorm)
        self.shard_params = bool(shard_params)
        super().__init__(spec, dtype=dtype, device=device, mode="eager")
        moments = global_moments if batchnorm == "global" else None
        for m in self._norms:
            m.global_moments = moments
        if self.shard_params:
            self.ddp = self.model  # FSDP2's hooks are on the model itself
        else:
            ids = [self.torch_device.index or 0] if self.torch_device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids,
                                               find_unused_parameters=bool(self._unreached))
        self.devices = devices

    @property
    def builds_sharded(self) -> bool:
        return self.shard_params

    def _place_model(self) -> None:
        """Sharded: the model was built with its parameters on the meta device (no values);
        FSDP2 shards them (``shard_model``: each becomes a ``DTensor``), and only then does
        each rank get memory for its own shards (``materialize``). ``load`` then draws the
        initial values one array at a time (``Graph.initial_params``) and each rank keeps its
        shard, so no rank ever holds the whole model, its initial values or its optimizer
        state: FSDP2's meta-device initialisation."""
        if self.shard_params:
            shard_model(self.model)
            materialize(self.model, self.torch_device)

    def held_bytes(self) -> dict:
        """Bytes of parameters and of optimizer state this rank holds (its shards when
        sharded), for the memory table (``rosetta.conformance.shard_memory``)."""
        opt = [v for st in self.optimizer.state.values() for v in st.values()
               if isinstance(v, torch.Tensor) and v.ndim > 0]
        return {"params": local_bytes(self._param_tensors), "optimizer": local_bytes(opt)}

    def __repr__(self):
        shard = ", sharded" if self.shard_params else ""
        return super().__repr__()[:-1] + f", rank {self.rank} of {self.world}{shard})"

    # --- the replica's share of a global batch ---------------------------------------------------
    def _rows(self, n: int) -> slice:
        return replica_rows(n, self.rank, self.world)

    def _local(self, inputs, labels):
        arrays = self.graph.as_input_dict(inputs)
        rows = self._rows(len(next(iter(arrays.values()))))
        return {k: np.asarray(v)[rows] for k, v in arrays.items()}, np.asarray(labels)[rows]

    def _local_batch(self, inputs, labels, masks):
        """This replica's rows of a global batch, checked (the base's one check) and on the
        device, with its rows of the global keep-masks (checked against the global batch)."""
        local_x, local_y = self._local(inputs, labels)
        xs, y = self._native_batch(*self.check_batch(local_x, local_y))
        n = len(np.asarray(labels))
        return xs, y, self.replica_masks(self.check_masks(masks, n))

    def replica_masks(self, masks: dict | None) -> dict | None:
        """This replica's rows of global keep-masks (indexed by global example; arrays or
        tensors)."""
        if not masks:
            return masks
        return {k: m[self._rows(len(m))] for k, m in masks.items()}

    def _drawn_masks(self, batch: int, advance: bool) -> dict:
        """The one-device masks of the global batch (``batch`` local rows on each of the
        ``world`` ranks), drawn alike on every rank; this rank's rows."""
        return self.replica_masks(super()._drawn_masks(batch * self.world, advance))

    def _unscaled_finite(self, grads, scale) -> bool:
        """The one-device rule (``single.Program._unscaled_finite``) on the reduced gradients,
        the finite flag agreed by every rank (sharded, each rank sees only its shard): all skip
        the update or none does."""
        finite = True
        for g in grads:
            if g is not None:
                g.mul_(1.0 / scale)
                local = g.to_local() if hasattr(g, "to_local") else g
                finite = finite and bool(torch.isfinite(local).all())
        flag = torch.tensor([1.0 if finite else 0.0], device=self.torch_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return self.loss_scale.after(bool(flag.item() == 1.0))

    def _global_loss(self, loss: torch.Tensor) -> float:
        t = loss.detach().to(torch.float64).reshape(1).clone()
        dist.all_reduce(t)
        return t.item() / self.world

    # --- steps on global batches -------------------------------------------------------------
    def prepare_batch(self, inputs, labels):
        return super().prepare_batch(*self._local(inputs, labels))

    def train_step(self, inputs, labels=None, masks=None) -> float:
        if isinstance(inputs, single.contract.Batch):
            xs, y = inputs.check(self, masks)
        else:
            xs, y, masks = self._local_batch(inputs, labels, masks)
        self._mode(training=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._dropout(len(y), advance=True, masks=masks):
            loss = self._loss(self.ddp(*xs), y)   # float32 under a mixed policy
        scale = self.loss_scale.scale if self.loss_scale is not None else None
        (loss if scale is None else loss * scale).backward()
        for p in self._unreached:
            p.grad = torch.zeros_like(p)
        if scale is not None and not self._unscaled_finite(
                [p.grad for p in self._param_tensors], scale):
            return self._global_loss(loss)   # skipped on every rank: nothing moves
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return self._global_loss(loss)

    def gradients(self, inputs, labels, masks=None):
        """The gradient DDP hands the optimizer (its backward all-reduce included), without an
        update: running statistics frozen, dropout stream not advanced, ``.grad`` cleared."""
        xs, y, masks = self._local_batch(inputs, labels, masks)
        self._mode(training=True)
        self.optimizer.zero_grad(set_to_none=True)
        with running_stats_frozen(self._norms), \
                self._dropout(len(y), advance=False, masks=masks):
            loss = self._loss(self.ddp(*xs), y)
        scale = self.loss_scale.scale if self.loss_scale is not None else None
        (loss if scale is None else loss * scale).backward()
        out = {path: slot.canonical(torch.zeros_like(slot.tensor) if slot.tensor.grad is None
                                    else slot.tensor.grad * (1.0 / scale) if scale is not None
                                    else slot.tensor.grad)
               for path, slot in self._params.items()}
        self.optimizer.zero_grad(set_to_none=True)
        return self._global_loss(loss), out

    def forward(self, inputs, training: bool = False, masks=None):
        """Eval mode: the local replica on the whole batch (no collective; sharded: FSDP2
        all-gathers the parameters, so every rank must call it). Training mode: each replica its
        rows with global BatchNorm statistics, gathered back in order."""
        if not training:
            return super().forward(inputs, training=False)
        arrays = self.graph.as_input_dict(inputs)
        rows = self._rows(len(next(iter(arrays.values()))))
        local = super().forward({k: np.asarray(v)[rows] for k, v in arrays.items()},
                                training=True, masks=self.replica_masks(masks))
        parts = [torch.empty_like(torch.from_numpy(local)) for _ in range(self.world)]
        dist.all_gather(parts, torch.from_numpy(local))
        return np.concatenate([p.numpy() for p in parts])
