"""JAX's data-parallel engine, the launcher's side (imports no framework): the coordinator
address of ``jax.distributed`` on several hosts, N host devices of one process on a CPU. The
engine itself (one ``jax.jit`` over a ``Mesh``) is ``data_parallel``."""

from __future__ import annotations

from rosetta import distributed
from rosetta.errors import BackendUnavailable

HOST_DEVICES = "--xla_force_host_platform_device_count"


class Engine(distributed.Engine):
    """One process drives every device of its host; several hosts meet at a coordinator."""

    launch_env = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    module = "rosetta.backends.jax.data_parallel"

    def launched(self, env) -> bool:
        return "JAX_COORDINATOR_ADDRESS" in env

    def world(self, env) -> tuple[int, int]:
        if not self.launched(env):
            return 0, 1
        return (distributed.env_int(env, "JAX_PROCESS_ID"),
                distributed.env_int(env, "JAX_NUM_PROCESSES"))

    def worker_env(self, env: dict, *, devices: int, device: str, rank: int, port: int) -> None:
        """On a CPU: N host devices (``XLA_FLAGS``, read when JAX initialises)."""
        if device != "cpu":
            return
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(HOST_DEVICES)]
        env["XLA_FLAGS"] = " ".join(flags + [f"{HOST_DEVICES}={devices}"])
        env["JAX_PLATFORMS"] = "cpu"

    def host_command(self, module, *, hosts, per_host, rank, endpoints, python="python",
                     max_restarts=0, one_machine=False):
        """One process per host, ``jax.distributed.initialize``'s variables (the coordinator is
        host 0's), and for ``per_host`` > 1 that many CPU host devices (``XLA_FLAGS``)."""
        if max_restarts:
            raise BackendUnavailable("jax has no launcher that restarts a lost host: restart "
                                     "the hosts' commands with --resume RUN_FOLDER")
        env = {"JAX_COORDINATOR_ADDRESS": endpoints[0],
               "JAX_NUM_PROCESSES": str(hosts), "JAX_PROCESS_ID": str(rank)}
        if per_host > 1:  # a CPU host of several devices (a GPU host has its own)
            env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"{HOST_DEVICES}={per_host}")
        return [python, "-m", *module], env
