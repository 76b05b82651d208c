"""The float32 tier, teacher-forced (docs/design.md sections 5 and 11).

Every checked step starts every backend from the same state: the float64 reference state of
that step (parameters, model state, optimizer state, update count), rounded to float32. Each
backend's float32 step (loss, gradients, parameters, model state, optimizer state after the
update), and its eval-mode output after the last checked step, is held against the float64 step
from the same state, within the noise float32 rounding makes there (``noise.py``). Errors never
compound: a step that starts from another step's float32 result is drift, reported apart (the
free-running float32 runs, ``suite.run``).

For a pair (a, b) both directions are held: a's float32 against b's float64 and b's float32
against a's float64, so a semantic difference fails whichever backend carries it, and a float32
bug fails against the other backend's float64. The noise around b's float64 result is
``noise.noise_spread``: the spread of the other backends' float32 runs pooled, or of any one
backend's own runs (the held one's included), whichever is larger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rosetta.backend_registry import get_backend
from rosetta.conformance.noise import (NOISE_RUNS, Measured, Start, compare_noisy,
                                       eval_result, measure_eval, measure_step, noise_spread,
                                       run_eval, run_step, step_result, to_float32,
                                       update_reference, update_slopes, use, worse)
from rosetta.dropout import mask_draws
from rosetta.conformance.runner import (batch_stream, dropout_masks, record,
                                        without_dropout)

FORCED_STEPS = 3   # steps held to the noise bound (each from the float64 state)


class HeldRows:
    """Rows (step, key, Worst) in causal order, each held to its own bound: the worst by the
    share of its bound used, and the first over it."""

    def worst(self):
        w = None
        for _, _, x in self.rows:
            w = worse(w, x)
        return w

    def first_failure(self):
        for step, key, w in self.rows:
            if use(w) > 1:
                return step, key, w
        return None


@dataclass
class Forced(HeldRows):
    """The teacher-forced comparison of one backend's float32 against one reference."""

    backend: str           # whose float32
    reference: str         # whose float64 state and result
    rows: list = field(default_factory=list)   # (step, key, Worst) in causal order


def forced_batches(spec, steps, seed, dropout="inject"):
    """The float64 batches of the first ``steps`` steps and their injected keep-masks (None
    without dropout): (run_spec, data, masks). Deterministic in (spec, seed), so a worker
    process regenerates what the parent holds its results against."""
    run_spec = without_dropout(spec) if dropout == "off" else spec
    data = [b for _, b in zip(range(steps), batch_stream(run_spec, steps, seed, "float64"))]
    has_dropout = bool(mask_draws(run_spec.model))
    masks = [dropout_masks(run_spec.model, seed, t, len(y)) if has_dropout else None
             for t, (_, y) in enumerate(data)]
    return run_spec, data, masks


@dataclass
class References:
    """Each backend's float64 steps (``trajs64``), its float32 program (``progs32``) and the
    perturbed float32 re-runs of each step (``measured``) and of the eval output
    (``eval_measured``), on the batches ``data`` with keep-masks ``masks``."""

    data: list
    masks: list
    trajs64: dict
    progs32: dict
    measured: dict
    eval_measured: dict
    optimizer: object = None   # the spec's: updated tensors are held given their own gradients

    @property
    def steps(self) -> int:
        return len(self.data)

    def noise(self, t: int | None, ref: dict, held: str | None) -> Measured:
        """``ref`` with the spread that bounds ``held``'s float32 result at step ``t`` (None:
        the eval output): ``noise.noise_spread`` of every backend's float32 runs (``held``
        None: a program none of them is, such as an N-device one, and every backend's runs are
        pooled)."""
        runs = {c: (self.eval_measured[c] if t is None else self.measured[c][t])
                for c in self.measured}
        return Measured(ref, noise_spread(ref, runs, held))


def references(spec, backends, *, device="cpu", steps=FORCED_STEPS, seed=None,
               dropout="inject", runs=NOISE_RUNS, progress=None, programs32=None) -> References:
    """Record each backend's float64 reference and measure its float32 noise (``noise.py``) at
    each of the first ``steps`` steps, from the float64 state."""
    seed = spec.seed if seed is None else seed
    run_spec, data, masks = forced_batches(spec, steps, seed, dropout)
    steps = len(data)
    log = progress or (lambda msg: None)
    refs = References(data, masks, {}, {}, {}, {}, run_spec.optimizer)
    for b in backends:
        log(f"{spec.name}: float64 reference on {b} ({steps} steps), float32 noise "
            f"({runs} runs a step)")
        t64 = refs.trajs64[b] = record(spec, b, dtype="float64", device=device, steps=steps,
                                       seed=seed, dropout=dropout, stream=data)
        prog = refs.progs32[b] = ((programs32 or {}).get(b) or
                                  get_backend(b).compile(run_spec, dtype="float32",
                                                         device=device))
        refs.measured[b] = [measure_step(prog, Start.of(t64, t), *data[t], masks[t],
                                         step_result(t64, t), runs, seed=f"{b}/{seed}",
                                         optimizer=refs.optimizer)
                            for t in range(steps)]
        last = Start.of(t64, steps)
        refs.eval_measured[b] = measure_eval(prog, last.params, last.state, data[0][0],
                                             eval_result(t64), runs, seed=f"{b}/{seed}")
    return refs


def forced_run(prog32, traj64, data, masks) -> tuple[list, dict]:
    """The float32 program ``prog32`` teacher-forced along ``traj64``: each step ``t`` from the
    trajectory's state before update ``t`` rounded to float32 (``run_step``), and the eval output
    from its state after the last step. ([step results], eval result)."""
    got = [run_step(prog32, Start.of(traj64, t).float32(), to_float32(x), to_float32(y), m)
           for t, ((x, y), m) in enumerate(zip(data, masks))]
    last = Start.of(traj64, len(data)).float32()
    return got, run_eval(prog32, last.params, last.state, to_float32(data[0][0]))


def hold(name: str, reference: str, got: list, got_eval: dict, refs: References,
         held: str | None) -> Forced:
    """``name``'s float32 results (``forced_run`` along ``reference``'s float64 trajectory) held
    against ``reference``'s float64 steps, within ``References.noise`` for backend ``held``:
    the loss, gradients and model state against the float64 step's, the parameters and
    optimizer state after the update against the float64 update of the step's own gradients
    from the same start (``noise.update_reference``), and each parameter's update as a whole
    against its own scale (``noise.update_slopes``: 0 for the reference)."""
    f = Forced(name, reference)
    t64 = refs.trajs64[reference]
    for t, step in enumerate(got):
        ref = step_result(t64, t)
        if refs.optimizer is not None:
            start = Start.of(t64, t).float32()
            upd = update_reference(refs.optimizer, start, step)
            ref.update(upd)
            step = {**step, **update_slopes(step, upd, start)}
            ref.update({k: np.zeros(()) for k in update_slopes(upd, upd, start)})
        m = refs.noise(t, ref, held)
        f.rows += [(t, k, w) for k, w in
                   compare_noisy(step, m, f"@ step {t} ({name} float32 vs {reference} float64)")]
    last = refs.steps - 1
    m = refs.noise(None, eval_result(t64), held)
    f.rows += [(last, k, w) for k, w in
               compare_noisy(got_eval, m, f"after step {last} ({name} float32 vs "
                                          f"{reference} float64)")]
    return f


def teacher_forced(spec, backends, *, device="cpu", steps=FORCED_STEPS, seed=None,
                   dropout="inject", runs=NOISE_RUNS, progress=None, programs32=None):
    """{(backend, reference): Forced} for every ordered pair of distinct backends, plus the
    float64 trajectories and the batches used: (forced, trajectories64, data, masks).

    The noise that bounds a's float32 against b's float64 is ``noise.noise_spread`` of the
    perturbed float32 runs (``noise.measure_step``): the other backends' runs pooled (on resnet
    a ReLU that torch and jax round to one side and TensorFlow to the other), or each backend's
    own runs; a bias of a (a bug) moves all of a's runs alike and cannot widen its bound. ``programs32``
    (optional) maps a backend
    to the float32 program to hold (a test plants a float32 bug in one); default: compiled
    here."""
    refs = references(spec, backends, device=device, steps=steps, seed=seed, dropout=dropout,
                      runs=runs, progress=progress, programs32=programs32)
    log = progress or (lambda msg: None)
    forced = {}
    for a in backends:
        log(f"{spec.name}: float32 steps on {a}, teacher-forced")
        for b in backends:
            if b == a:
                continue
            got, got_eval = forced_run(refs.progs32[a], refs.trajs64[b], refs.data, refs.masks)
            forced[(a, b)] = hold(a, b, got, got_eval, refs, a)
    return forced, refs.trajs64, refs.data, refs.masks
