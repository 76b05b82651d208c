"""The parallel tier in float32, teacher-forced (docs/design.md sections 10 and 11).

Free-running float32 runs on 1 and N devices cannot be held to a fixed bound: the N-device step
sums in another order, and where a ReLU sits within rounding of its kink that order flips it
(the zoo resnet: 7.6e-4 on one kernel gradient at step 0, while float64 agrees to 1e-12). So the
float32 parallel tier is the one-device float32 tier (``forced.py``, ``noise.py``) with the
N-device program in the place of the one-device one:

* in the parent, each backend's float64 one-device trajectory (the reference) and the spread of
  its perturbed float32 one-device re-runs at each step (``forced.references``);
* in fresh worker processes (``rosetta.distributed.launch``, as ``parallel.record_worker``), the
  float32 N-device program of backend a, for every reference b and every checked step t, runs
  one step from b's float64 state before update t rounded to float32, on the global batch of
  step t with its global keep-masks (each replica takes its rows), then the eval output from b's
  state after the last step (``forced.forced_run``); the main rank saves the results
  (``forced_worker``);
* in the parent, a's N-device result along b is held against b's float64 step, element by
  element, within ``16·spread + U·(128|f64| + 4·scale)`` (``noise.compare_noisy``): against a's own
  float64 (one device against N: a data-parallel bug) and against every other backend's (the
  backend pairs at N). The spread is pooled from the one-device float32 runs of *every* backend:
  the N-device program is the same math in another summation order (per-replica partial sums,
  then an all-reduce), so the one-device runs are honest float32 noise for it, and a bug that
  only the N-device program carries (a planted ``parallel_traps`` one) cannot widen its bound.

Errors never compound (every step starts from the float64 state), and a failure is blamed on the
first step and tensor that exceed their bound (``blame_first``).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np

from rosetta.conformance.forced import (FORCED_STEPS, References, forced_batches, forced_run,
                                        hold, references)
from rosetta.conformance.noise import NOISE_RUNS, ORDER, use
from rosetta.conformance.suite import held_result
from rosetta.conformance.trajectory import Trajectory
from rosetta.distributed import compile_program, launch, portable_spec
from rosetta.files import atomic_file
from rosetta.spec import TrainSpec


def forced_worker(payload: dict, context: dict) -> dict:
    """In a worker: the float32 N-device program teacher-forced along every reference
    trajectory of ``payload["references"]`` ({backend: .npz}); the main rank saves the results
    as one .npz, keys ``<reference>/<step>/<key>`` and ``<reference>/eval/<key>``."""
    spec = TrainSpec.from_json(payload["spec"])
    trap = payload.get("trap")
    if trap:
        from rosetta.conformance.parallel_traps import plant

        plant(trap, context["backend"])
    run_spec, data, masks = forced_batches(spec, payload["steps"], payload["seed"],
                                           payload["dropout"])
    prog = compile_program(context["backend"], run_spec, devices=context["devices"],
                           dtype="float32", device=context["device"],
                           batchnorm=payload.get("batchnorm", "global"))
    arrays = {}
    for ref, path in payload["references"].items():
        got, got_eval = forced_run(prog, Trajectory.load(path), data, masks)
        for t, step in enumerate(got):
            arrays.update({f"{ref}/{t}/{k}": v for k, v in step.items()})
        arrays.update({f"{ref}/eval/{k}": v for k, v in got_eval.items()})
    if context["rank"] == 0:
        with atomic_file(Path(payload["save"])) as f:
            np.savez(f, **arrays)
    return {"results": payload["save"]}


def load_results(path, steps: int) -> dict:
    """{reference: ([step results], eval result)} from ``forced_worker``'s file."""
    out: dict = {}
    with np.load(path, allow_pickle=False) as z:
        for name in z.files:
            ref, t, key = name.split("/", 2)
            got, got_eval = out.setdefault(ref, ([{} for _ in range(steps)], {}))
            (got_eval if t == "eval" else got[int(t)])[key] = z[name]
    return out


def forced_parallel(spec, backend: str, devices: int, paths: dict, *, steps: int, seed: int,
                    dropout: str, device: str = "cpu", trap=None, folder) -> dict:
    """``backend``'s float32 program on ``devices`` devices teacher-forced along each float64
    trajectory saved in ``paths`` ({reference: .npz}), in worker processes: ``load_results``."""
    save = Path(folder) / f"{spec.name}-{backend}-float32-x{devices}-forced.npz"
    launch(backend, devices, "rosetta.conformance.parallel_forced:forced_worker",
           {"spec": portable_spec(spec), "steps": steps, "seed": seed, "dropout": dropout,
            "trap": trap, "references": {b: str(p) for b, p in paths.items()},
            "save": str(save)}, device=device)
    return load_results(save, steps)


def run(spec, backends, *, counts, device="cpu", steps=FORCED_STEPS, seed=None,
        dropout="inject", trap=None, progress=None, runs=NOISE_RUNS):
    """For each N > 1 in ``counts``: each backend's N-device float32 held against its own
    one-device float64 (a Result "b/cpu/float64 vs b/cpux N/float32"), then every backend pair
    at N, both directions (a at N against b's float64, b at N against a's). The first
    ``min(steps, FORCED_STEPS)`` steps are held. Returns (results, []): the float64 references
    are the one-device tier's, saved by it."""
    seed = spec.seed if seed is None else seed
    log = progress or (lambda msg: None)
    refs = references(spec, backends, device=device, steps=min(steps, FORCED_STEPS), seed=seed,
                      dropout=dropout, runs=runs, progress=progress)
    results = []
    with tempfile.TemporaryDirectory(prefix="rosetta-parallel32-") as tmp:
        paths = {b: refs.trajs64[b].save(Path(tmp) / f"{b}-float64.npz") for b in backends}
        for n in counts[1:]:
            held = {}
            for a in backends:
                log(f"{spec.name}: float32 steps on {a} over {n} devices, teacher-forced")
                got = forced_parallel(spec, a, n, paths, steps=refs.steps, seed=seed,
                                      dropout=dropout, device=device, trap=trap, folder=tmp)
                for b in backends:
                    held[(a, b)] = hold(f"{a} x{n}", b, *got[b], refs, None)
            for a in backends:
                results.append(_result(spec, refs, held, (a, a), n, device))
            for a, b in itertools.combinations(backends, 2):
                results.append(_result(spec, refs, held, (a, b), n, device))
    return results, []


def _result(spec, refs: References, held: dict, pair, n: int, device: str):
    """a's N devices against b's float64 one device (a == b: one device against N); for a pair,
    also b's N devices against a's float64."""
    a, b = pair
    forceds = [held[(a, b)]] if a == b else [held[(a, b)], held[(b, a)]]
    label_a = f"{a}/{device}/float64" if a == b else f"{a}/{device}x{n}/float32"
    r = held_result(spec.name, label_a, f"{b}/{device}x{n}/float32", forceds, tier="parallel",
                    device=f"{device}x{n}", steps=refs.steps, checked=refs.steps,
                    note=f"teacher-forced: {n}-device float32 from the float64 state of each "
                         f"step, within the one-device float32 noise")
    if not r.passed:
        blame_first(r, forceds)
    return r


def blame_first(result, forceds) -> None:
    """Blame the first row over ``forceds`` that exceeds its bound, in causal order. All held
    programs run the same lowering on one device, so there is no graph to bisect; a failed loss
    (the step's forward) names in its place the tensor that says why, as ``parallel.device_blame``
    does: a failed model state of that step (BatchNorm statistics not the global batch's), else
    its worst failed gradient (a wrong reduction of gradients, or wrong dropout masks)."""
    failed = [(t, k, w) for f in forceds for t, k, w in f.rows if use(w) > 1]
    rank = lambda row: (row[0], ORDER.index(row[1].split("/", 1)[0]))  # noqa: E731
    step, key, w = min(failed, key=rank)
    if key == "loss":
        for cat in ("state", "grads"):
            same = [r for r in failed if r[0] == step and r[1].startswith(cat + "/")]
            if same:
                step, key, w = max(same, key=lambda r: use(r[2]))
                break
    cat, _, tensor = key.partition("/")
    path = tensor.split("/", 1)[-1] if cat == "opt" else tensor   # opt/<slot>/<path>
    result.blame = {"step": step, "category": cat, "tensor": tensor or None,
                    "node": path.split("/")[0] if path else None, "op": None,
                    "worst": str(w), "noise": w.noise}
    result.where = f"first failure at step {step}, {key}: {w}"
