"""Data parallel by the canonical rule (DESIGN section 10), the framework-neutral part.

The rule every backend keeps, so that N devices compute the one-device step up to summation
order:

* the global batch (B examples) is the one-device batch, split evenly and in order over the N
  replicas: replica r holds examples [r·B/N, (r+1)·B/N) (``replica_rows``); B must divide by N;
* the loss and its gradient are the mean over the global batch:
  L = (1/B) Σ_i l_i = (1/N) Σ_r L_r with L_r the mean over replica r's B/N examples (DDP averages
  the replicas' gradients; tf.distribute sums them, so each replica's loss is scaled by 1/N);
* BatchNorm normalises with global-batch statistics, mean = (1/B) Σ_i x_i and biased variance
  (1/B) Σ_i (x_i − mean)², reduced over every replica by the engine's own collective
  (``batchnorm="replica"``: each replica's own B/N examples, an explicit option, not the
  one-device math);
* dropout keep-masks are indexed by global example: injected masks (conformance) are the
  one-device masks, and replica r uses rows [r·B/N, (r+1)·B/N) of them;
* schedules count global updates (one update per global batch, whatever N).

On a CPU machine N devices are N processes (torch, gloo) or N logical devices in one process
(TensorFlow, JAX), and those must be configured before the framework initialises: ``launch``
starts fresh worker processes (``python -m rosetta.distributed JOB``) with the environment each
engine's launcher would set (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``/
``LOCAL_RANK`` for torch, as torchrun does; ``XLA_FLAGS`` for JAX's host devices), runs a target
function in each and returns what the main process (rank 0) wrote. Under a real multi-host
launcher (torchrun, a ``TF_CONFIG``, a JAX coordinator address) ``launched`` is true and the same
code runs in place, without spawning.

This module imports no framework: the worker imports ``rosetta.backends.<name>.distributed``.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rosetta.errors import BackendUnavailable, DataError, RosettaError

BATCHNORM_STATS = ("global", "replica")

# the environment variables each multi-host launcher sets, and that rosetta reads
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TF_ENV = ("TF_CONFIG",)
JAX_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
LAUNCH_ENV = {"torch": TORCHRUN_ENV, "tensorflow": TF_ENV, "jax": JAX_ENV}


class DistributedError(RosettaError):
    """A worker process failed: the message names the rank and ends with its last output."""


def check_devices(devices, batch_size: int | None = None) -> int:
    """``devices`` as a positive int; the global batch must split evenly over it."""
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1:
        raise DataError(f"devices must be a positive integer, found {devices!r}")
    if batch_size is not None and batch_size % devices:
        raise DataError(f"the global batch of {batch_size} examples does not split evenly over "
                        f"{devices} devices: choose a batch size that divides by {devices} "
                        f"(--batch-size)")
    return int(devices)


ENGINES = ("torch", "tensorflow", "jax")  # the backends with a ``distributed.py``


def check_engine(backend: str) -> str:
    """A backend that can train on several devices, else one clear line (before any worker)."""
    if backend not in ENGINES:
        raise BackendUnavailable(f"{backend} has no data-parallel engine in rosetta (it trains on "
                                 f"one device: --devices 1); several devices run on "
                                 f"{', '.join(ENGINES)}")
    return backend


def check_batchnorm(batchnorm: str) -> str:
    if batchnorm not in BATCHNORM_STATS:
        raise DataError(f"batchnorm statistics must be one of {', '.join(BATCHNORM_STATS)}, "
                        f"found {batchnorm!r}")
    return batchnorm


def replica_rows(batch: int, rank: int, world: int) -> slice:
    """Rows of replica ``rank`` of ``world`` in a global batch of ``batch`` examples."""
    if batch % world:
        raise DataError(f"a batch of {batch} examples does not split evenly over {world} "
                        f"replicas")
    per = batch // world
    return slice(rank * per, (rank + 1) * per)


def parse_tf_config(text: str) -> dict:
    """``TF_CONFIG`` (JSON: ``cluster`` {"worker": [host:port, ...]}, ``task`` {type, index}) as
    {"workers": [...], "index": i}; ``DataError`` naming what is wrong."""
    try:
        cfg = json.loads(text)
        workers = list(cfg["cluster"]["worker"])
        task = cfg["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"TF_CONFIG must be JSON with cluster.worker (a list of host:port) and "
                        f"task.type / task.index ({type(e).__name__}: {e})") from None
    if task.get("type") not in ("worker", "chief") or not 0 <= index < len(workers):
        raise DataError(f"TF_CONFIG task {task!r} is not one of the {len(workers)} workers")
    return {"workers": workers, "index": index}


def portable_spec(spec) -> dict:
    """The spec as JSON that worker processes can load: data paths made absolute; data held in
    memory (``DataSpec.from_arrays``) cannot travel, which is a ``DataError``."""
    if getattr(spec.data, "source", None) == "arrays":
        raise DataError("training on several devices starts worker processes, which cannot see "
                        "data held in memory (DataSpec.from_arrays): save it as .npz and give "
                        "the path (--data PATH or DataSpec(path=...))")
    resolved = getattr(spec.data, "resolved", None)
    if resolved is not None:
        from rosetta.spec import TrainSpec

        spec = TrainSpec(spec.model, spec.loss, spec.optimizer, resolved(), spec.steps,
                         spec.seed, spec.description)
    return spec.to_json()


def launched(backend: str) -> bool:
    """True inside a process started by the engine's own multi-host launcher (torchrun's
    RANK/WORLD_SIZE, a TF_CONFIG, a JAX coordinator address), where rosetta spawns nothing."""
    env = os.environ
    if backend == "torch":
        return "RANK" in env and "WORLD_SIZE" in env
    if backend == "tensorflow":
        return "TF_CONFIG" in env
    if backend == "jax":
        return "JAX_COORDINATOR_ADDRESS" in env
    return False


WORKER_ENV = "ROSETTA_DISTRIBUTED_WORKER"  # set by ``launch`` in the processes it starts


def in_worker(backend: str) -> bool:
    """True in a process that drives devices itself: one ``launch`` started, or one that the
    engine's launcher started (``launched``)."""
    return os.environ.get(WORKER_ENV) == "1" or launched(backend)


def world_from_env(backend: str) -> tuple[int, int]:
    """(rank of this process, number of processes) as the launcher's environment says; (0, 1)
    outside one."""
    env = os.environ
    if backend == "torch" and "WORLD_SIZE" in env:
        return _env_int("RANK"), _env_int("WORLD_SIZE")
    if backend == "tensorflow" and "TF_CONFIG" in env:
        cfg = parse_tf_config(env["TF_CONFIG"])
        return cfg["index"], len(cfg["workers"])
    if backend == "jax" and "JAX_COORDINATOR_ADDRESS" in env:
        return _env_int("JAX_PROCESS_ID"), _env_int("JAX_NUM_PROCESSES")
    return 0, 1


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        raise DataError(f"environment variable {name} must be set to an integer, found "
                        f"{os.environ.get(name)!r}") from None


def is_main_process(backend: str) -> bool:
    return world_from_env(backend)[0] == 0


def backend_module(backend: str):
    """``rosetta.backends.<backend>.distributed`` (imports the framework)."""
    from rosetta.backend_registry import get_backend

    get_backend(backend)  # a clear line if the framework is missing
    return importlib.import_module(f"rosetta.backends.{backend}.distributed")


def compile_program(backend: str, spec, *, devices: int, dtype: str = "float32",
                    device: str = "cpu", mode: str | None = None, batchnorm: str = "global"):
    """A Program that runs each step data-parallel over ``devices`` replicas of this process's
    engine (call inside a worker: see ``launch``). Its API is the one-device ``Program``'s, on
    global batches: it shards them itself."""
    check_batchnorm(batchnorm)
    mod = backend_module(check_engine(backend))
    mod.setup(devices, device)  # idempotent: a process torchrun started joins its group here
    return mod.compile(spec, devices=devices, dtype=dtype, device=device,
                                           mode=mode, batchnorm=batchnorm)


# --- spawning workers on this machine ---------------------------------------------------------

def processes(backend: str, devices: int) -> int:
    """Worker processes for ``devices`` devices on one machine: torch runs one process per
    device (gloo/nccl ranks); TensorFlow and JAX drive N devices from one process."""
    return devices if backend == "torch" else 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(backend: str, devices: int, device: str, rank: int, port: int) -> dict:
    """The environment of worker ``rank``: what torchrun would set for torch; N host devices
    for JAX on a CPU (``XLA_FLAGS``, read when JAX initialises)."""
    env = {k: v for k, v in os.environ.items()
           if k not in TORCHRUN_ENV + TF_ENV + JAX_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env[WORKER_ENV] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if backend == "torch":
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(devices),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        # N processes on a machine share its cores: one thread each keeps them from fighting
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    elif backend == "jax" and device == "cpu":
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    return env


def launch(backend: str, devices: int, target: str, payload: dict, *, device: str = "cpu",
           echo: bool = False, timeout: float | None = None) -> dict:
    """Run ``target`` ("module:function", called with (payload, context)) in fresh worker
    processes driving ``devices`` devices of ``backend``; return the JSON dict the main
    process's call returned. ``context`` has ``devices``, ``backend``, ``device``, ``out`` (a
    folder for files the parent reads back) and ``rank``. ``echo`` passes the main process's
    stderr through (progress bars); a failed worker raises ``DistributedError`` with its
    output's last lines."""
    devices = check_devices(devices)
    check_engine(backend)
    with tempfile.TemporaryDirectory(prefix="rosetta-dist-") as tmp:
        tmp = Path(tmp)
        job = {"backend": backend, "devices": devices, "device": device, "target": target,
               "payload": payload, "out": str(tmp)}
        job_path = tmp / "job.json"
        job_path.write_text(json.dumps(job))
        port = _free_port()
        procs = []
        for rank in range(processes(backend, devices)):
            log = open(tmp / f"rank{rank}.log", "wb")
            err = None if (echo and rank == 0) else subprocess.STDOUT
            procs.append((rank, log, subprocess.Popen(
                [sys.executable, "-m", "rosetta.distributed", str(job_path)],
                env=worker_env(backend, devices, device, rank, port), stdout=log,
                stderr=err)))
        failed = _wait(procs, timeout)
        for _, log, _ in procs:
            log.close()
        if failed is not None:
            rank, code = failed
            tail = (tmp / f"rank{rank}.log").read_text(errors="replace").strip().splitlines()
            last = [ln for ln in tail if ln.strip()][-12:]
            raise DistributedError(f"{backend} worker {rank} of {devices} devices failed "
                                   f"(exit {code}):\n" + "\n".join(last))
        result = tmp / "result.json"
        if not result.exists():
            raise DistributedError(f"{backend} workers exited without a result")
        return json.loads(result.read_text())


def _wait(procs, timeout):
    """Wait for every worker; on the first failure stop the others. (rank, code) or None."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = list(procs)
    failed = None
    while pending:
        for item in list(pending):
            rank, _, p = item
            code = p.poll()
            if code is None:
                continue
            pending.remove(item)
            if code != 0 and failed is None:
                failed = (rank, code)
        if failed is not None or (deadline is not None and time.monotonic() > deadline):
            for _, _, p in pending:
                p.kill()
                p.wait()
            if failed is None:
                failed = (pending[0][0], "timeout") if pending else None
            break
        time.sleep(0.05)
    return failed


def train_in_workers(spec, backend: str, *, devices: int, batchnorm: str, device: str,
                     kwargs: dict) -> dict:
    """``rosetta.training.train`` on ``devices`` devices: the run in worker processes, its record
    (without ``program``, which lives in the workers) returned here."""
    from rosetta.display import RunRecord

    batch = kwargs.get("batch_size") or (spec.data.batch_size if spec is not None else None)
    check_devices(devices, batch)
    for key in ("save", "resume", "log"):
        if kwargs.get(key) is not None:
            kwargs[key] = str(Path(kwargs[key]).resolve())
    payload = {"spec": None if spec is None else portable_spec(spec), "backend": backend,
               "devices": devices, "batchnorm": batchnorm, "device": device, "kwargs": kwargs}
    record = launch(backend, devices, "rosetta.distributed:train_worker", payload,
                    device=device, echo=bool(kwargs.get("progress")))
    record["program"] = None
    return RunRecord(record)


def train_worker(payload: dict, context: dict) -> dict:
    """In a worker: ``rosetta.training.train`` with a data-parallel program; the record as JSON."""
    from rosetta.spec import TrainSpec
    from rosetta.training import train

    spec = None if payload["spec"] is None else TrainSpec.from_json(payload["spec"])
    record = train(spec, payload["backend"], device=payload["device"],
                   devices=payload["devices"], batchnorm=payload["batchnorm"],
                   **payload["kwargs"])
    record = dict(record)
    record.pop("program", None)
    return json.loads(json.dumps(record, default=float))


def _worker_main(job_path: str) -> int:
    """The worker process: configure the engine's devices, run the target, and write the main
    rank's result."""
    from rosetta.cli import quiet_frameworks

    quiet_frameworks()
    job = json.loads(Path(job_path).read_text())
    backend, devices = job["backend"], job["devices"]
    mod = backend_module(backend)
    mod.setup(devices, job["device"])
    rank = world_from_env(backend)[0]
    module, _, func = job["target"].partition(":")
    fn = getattr(importlib.import_module(module), func)
    context = {"devices": devices, "backend": backend, "device": job["device"],
               "out": job["out"], "rank": rank}
    result = fn(job["payload"], context)
    if rank == 0:
        path = Path(job["out"]) / "result.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)
    mod.teardown()
    return 0


if __name__ == "__main__":  # pragma: no cover - the worker process
    try:
        sys.exit(_worker_main(sys.argv[1]))
    except (RosettaError, BackendUnavailable) as e:
        print(f"rosetta: error: {e}", file=sys.stderr)
        sys.exit(2)
