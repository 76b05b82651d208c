"""Several hosts on one machine through each engine's own launcher (docs/design.md section 14).

A "host" is one command (``Engine.host_command``: torchrun with a c10d rendezvous, a process
with a ``TF_CONFIG``, a process with ``jax.distributed.initialize``'s variables), started in its
own process session (``start_new_session``) and its own working folder; the hosts meet only at
the rendezvous endpoint on 127.0.0.1 and share nothing but the folders named on their command
lines (the run folder). So the code path is the one of real hosts; only the address differs.

``start`` starts them, ``wait`` waits for every host under a hard bound (a host still running at
the bound is killed with its whole session and reported, so nothing hangs), and ``worker_pids``
finds the worker processes of a host (torchrun's children) for a test that kills one. ``launch``
runs a ``rosetta.distributed`` job (``"module:function"``) on the hosts, as
``rosetta.distributed.launch`` does on one host.

This module imports no framework.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rosetta import distributed
from rosetta.errors import DataError


@dataclass
class Host:
    """One started host: its rank, command, added environment, folder and process."""

    rank: int
    argv: list
    env: dict
    folder: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    code: int | str | None = None  # exit status; "timeout" when killed at the bound
    seconds: float | None = None  # from its start to its exit
    log_lines: list = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.folder / "host.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (each bound to port 0, then released)."""
    import socket

    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def commands(backend: str, module: list[str], *, hosts: int, per_host: int = 1,
             ports: list[int] | None = None, max_restarts: int = 0,
             python: str | None = None) -> list[tuple[list[str], dict]]:
    """Each host's (argv, added environment) for ``python -m MODULE...`` on ``backend``'s
    launcher, meeting on this machine."""
    if hosts < 2 or per_host < 1:
        raise DataError(f"several hosts: at least 2 hosts of at least 1 device, found {hosts} "
                        f"x {per_host}")
    eng = distributed.check_engine(backend)
    endpoints = [f"127.0.0.1:{p}" for p in (ports or free_ports(hosts))]
    return [eng.host_command(module, hosts=hosts, per_host=per_host, rank=r,
                             endpoints=endpoints, python=python or sys.executable,
                             max_restarts=max_restarts, one_machine=True)
            for r in range(hosts)]


SCRIPTS = {"torch.distributed.run": "torchrun", "rosetta": "rosetta"}


def typed(argv: list[str]) -> list[str]:
    """A host command as a user types it: ``python -m torch.distributed.run ...`` is
    ``torchrun ...``, ``python -m rosetta ...`` is ``rosetta ...`` (the scripts the packages
    install)."""
    if len(argv) > 2 and argv[1] == "-m" and argv[2] in SCRIPTS:
        return [SCRIPTS[argv[2]], *argv[3:]]
    return list(argv)


def host_env(added: dict, backend: str) -> dict:
    """This environment without any launcher's variables or rosetta's worker marker, the
    frameworks' quiet defaults, and ``added``."""
    from rosetta.backend_registry import backend_classes

    classes = backend_classes().values()
    stale = {k for cls in classes if cls.engine is not None for k in cls.engine.launch_env}
    stale |= {"TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
              distributed.WORKER_ENV}
    env = {k: v for k, v in os.environ.items() if k not in stale}
    env["PYTHONUNBUFFERED"] = "1"
    for cls in classes:
        for k, v in cls.quiet_env.items():
            env.setdefault(k, v)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("JAX_PLATFORMS", "cpu")  # hosts on this machine run on its CPU
    env.update(added)
    return env


def start(backend: str, module: list[str], folder, *, hosts: int, per_host: int = 1,
          max_restarts: int = 0, env: dict | None = None) -> list[Host]:
    """Start ``hosts`` host commands, host r in ``folder``/host-r (its working folder and its
    ``host.log``), each in its own process session."""
    folder = Path(folder)
    out = []
    for rank, (argv, added) in enumerate(commands(backend, module, hosts=hosts,
                                                  per_host=per_host,
                                                  max_restarts=max_restarts)):
        where = folder / f"host-{rank}"
        where.mkdir(parents=True, exist_ok=True)
        h = Host(rank, argv, added, where)
        with open(h.log, "wb") as log:
            h.proc = subprocess.Popen(argv, cwd=where, stdout=log, stderr=subprocess.STDOUT,
                                      env=host_env({**added, **(env or {})}, backend),
                                      start_new_session=True)
        h.started = time.monotonic()
        out.append(h)
    return out


def wait(hosts: list[Host], timeout: float) -> list[Host]:
    """Wait for every host to exit, at most ``timeout`` seconds from now: a host still running
    then is killed with its process session (code ``"timeout"``). Returns ``hosts``."""
    deadline = time.monotonic() + timeout
    pending = [h for h in hosts if h.code is None]
    while pending:
        for h in list(pending):
            code = h.proc.poll()
            if code is not None:
                h.code, h.seconds = code, time.monotonic() - h.started
                pending.remove(h)
        if pending and time.monotonic() > deadline:
            for h in pending:
                kill_session(h)
                h.code, h.seconds = "timeout", time.monotonic() - h.started
            break
        time.sleep(0.05)
    return hosts


def kill_session(h: Host) -> None:
    """SIGKILL a host's whole process session (its launcher and workers)."""
    try:
        os.killpg(h.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    h.proc.wait()


def worker_pids(h: Host) -> list[int]:
    """The worker processes of a host: torchrun's children, else the host's process itself."""
    kids = Path(f"/proc/{h.proc.pid}/task/{h.proc.pid}/children")
    try:
        found = [int(p) for p in kids.read_text().split()]
    except OSError:
        found = []
    return found or [h.proc.pid]


def failed(hosts: list[Host]) -> str | None:
    """One message naming each host that did not exit 0, with its output's last lines; None
    when all did."""
    bad = [h for h in hosts if h.code != 0]
    if not bad:
        return None
    parts = []
    for h in bad:
        lines = [ln for ln in h.output().splitlines() if ln.strip()][-12:]
        parts.append(f"host {h.rank} exited {h.code} after {h.seconds:.1f}s:\n"
                     + "\n".join(lines))
    return "\n".join(parts)


def launch(backend: str, target: str, payload: dict, *, hosts: int, per_host: int = 1,
           timeout: float = 300.0) -> dict:
    """Run ``target`` (as ``rosetta.distributed.launch`` does) on ``hosts`` hosts of
    ``per_host`` devices each, through the engine's own launcher; the main process's result."""
    with tempfile.TemporaryDirectory(prefix="rosetta-hosts-") as tmp:
        tmp = Path(tmp)
        devices = hosts * per_host
        job = {"backend": backend, "devices": devices, "device": "cpu", "target": target,
               "payload": payload, "out": str(tmp)}
        (tmp / "job.json").write_text(json.dumps(job))
        started = start(backend, ["rosetta.distributed", str(tmp / "job.json")], tmp,
                        hosts=hosts, per_host=per_host)
        message = failed(wait(started, timeout))
        if message is not None:
            raise distributed.DistributedError(f"{backend} on {hosts} hosts x {per_host} "
                                               f"devices failed:\n{message}")
        return json.loads((tmp / "result.json").read_text())
