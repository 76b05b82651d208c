"""The parallel tier across hosts on zoo models (a report, not CI):

    python -m rosetta.conformance.hosts_tier [--models resnet transformer mlp_dropout]
                                             [--backends torch tensorflow jax] [--steps 2]
                                             [--hosts 2] [--per-host 1] [--shard-params]

For each model and backend: the one-device float64 trajectory against the trajectory of
``--hosts`` hosts x ``--per-host`` devices, each host started through the engine's own launcher
over localhost (``record_parallel(..., hosts=H)``: torchrun with a c10d rendezvous, TF_CONFIG
workers, ``jax.distributed`` processes), compared step by step (loss, every gradient,
parameters, model and optimizer state) at the exact bound 1e-10. Prints the worst relative
error per cell and whether it passed. The models' batches are cut to a few examples per device
(the rule is the same at any size), so the run stays short.
"""

from __future__ import annotations

import argparse
import sys
import time

from rosetta import models
from rosetta.conformance.parallel import compare_runs, record_parallel, tier
from rosetta.conformance.runner import record


def cell(name: str, backend: str, *, hosts: int, per_host: int, steps: int, batch: int,
         shard_params: bool = False) -> dict:
    """One model on one backend: the one-device run against the hosts' run."""
    spec = models.get(name)
    spec.data.batch_size = batch
    t0 = time.perf_counter()
    one = record(spec, backend, dtype="float64", steps=steps)
    many = record_parallel(spec, backend, hosts * per_host, dtype="float64", steps=steps,
                           hosts=hosts, shard_params=shard_params)
    r = compare_runs(spec, one, many, tier("float64"), "float64", None, "inject")
    return {"model": name, "backend": backend, "passed": bool(r.passed),
            "worst_rel": float(r.worst_rel), "steps": int(r.checked_steps),
            "seconds": time.perf_counter() - t0, "where": None if r.passed else str(r.where)}


def main(argv=None) -> int:
    from rosetta.backend_registry import backend_class, backend_names

    ap = argparse.ArgumentParser(prog="python -m rosetta.conformance.hosts_tier",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet", "transformer", "mlp_dropout"])
    ap.add_argument("--backends", nargs="+", default=[   # every backend with several hosts
        b for b in backend_names() if backend_class(b).engine is not None])
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--per-host", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="global batch (divides by the devices)")
    ap.add_argument("--shard-params", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'model':<14} {'backend':<11} {'hosts':>7} {'worst rel':>10} {'passed':>7} "
          f"{'seconds':>8}", flush=True)
    for name in args.models:
        for backend in args.backends:
            try:
                row = cell(name, backend, hosts=args.hosts, per_host=args.per_host,
                           steps=args.steps, batch=args.batch, shard_params=args.shard_params)
            except Exception as e:  # noqa: BLE001 - a report: the cell says what failed
                row = {"model": name, "backend": backend, "passed": False,
                       "worst_rel": float("nan"), "seconds": 0.0,
                       "where": f"{type(e).__name__}: {e}"}
            rows.append(row)
            print(f"{name:<14} {backend:<11} {args.hosts}x{args.per_host:<5} "
                  f"{row['worst_rel']:>10.2e} {str(row['passed']):>7} {row['seconds']:>8.1f}"
                  + (f"  {row['where']}" if row.get("where") else ""), flush=True)
            # a failure's first line is in the row; the hosts' last output lines follow it
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
