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
* ``precision_tier``: the numbers. Each checked step is teacher-forced from the float64 state
  and held, node output by node output and tensor by tensor, to ``LOW_MULTIPLE`` times the
  spread of re-runs perturbed by one rounding error of the policy's low format
  (``noise.perturb_at``), plus ``unit · (LOW_ULPS · |f| + LOW_FLOOR · scale)`` with ``unit`` the
  unit roundoff of the type the policy computes that element in. Why c = 4 and 8 ulps, not the
  float32 tier's 16 and 128: in a low format the spread comes from the one-ulp moves of every
  input (each product rounds its inputs to the low type), not from summation order, and the
  honest error to float64 was measured at 0.15 to 2.5 times it on the zoo (torch, every
  policy; the worst: gpt bfloat16's gradients, error 1.5e-1 of the gradient scale beside a
  spread of 6.1e-2); 16 times it would let a bf16 gradient bound exceed the gradient scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rosetta.conformance.compare import Worst
from rosetta.conformance.forced import HeldRows
from rosetta.conformance.noise import (ELEMENTWISE, NOISE_RUNS, Start, _worst,
                                       given_own_gradients, group, perturb_at, reorder,
                                       run_step, spread_of, step_result, to_float32,
                                       unit_roundoff, update_reference)
from rosetta.precision import (FLOAT32, INNER_SOFTMAX, PRODUCT, LossScale, Policy, family,
                               node_types, policy)


def check_types(trace: dict, graph, pol: Policy) -> list[str]:
    """Problems (one line each, naming the tensor) of ``trace`` against policy ``pol``; []
    when the lowered step computes in the types the policy gives. An integer output (a
    comparison's keep-mask) is in no float type of the policy's: each backend keeps its own
    integer type, unchecked."""
    out = []
    want = node_types(graph, pol)
    for node in graph.nodes:
        got = trace["nodes"].get(node.name)
        integer = node.out_type is not None and node.out_type.kind == "int"
        if got is not None and not integer and got != want[node.name]:
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


def plant_late_growth(rule: LossScale) -> None:
    """A planted trap for ``check_loss_scale``: ``rule`` (a program's ``LossScale``) grows one
    good step late, its counter off by one. The rule is host-side and the same object on every
    backend, so one plant serves every backend's test."""
    after = rule.after

    def off_by_one(finite):
        if finite and rule.good + 1 == rule.interval:
            rule.good += 1
            return True
        if finite and rule.good == rule.interval:
            rule.good = 0
            rule.scale *= rule.factor
            return True
        return after(finite)
    rule.after = off_by_one


# --- the numbers: each backend's low-precision step, teacher-forced from the float64 state ------
PRECISION_STEPS = 2    # steps held (each from the float64 state: errors never compound)
LOW_MULTIPLE = 4.0     # c times the measured spread (see the module docstring)
LOW_ULPS = 8.0         # units of the element's own format: its result's own rounding
LOW_FLOOR = 4.0        # units of the element's format times its group's scale


@dataclass
class PrecisionResult(HeldRows):
    """The precision tier of one backend and policy: ``rows`` (step, key, Worst) of every
    tensor and node output against float64, ``types`` the type problems (``check_types``)."""

    backend: str
    precision: str
    rows: list = field(default_factory=list)
    types: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.types and self.first_failure() is None


def _units(pol: Policy, graph) -> callable:
    """key -> the unit roundoff of the format the policy computes that result in. The
    gradient of a product's parameter under a mixed policy is computed in the low type (the
    backward product of the low-type copy the node ran on; its cast hands it to the float32
    master exactly), so its unit is the low type's."""
    types = node_types(graph, pol)
    loss_t = "float32" if pol.mixed else pol.param
    products = {n.name for n in graph.nodes if family(n.op, n.attrs) == PRODUCT}

    def unit(key: str) -> float:
        cat, _, rest = key.partition("/")
        if cat == "nodes":
            return unit_roundoff(types[rest])
        if cat == "grads" and pol.mixed and rest.split("/", 1)[0] in products:
            return unit_roundoff(pol.low)
        return unit_roundoff(loss_t if cat == "loss" else pol.param)
    return unit


def _low_step(prog, nodes_fn, start: Start, x, y, masks, order=None) -> dict:
    """One step of ``prog`` from ``start`` (``noise.run_step``) and every node's output of its
    training forward from ``start`` (``nodes/<node>``, examples put back in batch order)."""
    prog.load(start.params, start.state)
    out = {f"nodes/{k}": v for k, v in nodes_fn(prog, x, masks).items()}
    if order is not None:
        back = np.argsort(order)
        out = {k: v[back] for k, v in out.items()}
    out.update(_applied_step(prog, start, x, y, masks))
    return out


def _applied_step(prog, start: Start, x, y, masks) -> dict:
    """``run_step`` of the update the step applies. Under mixed_float16 a step whose scaled
    gradients overflow is skipped and the rule halves the scale (``LossScale``), so the update
    training applies from this state is the one at the first halved scale whose gradients are
    finite: that is the step held (the skips themselves are ``check_loss_scale``'s)."""
    scale = None if prog.loss_scale is None else prog.loss_scale.to_json()
    while True:
        out = run_step(prog, start, x, y, masks, loss_scale=scale)
        if scale is None or scale["scale"] < 1.0 or all(
                np.isfinite(v).all() for k, v in out.items() if k.startswith("grads/")):
            return out
        scale = {"scale": scale["scale"] * LossScale().backoff, "good": 0}


def precision_tier(spec, backend: str, precision: str, *, steps: int = PRECISION_STEPS,
                   runs: int = NOISE_RUNS, seed=None, program=None,
                   progress=None) -> PrecisionResult:
    """``backend``'s ``precision`` step (``program``, default compiled here) held against its
    float64 step from the same float64 state, at each of the first ``steps`` steps: the loss,
    every gradient, every node's output of the training forward, the model state, parameters
    and optimizer slots after the update, each within ``LOW_MULTIPLE`` times the spread of
    ``runs`` re-runs of the low-precision step from that state moved by one rounding error of
    the policy's low format (``noise.perturb_at``; features by its unit roundoff times their
    largest magnitude; examples reordered), plus ``unit · (LOW_ULPS · |f| + LOW_FLOOR ·
    scale)`` with ``unit`` the unit roundoff of the type the policy computes that result in.
    The types the lowered step computes in are checked too (``check_types``)."""
    from rosetta.backend_registry import get_backend
    from rosetta.conformance.forced import forced_batches
    from rosetta.conformance.runner import record
    from rosetta.initializers import rng_for

    pol = policy(precision)
    seed = spec.seed if seed is None else seed
    log = progress or (lambda msg: None)
    be = get_backend(backend)
    tools = be.module("precision")
    run_spec, data, masks = forced_batches(spec, steps, seed)
    log(f"{spec.name}: float64 reference on {backend} ({len(data)} steps)")
    t64 = record(spec, backend, dtype="float64", steps=len(data), seed=seed, stream=data)
    prog64 = be.compile(run_spec, dtype="float64")
    prog = program or be.compile(run_spec, dtype=precision)
    unit, low = _units(pol, run_spec.model), unit_roundoff(pol.low)
    res = PrecisionResult(backend, precision)
    res.types = check_types(tools.trace(prog, *data[0], masks[0]), run_spec.model, pol)
    rng = rng_for(0, f"precision/{seed}/{precision}")
    for t, ((x, y), m) in enumerate(zip(data, masks)):
        log(f"{spec.name}: {precision} step {t} on {backend}, {runs} perturbed re-runs")
        start = Start.of(t64, t)
        ref = step_result(t64, t)
        prog64.load(start.params, start.state)
        ref.update({f"nodes/{k}": v for k, v in tools.node_outputs(prog64, x, m).items()})
        got = _low_step(prog, tools.node_outputs, start.float32(), to_float32(x),
                        to_float32(y), m)
        n = len(y)
        spread_runs = []
        for _ in range(runs):
            order = rng.permutation(n)
            s = Start(perturb_at(start.params, low, rng), perturb_at(start.state, low, rng),
                      perturb_at(start.opt, low, rng), start.step)
            xs = reorder(x, order)
            xs = {k: (v + low * float(np.max(np.abs(v))) * rng.uniform(-1, 1, v.shape)
                      ).astype(np.float32) if np.asarray(v).dtype.kind == "f" else v
                  for k, v in (xs if isinstance(xs, dict) else {"": xs}).items()}
            xs = xs[""] if "" in xs else xs
            r = _low_step(prog, tools.node_outputs, s, xs, to_float32(reorder(y, order)),
                          reorder(m, order), order)
            spread_runs.append(given_own_gradients(r, run_spec.optimizer, s))
        # the updated tensors are held given the step's own gradients (as the float32 tier:
        # Adam's first update is lr · sign(g), which flips where g is within noise of 0)
        ref.update(update_reference(run_spec.optimizer, start.float32(), got))
        spread = spread_of(ref, spread_runs)
        res.rows += _compare(got, ref, spread, unit, f"@ step {t} ({backend} {precision} vs "
                                                     f"float64)", t)
    return res


def _compare(got: dict, ref: dict, spread: dict, unit, label: str, t: int) -> list:
    """[(step, key, Worst)] in causal order: node outputs, loss, gradients, state, parameters,
    optimizer slots; the parameters elementwise, every other tensor normwise (its largest
    spread), as the float32 tier."""
    order = ("nodes", "loss", "grads", "state", "params", "opt")
    scales: dict = {}
    for k, v in ref.items():
        g = k if k.startswith("nodes/") else group(k)
        if np.isfinite(v).all() and v.size:
            scales[g] = max(scales.get(g, 0.0), float(np.max(np.abs(v))))
    rows = []
    for k in sorted(ref, key=lambda k: order.index(k.split("/", 1)[0])):
        g = k if k.startswith("nodes/") else group(k)
        where = f"{k} {label}"
        if k not in got or np.shape(got[k]) != np.shape(ref[k]):
            rows.append((t, k, Worst(where=f"{where} (missing or misshapen)", abs_err=np.inf,
                                     rel_err=np.inf, tolerance=0.0)))
            continue
        s = spread[k]
        if not k.startswith(ELEMENTWISE) and s.size:
            s = np.full_like(s, np.max(s))
        rows.append((t, k, _worst(got[k], ref[k], s, scales.get(g, 0.0), where, LOW_MULTIPLE,
                                  LOW_FLOOR, LOW_ULPS, unit(k))))
    return rows
