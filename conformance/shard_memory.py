"""Memory of sharded parameters and optimizer state (``--shard-params``), per worker.

    python -m rosetta.conformance.shard_memory [--backends torch jax] [--devices 2 4]
                                               [--width 64] [--blocks 2] [--steps 2]

For each backend and each N, the gpt (the zoo's shape: embedding + learned positions, pre-norm
causal transformer blocks of width W = 16 x heads and feed-forward 4W, AdamW; ``--width 64
--blocks 2`` is the zoo's gpt itself) is trained ``--steps`` data-parallel updates on N devices
twice, replicated and sharded, in fresh workers (``rosetta.distributed.launch``), float32. Each
worker reports

* **held**: the bytes of parameters plus optimizer state that it holds after the updates, summed
  over the local tensors (torch: each ``DTensor``'s local shard; JAX: each device's shards of
  the arrays, ``addressable_shards``), per rank (torch) or per device (JAX);
* **peak RSS**: the process's peak resident memory (``ru_maxrss``), and its growth over the RSS
  before the model was built (the framework's own fixed memory left out); **RSS after**: the
  resident memory after the updates, freed heap given back (``malloc_trim``). A JAX process
  drives all N devices, so its RSS is the whole mesh's, not one device's. The peak includes
  building the program: the neutral initial values are whole arrays on every worker, and the
  model is built whole, then sharded.

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
    from rosetta.distributed import compile_program
    from rosetta.spec import TrainSpec

    before = _current_rss_mb()
    spec = TrainSpec.from_json(payload["spec"])
    prog = compile_program(context["backend"], spec, devices=context["devices"],
                           dtype="float32", device=context["device"],
                           shard_params=payload["shard_params"])
    rng = np.random.default_rng(0)
    length = spec.model.inputs[0].shape[0]
    batch = spec.data.batch_size
    vocab = payload["vocab"]
    for _ in range(payload["steps"]):
        x = rng.integers(0, vocab, size=(batch, length))
        y = rng.integers(0, vocab, size=(batch, length))
        prog.train_step({"tokens": x}, y)
    held = prog.held_bytes()
    peak = _rss_mb()
    _trim()
    record = {"rank": context["rank"], "held": held, "peak_rss_mb": peak,
              "rss_before_mb": before, "rss_after_mb": _current_rss_mb()}
    path = Path(payload["folder"]) / f"rank{context['rank']}.json"
    path.write_text(json.dumps(record))
    return {"ok": True}


def measure(spec, backend: str, devices: int, shard_params: bool, steps: int = 2) -> list:
    """One record per worker process (``memory_worker``), in rank order."""
    from rosetta.distributed import launch, portable_spec
    from rosetta.text import VOCAB

    with tempfile.TemporaryDirectory(prefix="rosetta-shard-memory-") as folder:
        payload = {"spec": portable_spec(spec), "shard_params": shard_params, "steps": steps,
                   "folder": folder, "vocab": len(VOCAB)}
        launch(backend, devices, "rosetta.conformance.shard_memory:memory_worker", payload)
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


def table(spec, backends, counts, steps: int = 2, log=print) -> list[dict]:
    """Measure every (backend, N) replicated and sharded; print the table, return its rows."""
    rows = []
    head = (f"{'backend':<8} {'N':>2} {'held MiB repl':>14} {'sharded':>8} {'ratio':>6} "
            f"{'target':>6} {'peak RSS repl':>14} {'sharded':>8} {'ratio':>6} "
            f"{'RSS growth repl':>16} {'sharded':>8} {'ratio':>6} "
            f"{'RSS after repl':>15} {'sharded':>8} {'ratio':>6}")
    out = []
    for backend in backends:
        for n in counts:
            full = per_worker(measure(spec, backend, n, False, steps))
            part = per_worker(measure(spec, backend, n, True, steps))
            worst = [max(v[i] for v in full) for i in range(4)]
            mine = [max(v[i] for v in part) for i in range(4)]
            ratio = [m / w for m, w in zip(mine, worst)]
            row = {"backend": backend, "devices": n, "held_mib": worst, "held_sharded_mib": mine,
                   "ratios": ratio, "target": TARGETS.get(n),
                   "per_worker_sharded_held_mib": [v[0] for v in part]}
            rows.append(row)
            out.append(f"{backend:<8} {n:>2} {worst[0]:>14.2f} {mine[0]:>8.2f} {ratio[0]:>6.3f} "
                       f"{TARGETS.get(n, float('nan')):>6.2f} {worst[1]:>14.1f} {mine[1]:>8.1f} "
                       f"{ratio[1]:>6.3f} {worst[2]:>16.1f} {mine[2]:>8.1f} {ratio[2]:>6.3f} "
                       f"{worst[3]:>15.1f} {mine[3]:>8.1f} {ratio[3]:>6.3f}")
            log(f"measured {backend} N={n}")
    print(head)
    print("\n".join(out))
    return rows


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
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    spec = gpt_spec(args.width, args.blocks, batch=8)
    n_params = sum(int(np.prod(d.shape)) for d in spec.model.param_defs().values())
    print(f"gpt width {args.width}, {args.blocks} blocks: {n_params} parameters, float32, "
          f"AdamW; worst worker after {args.steps} updates", file=sys.stderr)
    rows = table(spec, args.backends, args.devices, args.steps,
                 log=lambda m: print(m, file=sys.stderr))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
