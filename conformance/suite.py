"""Compare trajectories pairwise and collect the scoreboard."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np

from rosetta.conformance.compare import Worst, compare_arrays, group_of, group_scales
from rosetta.conformance.diagnose import Divergence, diagnose, name_node
from rosetta.conformance.forced import FORCED_STEPS, teacher_forced
from rosetta.conformance.noise import NOISE_RUNS, ORDER, use, worse
from rosetta.dropout import mask_draws
from rosetta.conformance.runner import (batch_stream, dropout_masks, record,
                                        without_dropout)
from rosetta.conformance import forced64
from rosetta.conformance.tiers import EXACT, FLOAT32, Tier, tier_for
from rosetta.conformance.trajectory import CATEGORIES, Trajectory


@dataclass
class Result:
    """One comparison: the worst element over every tensor and step it covers."""

    model: str
    backend_a: str
    backend_b: str
    tier: str
    dtype: str
    device: str
    worst_abs: float
    worst_rel: float
    tolerance: float
    where: str
    passed: bool
    steps: int = 0
    checked_steps: int = 0
    per_category: dict = field(default_factory=dict)
    drift: list = field(default_factory=list)   # worst relative error at each step
    note: str = ""
    blame: dict = field(default_factory=dict)    # first divergence: step, category, tensor, node
    noise: float | None = None   # float32 tier: measured rounding noise at the worst element

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("worst_abs", "worst_rel", "tolerance", "noise"):
            if d[k] is not None:
                d[k] = float(d[k]) if np.isfinite(d[k]) else str(d[k])
        return d


def _step_slices(cat: str, t: int):
    """Index of step t in a category's leading axis (params/state carry the start at 0)."""
    return t + 1 if cat in ("params", "state") else t


def compare_trajectories(a: Trajectory, b: Trajectory, tier: Tier) -> Result:
    steps = min(a.meta["steps"], b.meta["steps"])
    checked = steps if tier.checked_steps is None else min(tier.checked_steps, steps)
    per_cat, drift = {}, []
    problems = []
    if a.meta["spec_hash"] != b.meta["spec_hash"]:
        problems.append("different specs (spec_hash differs)")
    worst_checked = Worst(where="", tolerance=tier.tolerance)
    for t in range(steps):
        step_worst = Worst()
        for cat in CATEGORIES:
            if cat == "loss":
                w = compare_arrays(a.loss[t], b.loss[t], f"loss @ step {t}",
                                   floor_fraction=tier.floor_fraction)
                pairs = [w]
            else:
                ta, tb = getattr(a, cat), getattr(b, cat)
                if cat == "opt" and (not ta or not tb):
                    continue  # a backend that does not export optimizer state: said in the note
                if set(ta) != set(tb):
                    problems.append(f"{cat} tensors differ: {sorted(set(ta) ^ set(tb))}")
                    continue
                i = _step_slices(cat, t)
                scales = group_scales({k: v[i] for k, v in tb.items()})
                pairs = [compare_arrays(ta[k][i], tb[k][i], f"{cat}/{k} @ step {t}",
                                        floor_fraction=tier.floor_fraction,
                                        scale=scales.get(group_of(k), 0.0)) for k in ta]
            for w in pairs:
                step_worst = step_worst.max(w)
                if t < checked:
                    per_cat[cat] = per_cat.get(cat, Worst()).max(w)
                    worst_checked = worst_checked.max(w)
        drift.append(step_worst.rel_err)
    for w in compare_eval(a, b, tier, problems):
        per_cat["eval"] = per_cat.get("eval", Worst()).max(w)
        worst_checked = worst_checked.max(w)
    worst_checked.tolerance = tier.tolerance
    note = "; ".join(sorted(set(problems)))
    if not a.opt or not b.opt:
        missing = [x.meta["backend"] for x in (a, b) if not x.opt]
        note = (note + "; " if note else "") + f"no optimizer state exported by {missing}"
    return Result(
        model=a.meta["model"], backend_a=a.label, backend_b=b.label, tier=tier.name,
        dtype=a.meta["dtype"], device=a.meta["device"] if a.meta["device"] == b.meta["device"]
        else f"{a.meta['device']}|{b.meta['device']}",
        worst_abs=worst_checked.abs_err, worst_rel=worst_checked.rel_err,
        tolerance=tier.tolerance, where=str(worst_checked) if worst_checked.where else "",
        passed=worst_checked.passed and not problems, steps=steps, checked_steps=checked,
        per_category={k: {"rel": v.rel_err, "abs": v.abs_err, "where": v.where}
                      for k, v in per_cat.items()},
        drift=[float(d) for d in drift], note=note)


def compare_eval(a: Trajectory, b: Trajectory, tier: Tier, problems: list) -> list[Worst]:
    """The eval-mode outputs after the last update (running statistics, dropout off)."""
    if not a.eval or not b.eval:
        return []
    if set(a.eval) != set(b.eval):
        problems.append(f"eval outputs differ: {sorted(set(a.eval) ^ set(b.eval))}")
        return []
    return [compare_arrays(a.eval[k], b.eval[k], f"eval/{k} after step {a.meta['steps'] - 1}",
                           floor_fraction=tier.floor_fraction) for k in a.eval]


def run(spec, backends, *, dtype="float64", device="cpu", steps=10, seed=None,
        dropout="inject", progress=None, noise_runs=NOISE_RUNS, programs32=None):
    """Record every backend and compare every pair. Returns (results, trajectories).

    float64: the exact tier on the recorded trajectories. float32: the teacher-forced tier
    (``forced.py``) on the first ``FORCED_STEPS`` steps decides; the free-running float32
    trajectories give the drift, reported apart. ``programs32`` (float32 only, optional): the
    float32 program to hold for a backend (see ``forced.teacher_forced``)."""
    trajs = []
    for be in backends:
        if progress:
            progress(f"{spec.name}: recording {be} ({dtype}, {device}, {steps} steps)")
        trajs.append(record(spec, be, dtype=dtype, device=device, steps=steps, seed=seed,
                            dropout=dropout))
    if dtype == "float32":
        return float32_results(spec, backends, trajs, device=device, steps=steps, seed=seed,
                               dropout=dropout, progress=progress, runs=noise_runs,
                               programs32=programs32), trajs
    tier = tier_for(dtype)
    results = []
    for a, b in itertools.combinations(trajs, 2):
        r = compare_trajectories(a, b, tier)
        if tier is EXACT and r.worst_rel > forced64.FORCE_ABOVE * tier.tolerance:
            r = exact_forced(spec, a, b, r, seed=seed, dropout=dropout, progress=progress)
        if not r.passed:
            blame(r, spec, a, b, tier, dtype, seed, dropout)
        results.append(r)
    return results, trajs


def exact_forced(spec, a: Trajectory, b: Trajectory, free: Result, *, seed, dropout,
                 progress=None) -> Result:
    """The exact tier of ``a`` and ``b`` teacher-forced (``forced64``): each backend's every
    step from the other's float64 state, at the exact bound, both directions; the free-running
    result ``free`` reported beside it as drift."""
    seed = spec.seed if seed is None else seed
    rows = []
    for held, ref in ((a, b), (b, a)):
        if progress:
            progress(f"{spec.name}: {held.meta['backend']} teacher-forced along "
                     f"{ref.meta['backend']} (float64)")
        rows += forced64.held_steps(spec, held, ref, seed=seed, dropout=dropout,
                                    tolerance=EXACT.tolerance)
    w, per_cat = Worst(where="", tolerance=EXACT.tolerance), {}
    for _, key, x in rows:
        w = w.max(x)
        cat = key.split("/", 1)[0]
        per_cat[cat] = per_cat.get(cat, Worst()).max(x)
    w.tolerance = EXACT.tolerance
    note = (f"teacher-forced (the free-running worst {free.worst_rel:.1e} used more than "
            f"{forced64.FORCE_ABOVE:.0%} of {EXACT.tolerance:.0e}; reported as drift, not held): "
            f"worst step {w.rel_err:.1e}, {w.rel_err / EXACT.tolerance:.1%} of the bound")
    return Result(model=free.model, backend_a=free.backend_a, backend_b=free.backend_b,
                  tier=EXACT.name, dtype=free.dtype, device=free.device, worst_abs=w.abs_err,
                  worst_rel=w.rel_err, tolerance=EXACT.tolerance, where=str(w) if w.where else "",
                  # a problem of the free-running comparison (tensors that differ) still fails
                  passed=w.passed and (free.passed or free.worst_rel > free.tolerance),
                  steps=free.steps, checked_steps=free.checked_steps,
                  per_category={k: {"rel": v.rel_err, "abs": v.abs_err, "where": v.where}
                                for k, v in per_cat.items()},
                  drift=free.drift, note=f"{free.note}; {note}" if free.note else note)


def blame(result: Result, spec, a: Trajectory, b: Trajectory, tier: Tier, dtype, seed, dropout):
    """Fill ``result.blame`` with where the two runs start to differ (see diagnose.py)."""
    seed = spec.seed if seed is None else seed
    run_spec = without_dropout(spec) if dropout == "off" else spec
    x, y = next(batch_stream(run_spec, 1, seed, dtype))
    masks = (dropout_masks(run_spec.model, seed, 0, len(y))
             if mask_draws(run_spec.model) else None)
    d = diagnose(run_spec, a, b, tier, x, masks)
    if d is not None:
        result.blame = {"step": d.step, "category": d.category, "tensor": d.tensor,
                        "node": d.node, "op": d.op, "worst": str(d.worst)}
        result.where = str(d)


def float32_results(spec, backends, trajs, *, device, steps, seed, dropout, progress, runs,
                    programs32=None) -> list[Result]:
    """One float32 Result per backend pair: held by the teacher-forced comparison in both
    directions (worst element by the share of its noise bound it uses), with the free-running
    drift of the pair's float32 trajectories beside it."""
    forced, _, data, masks = teacher_forced(spec, backends, device=device,
                                            steps=min(steps, FORCED_STEPS), seed=seed,
                                            dropout=dropout, runs=runs, progress=progress,
                                            programs32=programs32)
    results = []
    for ta, tb in itertools.combinations(trajs, 2):
        a, b = ta.meta["backend"], tb.meta["backend"]
        both = (forced[(a, b)], forced[(b, a)])
        free = compare_trajectories(ta, tb, FLOAT32)
        r = held_result(spec.name, ta.label, tb.label, both, tier="float32", device=device,
                        steps=free.steps, checked=min(steps, FORCED_STEPS, len(data)),
                        drift=free.drift,
                        note=f"free-running drift over {free.steps} steps: worst "
                             f"{max(free.drift):.1e} (reported, not held)"
                             + (f"; {free.note}" if free.note else ""))
        if not r.passed:
            _blame_forced(r, spec, both, data, masks, dropout)
        results.append(r)
    return results


def held_result(model, label_a, label_b, forceds, *, tier, device, steps, checked, drift=(),
                note="") -> Result:
    """One float32 Result from teacher-forced comparisons (``forced.Forced``): the worst element
    by the share of its noise bound it uses, and the worst per category."""
    w, per_cat = None, {}
    for f in forceds:
        for _, key, x in f.rows:
            w = worse(w, x)
            cat = key.split("/", 1)[0]
            per_cat[cat] = worse(per_cat.get(cat), x)
    return Result(model=model, backend_a=label_a, backend_b=label_b, tier=tier,
                  dtype="float32", device=device, worst_abs=w.abs_err, worst_rel=w.rel_err,
                  tolerance=w.tolerance, where=str(w), passed=use(w) <= 1, steps=steps,
                  checked_steps=checked,
                  per_category={k: {"rel": v.rel_err, "abs": v.abs_err, "where": v.where,
                                    "noise": v.noise, "tolerance": v.tolerance}
                                for k, v in per_cat.items()},
                  drift=list(drift), noise=w.noise, note=note)


def _blame_forced(result: Result, spec, both, data, masks, dropout):
    """The first failure in causal order over both directions; a forward one (step 0 loss or
    gradients, or the eval output) is bisected to a node in float64, where a semantic
    difference shows (a float32-only one names no node)."""
    firsts = [f.first_failure() for f in both]
    firsts = [x for x in firsts if x is not None]
    step, key, w = min(firsts, key=lambda x: (x[0], ORDER.index(x[1].split("/", 1)[0])))
    cat, _, tensor = key.partition("/")
    d = Divergence(step, cat, tensor, w)
    run_spec = without_dropout(spec) if dropout == "off" else spec
    name_node(d, run_spec, both[0].backend, both[0].reference, data[0][0], EXACT, "float64",
              masks[0])
    result.blame = {"step": d.step, "category": d.category, "tensor": d.tensor,
                    "node": d.node, "op": d.op, "worst": str(d.worst), "noise": w.noise}
    result.where = str(d)
