"""The precision tier's checks that need no numbers (docs/guide/precision.md).

* ``check_types``: the types a backend's lowered step really computes in (its own trace:
  ``rosetta.backends.<b>.precision.trace``) against the policy's table
  (``rosetta.precision``): every node's output, the inputs of every product and float32-family
  kernel inside each node (a softmax inside attention included), the loss, the parameters
  (float32 masters under a mixed policy), their gradients and the optimizer slots. Each
  problem is one line naming the tensor.
* ``check_loss_scale``: the dynamic loss-scale rule of ``mixed_float16`` run on a program with
  growth interval 2 and a planted non-finite gradient, against ``LossScale`` step by step: the
  scale and the good-step counter after every step, the parameters unmoved and the update count
  unchanged on the skipped step, moved and advanced on the others.
"""

from __future__ import annotations

import numpy as np

from rosetta.precision import (FLOAT32, INNER_SOFTMAX, PRODUCT, LossScale, Policy, family,
                               node_types)


def check_types(trace: dict, graph, pol: Policy) -> list[str]:
    """Problems (one line each, naming the tensor) of ``trace`` against policy ``pol``; []
    when the lowered step computes in the types the policy gives."""
    out = []
    want = node_types(graph, pol)
    for node in graph.nodes:
        got = trace["nodes"].get(node.name)
        if got is not None and got != want[node.name]:
            out.append(f"node {node.name!r} ({node.op}) output is {got}, {pol.name} says "
                       f"{want[node.name]}")
    by_name = {n.name: n for n in graph.nodes}
    for node, kind, kernel, dts in trace["kernels"]:
        op = by_name[node].op
        fam = family(op, by_name[node].attrs)
        if kind == "product" and fam == PRODUCT:
            bad = [d for d in dts if d != pol.low]
            if bad:
                out.append(f"node {node!r} ({op}): {kernel} on {', '.join(dts)} inputs, "
                           f"{pol.name} computes products in {pol.low}")
        elif kind in ("float32", "softmax") and (fam == FLOAT32 or (
                kind == "softmax" and op in INNER_SOFTMAX)):
            t = "float32" if pol.mixed else pol.param
            bad = [d for d in dts if d != t]
            if bad:
                out.append(f"node {node!r} ({op}): {kernel} on {', '.join(dts)} inputs, "
                           f"{pol.name} computes it in {t}")
    if pol.mixed:   # attention's softmax must be seen, in float32 (a fused kernel hides it)
        for node in graph.nodes:
            if node.op in INNER_SOFTMAX and not any(
                    k[0] == node.name and k[1] == "softmax" for k in trace["kernels"]):
                out.append(f"node {node.name!r} ({node.op}): no separate softmax ran; "
                           f"{pol.name} runs its softmax in float32")
    loss_t = "float32" if pol.mixed else pol.param
    if trace.get("loss") not in (None, loss_t):
        out.append(f"loss is {trace['loss']}, {pol.name} says {loss_t}")
    for cat in ("params", "grads", "opt"):
        for path, d in trace.get(cat, {}).items():
            if d != pol.param:
                what = {"params": "parameter", "grads": "gradient",
                        "opt": "optimizer slot"}[cat]
                out.append(f"{what} {path} is {d}, {pol.name} keeps it in {pol.param}")
    return out


def check_loss_scale(program, good_batch, bad_batch, interval: int = 2) -> list[str]:
    """Run ``program`` (a ``mixed_float16`` Program, freshly loaded) through good, good, bad,
    good, good steps with the growth interval set to ``interval`` (``bad_batch`` makes a
    non-finite gradient), each against the canonical ``LossScale``: problems, one line each,
    naming the step and the tensor or state; [] when the rule is kept."""
    if program.loss_scale is None:
        return [f"precision {program.precision} keeps no loss scale"]
    program.loss_scale.interval = interval
    ref = LossScale(interval=interval)
    out = []
    for t, (x, y) in enumerate([good_batch, good_batch, bad_batch, good_batch, good_batch]):
        before, step0 = program.export_params(), program.step
        program.train_step(x, y)
        applied = ref.after(t != 2)   # step 2 is the planted non-finite gradient
        got = program.export_loss_scale()
        for k, v in ref.to_json().items():
            if got[k] != v:
                out.append(f"loss_scale/{k} after step {t}: {got[k]}, the rule gives {v}")
        after = program.export_params()
        moved = [k for k in before if not np.array_equal(before[k], after[k])]
        if not applied and moved:
            out.append(f"params/{moved[0]} moved on the skipped step {t} (non-finite "
                       f"gradient): the update must be skipped")
        if applied and not moved:
            out.append(f"no parameter moved on step {t}, whose gradient is finite")
        want_step = step0 + (1 if applied else 0)
        if program.step != want_step:
            out.append(f"update count after step {t}: {program.step}, the rule gives "
                       f"{want_step} (a skipped step does not count)")
    return out
