"""``rosetta bench --devices N``: data-parallel throughput and scaling efficiency per backend.

Each backend is timed twice through the same path, in fresh worker processes
(``rosetta.distributed.launch``): its data-parallel program on 1 device and on N devices, on the
same global batch (``--batch-size``, default the spec's; it must divide by N), prepared on the
devices once (``prepare_batch``), ``--warmup`` steps untimed, then ``--steps`` timed steps (each
returns its loss to the host, which waits for the step). Reported per backend:

* step time and throughput (global examples per second) at 1 and at N devices;
* scaling efficiency = throughput(N) / (N · throughput(1)): 1.0 is perfect linear scaling.

On a CPU machine the N "devices" share the same cores (N processes or N logical devices), so
efficiency there measures the engine's overhead, not a speed-up; the numbers that matter come
from N GPUs. ``--hosts H`` times the N devices as H hosts started through the engine's own
launcher over localhost (``rosetta.hosts``): on one machine that is the overhead of the
launcher's path and its network collectives, again not a speed-up.
"""

from __future__ import annotations

import json
import sys
import time

from rosetta.distributed import check_devices, compile_program, launch, portable_spec
from rosetta.errors import DataError
from rosetta.spec import TrainSpec


def bench_worker(payload: dict, context: dict) -> dict:
    from rosetta.conformance.runner import batch_stream

    spec = TrainSpec.from_json(payload["spec"])
    prog = compile_program(context["backend"], spec, devices=context["devices"],
                           dtype=payload["dtype"], device=context["device"])
    x, y = next(batch_stream(spec, 1, spec.seed, payload["dtype"]))
    batch = prog.prepare_batch(x, y)
    t0 = time.perf_counter()
    prog.train_step(batch)
    first = time.perf_counter() - t0
    for _ in range(payload["warmup"]):
        prog.train_step(batch)
    t0 = time.perf_counter()
    for _ in range(payload["steps"]):
        prog.train_step(batch)
    step = (time.perf_counter() - t0) / payload["steps"]
    return {"step_seconds": step, "first_step_seconds": first}


def measure(spec, backend: str, devices: int, *, batch_size=None, steps=20, warmup=3,
            dtype="float32", device="cpu", hosts: int = 1) -> dict:
    """One row: 1 device and ``devices`` devices of ``backend`` on the same global batch;
    ``hosts`` > 1: the ``devices`` as that many hosts (``rosetta.hosts``, each through the
    engine's own launcher over localhost)."""
    if batch_size:
        spec.data.batch_size = batch_size
    batch = spec.data.batch_size
    check_devices(devices, batch)
    if hosts > 1 and (devices % hosts or device != "cpu"):
        raise DataError(f"--hosts {hosts}: the {devices} devices must split evenly over the "
                        f"hosts, on this machine's CPU")
    payload = {"spec": portable_spec(spec), "dtype": dtype, "steps": steps, "warmup": warmup}
    target = "rosetta.conformance.bench.parallel:bench_worker"
    times = {1: launch(backend, 1, target, payload, device=device)}
    if hosts > 1:
        from rosetta import hosts as hosts_mod

        times[devices] = hosts_mod.launch(backend, target, payload, hosts=hosts,
                                          per_host=devices // hosts)
    else:
        times[devices] = launch(backend, devices, target, payload, device=device)
    one, many = times[1]["step_seconds"], times[devices]["step_seconds"]
    return {"model": spec.name, "backend": backend, "device": device, "dtype": dtype,
            "batch_size": batch, "devices": devices, "hosts": hosts, "step_ms_1": one * 1e3,
            "step_ms_n": many * 1e3, "examples_per_s_1": batch / one,
            "examples_per_s_n": batch / many, "scaling_efficiency": one / (devices * many),
            "first_step_s_n": times[devices]["first_step_seconds"]}


def table(rows) -> str:
    head = (f"{'model':<12} {'backend':<11} {'batch':>5} {'H':>2} {'N':>3} {'ms/step 1':>10} "
            f"{'ms/step N':>10} {'ex/s 1':>9} {'ex/s N':>9} {'efficiency':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<12} {r['backend']:<11} {r['batch_size']:>5} "
                     f"{r.get('hosts', 1):>2} {r['devices']:>3} {r['step_ms_1']:>10.2f} {r['step_ms_n']:>10.2f} "
                     f"{r['examples_per_s_1']:>9.0f} {r['examples_per_s_n']:>9.0f} "
                     f"{r['scaling_efficiency']:>10.2f}")
    return "\n".join(lines)


def run_command(args, specs, backends) -> int:
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    rows = []
    for spec in specs:
        for backend in backends:
            log(f"{spec.name} on {backend}: 1 and {args.devices} devices"
                + (f" over {args.hosts} hosts" if getattr(args, "hosts", 1) > 1 else ""))
            rows.append(measure(spec, backend, args.devices, batch_size=args.batch_size,
                                steps=args.steps, warmup=args.warmup or 3, dtype=args.dtype,
                                device=args.device, hosts=getattr(args, "hosts", 1)))
    print(table(rows))
    for path in args.report or []:
        if str(path).endswith(".json"):
            from rosetta.files import atomic_file

            with atomic_file(path) as f:
                f.write(json.dumps({"parallel": rows}, indent=1).encode())
    return 0
