"""``--backend auto``: train a spec on whichever framework is fastest for it on this machine, among
the backends that compute it correctly (docs/design.md section 7).

1. **Guard.** A short exact-tier check (``suite.run``: 3 whole training steps in float64, every
   backend pair, 1e-10) of every installed backend. The backends kept are the largest group that
   agree pairwise; where groups tie (two backends that disagree, or one alone), each backend is
   also held to the NumPy float64 oracle (forward and optimizer update) and those failing it are
   dropped. So "fastest" never means "different".
2. **Timing**, by the benchmark's rules: each kept backend compiled in its default mode (torch
   eager, tensorflow xla, jax jit: the fastest on this CPU for the zoo, ``rosetta bench`` shows
   the others), compile apart, 3 warm-up steps, then up to ``STEPS`` synchronised steps on batches
   prepared on the device, within ``BUDGET_S`` seconds per backend; the median step time counts.
3. **Choice**: the lowest median, said in one line with every measured time.

The choice is cached as JSON in ``cache_dir()/auto/<key>.json`` (``ROSETTA_CACHE_DIR``, else
``$XDG_CACHE_HOME/rosetta``, else ``~/.cache/rosetta``); the key hashes the spec's model, loss and
optimizer, the batch size, dtype, device, every installed framework's version and the machine
(processor, cores, thread setting). ``remeasure=True`` (``--remeasure``) times and checks again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

from rosetta.backend_registry import available_backends, get_backend
from rosetta.checkpoint import spec_sha256
from rosetta.errors import BackendUnavailable
from rosetta.files import atomic_file

STEPS = 30          # timed steps at most, per backend
WARMUP = 3
BUDGET_S = 3.0      # timed seconds at most, per backend (compile apart)
CHECK_STEPS = 3


def cache_dir() -> Path:
    root = os.environ.get("ROSETTA_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rosetta"


def cache_key(spec, backends, batch_size: int, dtype: str, device: str) -> str:
    from rosetta.conformance.bench import cpu_name

    key = {"spec": spec_sha256(spec), "batch_size": batch_size, "dtype": dtype,
           "device": device, "frameworks": {b: get_backend(b).version() for b in backends},
           "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "system": platform.system(),
                       "threads": os.environ.get("OMP_NUM_THREADS")}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def agreeing(spec, backends, check_steps: int = CHECK_STEPS) -> tuple[list[str], dict]:
    """(backends that pass the guard, {backend: why it was dropped})."""
    from rosetta.conformance import oracle
    from rosetta.conformance.suite import run

    if len(backends) > 1:
        results, _ = run(spec, backends, dtype="float64", steps=check_steps)
        agree = {(r.backend_a.split("/")[0], r.backend_b.split("/")[0]): r for r in results}
        ok = lambda a, b: agree.get((a, b), agree.get((b, a))).passed  # noqa: E731
    else:
        ok = None
    groups = []
    for size in range(len(backends), 0, -1):
        groups = [set(g) for g in itertools.combinations(backends, size)
                  if all(ok(a, b) for a, b in itertools.combinations(g, 2))]
        if groups:
            break
    why = {}
    if len(groups) == 1 and len(groups[0]) > 1:
        kept = groups[0]
    else:  # a tie (or one backend): the NumPy oracle decides
        kept = set()
        for b in sorted(set().union(*groups)):
            bad = [w for w in (oracle.check_forward(spec, b), oracle.check_optimizer(spec, b))
                   if not w.passed]
            if bad:
                why[b] = f"fails the NumPy oracle: {bad[0]}"
            else:
                kept.add(b)
    for b in backends:
        if b not in kept and b not in why:
            others = sorted(kept) or sorted(set(backends) - {b})
            why[b] = (f"disagrees with {', '.join(others)} in the float64 check "
                      f"({check_steps} steps, 1e-10)")
    return [b for b in backends if b in kept], why


def time_step(spec, backend: str, *, batch_size: int, dtype: str, device: str,
              steps: int = STEPS, budget_s: float = BUDGET_S) -> dict:
    """Median seconds per train step of ``backend`` in its default mode (compile apart)."""
    from rosetta.conformance.bench import _with_batch_size, bench_batches

    spec = _with_batch_size(spec, batch_size)
    host, _ = bench_batches(spec, batch_size, dtype)
    t0 = time.perf_counter()
    program = get_backend(backend).compile(spec, dtype=dtype, device=device)
    batches = [program.prepare_batch(x, y) for x, y in host]
    program.train_step(batches[0])
    compile_s = time.perf_counter() - t0
    for i in range(WARMUP):
        program.train_step(batches[i % len(batches)])
    times, start = [], time.perf_counter()
    for i in range(steps):
        t = time.perf_counter()
        program.train_step(batches[i % len(batches)])  # returns the loss: synchronised
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and len(times) >= 5:
            break
    return {"mode": program.mode, "step_s": statistics.median(times),
            "compile_s": compile_s, "steps": len(times)}


def choose(spec, *, batch_size: int | None = None, dtype: str = "float32",
           device: str = "cpu", remeasure: bool = False, backends=None, measure=None,
           check=None, log=None) -> dict:
    """The backend to train ``spec`` on: {"backend", "mode", "times" {backend: step seconds},
    "excluded" {backend: why}, "cached", "message"}. ``measure(spec, backend, ...)`` and
    ``check(spec, backends)`` replace the timing and the guard (tests inject them)."""
    batch_size = batch_size or spec.data.batch_size
    backends = list(backends or available_backends())
    if not backends:
        raise BackendUnavailable("--backend auto: no backend is installed (pip install "
                                 "'rosetta-ml[all]')")
    path = cache_dir() / "auto" / f"{cache_key(spec, backends, batch_size, dtype, device)}.json"
    if not remeasure and path.is_file():
        try:
            choice = json.loads(path.read_text())
            choice["cached"] = True
            choice["message"] = choice["message"].split(" [")[0] + f" [cached in {path}]"
            return choice
        except (ValueError, KeyError):
            pass  # a damaged cache entry is measured again
    say = log or (lambda msg: None)
    say(f"auto: checking {', '.join(backends)} agree on {spec.name} (float64, "
        f"{CHECK_STEPS} steps)")
    kept, excluded = (check or agreeing)(spec, backends)
    if not kept:
        raise BackendUnavailable(f"--backend auto: no backend passes the float64 check for "
                                 f"{spec.name!r}: " + "; ".join(f"{b} {w}"
                                                                for b, w in excluded.items()))
    times, modes = {}, {}
    for b in kept:
        say(f"auto: timing {b} (at most {STEPS} steps, {BUDGET_S:.0f} s)")
        t = (measure or time_step)(spec, b, batch_size=batch_size, dtype=dtype, device=device)
        times[b], modes[b] = t["step_s"], t["mode"]
    best = min(times, key=times.get)
    ranked = sorted(times, key=times.get)
    slowest = times[ranked[-1]]
    others = ", ".join(f"{b} {times[b] * 1e3:.3g} ms" for b in ranked[1:])
    msg = (f"auto: {best} ({modes[best]}) for {spec.name}: {times[best] * 1e3:.3g} ms a step"
           + (f" vs {others} ({slowest / times[best]:.2f}x the slowest)" if others else "")
           + (f"; excluded: {'; '.join(f'{b} {w}' for b, w in excluded.items())}"
              if excluded else ""))
    choice = {"backend": best, "mode": modes[best], "times": times, "excluded": excluded,
              "batch_size": batch_size, "dtype": dtype, "device": device, "message": msg}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(json.dumps(choice, indent=1).encode())
    return {**choice, "cached": False, "message": msg + f" [measured, cached in {path}]"}


def recommendations(rows: list[dict]) -> list[str]:
    """One line per model of a ``rosetta bench`` report: the fastest backend and mode, and its
    factor over the slowest."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == model),
                      key=lambda r: r["step_ms_median"])
        best, worst = mine[0], mine[-1]
        out.append(f"{model}: {best['backend']}/{best['mode']} {best['step_ms_median']:.3g} ms"
                   + (f", {worst['step_ms_median'] / best['step_ms_median']:.2f}x faster than "
                      f"{worst['backend']}/{worst['mode']}" if len(mine) > 1 else ""))
    return out
