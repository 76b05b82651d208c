"""The parallel tier (docs/design.md sections 5 and 10): one device against N on each backend's own
distributed engine, and every backend pair at N devices.

Each N-device run is recorded in fresh worker processes (``rosetta.distributed.launch``: N torch
ranks over gloo, or one TensorFlow / JAX process with N logical devices), with the recorder of the
exact tier (``runner.record``) driving a data-parallel ``Program`` on the same global batches and
the same injected dropout masks (indexed by global example); the main worker saves the
``Trajectory`` and the parent compares it, step by step, with the one-device trajectory of the
same backend (loss, every gradient, parameters, BatchNorm state, optimizer state) and with the
other backends' N-device trajectories, by ``suite.compare_trajectories`` under the exact tier's
bound 1e-10 (only summation order differs in float64). A failed comparison is blamed like the
exact tier's (``suite.blame``). float32 is not free-running: a different summation order flips a
ReLU at its kink, so each float32 step is teacher-forced from the float64 state and held within
measured noise (``parallel_forced.py``).

``trap`` (tests only) plants one of ``parallel_traps.TRAPS`` in the workers, to prove the tier
fails and blames the right tensor.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from pathlib import Path

from rosetta.conformance.diagnose import first_divergence
from rosetta.conformance.runner import record, without_dropout
from rosetta.conformance.suite import blame, compare_trajectories
from rosetta.conformance.tiers import tier_for
from rosetta.conformance.trajectory import Trajectory
from rosetta.distributed import (check_devices, check_shard_params, compile_program, launch,
                                 portable_spec)
from rosetta.errors import DataError
from rosetta.spec import TrainSpec


def parse_devices(text) -> list[int]:
    """``--devices 1,2`` (or "1 2", or a list) as sorted distinct counts, 1 first."""
    items = text if isinstance(text, (list, tuple)) else str(text).replace(",", " ").split()
    try:
        counts = sorted({int(v) for v in items})
    except ValueError:
        raise DataError(f"--devices takes device counts such as 1,2; found {text!r}") from None
    if not counts or counts[0] != 1 or len(counts) < 2:
        raise DataError(f"--devices compares one device with more: give 1 and at least one "
                        f"N > 1 (e.g. 1,2), found {text!r}")
    return counts


def record_worker(payload: dict, context: dict) -> dict:
    """In a worker: record ``steps`` data-parallel steps; the main rank saves the trajectory."""
    spec = TrainSpec.from_json(payload["spec"])
    if payload["dropout"] == "off":
        spec = without_dropout(spec)
    trap = payload.get("trap")
    if trap:
        from rosetta.conformance.parallel_traps import plant

        plant(trap, context["backend"])
    prog = compile_program(context["backend"], spec, devices=context["devices"],
                           dtype=payload["dtype"], device=context["device"],
                           batchnorm=payload.get("batchnorm", "global"),
                           shard_params=payload.get("shard_params", False))
    traj = record(spec, context["backend"], dtype=payload["dtype"], device=context["device"],
                  steps=payload["steps"], seed=payload["seed"], dropout="inject",
                  program=prog)
    traj.meta["device"] = f"{context['device']}x{context['devices']}"
    traj.meta["shard_params"] = bool(payload.get("shard_params"))
    if hasattr(prog, "held_bytes"):  # what the main worker holds: its shards when sharded
        traj.meta["held_bytes"] = prog.held_bytes()
    if context["rank"] == 0:
        traj.save(payload["save"])
    return {"trajectory": payload["save"]}


def record_parallel(spec: TrainSpec, backend: str, devices: int, *, dtype="float64",
                    device="cpu", steps=3, seed=None, dropout="inject", trap=None,
                    folder=None, hosts: int = 1, shard_params: bool = False) -> Trajectory:
    """Record ``spec`` on ``backend`` over ``devices`` devices (worker processes); ``hosts``
    > 1: over ``hosts`` hosts of ``devices // hosts`` devices each, each started through the
    engine's own launcher (``rosetta.hosts``), meeting over localhost. ``shard_params``:
    parameters and optimizer state sharded over the devices (the trajectory's tensors are
    the gathered whole ones)."""
    check_devices(devices, spec.data.batch_size)
    if shard_params:
        check_shard_params(backend, devices)
    if hosts > 1 and devices % hosts:
        raise DataError(f"{devices} devices do not split evenly over {hosts} hosts")
    seed = spec.seed if seed is None else seed
    with tempfile.TemporaryDirectory(prefix="rosetta-parallel-") as tmp:
        topology = (f"x{devices}" if hosts == 1 else f"h{hosts}x{devices // hosts}") + \
            ("-sharded" if shard_params else "")
        path = Path(folder or tmp) / f"{spec.name}-{backend}-{dtype}-{topology}.npz"
        payload = {"spec": portable_spec(spec), "dtype": dtype, "steps": steps, "seed": seed,
                   "dropout": dropout, "trap": trap, "save": str(path),
                   "shard_params": shard_params}
        target = "rosetta.conformance.parallel:record_worker"
        if hosts > 1:
            from rosetta import hosts as hosts_mod

            if device != "cpu":
                raise DataError("several hosts on one machine run on its CPU (--device cpu)")
            hosts_mod.launch(backend, target, payload, hosts=hosts, per_host=devices // hosts)
        else:
            launch(backend, devices, target, payload, device=device)
        traj = Trajectory.load(path)
        traj.meta["hosts"] = hosts
    return traj


def tier(dtype: str):
    """The parallel tier's bound: the dtype's (float64 the exact tier's 1e-10, float32 the
    float32 tier's), under its own name."""
    return dataclasses.replace(tier_for(dtype), name="parallel")


def run(spec, backends, *, devices=(1, 2), dtype="float64", device="cpu", steps=3, seed=None,
        dropout="inject", trap=None, progress=None, shard_params=False):
    """For each N > 1 in ``devices``: each backend's 1-device trajectory against its N-device
    one, then every backend pair at N. Returns (results, trajectories). float32 is held
    teacher-forced within measured noise instead (``parallel_forced.run``). ``shard_params``:
    the N-device runs shard parameters and optimizer state (float64 only here)."""
    counts = parse_devices(devices)
    for n in counts[1:]:
        check_devices(n, spec.data.batch_size)
    if shard_params:
        for be in backends:
            check_shard_params(be, counts[-1])
        if dtype == "float32":
            raise DataError("--shard-params in the parallel tier runs float64 (the exact "
                            "bound); the float32 tier is teacher-forced on replicated state")
    if dtype == "float32":  # teacher-forced, within measured noise (parallel_forced.py)
        from rosetta.conformance import parallel_forced

        return parallel_forced.run(spec, backends, counts=counts, device=device, steps=steps,
                                   seed=seed, dropout=dropout, trap=trap, progress=progress)
    tier_ = tier(dtype)
    results, trajs = [], []
    for be in backends:
        if progress:
            progress(f"{spec.name}: recording {be} on 1 device ({dtype}, {steps} steps)")
        one = record(spec if dropout == "inject" else without_dropout(spec), be, dtype=dtype,
                     device=device, steps=steps, seed=seed)
        trajs.append(one)
    by_n = {}
    for n in counts[1:]:
        by_n[n] = []
        for be, one in zip(backends, trajs[:len(backends)]):
            if progress:
                progress(f"{spec.name}: recording {be} on {n} devices")
            many = record_parallel(spec, be, n, dtype=dtype, device=device, steps=steps,
                                   seed=seed, dropout=dropout, trap=trap,
                                   shard_params=shard_params)
            by_n[n].append(many)
            results.append(compare_runs(spec, one, many, tier_, dtype, seed, dropout))
        for a, b in itertools.combinations(by_n[n], 2):
            results.append(compare_runs(spec, a, b, tier_, dtype, seed, dropout))
        trajs.extend(by_n[n])
    return results, trajs


def compare_runs(spec, a, b, tier, dtype, seed, dropout):
    r = compare_trajectories(a, b, tier)
    if r.passed:
        return r
    if a.meta["backend"] != b.meta["backend"]:
        blame(r, spec, a, b, tier, dtype, seed, dropout)  # the exact tier's, with its bisection
        return r
    d = device_blame(a, b, tier)
    if d is not None:
        r.blame = {"step": d.step, "category": d.category, "tensor": d.tensor, "node":
                   d.tensor.split("/")[0] if d.tensor else None, "op": None,
                   "worst": str(d.worst)}
        r.where = str(d)
    return r


def device_blame(a: Trajectory, b: Trajectory, tier):
    """The first divergence between one backend's 1- and N-device runs. Both run the same
    lowering, so bisecting the graph on one device (the exact tier's blame) finds nothing: a
    difference in the step's forward shows first in the loss, and the tensor that says why is
    named in its place: the model state of that step (BatchNorm running statistics: the batch
    statistics were not the global batch's), else the worst gradient (a wrong reduction of the
    gradients, or wrong dropout masks)."""
    d = first_divergence(a, b, tier)
    if d is None or d.category != "loss":
        return d
    for keep in ("state", "grads"):
        only = [dataclasses.replace(t, loss=a.loss, **{c: ({} if c != keep else getattr(t, c))
                                                       for c in ("grads", "params", "state",
                                                                 "opt")})
                for t in (a, b)]
        found = first_divergence(*only, tier)
        if found is not None and found.step == d.step:
            return found
    return d
