"""The float32 certificate (docs/design.md sections 11 and 12): a source that computes in float32
is certified teacher-forced at the float32 tier's bounds from measured noise
(``rosetta.conformance.noise``), not at the float64 tier's 1e-10.

1. The reference is the source itself, run by its own framework (the source's ``program``):
   torch in float64 (a float64 copy of the randomized source with a copy of its own optimizer
   and scheduler); a Keras source in float32, its ``reference_dtype32`` (a float32 clone with
   Keras's own optimizer: Keras does not compute every layer and optimizer in float64 on every
   backend, ``keras_source``, so its float32 run as the user trains it is the reference, and
   its own rounding must fit in the measured float32 noise bound, the backends'). Its
   trajectory of K steps (``certificate._record``).
2. Each backend compiles the imported spec in float32. Every step t starts from the source's
   state before update t (float64; a Keras source's float32: parameters, model state,
   optimizer state, update count: the import's own for t = 0), rounded to float32
   (``noise.run_step``): errors never compound.
3. The noise of each step is measured on every certified backend's float32 program
   (``noise.measure_step``: re-runs from the state and batch moved by one ulp, the examples
   reordered), and each backend's float32 step is held within ``noise.noise_spread`` of the
   source's float64 step: the loss, every gradient and the model state against the source's;
   the parameters and optimizer state after the update against the spec's NumPy update of the
   step's own gradients from the same start (``noise.update_reference``); the eval output after
   the last step. Bound: ``NOISE_MULTIPLE`` x spread + U x (``NOISE_ULPS`` |f| + ``NOISE_FLOOR``
   x scale), as the float32 tier's.
4. Blame: a failure at step 0 in the forward, loss or gradients names the first spec node whose
   output (NumPy float64 reference) differs from the traced float64 source node it stands for
   (at the exact tier: both sides are float64 there; torch sources); otherwise the first tensor
   over its bound,
   by canonical path and source name, with its step.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from rosetta.conformance.noise import (NOISE_RUNS, Measured, compare_noisy, measure_eval,
                                       measure_step, noise_spread, run_eval,
                                       run_step, step_result, to_float32, update_reference, use)


def certify32(imp, backends, *, steps, seed, masks, batches, spec, cert, log, runs=NOISE_RUNS):
    """Fill ``cert`` (a ``certificate.Certificate``) with each backend's float32 teacher-forced
    comparison against the source's float64 trajectory."""
    from rosetta.backend_registry import get_backend
    from rosetta.conformance.tiers import tier_for
    from rosetta.importers import certificate as C

    t0 = time.perf_counter()
    make = getattr(imp.source, "program", None) or C._source_program
    framework = imp.source.framework
    ref_dtype = cert.reference = getattr(imp.source, "reference_dtype32", "float64")
    prog, module, holder = make(imp, spec, seed, ref_dtype, masks is not None)
    start_module = copy.deepcopy(module) if module is not None else None
    params0, state0 = prog.export_params(), prog.export_state()
    slots0 = prog.export_optimizer_state() if imp.optimizer_state else {}
    log(f"{spec.name}: recording the {framework} source in {ref_dtype} ({steps} steps)")
    source = C._record(prog, spec, batches, f"source-{framework}", prog.version(), ref_dtype,
                       steps, seed, masks, holder)
    if holder is not None:
        holder.clear()
    cert.seconds["source"] = time.perf_counter() - t0
    starts = C.starts_along(source, steps, slots0, imp.step)
    masks = masks or [None] * steps
    progs, measured, measured_eval = {}, {}, {}
    for be in backends:
        t1 = time.perf_counter()
        log(f"{spec.name}: float32 noise on {be} ({runs} runs a step)")
        p = progs[be] = get_backend(be).compile(spec, dtype="float32", device="cpu")
        measured[be] = [measure_step(p, starts[t], *batches[t], masks[t],
                                     step_result(source, t), runs, seed=f"{be}/{seed}",
                                     optimizer=spec.optimizer) for t in range(steps)]
        measured_eval[be] = measure_eval(p, starts[steps].params, starts[steps].state,
                                         batches[0][0], C.final_eval(source), runs,
                                         seed=f"{be}/{seed}")
        cert.seconds[f"noise {be}"] = time.perf_counter() - t1
    for be in backends:
        t1 = time.perf_counter()
        log(f"{spec.name}: float32 steps on {be}, teacher-forced along the source")
        p, rows = progs[be], []
        for t in range(steps):
            start = starts[t].float32()
            x, y = batches[t]
            got = run_step(p, start, to_float32(x), to_float32(y), masks[t])
            ref = step_result(source, t)
            ref.update(update_reference(spec.optimizer, start, got))
            m = Measured(ref, noise_spread(ref, {c: measured[c][t] for c in backends}, be))
            rows += [(t, k, w) for k, w in compare_noisy(
                got, m, f"@ step {t} ({be} float32 vs the source in {ref_dtype})")]
        got_eval = run_eval(p, to_float32(starts[steps].params), to_float32(starts[steps].state),
                            to_float32(batches[0][0]))
        m = Measured(C.final_eval(source), noise_spread(C.final_eval(source), measured_eval, be))
        rows += [(steps - 1, k, w) for k, w in compare_noisy(
            got_eval, m, f"after step {steps - 1} ({be} float32 vs the source in "
                         f"{ref_dtype})")]
        worst = {}
        for _, k, w in rows:
            cat = k.split("/", 1)[0]
            cat = {"params": "step", "opt": "step", "state": "step", "eval": "forward",
                   "grads": "grads"}.get(cat, cat)
            worst[cat] = max(worst.get(cat, 0.0), use(w))
        fail = next(((t, k, w) for t, k, w in rows if use(w) > 1), None)
        blame = ""
        if fail is not None:
            t, k, w = fail
            if (t == 0 and k.split("/", 1)[0] in ("loss", "grads", "eval")
                    and start_module is not None):   # a traced torch source
                blame = C.first_diverging_node(imp, C.without_dropout(spec), start_module,
                                               params0, state0, batches[0][0],
                                               tier_for("float64"))
            if not blame:
                path = k.split("/", 1)[1] if "/" in k else ""
                name = imp.source_name(path) if path else ""
                blame = (f"first failure at step {t}: {k}{f' (source {name})' if name else ''}:"
                         f" {w.where}: error {w.rel_err:.2e} of its scale, bound "
                         f"{w.tolerance:.2e} ({use(w):.1f}x)")
        cert.results.append({"backend": be, "passed": fail is None, "worst": worst,
                             "where": "", "note": "float32 teacher-forced, bound used (1 = at "
                                                  "the bound)", "blame": blame,
                             "seconds": time.perf_counter() - t1
                             + cert.seconds[f"noise {be}"]})
    return cert
