"""torch's data-parallel engine, the launcher's side (imports no framework): torchrun's
environment, one worker process per device. The engine itself (``torch.distributed`` +
``DistributedDataParallel``) is ``data_parallel``."""

from __future__ import annotations

import os

from rosetta import distributed
from rosetta.errors import BackendUnavailable


class Engine(distributed.Engine):
    """One process per device (rank), started by torchrun or by rosetta's launcher with the
    variables torchrun sets."""

    launch_env = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    module = "rosetta.backends.torch.data_parallel"

    def launched(self, env) -> bool:
        return "RANK" in env and "WORLD_SIZE" in env

    def world(self, env) -> tuple[int, int]:
        if "WORLD_SIZE" not in env:
            return 0, 1
        return distributed.env_int(env, "RANK"), distributed.env_int(env, "WORLD_SIZE")

    def processes(self, devices: int) -> int:
        return devices  # gloo / nccl ranks

    def worker_env(self, env: dict, *, devices: int, device: str, rank: int, port: int) -> None:
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(devices),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        # N processes on a machine share its cores: one thread each keeps them from fighting
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))

    def host_command(self, module, *, hosts, per_host, rank, endpoints, python="python",
                     max_restarts=0, one_machine=False):
        """``torchrun`` (``python -m torch.distributed.run``) with a c10d rendezvous at host 0's
        endpoint: it starts ``per_host`` ranks on this host and sets their variables.

        ``one_machine``: torch's c10d rendezvous tells hosts apart by their names, which hosts
        on one machine share: every agent then matches the endpoint's host and races to host
        the rendezvous store (the first to bind its port wins), and node ranks follow the
        sorted (address, pid) of the agents, not ``--node-rank``, so a host started later
        but scheduled first could become node 0. Hosts on one machine are given those roles
        explicitly: host 0 holds the store (``--rdzv-conf is_host=1``, the others
        ``is_host=0``), and host r its own loopback address 127.0.0.(100 + r)
        (``--local-addr``, which sort in rank order), so that host r is node r and its workers
        are ranks r·D .. r·D + D - 1, as on real hosts with ordered names."""
        argv = [python, "-m", "torch.distributed.run", "--nnodes", str(hosts),
                "--nproc-per-node", str(per_host), "--node-rank", str(rank),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoints[0],
                "--rdzv-id", "rosetta"]
        if one_machine:
            if hosts > 155:
                raise BackendUnavailable("at most 155 hosts on one machine (loopback addresses "
                                         "127.0.0.100 to .254)")
            argv += ["--rdzv-conf", f"is_host={int(rank == 0)}",
                     "--local-addr", f"127.0.0.{100 + rank}"]
        argv += ["--max-restarts", str(max_restarts), "-m", *module]
        return argv, {}
