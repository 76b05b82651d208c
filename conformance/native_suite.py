"""Compare the user's native program with the spec on rosetta's backends, and blame a tensor.

``run_native`` records the native program (``native.py``) and each backend from the spec's initial
parameters on the same batches (``runner.record``), and compares each pair in the tier of the dtype
(float64: the exact tier, 1e-10). A spec with dropout runs with dropout off on both sides (native
code draws its own masks); the result's note says so.

Blame. ``diagnose.first_divergence`` names where the runs start to differ. When that is the loss
or a gradient of the first step (the user's forward differs from the spec's), every gradient
differs and the graph bisection of ``diagnose`` cannot cut the user's model into nodes. The
*constant probe* localizes it instead: for each multi-element parameter P in graph order, start
both sides from the initial parameters with P set to a constant array (P's root mean square).
A constant array is the same in every layout and every ordering of its elements, so when P's
layout or the ordering of its inputs is what the port got wrong (a transposed kernel, a flatten in
channels-first order), the probe's loss and every other gradient agree again, while P's own
gradient still differs: P is blamed. Signal still flows through a constant P (a zero would cut
it), so a probe of a parameter upstream of the fault still disagrees. When no probe isolates one
tensor, the first divergence is the blame.
"""

from __future__ import annotations

import numpy as np

from rosetta.backend_registry import get_backend
from rosetta.conformance.compare import compare_arrays, group_of, group_scales
from rosetta.conformance.diagnose import first_divergence
from rosetta.conformance.native import build_native
from rosetta.conformance.runner import batch_stream, record, without_dropout
from rosetta.dropout import mask_draws
from rosetta.conformance.suite import compare_trajectories
from rosetta.conformance.tiers import tier_for


def run_native(spec, factory, backends, *, dtype="float64", steps=5, seed=None,
               device="cpu", progress=None):
    """Record the native program and every backend; compare native against each.
    Returns (results, trajectories), the native trajectory first."""
    log = progress or (lambda msg: None)
    dropout = "off" if mask_draws(spec.model) else "inject"
    run_spec = without_dropout(spec) if dropout == "off" else spec
    prog = build_native(factory, run_spec, dtype)
    log(f"{spec.name}: recording your {prog.framework} code ({dtype}, {steps} steps)")
    native = record(spec, prog.backend_label, dtype=dtype, device=device, steps=steps, seed=seed,
                    dropout=dropout, program=prog)
    tier = tier_for(dtype)
    results, trajs = [], [native]
    for be in backends:
        log(f"{spec.name}: recording {be} ({dtype}, {device}, {steps} steps)")
        ref = record(spec, be, dtype=dtype, device=device, steps=steps, seed=seed,
                     dropout=dropout)
        trajs.append(ref)
        r = compare_trajectories(native, ref, tier)
        if dropout == "off":
            r.note = (r.note + "; " if r.note else "") + "dropout off on both sides (native " \
                                                         "code draws its own masks)"
        if not r.passed:
            blame(r, run_spec, factory, be, native, ref, tier, dtype, seed)
        results.append(r)
    return results, trajs


def blame(result, spec, factory, backend, native, ref, tier, dtype, seed):
    """Fill ``result.blame`` and ``result.where``: the first divergence, narrowed to one tensor
    by the constant probe when it is a step-0 forward disagreement."""
    d = first_divergence(native, ref, tier)
    if d is None:
        return
    result.blame = {"step": d.step, "category": d.category, "tensor": d.tensor,
                    "worst": str(d.worst)}
    result.where = str(d)
    if d.step != 0 or d.category not in ("loss", "grads"):
        return
    seed = spec.seed if seed is None else seed
    x, y = next(batch_stream(spec, 1, seed, dtype))
    found = constant_probe(spec, factory, backend, x, y, tier, dtype, seed)
    if found is None:
        return
    path, probe = found
    w = compare_arrays(native.grads[path][0], ref.grads[path][0], f"grads/{path} @ step 0",
                       tier.tolerance, tier.floor_fraction,
                       group_scales({k: v[0] for k, v in ref.grads.items()}).get(group_of(path),
                                                                                0.0))
    result.blame = {"step": 0, "category": "grads", "tensor": path, "worst": str(w),
                    "probe": str(probe)}
    result.where = (f"blamed tensor: {path} (with {path} constant, the loss and every other "
                    f"gradient agree; its own gradient differs: {probe}); at step 0: {w}")


def constant_probe(spec, factory, backend, x, y, tier, dtype, seed):
    """(path, Worst of its gradient at the probe) of the first parameter whose constant probe
    isolates the disagreement (see the module docstring), or None."""
    params0, state0 = spec.model.init_params(seed), spec.model.init_state()
    prog = build_native(factory, spec, dtype)
    ref = get_backend(backend).compile(spec, dtype=dtype, device="cpu")
    for path in spec.model.param_defs():
        p = np.asarray(params0[path])
        if p.size < 2 or np.all(p == p.flat[0]):
            continue
        params = dict(params0)
        params[path] = np.full(p.shape, np.sqrt(np.mean(p * p)))
        sides = []
        for program in (prog, ref):
            program.load(params, state0)
            sides.append(program.gradients(x, y))
        (la, ga), (lb, gb) = sides
        if not compare_arrays(la, lb, "loss", tier.tolerance, tier.floor_fraction).passed:
            continue
        scales = group_scales(gb)
        worst = {k: compare_arrays(ga[k], gb[k], f"grads/{k} at the probe", tier.tolerance,
                                   tier.floor_fraction, scales.get(group_of(k), 0.0))
                 for k in gb}
        others_agree = all(w.passed for k, w in worst.items() if k != path)
        if others_agree and not worst[path].passed:
            return path, worst[path]
    return None
