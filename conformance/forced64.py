"""The exact tier, teacher-forced where rounding compounds (docs/design.md sections 5 and 13).

The exact tier holds free-running float64 trajectories of two backends to 1e-10 (relative, per
element, with the comparator's floor). Rounding differs between backends (their summation
orders, their convolution algorithms) and a trajectory carries each step's difference into the
next: on the zoo ``resnet_digits`` the worst tensor after 10 steps was 7.6e-11 (torch against
TensorFlow), three quarters of the bound, an honest result that another CPU's BLAS could push
over it. Measuring float64 noise as the float32 tier does (inputs moved at float64's rounding
level, examples reordered) did not explain it: the noise so measured at that element was 7.3e-12,
a tenth of the error, because a perturbed input does not re-randomise the summation inside each
kernel that two backends order differently.

So a pair that uses more than ``FORCE_ABOVE`` of the bound is held as the float32 tier holds
float32 (``forced.py``): teacher-forced. Every step of each backend starts from the other
backend's float64 state before that step (parameters, model state, optimizer state, update
count) and its result (loss, gradients, parameters, state and optimizer state after the update)
is held to the other's step at the same fixed 1e-10, in both directions; the eval-mode output
from the other's final state too. Errors then never compound: what is held is one step's
arithmetic, where a semantic difference (every planted trap: 1e-6 and more) shows at once. The
free-running difference is reported beside it as drift, not held. A pair well inside the bound
costs nothing more.
"""

from __future__ import annotations

import numpy as np

from rosetta.backend_registry import get_backend
from rosetta.conformance.compare import Worst, compare_arrays, group_of
from rosetta.conformance.forced import forced_batches
from rosetta.conformance.noise import (ORDER, Start, eval_result, run_eval, run_step,
                                       step_result)
from rosetta.conformance.trajectory import Trajectory

FORCE_ABOVE = 0.1   # a pair whose free-running worst uses more of the exact bound is forced


def _scales(result: dict) -> dict:
    """The largest magnitude of each group: a category (``grads``), an optimizer slot
    (``opt/m``), the loss."""
    out: dict = {}
    for k, v in result.items():
        v = np.asarray(v, np.float64)
        if v.size and np.isfinite(v).all():
            cat, _, rest = k.partition("/")
            g = f"{cat}/{group_of(rest)}"
            out[g] = max(out.get(g, 0.0), float(np.max(np.abs(v))))
    return out


def _group(k: str) -> str:
    cat, _, rest = k.partition("/")
    return f"{cat}/{group_of(rest)}"


def held_steps(spec, held: Trajectory, ref: Trajectory, *, seed, dropout, tolerance: float,
               program=None) -> list:
    """[(step, key, Worst)] in causal order: ``held``'s backend, float64, each step from
    ``ref``'s state before it, against ``ref``'s step; then the eval output from ``ref``'s
    final state."""
    m = held.meta
    steps = min(m["steps"], ref.meta["steps"])
    run_spec, data, masks = forced_batches(spec, steps, seed, dropout)
    prog = program or get_backend(m["backend"]).compile(run_spec, dtype="float64",
                                                         device=m["device"])
    starts = [Start.of(ref, t) for t in range(steps + 1)]
    return forced_rows(prog, ref, starts, data, masks, tolerance,
                       f"({m['backend']} from {ref.meta['backend']}'s state)", eval_result(ref))


def forced_rows(prog, ref: Trajectory, starts: list, data: list, masks: list, tolerance: float,
                label: str, want_eval: dict) -> list:
    """[(step, key, Worst)] in causal order: ``prog`` (float64), each step t from
    ``starts[t]`` (``ref``'s state before its update t) on ``data[t]`` with ``masks[t]``,
    against ``ref``'s step t at ``tolerance``; then the eval output from ``starts[-1]`` (the
    state after ``ref``'s last update) on ``data[0]``'s inputs, against ``want_eval`` (keys as
    ``run_eval``'s)."""
    rows = []
    for t, ((x, y), mk) in enumerate(zip(data, masks)):
        want = step_result(ref, t)
        got = run_step(prog, starts[t], x, y, mk)
        scales = _scales(want)
        for k in sorted(want, key=lambda k: ORDER.index(k.split("/", 1)[0])):
            where = f"{k} @ step {t} {label}"
            w = (compare_arrays(got[k], want[k], where, tolerance,
                                scale=scales.get(_group(k), 0.0)) if k in got
                 else Worst(where=f"{where} (missing)", abs_err=np.inf, rel_err=np.inf,
                            tolerance=tolerance))
            rows.append((t, k, w))
    last = starts[len(data)]
    got = run_eval(prog, last.params, last.state, data[0][0])
    for k, v in want_eval.items():
        where = f"{k} after step {len(data) - 1} {label}"
        rows.append((len(data) - 1, k, compare_arrays(got[k], v, where, tolerance) if k in got
                     else Worst(where=f"{where} (missing)", abs_err=np.inf, rel_err=np.inf,
                                tolerance=tolerance)))
    return rows
