"""Data parallel by the canonical rule (docs/design.md section 10), the framework-neutral part.

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

Each backend declares its engine (``Backend.engine``, an ``Engine`` defined in
``backends/<name>/distributed.py``, which imports no framework): the variables its multi-host
launcher sets, the world they describe, how many worker processes N devices take on one machine
and what each needs in its environment, and the module holding the framework part (``setup``,
``teardown``, ``compile``). On a CPU machine N devices are N processes or N logical devices in
one process, and those must be configured before the framework initialises: ``launch`` starts
fresh worker processes (``python -m rosetta.distributed JOB``) with the environment the engine's
launcher would set, runs a target function in each and returns what the main process (rank 0)
wrote. Under a real multi-host launcher ``launched`` is true and the same code runs in place,
without spawning.

This module imports no framework: the worker imports the engine's ``module``.
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



class Engine:
    """A backend's data-parallel engine, the launcher's side (``Backend.engine``).

    ``launch_env``: the variables its multi-host launcher sets and rosetta reads; ``module``:
    the module (importing the framework) with ``setup(devices, device)`` (join the world the
    environment describes; idempotent), ``teardown()`` and ``compile(spec, *, devices, dtype,
    device, mode, batchnorm)`` (a ``Program`` taking global batches).
    """

    launch_env: tuple[str, ...] = ()
    module: str = ""
    # the precision policies its data-parallel step lowers (None: every one of the backend's
    # one-device step); any other is refused in one line, saying why (``precision_refusal``)
    precisions: tuple[str, ...] | None = None
    precision_refusal: str = ""

    def launched(self, env) -> bool:
        """True in a process its own multi-host launcher started (``env``: the environment)."""
        return False

    def world(self, env) -> tuple[int, int]:
        """(rank of this process, number of processes) as ``env`` says; (0, 1) outside a
        launcher's world."""
        return 0, 1

    def processes(self, devices: int) -> int:
        """Worker processes that drive ``devices`` devices on one machine."""
        return 1

    def worker_env(self, env: dict, *, devices: int, device: str, rank: int, port: int) -> None:
        """Add to ``env`` what worker ``rank`` of ``processes(devices)`` needs (``port``: a free
        port on this machine for the processes to meet at)."""

    def framework(self):
        """The framework part (``module``), imported."""
        return importlib.import_module(self.module)

    def host_command(self, module: list[str], *, hosts: int, per_host: int, rank: int,
                     endpoints: list[str], python: str = "python",
                     max_restarts: int = 0, one_machine: bool = False) -> tuple[list[str], dict]:
        """The command a user types on host ``rank`` of ``hosts`` (each driving ``per_host``
        devices) to run ``python -m MODULE...`` (``module``: ``["rosetta", "train", ...]``)
        through this engine's own launcher, and the environment variables it sets.
        ``endpoints``: "name:port" of every host, host 0's first (torchrun's rendezvous and
        JAX's coordinator are host 0's; a TF_CONFIG lists them all). ``max_restarts``: the
        launcher restarts a failed host's workers (torchrun only). ``one_machine``: the hosts
        share this machine (``rosetta.hosts``), so whatever a launcher would tell apart by the
        machine's name or address is given explicitly."""
        raise BackendUnavailable(f"{type(self).__module__} starts no hosts")


def engine(backend: str) -> Engine | None:
    """The data-parallel engine ``backend`` declares (None: it has none); imports no framework."""
    from rosetta.backend_registry import backend_class

    return backend_class(backend).engine


def engines() -> list[str]:
    """The backends that declare a data-parallel engine."""
    from rosetta.backend_registry import backend_classes

    return [name for name, cls in backend_classes().items() if cls.engine is not None]


def env_int(env, name: str) -> int:
    """``env[name]`` as an integer; ``DataError`` naming the variable otherwise."""
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise DataError(f"environment variable {name} must be set to an integer, found "
                        f"{env.get(name)!r}") from None


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


def check_engine(backend: str) -> Engine:
    """The engine of a backend that can train on several devices, else one clear line (before
    any worker)."""
    found = engine(backend)
    if found is None:
        raise BackendUnavailable(f"{backend} has no data-parallel engine in rosetta (it trains on "
                                 f"one device: --devices 1); several devices run on "
                                 f"{', '.join(engines())}")
    return found


def parallel_precisions(backend: str) -> tuple[str, ...]:
    """The precision policies the backend's data-parallel step lowers (``Engine.precisions``,
    else every one of its one-device step)."""
    from rosetta.backend_registry import backend_class

    found = check_engine(backend)
    return found.precisions if found.precisions is not None else backend_class(backend).precisions


def check_precision(backend: str, precision: str) -> None:
    """A precision on several devices: lowered by the engine, else one line naming why and what
    runs (before any worker or framework)."""
    able = parallel_precisions(backend)
    if precision not in able:
        why = check_engine(backend).precision_refusal
        raise BackendUnavailable(f"{backend} data parallel: precision {precision!r} is not "
                                 f"lowered on several devices ({why}); it runs "
                                 f"{', '.join(able)} there, and {precision} on one device "
                                 f"(--devices 1)")


def check_shard_params(backend: str, devices: int | None = None) -> None:
    """``--shard-params``: the backend's engine must shard parameters and optimizer state
    (``Backend.shard_params``), else one line naming it and why (before any framework runs);
    on one device there is nothing to shard over, which is refused too."""
    from rosetta.backend_registry import backend_class, backend_classes

    cls = backend_class(backend)
    if cls.shard_params is None:
        able = [n for n, c in backend_classes().items() if c.shard_params is not None]
        raise BackendUnavailable(f"{backend} cannot shard parameters (--shard-params): "
                                 f"{cls.shard_params_refusal}; it runs on "
                                 f"{', '.join(able)}")
    if devices is not None and devices < 2:
        raise DataError("--shard-params shards parameters and optimizer state over the "
                        "data-parallel devices: give --devices N with N >= 2")


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
    """True inside a process started by the engine's own multi-host launcher, where rosetta
    spawns nothing."""
    found = engine(backend)
    return found is not None and found.launched(os.environ)


WORKER_ENV = "ROSETTA_DISTRIBUTED_WORKER"  # set by ``launch`` in the processes it starts
WORKER_TIMEOUT_ENV = "ROSETTA_WORKER_TIMEOUT"  # ``--worker-timeout``, read by every worker
WORKER_TIMEOUT = 60.0  # seconds: a lost worker ends the others' run within about this bound


def worker_timeout(env=None) -> float:
    """Seconds after which the workers of a run give up on a lost peer (a collective that
    does not complete, a missed heartbeat): ``ROSETTA_WORKER_TIMEOUT`` (``--worker-timeout``,
    inherited by the workers), else ``WORKER_TIMEOUT``."""
    env = os.environ if env is None else env
    text = env.get(WORKER_TIMEOUT_ENV)
    if text is None:
        return WORKER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DataError(f"{WORKER_TIMEOUT_ENV} (--worker-timeout) must be a positive number of "
                        f"seconds, found {text!r}")
    return value


def set_worker_timeout(seconds: float | None) -> None:
    """``--worker-timeout``: set for this process and the workers it starts."""
    if seconds is not None:
        os.environ[WORKER_TIMEOUT_ENV] = repr(float(seconds))
        worker_timeout()


def in_worker(backend: str) -> bool:
    """True in a process that drives devices itself: one ``launch`` started, or one that the
    engine's launcher started (``launched``)."""
    return spawned() or launched(backend)


def spawned() -> bool:
    """True in a worker process that rosetta's own launcher (``launch``) started: it leaves the
    world itself when its target returns."""
    return os.environ.get(WORKER_ENV) == "1"


def world_from_env(backend: str) -> tuple[int, int]:
    """(rank of this process, number of processes) as the launcher's environment says; (0, 1)
    outside one."""
    found = engine(backend)
    return (0, 1) if found is None else found.world(os.environ)


def is_main_process(backend: str) -> bool:
    return world_from_env(backend)[0] == 0


def framework_part(backend: str):
    """The engine's framework part (``Engine.module``; imports the framework)."""
    from rosetta.backend_registry import get_backend

    found = check_engine(backend)
    get_backend(backend).load_framework()  # a clear line if the framework is missing
    return found.framework()


def join(backend: str, devices: int, device: str = "cpu"):
    """Join the world the environment describes (the launcher's variables; on one machine
    rosetta's launcher sets them), before anything else touches the framework:
    ``jax.distributed.initialize`` must run before JAX initialises its backend, TensorFlow's
    logical devices before TensorFlow does. Idempotent; returns the framework part."""
    mod = framework_part(backend)
    mod.setup(devices, device)
    return mod


def leave(backend: str) -> None:
    """Leave the world cleanly after a run that succeeded on every worker: a barrier, then the
    engine's own shutdown (torch: ``destroy_process_group``), so that no worker's launcher
    outlives the rendezvous it shares with the others."""
    framework_part(backend).teardown()


ALIVE = "rosetta-alive"  # the key prefix of the lost-worker probe in the engine's own store


def lost_workers(backend: str, wait: float) -> list[int] | None:
    """After a collective failed in a worker of several: the ranks that are gone. Every
    surviving worker marks itself alive in the engine's own store (torch's c10d store, the JAX
    coordination service, TensorFlow's coordination service: ``board_set`` / ``board_has`` of
    the framework part) and waits at most ``wait`` seconds for the others' marks; the ranks
    without a mark are lost. None: the store itself is unreachable (the host holding it is
    gone)."""
    mod = framework_part(backend)
    rank, world = world_from_env(backend)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    key = lambda r: f"{ALIVE}/{attempt}/{r}"  # noqa: E731
    deadline = time.monotonic() + wait
    try:
        mod.board_set(key(rank))
        while True:
            alive = {r for r in range(world) if r == rank or mod.board_has(key(r))}
            if len(alive) == world or time.monotonic() > deadline:
                return sorted(set(range(world)) - alive)
            time.sleep(0.1)
    except Exception:  # noqa: BLE001 - the store's host is gone: its client raises anything
        return None


PROBE_WAIT = 5.0  # seconds: the most the lost-worker probe waits for the other workers' marks


def probe_wait(env=None) -> float:
    """Seconds the lost-worker probe (``lost_workers``) waits for the surviving workers' marks:
    ``PROBE_WAIT``, or the worker timeout where that is shorter."""
    return min(PROBE_WAIT, worker_timeout(env))


def lost_line(backend: str, error: BaseException) -> str | None:
    """The one line that ends a worker whose peer is lost (``error``: what its collective
    raised), or None when every worker is alive (then ``error`` is the run's own)."""
    lost = lost_workers(backend, probe_wait())
    rank, world = world_from_env(backend)
    if lost == []:
        return None
    first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "")[:160]
    if lost is None:
        who = (f"the host of the {backend} rendezvous store (torchrun's rendezvous host or the "
               f"coordinator, host 0: it does not answer)")
    else:
        who = (("worker " if len(lost) == 1 else "workers ") + ", ".join(map(str, lost))
               + f" of {world} {backend} workers")
    return (f"lost {who}: worker {rank} stops (its collective failed: "
            f"{type(error).__name__}: {first}); restart with --resume on the run folder")


class CollectiveTimeout(RuntimeError):
    """A step whose collective did not complete within ``worker_timeout()`` seconds (raised by
    an engine whose collectives can wait for good on a dead peer: JAX's gloo); handled as a
    failed collective (``abandon``), as torch's process-group timeout is."""


def await_step(ready, seconds: float | None = None) -> None:
    """Wait until ``ready()`` (a step's result is on the host's side), at most ``seconds``
    (``worker_timeout()``), then raise ``CollectiveTimeout``. Polls with a pause that doubles
    from 0.1 ms to 10 ms, so a step that is done at once costs one call."""
    if ready():
        return
    seconds = worker_timeout() if seconds is None else seconds
    deadline = time.monotonic() + seconds
    pause = 1e-4
    while not ready():
        if time.monotonic() > deadline:
            raise CollectiveTimeout(f"the step's collective did not complete within "
                                    f"{seconds:g} s (--worker-timeout)")
        time.sleep(pause)
        pause = min(2 * pause, 0.01)


def abandon(backend: str, error: BaseException) -> None:
    """In a worker of several whose run raised ``error``: when it is a failed collective
    (``collective_failure`` of the framework part, or ``CollectiveTimeout``) and a peer is
    lost, print one line naming it and end this process at once (status 1), without the
    engine's shutdown, which would wait for the lost peer; otherwise return (the error is the
    run's own)."""
    if not (isinstance(error, CollectiveTimeout)
            or framework_part(backend).collective_failure(error)):
        return
    line = lost_line(backend, error)
    if line is None:
        return
    print(f"rosetta: error: {line}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def compile_program(backend: str, spec, *, devices: int, dtype: str = "float32",
                    device: str = "cpu", mode: str | None = None, batchnorm: str = "global",
                    shard_params: bool = False):
    """A Program that runs each step data-parallel over ``devices`` replicas of this process's
    engine (call inside a worker: see ``launch``). Its API is the one-device ``Program``'s, on
    global batches: it shards them itself. ``shard_params``: parameters and optimizer state
    sharded over the replicas by the engine's own machinery (``Backend.shard_params``); its
    exports (and so its checkpoints) are still the whole canonical arrays, gathered, which makes
    every export a collective that every worker calls."""
    check_batchnorm(batchnorm)
    check_precision(backend, dtype)
    extra = {}
    if shard_params:
        check_shard_params(backend, devices)
        extra["shard_params"] = True
    mod = join(backend, devices, device)  # idempotent: a launcher's process joins here
    return mod.compile(spec, devices=devices, dtype=dtype, device=device,
                       mode=mode, batchnorm=batchnorm, **extra)


# --- spawning workers on this machine ---------------------------------------------------------

def processes(backend: str, devices: int) -> int:
    """Worker processes for ``devices`` devices on one machine (the engine says)."""
    return check_engine(backend).processes(devices)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(backend: str, devices: int, device: str, rank: int, port: int) -> dict:
    """The environment of worker ``rank``: this one without any launcher's variables, the
    frameworks' quiet defaults, and what the engine's launcher would set."""
    from rosetta.backend_registry import backend_classes

    classes = backend_classes().values()
    stale = {k for cls in classes if cls.engine is not None for k in cls.engine.launch_env}
    env = {k: v for k, v in os.environ.items() if k not in stale}
    env["PYTHONUNBUFFERED"] = "1"
    env[WORKER_ENV] = "1"
    for cls in classes:
        for k, v in cls.quiet_env.items():
            env.setdefault(k, v)
    check_engine(backend).worker_env(env, devices=devices, device=device, rank=rank, port=port)
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
                     kwargs: dict, shard_params: bool = False) -> dict:
    """``rosetta.training.train`` on ``devices`` devices: the run in worker processes, its record
    (without ``program``, which lives in the workers) returned here."""
    from rosetta.display import RunRecord

    batch = kwargs.get("batch_size") or (spec.data.batch_size if spec is not None else None)
    check_devices(devices, batch)
    for key in ("save", "resume", "log"):
        if kwargs.get(key) is not None:
            kwargs[key] = str(Path(kwargs[key]).resolve())
    payload = {"spec": None if spec is None else portable_spec(spec), "backend": backend,
               "devices": devices, "batchnorm": batchnorm, "device": device, "kwargs": kwargs,
               "shard_params": shard_params}
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
                   shard_params=payload.get("shard_params", False), **payload["kwargs"])
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
    mod = framework_part(backend)
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
