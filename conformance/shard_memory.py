"""Memory of sharded parameters and optimizer state (``--shard-params``), per worker.

    python -m rosetta.conformance.shard_memory [--backends torch jax] [--devices 2 4]
                                               [--width 64] [--blocks 2] [--steps 2] [--hosts]

For each backend and each N, the gpt (the zoo's shape: embedding + learned positions, pre-norm
causal transformer blocks of width W = 16 x heads and feed-forward 4W, AdamW; ``--width 64
--blocks 2`` is the zoo's gpt itself) is trained ``--steps`` data-parallel updates on N devices
twice, replicated and sharded, in fresh workers (``rosetta.distributed.launch``), float32. Each
worker reports

* **held**: the bytes of parameters plus optimizer state that it holds after the updates, summed
  over the local tensors (torch: each ``DTensor``'s local shard; JAX: each device's shards of
  the arrays, ``addressable_shards``), per rank (torch) or per device (JAX);
* **peak RSS**: the process's peak resident memory (``ru_maxrss``), and its **growth**: the
  peak over the resident memory the process had before the model was built, after the same
  program had run one update on a tiny gpt and was dropped (so the framework's own fixed memory,
  its imports, thread pools and collectives, is left out, and the growth is the model's:
  parameters, gradients, optimizer state, activations, the engine's buffers); **RSS after**:
  the resident memory after the updates, freed heap given back (``malloc_trim``). A JAX process
  drives all N devices, so its RSS is the whole mesh's, not one device's; ``--hosts`` runs N
  processes of one device each instead (below). The peak includes
  building the program: sharded, the parameters are made sharded before they hold values
  (torch: meta device then ``fully_shard``; JAX: placed shard by shard, optax's state made by a
  jitted ``init`` with sharded outputs) and the initial values are drawn one array at a time.

``--hosts``: each N is N host processes of one device each, started through the engine's own
launcher as ``rosetta.conformance.hosts_tier --hosts N --per-host 1`` starts them
(``rosetta.hosts.launch``: torchrun nodes with a c10d rendezvous, ``jax.distributed``
processes meeting on 127.0.0.1), so a JAX worker's RSS is one device's, as a torch rank's is.
The hosts' environment has ``OMP_NUM_THREADS=1`` (``rosetta.hosts.host_env``), replicated and
sharded alike.

Under the table, for each N, the worst worker's peak growth by phase: up to the program's build
(``built``), up to the end of the first update (``first_update``: where JAX's XLA compiles the
step), and over the later updates alone (``later_updates``: the peak reset through
``/proc/self/clear_refs`` after the first update, freed heap returned first). The peak is
taken before ``step_memory``, which compiles the step again.

The table gives the worst rank's numbers and the ratio sharded / replicated; the targets are
held <= 0.55x at N = 2 and <= 0.30x at N = 4 (ZeRO-3's 1/N, plus the arrays that do not divide:
biases and norms of odd sizes are padded (torch) or replicated (JAX)).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TARGETS = {2: 0.55, 4: 0.30}


def gpt_spec(width: int = 64, blocks: int = 2, length: int = 64, batch: int = 8):
    """The zoo's gpt (``rosetta.models.sequence.gpt``) at width ``width`` with ``blocks``
    blocks."""
    from rosetta.models.sequence import gpt

    return gpt(width, blocks, length, batch)


def _rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Start this process's peak resident memory again from its current RSS (Linux:
    ``/proc/self/clear_refs`` 5, which resets ``ru_maxrss`` too); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _trim() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise), so that the RSS
    after the updates is what the process holds."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_worker(payload: dict, context: dict) -> dict:
    """In a worker: build the data-parallel program, make ``steps`` updates on random token
    windows, and write this rank's held bytes and RSS to ``payload["folder"]``."""
    import gc

    from rosetta.distributed import compile_program
    from rosetta.spec import TrainSpec

    def run(spec, steps, marks=None):
        prog = compile_program(context["backend"], spec, devices=context["devices"],
                               dtype="float32", device=context["device"],
                               shard_params=payload["shard_params"])
        if marks is not None:
            marks["built"] = _rss_mb()
        rng = np.random.default_rng(0)
        length = spec.model.inputs[0].shape[0]
        for i in range(steps):
            x = rng.integers(0, payload["vocab"], size=(spec.data.batch_size, length))
            y = rng.integers(0, payload["vocab"], size=(spec.data.batch_size, length))
            prog.train_step({"tokens": x}, y)
            if marks is not None and i == 0 and steps > 1:
                # the first update compiles the step (JAX: XLA); the later ones' peak alone,
                # from the memory held after it (freed heap returned)
                marks["first_update"] = _rss_mb()
                _trim()
                marks["reset"] = _reset_peak()
        return prog

    spec = TrainSpec.from_json(payload["spec"])
    # the framework's fixed memory first (its imports, thread pools, collectives, the first
    # compiled step): the same program on a tiny gpt, then dropped; the growth is the model's
    run(gpt_spec(16, 1, spec.model.inputs[0].shape[0], spec.data.batch_size), 1)
    gc.collect()
    _trim()
    before = _current_rss_mb()
    _reset_peak()   # the warm-up's peak left out (ru_maxrss otherwise counts from the start)
    marks = {}
    prog = run(spec, payload["steps"], marks)
    peak = _rss_mb()   # the later updates' peak where the peak was reset after the first
    if marks.get("reset"):
        marks["later_updates"] = peak
        peak = max(peak, marks["first_update"])
    held = prog.held_bytes()
    xla = None
    if hasattr(prog, "step_memory"):   # JAX: XLA's per-device account of the step
        rng = np.random.default_rng(1)
        shape = (spec.data.batch_size, spec.model.inputs[0].shape[0])
        xla = prog.step_memory({"tokens": rng.integers(0, payload["vocab"], size=shape)},
                               rng.integers(0, payload["vocab"], size=shape))
    _trim()
    record = {"rank": context["rank"], "held": held, "peak_rss_mb": peak,
              "rss_before_mb": before, "rss_after_mb": _current_rss_mb(), "xla": xla,
              "phases_mb": marks}
    path = Path(payload["folder"]) / f"rank{context['rank']}.json"
    path.write_text(json.dumps(record))
    return {"ok": True}


# glibc's malloc serves blocks of at least this many bytes with their own mmap, unmapped when
# freed (setting it also turns off the threshold's growth); see ``_freed_memory_returned``
MMAP_THRESHOLD = 64 * 1024


@contextmanager
def _freed_memory_returned():
    """The workers started inside run with ``MALLOC_MMAP_THRESHOLD_`` = 64 KiB, replicated and
    sharded alike. By default glibc keeps freed heap in its per-thread arenas and raises the
    threshold as large blocks are freed, so a process's RSS only grows: a sharded torch rank,
    whose FSDP2 all-gathers a layer's whole parameters and frees them again for every layer and
    step, measured 497, 581, 621 MiB after updates 1, 2, 3 while holding a steady 103 MiB over
    its start (595 → 436 MiB after ``malloc_trim``). With the fixed threshold the RSS is the
    memory the process holds, and its peak the peak of that."""
    import os

    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old


def measure(spec, backend: str, devices: int, shard_params: bool, steps: int = 2,
            hosts: bool = False) -> list:
    """One record per worker process (``memory_worker``), in rank order; ``hosts``: the
    ``devices`` workers are that many host processes of one device each (``rosetta.hosts``)."""
    from rosetta import hosts as several_hosts
    from rosetta.distributed import launch, portable_spec
    from rosetta.text import VOCAB

    with tempfile.TemporaryDirectory(prefix="rosetta-shard-memory-") as folder, \
            _freed_memory_returned():
        payload = {"spec": portable_spec(spec), "shard_params": shard_params, "steps": steps,
                   "folder": folder, "vocab": len(VOCAB)}
        target = "rosetta.conformance.shard_memory:memory_worker"
        if hosts:
            several_hosts.launch(backend, target, payload, hosts=devices, per_host=1,
                                 timeout=1800.0)
        else:
            launch(backend, devices, target, payload)
        found = sorted(Path(folder).glob("rank*.json"))
        return [json.loads(p.read_text()) for p in found]


def per_worker(records: list) -> list[tuple[float, float, float, float]]:
    """(held MiB, peak RSS MiB, RSS growth MiB, RSS after the updates MiB) of each rank, or of
    each JAX device (held) with its process's RSS."""
    rows = []
    for r in records:
        params, opt = r["held"]["params"], r["held"]["optimizer"]
        params = params if isinstance(params, list) else [params]
        opt = opt if isinstance(opt, list) else [opt]
        for p, o in zip(params, opt):
            rows.append(((p + o) / 2 ** 20, r["peak_rss_mb"],
                         r["peak_rss_mb"] - r["rss_before_mb"], r["rss_after_mb"]))
    return rows


def table(spec, backends, counts, steps: int = 2, log=print, hosts: bool = False) -> list[dict]:
    """Measure every (backend, N) replicated and sharded (``hosts``: N host processes of one
    device each); print the table, return its rows."""
    rows = []
    head = (f"{'backend':<8} {'N':>2} {'held MiB repl':>14} {'sharded':>8} {'ratio':>6} "
            f"{'target':>6} {'peak RSS repl':>14} {'sharded':>8} {'ratio':>6} "
            f"{'RSS growth repl':>16} {'sharded':>8} {'ratio':>6} "
            f"{'RSS after repl':>15} {'sharded':>8} {'ratio':>6}")
    out, notes = [], []
    for backend in backends:
        for n in counts:
            full_records = measure(spec, backend, n, False, steps, hosts)
            part_records = measure(spec, backend, n, True, steps, hosts)
            full, part = per_worker(full_records), per_worker(part_records)
            worst = [max(v[i] for v in full) for i in range(4)]
            mine = [max(v[i] for v in part) for i in range(4)]
            ratio = [m / w for m, w in zip(mine, worst)]
            row = {"backend": backend, "devices": n, "hosts": hosts, "held_mib": worst, "held_sharded_mib": mine,
                   "ratios": ratio, "target": TARGETS.get(n),
                   "per_worker_sharded_held_mib": [v[0] for v in part]}
            xla = [_xla_mib(r) for r in (full_records, part_records)]
            if None not in xla:
                row["xla_step_mib"] = xla
                notes.append(f"{backend:<8} {n:>2} XLA's step memory per device (arguments + "
                             f"temporaries + outputs not aliased): {xla[0]:.1f} -> {xla[1]:.1f} "
                             f"MiB ({xla[1] / xla[0]:.3f})")
            phases = [_phase_growth(r) for r in (full_records, part_records)]
            if None not in phases:
                row["peak_growth_by_phase_mib"] = phases
                notes.append(f"{backend:<8} {n:>2} peak RSS growth by phase, repl -> sharded: "
                             + ", ".join(f"{k} {phases[0][k]:.1f} -> {phases[1][k]:.1f} "
                                         f"({phases[1][k] / phases[0][k]:.3f})"
                                         for k in phases[0]))
            rows.append(row)
            out.append(f"{backend:<8} {n:>2} {worst[0]:>14.2f} {mine[0]:>8.2f} {ratio[0]:>6.3f} "
                       f"{TARGETS.get(n, float('nan')):>6.2f} {worst[1]:>14.1f} {mine[1]:>8.1f} "
                       f"{ratio[1]:>6.3f} {worst[2]:>16.1f} {mine[2]:>8.1f} {ratio[2]:>6.3f} "
                       f"{worst[3]:>15.1f} {mine[3]:>8.1f} {ratio[3]:>6.3f}")
            log(f"measured {backend} N={n}" + (" (hosts of one device)" if hosts else ""))
    print(head)
    print("\n".join(out + notes))
    return rows


def _phase_growth(records: list) -> dict | None:
    """The worst worker's peak RSS growth in MiB up to the program's build (``built``: its
    initial values, sharded or not, and optimizer state), up to the end of the first update
    (``first_update``: for JAX, XLA compiles the step there) and over the later updates alone
    (``later_updates``: the peak reset after the first), or None (one update, or no reset)."""
    keys = ("built", "first_update", "later_updates")
    if not records or any(k not in r.get("phases_mb", {}) for r in records for k in keys):
        return None
    return {k: max(r["phases_mb"][k] - r["rss_before_mb"] for r in records) for k in keys}


def _xla_mib(records: list) -> float | None:
    """The worst worker's XLA step memory (``step_memory``) in MiB, or None (not JAX)."""
    found = [r.get("xla") for r in records]
    if not found or None in found:
        return None
    return max(sum(x.values()) for x in found) / 2 ** 20


def main(argv=None) -> int:
    from rosetta.backend_registry import backend_class, backend_names

    ap = argparse.ArgumentParser(prog="python -m rosetta.conformance.shard_memory",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", nargs="+", default=[   # every backend that shards
        b for b in backend_names() if backend_class(b).shard_params is not None])
    ap.add_argument("--devices", nargs="+", type=int, default=[2, 4])
    ap.add_argument("--width", type=int, default=64, help="model width (heads of 16)")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--hosts", action="store_true",
                    help="each N as N host processes of one device each (rosetta.hosts: "
                         "torchrun nodes, jax.distributed processes), one worker per process")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    spec = gpt_spec(args.width, args.blocks, batch=8)
    n_params = sum(int(np.prod(d.shape)) for d in spec.model.param_defs().values())
    print(f"gpt width {args.width}, {args.blocks} blocks: {n_params} parameters, float32, "
          f"AdamW; worst worker after {args.steps} updates"
          + ("; N hosts x 1 device" if args.hosts else ""), file=sys.stderr)
    rows = table(spec, args.backends, args.devices, args.steps,
                 log=lambda m: print(m, file=sys.stderr), hosts=args.hosts)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
