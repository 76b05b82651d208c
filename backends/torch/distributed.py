"""torch's data-parallel engine, the launcher's side (imports no framework): torchrun's
environment, one worker process per device. The engine itself (``torch.distributed`` +
``DistributedDataParallel``) is ``data_parallel``."""

from __future__ import annotations

import os

from rosetta import distributed


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
                     max_restarts=0):
        """``torchrun`` (``python -m torch.distributed.run``) with a c10d rendezvous at host 0's
        endpoint: it starts ``per_host`` ranks on this host and sets their variables."""
        argv = [python, "-m", "torch.distributed.run", "--nnodes", str(hosts),
                "--nproc-per-node", str(per_host), "--node-rank", str(rank),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoints[0],
                "--rdzv-id", "rosetta", "--max-restarts", str(max_restarts), "-m", *module]
        return argv, {}
