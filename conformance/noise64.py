"""The exact tier's bound where float64 rounding itself grows: measured noise (docs/design.md
sections 5, 11 and 13).

The exact tier holds free-running float64 trajectories of two backends to 1e-10 (relative, per
element, with the comparator's floor). Rounding differs between backends (their summation
orders) and grows along a trajectory: on the zoo ``resnet_digits`` the worst tensor after 10
steps was 7.9e-11 (torch against TensorFlow), 79 % of the bound, an honest result that another
CPU's BLAS could push over it. So where a pair uses more than ``MEASURE_ABOVE`` of the bound, the
noise of float64 itself is measured, as the float32 tier measures float32's (``noise.py``): each
of the two backends runs the same steps once more on the same batches with every float feature
moved by U64 = 2^-53 times the batch's largest magnitude and, without dropout, the examples of
every batch in another order (the step is a function of the batch as a set, so only the
rounding moves: every sum over the batch is summed in another order). The relative difference
of that run from the backend's own trajectory, element by element and with the exact tier's
metric (``compare.compare_arrays``), is the noise of that tensor at that step; a pair is held to

    rel_err <= max(EXACT.tolerance, NOISE64_MULTIPLE * noise)

per tensor and step, the larger noise of the two backends. 1e-10 stays the floor: every planted
trap fails at it (their errors are semantic, 1e-6 and more), and a pair that keeps well inside it
costs nothing more. A bias of one backend (a bug) is the same in its own perturbed run, so it is
not noise and cannot widen its own bound. Results report the noise beside the error and the
share of the bound used.

Why 16: the two perturbed runs give one sample each of a noise whose cross-backend counterpart is
another sample of the same size; the worst element of many has a tail of a few standard
deviations (the float32 tier's reasoning, ``noise.NOISE_MULTIPLE``).
"""

from __future__ import annotations

import numpy as np

from rosetta.conformance.compare import compare_arrays, group_of, group_scales
from rosetta.conformance.runner import batch_stream, record, without_dropout
from rosetta.conformance.trajectory import Trajectory
from rosetta.dropout import mask_draws
from rosetta.initializers import rng_for

U64 = 2.0 ** -53
NOISE64_MULTIPLE = 16.0
MEASURE_ABOVE = 0.1     # a pair whose worst error uses more of the exact bound is measured


def perturbed_batches(spec, steps: int, seed: int, dropout: str):
    """The float64 batches of ``steps`` steps, each with its float features moved by U64 times
    their largest magnitude and, where the model has no dropout (whose masks are indexed by
    example), its examples in a random order. Returns (batches, orders): ``orders[0]`` (or None)
    puts the first batch's rows back, for the eval output."""
    run_spec = without_dropout(spec) if dropout == "off" else spec
    shuffle = not mask_draws(run_spec.model)
    rng = rng_for(0, f"noise64/{seed}")
    out, orders = [], []
    for x, y in (b for _, b in zip(range(steps), batch_stream(run_spec, steps, seed,
                                                              "float64"))):
        n = len(next(iter(y.values())) if isinstance(y, dict) else y)
        order = rng.permutation(n) if shuffle else None
        if order is not None:
            x, y = _take(x, order), _take(y, order)
        out.append((_nudge(x, rng), y))
        orders.append(order)
    return out, orders


def _take(value, order):
    if isinstance(value, dict):
        return {k: _take(v, order) for k, v in value.items()}
    return np.asarray(value)[order]


def _nudge(value, rng):
    if isinstance(value, dict):
        return {k: _nudge(v, rng) for k, v in value.items()}
    a = np.asarray(value)
    if a.dtype.kind != "f" or not a.size:
        return a
    return a + U64 * float(np.max(np.abs(a))) * rng.uniform(-1.0, 1.0, a.shape)


def noise_run(spec, traj: Trajectory, *, seed, dropout) -> Trajectory:
    """``traj``'s backend once more on the perturbed batches (``perturbed_batches``), its eval
    output rows put back in the original order."""
    m = traj.meta
    steps = m["steps"]
    data, orders = perturbed_batches(spec, steps, seed, dropout)
    again = record(spec, m["backend"], dtype="float64", device=m["device"], steps=steps,
                   seed=seed, dropout=dropout, stream=data)
    if orders and orders[0] is not None:
        back = np.argsort(orders[0])
        again.eval = {k: np.asarray(v)[back] if np.ndim(v) else v for k, v in again.eval.items()}
    return again


def measured(traj: Trajectory, again: Trajectory) -> dict:
    """{where: relative difference} of ``again`` from ``traj`` per tensor and step, keyed by the
    ``where`` string of ``suite.compare_trajectories`` (``grads/dense/kernel @ step 3``), with
    the exact tier's metric (``compare.compare_arrays``, the element floor included)."""
    out = {}
    steps = min(traj.meta["steps"], again.meta["steps"])
    for t in range(steps):
        w = f"loss @ step {t}"
        out[w] = compare_arrays(again.loss[t], traj.loss[t], w).rel_err
        for cat in ("grads", "params", "state", "opt"):
            ta, tb = getattr(again, cat), getattr(traj, cat)
            if set(ta) != set(tb):
                continue
            i = t + 1 if cat in ("params", "state") else t
            scales = group_scales({k: v[i] for k, v in tb.items()})
            for k in tb:
                w = f"{cat}/{k} @ step {t}"
                out[w] = compare_arrays(ta[k][i], tb[k][i], w,
                                        scale=scales.get(group_of(k), 0.0)).rel_err
    for k in traj.eval:
        if k in again.eval:
            w = f"eval/{k} after step {traj.meta['steps'] - 1}"
            out[w] = compare_arrays(again.eval[k], traj.eval[k], w).rel_err
    return out


def pooled(*noises: dict) -> dict:
    """The larger noise of each tensor and step."""
    out: dict = {}
    for n in noises:
        for k, v in n.items():
            out[k] = max(out.get(k, 0.0), v)
    return out


def tolerance(floor: float, noise: float | None) -> float:
    """The bound of one tensor at one step: the exact floor, or the measured noise times
    ``NOISE64_MULTIPLE`` where that is larger."""
    return floor if noise is None else max(floor, NOISE64_MULTIPLE * noise)
