"""Thread defaults against --threads 1 and all cores: ``rosetta train resnet --backend torch
--steps 20`` timed (the run's own ``seconds``, compile included) on this machine as it is
("idle") and with one competing busy process per core-minus-one ("busy").

    .venv/bin/python tests/bench_threads.py [--repeat 2] [--model resnet] [--backend torch]

A benchmark, not a test: its numbers go in a report. "default" is what ``rosetta train`` does
without --threads (``rosetta.threads.apply_default_threads``); "framework" is the framework's own
default (the environment variable OMP_NUM_THREADS set to the core count, which is what torch
does by itself), the behaviour before the default existed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def run(model, backend, steps, threads, env_extra=None) -> float:
    argv = [sys.executable, "-m", "rosetta.cli", "train", model, "--backend", backend,
            "--steps", str(steps), "--quiet", "--json"]
    if threads not in ("default", "framework"):
        argv += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                        "OMP_WAIT_POLICY", "XLA_FLAGS")}
    if threads == "framework":
        env["OMP_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet")
    p.add_argument("--backend", default="torch")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    for setting in ("idle", "busy"):
        hogs = []
        if setting == "busy":
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(max(1, cores - 1))]
            time.sleep(2)
        try:
            times = {}
            for threads in (1, cores, "framework", "default"):
                times[threads] = min(run(args.model, args.backend, args.steps, threads)
                                     for _ in range(args.repeat))
        finally:
            for h in hogs:
                h.kill()
        best = min(times[1], times[cores])
        print(f"{setting:<5} load {os.getloadavg()[0]:5.2f}: " + ", ".join(
            f"threads {k}: {v:.2f}s" for k, v in times.items()) +
            f"; default / best(1, {cores}) = {times['default'] / best:.2f}, "
            f"default / threads 1 = {times['default'] / times[1]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
