"""The float32 tier, teacher-forced (DESIGN sections 5 and 11).

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

from rosetta.backend_registry import get_backend
from rosetta.conformance.noise import (NOISE_RUNS, Measured, Start, compare_noisy,
                                       eval_result, measure_eval, measure_step, noise_spread,
                                       run_eval, run_step, step_result, to_float32, use, worse)
from rosetta.conformance.runner import (batch_stream, dropout_masks, dropout_nodes, record,
                                        without_dropout)

FORCED_STEPS = 3   # steps held to the noise bound (each from the float64 state)


@dataclass
class Forced:
    """The teacher-forced comparison of one backend's float32 against one reference."""

    backend: str           # whose float32
    reference: str         # whose float64 state and result
    rows: list = field(default_factory=list)   # (step, key, Worst) in causal order

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
    seed = spec.seed if seed is None else seed
    run_spec = without_dropout(spec) if dropout == "off" else spec
    data = [b for _, b in zip(range(steps), batch_stream(run_spec, steps, seed, "float64"))]
    steps = len(data)
    has_dropout = bool(dropout_nodes(run_spec.model))
    masks = [dropout_masks(run_spec.model, seed, t, len(y)) if has_dropout else None
             for t, (_, y) in enumerate(data)]
    log = progress or (lambda msg: None)
    trajs64, progs32, measured, eval_measured = {}, {}, {}, {}
    for b in backends:
        log(f"{spec.name}: float64 reference on {b} ({steps} steps), float32 noise "
            f"({runs} runs a step)")
        t64 = trajs64[b] = record(spec, b, dtype="float64", device=device, steps=steps,
                                  seed=seed, dropout=dropout, stream=data)
        prog = progs32[b] = ((programs32 or {}).get(b) or
                             get_backend(b).compile(run_spec, dtype="float32", device=device))
        measured[b] = [measure_step(prog, Start.of(t64, t), *data[t], masks[t],
                                    step_result(t64, t), runs, seed=f"{b}/{seed}")
                       for t in range(steps)]
        last = Start.of(t64, steps)
        eval_measured[b] = measure_eval(prog, last.params, last.state, data[0][0],
                                        eval_result(t64), runs, seed=f"{b}/{seed}")
    forced = {}
    for a in backends:
        log(f"{spec.name}: float32 steps on {a}, teacher-forced")
        for b in backends:
            if a == b:
                continue
            f = Forced(a, b)
            for t in range(steps):
                got = run_step(progs32[a], Start.of(trajs64[b], t).float32(),
                               to_float32(data[t][0]), to_float32(data[t][1]), masks[t])
                ref = step_result(trajs64[b], t)
                m = Measured(ref, noise_spread(ref, {c: measured[c][t] for c in backends}, a))
                f.rows += [(t, k, w) for k, w in
                           compare_noisy(got, m, f"@ step {t} ({a} float32 vs {b} float64)")]
            last = Start.of(trajs64[b], steps).float32()
            got = run_eval(progs32[a], last.params, last.state, to_float32(data[0][0]))
            ref = eval_result(trajs64[b])
            m = Measured(ref, noise_spread(ref, {c: eval_measured[c] for c in backends}, a))
            f.rows += [(steps - 1, k, w) for k, w in
                       compare_noisy(got, m, f"after step {steps - 1} ({a} float32 vs "
                                             f"{b} float64)")]
            forced[(a, b)] = f
    return forced, trajs64, data, masks
