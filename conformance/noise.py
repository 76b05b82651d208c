"""float32 bounds from measured rounding noise (docs/design.md section 11): stochastic arithmetic.

A fixed float32 tolerance is wrong both ways: too tight where a ReLU or max-pool decision sits
within rounding of its kink, too loose for a float32 bug in a well-conditioned step. So the
float32 tier measures, at each step, how much float32 rounding itself moves every element of the
step's result, in the spirit of Monte Carlo arithmetic (Verificarlo, CADNA):

* the step is re-run ``NOISE_RUNS`` (K) times in float32 from the same state on every backend,
  each time with every input of the step (float labels, parameters, model state, optimizer
  state) rounded to float32 and moved by a random k ulps, k in {-1, 0, 1} (a float32 rounding
  error: at most 2U relative, U = 2^-24 the unit roundoff), and the batch's features by U times
  their largest magnitude (``perturb_features``), and the batch's examples taken in a random
  order (``reorder``: the step is a function of the batch as a set, so no float64 result moves,
  tests/cross/test_noise_order.py, but every sum over the batch is summed in another order). A
  backend's float32 is held within ``noise_spread``: the larger of the spread of the other
  backends' runs pooled (another summation order is noise too) and the spread of each backend's
  own runs, its own included (its own summation order is its own noise: measured on the zoo
  resnet at step 2, torch's float32 flipped a ReLU decision that none of the 8 runs of TensorFlow
  and JAX flipped, 26x outside their spread, and that torch's own reordered runs flipped too).
  A bug that is a bias (every run of the backend computes it alike) stays outside the bound.
  Each run rounds every intermediate result (each partial sum of a matmul or convolution, each
  update) at different places, so the runs differ
  by the rounding noise of the whole float32 step; where a decision flips under rounding (a ReLU
  at its kink) some run flips it too and the spread of the affected gradients jumps with it.
  (Perturbing and re-running in float64 instead measures only the noise of the rounded inputs,
  even with every node's output perturbed too: on the zoo tutorial_cnn a float32 weight gradient
  summed over 32K terms was 30x further from float64 than that spread, an honest float32 result.
  A perturbation below half an ulp would round away: hence whole ulps.)
* the *spread* of an element is max − min over the K runs. A decision that flips in one backend
  need not flip in the reference's runs (its summation order decides it, and the runs perturb only
  the inputs): measured on the zoo resnet, gradients 4.7e-4 to 1e-3 of the gradient scale apart
  from float64 at step 0 beside an elementwise spread of ~4e-8. But some unit of the tensor flips
  in some run, so every tensor other than the updated parameters is held to its largest spread
  (normwise, as float32 rounding scales with the values), while each updated parameter keeps its
  own spread (an elementwise update, where a float32-only bug shows against a tight bound).
  The float64 result is not among the runs: an error every float32 run shares (a float32-only
  bug: a constant rounded to float32 inside the update) is a bias, not noise, and stays outside
  the bound;
* a float32 result r of a backend, from the same state rounded to float32, is held to the float64
  result f of the same step, element by element:

      |r − f| <= NOISE_MULTIPLE · spread + U · (NOISE_ULPS · |f| + NOISE_FLOOR · scale)

  with ``scale`` the largest magnitude in the element's group (all gradients of the step, all
  parameters, all running statistics, one optimizer slot, the loss, the eval output: as
  ``compare.group_scales``).

Why these constants (docs/conformance/float32.md has the measurements):

* K = 4: every run costs one float32 step per backend and checked step; the range of 4 samples
  spans ~2 standard deviations of a smooth element's noise.
* c = NOISE_MULTIPLE = 16: one float32 result can sit 3-4 standard deviations from the mean where
  4 samples span ~2, and its error to float64 adds the rounding bias of its own summation order
  (which the perturbation re-randomizes but does not reproduce): a factor 2 each way, and 2-4 for
  the tail of the many elements of a step, gives 16. It stays small against a semantic bug
  (relative errors of 1e-3 and more, thousands of times the noise of a smooth step) and against
  a float32-only arithmetic bug of 1e-5 relative in one factor of the update (Adam's bias
  correction from float32 betas: tests/cross/test_traps.py).
* NOISE_ULPS = 128 (64 ulps of the element itself): a float32 result is rounded, and a large
  well-conditioned sum (a weight gradient over the batch and the image, a matmul) keeps the
  rounding error of its summation order while a one-ulp move of its inputs leaves it on the same
  float32 value, so re-runs agree while another backend's summation order lands elsewhere:
  measured, elements whose runs agreed exactly were up to 14 U from float64 on tutorial_cnn, and
  56 U on a convolution gradient through BatchNorm (TensorFlow's float32 against float64, where
  torch's float32 runs agreed to the last bit). 128 U = 7.6e-6 stays below the 1e-5 a
  float32-only bug makes in the factor it corrupts, and the update of a parameter near zero,
  where the bound is the 4 U of the scale, shows such a bug at once.
* NOISE_FLOOR = 4 (in units of U · scale: 2.4e-7 of the group's largest magnitude): where the
  spread is zero or tiny (an element set by the state alone, a parameter near zero whose update is
  rounded) a float32 result still carries its own rounding, a few U of the values it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rosetta.conformance.compare import Worst, group_of
from rosetta.conformance.trajectory import eval_outputs
from rosetta.initializers import rng_for

U = 2.0 ** -24
NOISE_RUNS = 4
NOISE_MULTIPLE = 16.0
NOISE_FLOOR = 4.0
NOISE_ULPS = 128.0

# the parameters after the update are held to each element's own spread; every other tensor (the
# loss, gradients, running statistics, optimizer slots, the eval output: sums over the batch and
# the network) to its largest spread, normwise (see the module docstring)
ELEMENTWISE = "params/"

# causal order of a step's result (diagnose.ORDER), then the eval output; ``update`` rows hold
# each parameter's update against its own scale (``update_slopes``), after the elementwise
# parameter rows
ORDER = ("loss", "grads", "state", "params", "update", "opt", "eval")

# the floor of an ``update`` row, in units of U (a relative error of the update as a whole, so
# scale-free): a few roundings of the update's scalar factors (the learning rate, a bias
# correction) that a float32 step may legitimately make
UPDATE_FLOOR = 4.0


UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": U, "float16": 2.0 ** -11,
                 "bfloat16": 2.0 ** -8}


def unit_roundoff(dtype: str) -> float:
    """The unit roundoff of a float format (half the distance from 1 to the next number)."""
    return UNIT_ROUNDOFF[dtype]


def perturb_at(value, unit: float, rng: np.random.Generator):
    """``value`` (an array, or a dict of arrays) rounded to float32 and moved by k · 2 · unit
    relative, k uniform in {-1, 0, 1} per element: a random rounding error of a format of unit
    roundoff ``unit`` (one ulp of it), the generalisation of ``perturb`` (float32's, whole
    float32 ulps) to a low format. Zeros stay zero; integer arrays are left alone."""
    if isinstance(value, dict):
        return {k: perturb_at(v, unit, rng) for k, v in value.items()}
    a = np.asarray(value)
    if a.dtype.kind != "f":
        return a
    a = a.astype(np.float64)
    k = rng.integers(-1, 2, a.shape)
    return (a * (1.0 + 2.0 * unit * k)).astype(np.float32)


def perturb(value, rng: np.random.Generator):
    """``value`` (an array, or a dict of arrays) rounded to float32 and then moved by k ulps,
    k uniform in {-1, 0, 1} for every element: a random float32 rounding error of the size that
    storing it in float32 makes (at most one ulp, 2^-23 relative). Zeros stay zero (storing 0
    is exact; a denormal below it would turn a second-moment slot negative). Integer arrays
    (class ids, token ids, lengths) are left alone."""
    if isinstance(value, dict):
        return {k: perturb(v, rng) for k, v in value.items()}
    a = np.asarray(value)
    if a.dtype.kind != "f":
        return a
    a = a.astype(np.float32)
    k = rng.integers(-1, 2, a.shape) * (a != 0)   # a stored zero is exact: it stays zero
    return (a + np.spacing(a) * k).astype(np.float32)


def perturb_features(value, rng: np.random.Generator):
    """The batch's float features moved by U times their largest magnitude, uniformly: zeros
    (the blank pixels of an image) move too, as the partial sums they enter are rounded at the
    scale of the sum, not of each term."""
    if isinstance(value, dict):
        return {k: perturb_features(v, rng) for k, v in value.items()}
    a = np.asarray(value)
    if a.dtype.kind != "f" or not a.size:
        return a
    return (a + U * float(np.max(np.abs(a))) * rng.uniform(-1.0, 1.0, a.shape)).astype(
        np.float32)


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
        """In float32, every element moved by a random ulp (``perturb``)."""
        return Start(perturb(self.params, rng), perturb(self.state, rng), perturb(self.opt, rng),
                     self.step)

    def float32(self) -> "Start":
        return Start(to_float32(self.params), to_float32(self.state), to_float32(self.opt),
                     self.step)


def run_step(prog, start: Start, x, y, masks=None, loss_scale=None) -> dict:
    """One training step of ``prog`` from ``start``: {"loss", "grads/<path>", "params/<path>",
    "state/<path>", "opt/<slot>/<path>"}, the last three after the update; ``loss_scale`` a
    mixed_float16 program's loss-scale state to start from (default: the rule's initial)."""
    prog.load(start.params, start.state)
    if start.step:
        prog.load_optimizer_state(start.opt, start.step)
    prog.load_loss_scale(loss_scale)
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
    runs: list = field(default_factory=list)   # the perturbed float32 results
    # the first perturbed run, repeated after the others, gave the same result bit for bit: the
    # step is a function of the state it was given (``noise_spread`` counts the runs as noise)
    reproducible: bool = True


def _spread(ref: dict, runs: list[dict], again: dict) -> Measured:
    """max - min over the runs (not the reference: a float32 bias common to every run, a
    float32-only bug, is not noise); the runs are kept (``noise_spread``), and ``again`` (the
    first run repeated last) says whether they are reproducible."""
    same = all(k in again and np.array_equal(runs[0][k], again[k], equal_nan=True)
               for k in runs[0])
    return Measured(ref, spread_of(ref, runs), runs, reproducible=same)


def spread_of(ref: dict, runs: list[dict]) -> dict:
    return {k: np.max([r[k] for r in runs], axis=0) - np.min([r[k] for r in runs], axis=0)
            for k in ref}


def noise_spread(ref: dict, runs: dict, held: str) -> dict:
    """The spread that bounds backend ``held``'s float32 result, element by element: the larger
    of the spread of the pooled runs of every other backend (``runs``: {backend: [perturbed
    float32 results]}) and the spread of each backend's own runs, ``held``'s included, where they
    are reproducible (``Measured.reproducible``: a step that depends on something outside the
    state it was given, hidden state that each run moves or a random draw, differs between runs
    for that reason, which is not rounding noise and must not widen a bound). Pooling
    the others counts where their summation orders differ (a ReLU that TensorFlow rounds to one
    side and torch to the other); one backend's own runs count its own summation order, the noise
    of the result being held. Runs of different backends are never pooled with ``held``'s: a bias
    of ``held`` against everyone (a bug, or a float32-only error every run of it repeats) would
    then be spread, and would widen its own bound. ``runs``: {backend: ``Measured``}."""
    others = [r for c, m in runs.items() if c != held for r in m.runs]
    out = spread_of(ref, others) if others else {k: np.zeros_like(v) for k, v in ref.items()}
    for m in runs.values():
        if m.runs and m.reproducible:
            own = spread_of(ref, m.runs)
            out = {k: np.maximum(out[k], own[k]) for k in ref}
    return out


def reorder(value, order):
    """``value`` (an array, a dict of arrays, or None) with its examples (axis 0) taken in
    ``order``."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: reorder(v, order) for k, v in value.items()}
    return np.asarray(value)[order]


UPDATED = ("params/", "opt/")   # the results of the optimizer's update, held given the gradients


def update_reference(optimizer, start: Start, grads: dict) -> dict:
    """{"params/<path>", "opt/<slot>/<path>"}: the NumPy float64 update of the canonical math
    (``optimizer.update``, the oracle tier's) from ``start`` (the parameters and optimizer state
    a float32 step began from, float32 values) with ``grads`` ({"grads/<path>": the step's own
    float32 gradients}).

    A float32 step's parameters after the update are held against this, not against the float64
    step's: the gradients are held on their own (``grads/`` rows), and where a ReLU flipped under
    float32 rounding a gradient is legitimately off by much more than an update's rounding, which
    the update would carry into the parameters (measured: resnet_digits, TensorFlow on two
    devices, a kernel gradient 9 % off float64 at one element, lr x (1 + momentum) x that in the
    parameter, 3x its elementwise bound). What is left to hold is the update's own arithmetic,
    where a float32-only optimizer bug lives."""
    params = {k: np.asarray(v, np.float64) for k, v in start.params.items()}
    state = (optimizer.state_from_slots(params, start.opt) if start.step
             else optimizer.init_state(params))
    g = {k: np.asarray(grads[f"grads/{k}"], np.float64) for k in params}
    new_p, new_s = optimizer.update(params, g, state, start.step)
    out = {f"params/{k}": v for k, v in new_p.items()}
    out.update({f"opt/{k}": np.asarray(v, np.float64)
                for k, v in optimizer.slots(new_s).items()})
    return out


def update_slopes(result: dict, upd: dict, start: Start, store=np.float32) -> dict:
    """{"update/<path>": s}: for each parameter, the component of the step's update error along
    the reference update itself,

        s = <p1 - store(p1_ref), u> / <u, u>,   u = p1_ref - p0,

    with p0 the start, p1 the step's parameters after its update, p1_ref the float64 update of
    the step's own gradients from the same start (``update_reference``) and ``store`` the
    format the parameters are kept in (float32 here). s is the relative error of the update as
    a whole (0 for the reference itself): an optimizer rule off by a factor (1 + e) in every
    element (Adam's bias corrections from betas rounded to float32, a learning rate rounded
    twice) gives s = e, while the rounding of each element averages out over the elements.
    The reference is rounded to the storage format first: storing p1 moves it by up to half an
    ulp of p, and where every update has one size (Adam's first step, lr * sign(g)) that
    rounding is the same for every parameter of a binade, a bias of up to ~1e-5 of a 1e-3
    update that is no error of the optimizer (measured: 6.3e-7 on the zoo mlp, TensorFlow
    float32, without rounding the reference). The elementwise ``params/`` rows, bounded by the
    parameter's own rounding, cannot see an optimizer bias of 1e-5 of the update; this row holds
    it against the spread of s over the noise runs (``compare_noisy``). A parameter with no
    update (u = 0) has no row.

    Storing p1 and rounding the reference each move an element by at most half an ulp of the
    stored value, so storage alone can move s by up to

        b = Σ |u_i| · ulp(p1_ref_i) / <u, u>

    when every element rounds the same way, which happens where a parameter starts with one
    value everywhere and moves by one size (a norm scale at 1.0 under Adam: b was 2.8e-5 on the
    zoo transformer's LayerNorm scale, where the noise runs, rounding alike, spread by 1e-10).
    The row is therefore the part of s that storage cannot explain, sign(s) · max(0, |s| - b):
    0 for any storage rounding, s - b for an optimizer bias larger than it (the float32-betas
    trap's 7.7e-6 on the zoo mlp, whose kernels' b is below that)."""
    out = {}
    for k, p0 in start.params.items():
        key = f"params/{k}"
        if key not in upd or key not in result:
            continue
        ref = np.asarray(upd[key], np.float64)
        u = ref - np.asarray(p0, np.float64)
        uu = float(np.sum(u * u))
        if uu > 0 and np.shape(result[key]) == u.shape:
            e = np.asarray(result[key], np.float64) - ref.astype(store).astype(np.float64)
            slope = float(np.sum(e * u)) / uu
            b = float(np.sum(np.abs(u) * np.spacing(np.abs(ref).astype(store)))) / uu
            out[f"update/{k}"] = np.asarray(np.sign(slope) * max(0.0, abs(slope) - b))
    return out


def given_own_gradients(result: dict, optimizer, start: Start) -> dict:
    """``result`` (a float32 step's, from ``start``) with every updated tensor replaced by its
    difference from ``update_reference`` of its own gradients: the rounding error of the update
    alone, whose spread over the noise runs is the update's noise; and the ``update_slopes``
    of the step, whose spread is the noise of each update as a whole."""
    upd = update_reference(optimizer, start, result)
    out = {k: (v - upd[k] if k.startswith(UPDATED) and k in upd else v)
           for k, v in result.items()}
    out.update(update_slopes(result, upd, start))
    return out


def measure_step(prog32, start: Start, x, y, masks, ref: dict, runs: int = NOISE_RUNS,
                 seed: str = "", optimizer=None) -> Measured:
    """The spread of step ``start.step`` of the float32 program ``prog32`` around ``ref`` (the
    step's float64 result): ``runs`` float32 re-runs from the state and batch perturbed at U
    (the dropout ``masks``, 0/1, are never perturbed), each with the batch's examples in another
    random order (features, labels and masks alike), and the first run once more after the
    others (``Measured.reproducible``). With ``optimizer`` (the spec's), the updated tensors of
    each run are its differences from the update of its own gradients (``given_own_gradients``):
    their spread is the update's noise, for results held by ``update_reference``. A step is a
    function of the batch as a set (the loss
    is a mean over examples, BatchNorm's statistics are sums over them), so the order
    changes no float64 result, only the order of every sum over the batch: the reduction-order
    error that a one-ulp move of the inputs leaves in place (a long sum rounded to the same
    float32 value either way) is randomised too."""
    rng = rng_for(0, f"noise/{seed}/{start.step}")
    n = len(next(iter(y.values())) if isinstance(y, dict) else y)

    def one(args):
        r = run_step(prog32, *args)
        return r if optimizer is None else given_own_gradients(r, optimizer, args[0])

    out, first = [], None
    for _ in range(runs):
        order = rng.permutation(n)
        args = (start.perturbed(rng), perturb_features(reorder(x, order), rng),
                perturb(reorder(y, order), rng), reorder(masks, order))
        first = first or args
        out.append(one(args))
    return _spread(ref, out, one(first))


def measure_eval(prog32, params, state, x, ref: dict, runs: int = NOISE_RUNS,
                 seed: str = "") -> Measured:
    """The spread of the float32 eval-mode output, parameters, state and inputs perturbed."""
    rng = rng_for(0, f"noise/{seed}/eval")
    args = [(perturb(params, rng), perturb(state, rng), perturb(x, rng)) for _ in range(runs)]
    return _spread(ref, [run_eval(prog32, *a) for a in args], run_eval(prog32, *args[0]))


def group(key: str) -> str:
    """The group whose largest magnitude scales the floor: the category, and for optimizer
    state the slot (``opt/m``)."""
    cat, _, rest = key.partition("/")
    slot = group_of(rest)
    return f"{cat}/{slot}" if slot else cat


def compare_noisy(got: dict, m: Measured, label: str,
                  multiple: float = NOISE_MULTIPLE, floor: float = NOISE_FLOOR,
                  ulps: float = NOISE_ULPS) -> list:
    """[(key, Worst)] for every tensor of ``m.ref`` in ``ORDER``: the element whose error uses
    most of its bound ``multiple · spread + U · (ulps · |ref| + floor · scale)``. The Worst's
    ``rel_err``,
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
        spread = m.spread[k]
        if not k.startswith(ELEMENTWISE) and spread.size:
            spread = np.full_like(spread, np.max(spread))
        if k.startswith("update/"):   # a relative error already: a scale-free floor
            out.append((k, _worst(got[k], m.ref[k], spread, 1.0, where, multiple,
                                  UPDATE_FLOOR, ulps)))
            continue
        out.append((k, _worst(got[k], m.ref[k], spread, scales.get(group(k), 0.0), where,
                              multiple, floor, ulps)))
    return out


def _worst(a, b, spread, scale, where, multiple, floor, ulps, unit: float = U) -> Worst:
    """The element of ``a`` (against ``b``) that uses most of its bound ``multiple · spread +
    unit · (ulps · |b| + floor · scale)``; ``unit`` is the unit roundoff of the format the
    element is computed in (``U``, float32's, unless a precision policy says otherwise:
    ``unit_roundoff``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return Worst(where=where, tolerance=1.0, noise=0.0)
    err = np.abs(a - b)
    err = np.where(np.isfinite(err), err, np.where(a == b, 0.0, np.inf))
    bound = multiple * spread + unit * (ulps * np.abs(b) + floor * scale)
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


def eval_result(traj) -> dict:
    """A trajectory's eval-mode output in the keys of ``run_eval``."""
    return {f"eval/{k}": v for k, v in traj.eval.items()}
