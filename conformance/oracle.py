"""The oracle tier: a backend against independent NumPy float64 references.

* forward of a spec (every op in it) vs ``Graph.reference_forward`` (bound ``ORACLE_FORWARD``);
* gradients vs central finite differences of the reference loss (``ORACLE_FINITE_DIFFERENCE``);
* optimizer + schedule updates vs ``Optimizer.update`` fed the backend's own gradients, which
  isolates the update rule from the gradient computation (``ORACLE_OPTIMIZER``).

Dropout (docs/design.md section 5): every training forward here, the backend's and the reference's (the
finite differences included), uses the same neutral keep-masks (``runner.dropout_masks``, keyed
on (seed, step, node)), so a spec with dropout is checked with dropout on.
"""

from __future__ import annotations

import numpy as np

from rosetta.backend_registry import get_backend
from rosetta.data import sample_inputs  # noqa: F401  (re-exported for the tests)
from rosetta.conformance.compare import Worst, compare_arrays, compare_trees
from rosetta.conformance.runner import dropout_masks
from rosetta.conformance.tiers import (ORACLE_FINITE_DIFFERENCE, ORACLE_FORWARD,
                                       ORACLE_OPTIMIZER)

FD_STEP = 1e-6
FD_MIN_STEP = 1e-8    # the smallest stencil (rounding noise ~ 1e-16 |loss| / h stays ~1e-8)
FD_KINK = 1e-3        # one-sided slopes this far apart (relative) mean a kink inside the stencil
FD_ABS_NOISE = 1e-9   # central differences carry ~1e-10 absolute noise at this step
# relative errors against finite differences are floored so that an absolute error at the noise
# level reads as at most the bound: floor = FD_ABS_NOISE / ORACLE_FINITE_DIFFERENCE
FD_FLOOR = FD_ABS_NOISE / ORACLE_FINITE_DIFFERENCE


def masks_for(spec, batch: int, step: int = 0):
    """The neutral keep-masks of ``step`` for a batch of ``batch`` (None without dropout)."""
    return dropout_masks(spec.model, spec.seed, step, batch) or None


def sample_targets(spec, batch: int, seed: int = 1) -> np.ndarray:
    """Valid targets for the spec's loss: class ids (about a third of them ``ignore_label`` for
    the sequence cross-entropy), 0/1 for binary cross-entropy, probability rows with some exact
    zeros for KL divergence (0 log 0 = 0), else normals."""
    rng = np.random.default_rng(seed)
    out = spec.model.output_type.shape
    kind = spec.loss.kind
    if spec.loss.label_kind == "int":
        y = rng.integers(0, out[-1], (batch, *out[:-1])).astype(np.int64)
        if kind == "sequence_cross_entropy":
            y[rng.random(y.shape) < 0.3] = spec.loss.ignore_label
        return y
    if kind == "binary_cross_entropy":
        return (rng.random((batch, *out)) > 0.5).astype(np.float64)
    if kind == "kl_divergence":
        p = np.exp(rng.standard_normal((batch, *out)))
        p[rng.random(p.shape) < 0.25] = 0.0
        p[..., 0] += 1e-3   # no row of zeros alone
        return p / p.sum(axis=-1, keepdims=True)
    return rng.standard_normal((batch, *out))


def reference_loss(spec, params, inputs, labels, masks=None) -> float:
    out = spec.model.reference_forward(params, inputs, state=spec.model.init_state(),
                                       training=True, dropout_masks=masks)
    return spec.loss.reference(out, labels)


def finite_differences(spec, params, inputs, labels, path, max_entries=12, seed=0,
                       masks=None):
    """Central differences of the reference loss for up to ``max_entries`` entries of a tensor.

    The stencil shrinks where the loss is not smooth within it. With f0, f+ and f- the loss at
    p, p + h and p - h, the central difference (f+ - f-) / 2h is the mean of the one-sided
    slopes; where a ReLU or a max switches inside (p - h, p + h) (a kink), the derivative at p is
    one of them, so the central difference can be off by up to spread = |(f+ - f0) - (f0 - f-)| /
    2h. When spread exceeds ``FD_KINK`` of the slope, h shrinks tenfold (down to
    ``FD_MIN_STEP``) until the kink lies outside. A smooth loss gives spread ~ h |f''| / 2 and
    keeps h = ``FD_STEP``; a wrong gradient is still caught, since every h agrees there.
    (Measured: the zoo LeNet at h = 1e-6 gave 0.1082 for a weight whose derivative is 0.1180,
    1e-7 and 1e-8 both 0.1180: a ReLU switching within 1e-6.)

    Entries in a row the parameter declares ``zero_grad_rows`` (Embedding's ``padding_idx``)
    have derivative 0 by definition, not the forward's slope: they read exactly 0.
    """
    p = params[path]
    zero_rows = set(_zero_grad_rows(spec, path))
    picks = np.random.default_rng(seed).permutation(p.size)[:max_entries]
    idx = [np.unravel_index(int(i), p.shape) for i in picks]
    base = reference_loss(spec, params, inputs, labels, masks)
    out = []
    for i in idx:
        if i and int(i[0]) in zero_rows:
            out.append(0.0)
            continue
        h = FD_STEP
        while True:
            up = {k: v.copy() for k, v in params.items()}
            dn = {k: v.copy() for k, v in params.items()}
            up[path][i] += h
            dn[path][i] -= h
            f_up = reference_loss(spec, up, inputs, labels, masks)
            f_dn = reference_loss(spec, dn, inputs, labels, masks)
            central = (f_up - f_dn) / (2 * h)
            spread = abs((f_up - base) - (base - f_dn)) / (2 * h)
            if spread <= FD_KINK * max(abs(central), FD_ABS_NOISE / FD_STEP) or h <= FD_MIN_STEP:
                break
            h /= 10
        out.append(central)
    return idx, np.array(out)


def _zero_grad_rows(spec, path) -> tuple:
    """The rows of parameter ``path`` whose gradient is zero by definition: ``ParamDef``'s
    (Embedding's padding row), or the padding row of a ``Parameter`` table that only Gathers
    with the same ``padding_idx`` read (a shared table's lookups, each passing none to it)."""
    g = spec.model
    d = g.param_defs().get(path)
    if d is None:
        return ()
    if d.zero_grad_rows:
        return d.zero_grad_rows
    node = path.rsplit("/", 1)[0]
    readers = [n for n in g.nodes if node in n.inputs]
    pads = {n.attrs.get("padding_idx") if n.op == "Gather" and n.inputs[0] == node else None
            for n in readers}
    return (pads.pop(),) if len(pads) == 1 and None not in pads and readers else ()


def compile_float64(spec, backend):
    return get_backend(backend).compile(spec, dtype="float64", device="cpu")


def check_forward(spec, backend, batch=4, seed=0) -> Worst:
    """Worst gap of the backend's forward (eval and training mode) to the reference."""
    prog = compile_float64(spec, backend)
    params = spec.model.init_params(spec.seed)
    x = sample_inputs(spec.model, batch, seed)
    masks = masks_for(spec, batch)
    worst = Worst(tolerance=ORACLE_FORWARD)
    for training in (False, True):
        m = masks if training else None
        ref = spec.model.reference_forward(params, x, training=training, dropout_masks=m)
        worst = worst.max(compare_arrays(prog.forward(x, training=training, masks=m), ref,
                                         f"{spec.name} output (training={training})"))
    worst.tolerance = ORACLE_FORWARD
    return worst


def check_gradients(spec, backend, batch=4, seed=0) -> Worst:
    """Worst gap of the backend's gradients to finite differences of the reference loss.

    Relative errors are floored at ``FD_FLOOR`` (1e-3): an entry whose gradient is zero up to the
    finite-difference noise (~1e-10) compares absolutely.
    """
    prog = compile_float64(spec, backend)
    params = spec.model.init_params(spec.seed)
    x = sample_inputs(spec.model, batch, seed)
    y = sample_targets(spec, batch, seed + 1)
    masks = masks_for(spec, batch)
    loss, grads = prog.gradients(x, y, masks=masks)
    worst = compare_arrays(loss, reference_loss(spec, params, x, y, masks), "loss")
    if set(grads) != set(params):
        return Worst(where=f"gradient paths differ: {sorted(set(grads) ^ set(params))}",
                     rel_err=np.inf, abs_err=np.inf, tolerance=ORACLE_FINITE_DIFFERENCE)
    for path in params:
        idx, fd = finite_differences(spec, params, x, y, path, masks=masks)
        got = np.array([grads[path][i] for i in idx])
        worst = worst.max(compare_arrays(got, fd, f"d loss / d {path}", floor_fraction=FD_FLOOR,
                                         scale=1.0))
        rows = list(_zero_grad_rows(spec, path))
        if rows and np.any(np.asarray(grads[path])[rows] != 0):   # exactly zero, every entry
            return Worst(where=f"d loss / d {path}: rows {rows} (zero by definition) are not 0",
                         rel_err=np.inf, abs_err=np.inf, tolerance=ORACLE_FINITE_DIFFERENCE)
    worst.tolerance = ORACLE_FINITE_DIFFERENCE
    return worst


def check_optimizer(spec, backend, steps=6, batch=8) -> Worst:
    """Each of ``steps`` updates vs the NumPy reference of the canonical math (fed the backend's
    gradients at the backend's parameters), with the spec's learning-rate schedule: parameters and
    the exported optimizer state (``velocity``, ``m``, ``v``)."""
    prog = compile_float64(spec, backend)
    opt = spec.optimizer
    state = opt.init_state(prog.export_params())
    worst = Worst(tolerance=ORACLE_OPTIMIZER)
    for t in range(steps):
        x = sample_inputs(spec.model, batch, seed=t)
        y = sample_targets(spec, batch, seed=100 + t)
        masks = masks_for(spec, batch, t)
        params = prog.export_params()
        _, grads = prog.gradients(x, y, masks=masks)
        expected, state = opt.update(params, grads, state, t)
        prog.train_step(x, y, masks=masks)
        worst = worst.max(compare_trees(prog.export_params(), expected,
                                        f"{opt.kind} params @ step {t}"))
        worst = worst.max(compare_trees(prog.export_optimizer_state(), opt.slots(state),
                                        f"{opt.kind} state @ step {t}"))
    worst.tolerance = ORACLE_OPTIMIZER
    return worst
