"""float32 bounds from measured rounding noise (DESIGN section 11): stochastic arithmetic.

A fixed float32 tolerance is wrong both ways: too tight where a ReLU or max-pool decision sits
within rounding of its kink, too loose for a float32 bug in a well-conditioned step. So the
float32 tier measures, at each step, how much float32 rounding itself can move every element of
the step's result, the way Monte Carlo arithmetic (Verificarlo, CADNA) does:

* the step is re-run in float64 from the same state ``NOISE_RUNS`` (K) times, each time with every
  input of the step (the batch's features, float labels, parameters, model state, optimizer
  state) multiplied elementwise by 1 + U·ξ, ξ ~ uniform(-1, 1), U = 2^-24 the float32 unit
  roundoff: a random rounding error of exactly the size storing the state in float32 makes;
* the *spread* of an element is max − min over the unperturbed float64 result and the K
  perturbed ones. Where the step is smooth the spread is ~ U · condition · |value|; where a
  decision flips under rounding (a ReLU at its kink), some run usually flips it too and the
  spread of the affected gradients jumps with it;
* a float32 result r of a backend, computed from the same state rounded to float32, is held
  elementwise to the unperturbed float64 result f:

      |r − f| <= NOISE_MULTIPLE · spread + NOISE_FLOOR · U · scale

  with ``scale`` the largest magnitude in the element's group (all gradients of the step, all
  parameters, all running statistics, one optimizer slot, the loss, the eval output: as
  ``compare.group_scales``).

Why these constants (README, Conformance, has the measurements):

* K = 4: the range of 5 samples covers ~2.3 standard deviations of a smooth element's noise;
  every run costs one float64 step per reference backend, so K stays small.
* c = NOISE_MULTIPLE = 16: the perturbation models the rounding of the step's *inputs* only; a
  float32 step also rounds every intermediate (each layer's output, each partial sum, the update
  arithmetic), which adds noise of the same order per operation, and one float32 run can sit at
  3-4 standard deviations where 5 samples span ~2.3. A factor 2-3 each way gives 16. It is still
  small against a semantic bug (relative errors of 1e-3 and more, i.e. thousands of times the
  noise of a smooth step) and tight enough for a float32-only arithmetic bug of 1e-5 relative in
  one factor of the update (Adam's bias correction from float32 betas: tests/cross/test_traps.py).
* NOISE_FLOOR = 4 (in units of U · scale, i.e. 2.4e-7 of the group's largest magnitude): where
  the spread is zero or tiny (an element fixed by the state alone, a parameter near zero whose
  update is rounded in float32) a float32 result still carries its own rounding, a few U of the
  values it was computed from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rosetta.conformance.compare import Worst, group_of
from rosetta.conformance.trajectory import eval_outputs
from rosetta.initializers import rng_for

U = 2.0 ** -24
NOISE_RUNS = 4
NOISE_MULTIPLE = 16.0
NOISE_FLOOR = 4.0

# causal order of a step's result (diagnose.ORDER), then the eval output
ORDER = ("loss", "grads", "state", "params", "opt", "eval")


def perturb(value, rng: np.random.Generator, amplitude: float = U):
    """``value`` (an array, or a dict of arrays) with every float element x replaced by
    x · (1 + amplitude · ξ), ξ ~ uniform(-1, 1); integer arrays (class ids, token ids, lengths)
    are left alone."""
    if isinstance(value, dict):
        return {k: perturb(v, rng, amplitude) for k, v in value.items()}
    a = np.asarray(value)
    if a.dtype.kind != "f":
        return a
    return a * (1.0 + amplitude * rng.uniform(-1.0, 1.0, a.shape))


def to_float32(value):
    """``value`` (an array or a dict of arrays) with float arrays rounded to float32."""
    if isinstance(value, dict):
        return {k: to_float32(v) for k, v in value.items()}
    a = np.asarray(value)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


@dataclass
class Start:
    """Where a teacher-forced step starts: parameters, model state, the optimizer state after
    ``step`` updates, and ``step`` (the number of the update the step applies)."""

    params: dict
    state: dict
    opt: dict
    step: int

    @classmethod
    def of(cls, traj, t: int) -> "Start":
        """The state a trajectory reached before its update ``t``."""
        return cls({k: v[t] for k, v in traj.params.items()},
                   {k: v[t] for k, v in traj.state.items()},
                   {k: v[t - 1] for k, v in traj.opt.items()} if t else {}, t)

    def perturbed(self, rng) -> "Start":
        return Start(perturb(self.params, rng), perturb(self.state, rng), perturb(self.opt, rng),
                     self.step)

    def float32(self) -> "Start":
        return Start(to_float32(self.params), to_float32(self.state), to_float32(self.opt),
                     self.step)


def run_step(prog, start: Start, x, y, masks=None) -> dict:
    """One training step of ``prog`` from ``start``: {"loss", "grads/<path>", "params/<path>",
    "state/<path>", "opt/<slot>/<path>"}, the last three after the update."""
    prog.load(start.params, start.state)
    if start.step:
        prog.load_optimizer_state(start.opt, start.step)
    loss, grads = prog.gradients(x, y, masks=masks) if masks else prog.gradients(x, y)
    prog.train_step(x, y, masks=masks) if masks else prog.train_step(x, y)
    out = {"loss": np.asarray(loss, np.float64)}
    for cat, tree in (("grads", grads), ("params", prog.export_params()),
                      ("state", prog.export_state()), ("opt", prog.export_optimizer_state())):
        out.update({f"{cat}/{k}": np.asarray(v, np.float64) for k, v in tree.items()})
    return out


def step_result(traj, t: int) -> dict:
    """A trajectory's step ``t`` in the keys of ``run_step``."""
    out = {"loss": np.asarray(traj.loss[t], np.float64)}
    for cat in ("grads", "params", "state", "opt"):
        i = t + 1 if cat in ("params", "state") else t
        out.update({f"{cat}/{k}": v[i] for k, v in getattr(traj, cat).items()})
    return out


def run_eval(prog, params: dict, state: dict, x) -> dict:
    """The eval-mode output (running statistics, dropout off) at ``params``, ``state``."""
    prog.load(params, state)
    return {f"eval/{k}": np.asarray(v, np.float64)
            for k, v in eval_outputs(prog.forward(x, training=False)).items()}


@dataclass
class Measured:
    """The float64 result of a step (``ref``) and each element's spread."""

    ref: dict
    spread: dict


def _spread(ref: dict, runs: list[dict]) -> Measured:
    spread = {}
    for k, v in ref.items():
        stack = np.stack([v] + [r[k] for r in runs])
        spread[k] = stack.max(axis=0) - stack.min(axis=0)
    return Measured(ref, spread)


NOISE_RATE = 0.5   # the inserted nodes' rate: the keep-mask's 1 / (1 - rate) is exact


def noisy_spec(spec):
    """(spec', names): ``spec`` with a Dropout node ``<node>_noise32`` after every node with a
    float output, every consumer (and the outputs) reading it instead. Fed the mask
    (1 - rate)·(1 + U·ξ) (``noise_masks``) it multiplies the node's output by 1 + U·ξ in the
    training forward, and the gradient flowing back through it by the same factor: the rounding
    of every intermediate result, on every backend, through the masks they already inject.
    Parameter and state paths are unchanged."""
    from rosetta.graph import Graph, Node
    from rosetta.spec import TrainSpec

    g = spec.model
    taken = {n.name for n in g.nodes} | {i.name for i in g.inputs}
    renamed, nodes = {}, []
    for n in g.nodes:
        nodes.append(Node(n.name, n.op, dict(n.attrs),
                          tuple(renamed.get(s, s) for s in n.inputs)))
        if n.out_type.kind != "float":
            continue
        name = f"{n.name}_noise32"
        while name in taken:
            name += "_"
        taken.add(name)
        nodes.append(Node(name, "Dropout", {"rate": NOISE_RATE}, (n.name,)))
        renamed[n.name] = name
    graph = Graph(g.inputs, nodes, [renamed.get(o, o) for o in g.outputs], name=g.name)
    out = TrainSpec(graph, spec.loss, spec.optimizer, spec.data, spec.steps, spec.seed,
                    spec.description)
    return out, list(renamed.values())


def noise_masks(graph, names, batch: int, rng) -> dict:
    """Masks (1 - rate)·(1 + U·ξ) for the inserted nodes ``names`` of ``noisy_spec``."""
    by_name = {n.name: n for n in graph.nodes}
    return {name: (1.0 - NOISE_RATE) * perturb(np.ones((batch, *by_name[name].out_type.shape)),
                                                rng) for name in names}


class NoiseProbe:
    """A float64 program of ``noisy_spec(spec)`` that measures the spread of steps."""

    def __init__(self, spec, backend: str, device: str = "cpu", runs: int = NOISE_RUNS,
                 seed: str = ""):
        from rosetta.backend_registry import get_backend

        self.spec, self.names = noisy_spec(spec)
        self.prog = get_backend(backend).compile(self.spec, dtype="float64", device=device)
        self.runs, self.seed = runs, seed

    def step(self, start: Start, x, y, masks, ref: dict) -> Measured:
        """The spread of step ``start.step`` around ``ref`` (its unperturbed float64 result):
        ``runs`` re-runs with the state, the batch and every intermediate result perturbed
        (the dropout ``masks`` of the spec, 0/1, are never perturbed)."""
        rng = rng_for(0, f"noise/{self.seed}/{start.step}")
        batch = len(np.asarray(y))
        runs = [run_step(self.prog, start.perturbed(rng), perturb(x, rng), perturb(y, rng),
                         {**(masks or {}), **noise_masks(self.spec.model, self.names, batch,
                                                         rng)})
                for _ in range(self.runs)]
        return _spread(ref, runs)

    def eval(self, params, state, x, ref: dict) -> Measured:
        """The spread of the eval-mode output around ``ref``: parameters, state and inputs
        perturbed (in eval mode no mask applies, so intermediates are not)."""
        rng = rng_for(0, f"noise/{self.seed}/eval")
        return _spread(ref, [run_eval(self.prog, perturb(params, rng), perturb(state, rng),
                                      perturb(x, rng)) for _ in range(self.runs)])


def group(key: str) -> str:
    """The group whose largest magnitude scales the floor: the category, and for optimizer
    state the slot (``opt/m``)."""
    cat, _, rest = key.partition("/")
    slot = group_of(rest)
    return f"{cat}/{slot}" if slot else cat


def compare_noisy(got: dict, m: Measured, label: str,
                  multiple: float = NOISE_MULTIPLE, floor: float = NOISE_FLOOR) -> list:
    """[(key, Worst)] for every tensor of ``m.ref`` in ``ORDER``: the element whose error uses
    most of its bound ``multiple · spread + floor · U · scale``. The Worst's ``rel_err``,
    ``tolerance`` and ``noise`` are that element's error, bound and spread divided by the
    group's scale (so rel_err <= tolerance is the test, as in every tier); a key missing from
    ``got`` is an infinite error."""
    scales: dict = {}
    for k, v in m.ref.items():
        if np.isfinite(v).all() and v.size:
            scales[group(k)] = max(scales.get(group(k), 0.0), float(np.max(np.abs(v))))
    out = []
    for k in sorted(m.ref, key=lambda k: ORDER.index(k.split("/", 1)[0])):
        where = f"{k} {label}"
        if k not in got or np.shape(got[k]) != np.shape(m.ref[k]):
            out.append((k, Worst(where=f"{where} (missing or misshapen)", abs_err=np.inf,
                                 rel_err=np.inf, tolerance=0.0)))
            continue
        out.append((k, _worst(got[k], m.ref[k], m.spread[k], scales.get(group(k), 0.0), where,
                              multiple, floor)))
    return out


def _worst(a, b, spread, scale, where, multiple, floor) -> Worst:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return Worst(where=where, tolerance=1.0, noise=0.0)
    err = np.abs(a - b)
    err = np.where(np.isfinite(err), err, np.where(a == b, 0.0, np.inf))
    bound = multiple * spread + floor * U * scale
    ratio = np.where(err == 0, 0.0, err / np.where(bound > 0, bound, np.nan))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    i = np.unravel_index(int(np.argmax(ratio)), a.shape)
    s = scale if scale > 0 else 1.0
    return Worst(where, tuple(int(j) for j in i), float(err[i]), float(err[i] / s), float(a[i]),
                 float(b[i]), float(bound[i] / s), noise=float(spread[i] / s))


def use(w: Worst) -> float:
    """How much of its bound an error uses (<= 1 passes)."""
    if w.rel_err == 0:
        return 0.0
    return np.inf if not w.tolerance else w.rel_err / w.tolerance


def worse(a: Worst | None, b: Worst) -> Worst:
    return b if a is None or use(b) > use(a) else a
