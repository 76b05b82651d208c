"""Record training trajectories: every backend from the same neutral parameters and batches.

Dropout: in conformance mode (``dropout="inject"``, the default) keep-masks come from a neutral
NumPy RNG keyed on (seed, step, node) and are injected on every backend, so specs with dropout are
compared with dropout on. ``dropout="off"`` sets every rate to 0 instead. The mode is recorded.
"""

from __future__ import annotations

import numpy as np

from rosetta.backend import normalize_device
from rosetta.backend_registry import get_backend
from rosetta.conformance.trajectory import Trajectory, eval_outputs, spec_hash
from rosetta.data import batches, take
from rosetta.dropout import mask_draws
from rosetta.graph import Graph
from rosetta.initializers import rng_for
from rosetta.spec import TrainSpec
from rosetta.training import check_data, dataset_inputs, prepare_labels


def dropout_masks(graph: Graph, seed: int, step: int, batch: int) -> dict:
    """Keep-masks (1 keep, 0 drop) per node with dropout, from a neutral RNG on
    (seed, step, node); the drop probability is the node's ``rate`` (or ``dropout``) attribute."""
    masks = {}
    for d in mask_draws(graph):
        rng = rng_for(seed, f"dropout/{step}/{d.node}")
        masks[d.node] = (rng.random((batch, *d.shape)) >= d.rate).astype(np.float64)
    return masks


def without_dropout(spec: TrainSpec) -> TrainSpec:
    d = spec.to_json()
    for node in d["model"]["nodes"]:
        if node["op"] in ("Dropout", "StochasticDepth"):  # the ops with a ``rate``
            node["attrs"]["rate"] = 0.0
        elif "dropout" in node["attrs"]:  # dropout on attention weights
            node["attrs"]["dropout"] = 0.0
    out = TrainSpec.from_json(d)
    out.data = spec.data  # in-memory arrays and relative paths do not survive JSON
    return out


def batch_stream(spec: TrainSpec, steps: int, seed: int, dtype: str):
    """The (inputs, labels) of each step, identical for every backend."""
    ds = spec.data.load(model=spec.model)
    check_data(spec, ds)
    x = dataset_inputs(spec, ds.x_train, dtype)
    y = prepare_labels(spec, ds.y_train)
    for _, idx in batches(ds.n_train, spec.data.batch_size, seed, steps):
        yield take(x, idx), y[idx]


def record(spec: TrainSpec, backend: str, *, dtype: str = "float64", device: str = "cpu",
           steps: int = 10, seed: int | None = None, dropout: str = "inject",
           stream=None, program=None) -> Trajectory:
    """Run ``steps`` training steps and record loss, gradients, parameters, state, optimizer state,
    then the eval-mode output after the last update on the first batch's inputs.

    ``stream`` (optional) is a list of (inputs, labels) to use instead of the spec's dataset.
    ``program`` (optional) is a ready ``Program`` to record instead of compiling ``backend``: the
    user's own native code (``native.py``), or a data-parallel program of ``spec`` on ``backend``
    (the parallel tier); it is loaded from the neutral start here, and ``backend`` labels it.
    """
    if dropout not in ("inject", "off"):
        raise ValueError(f"dropout mode must be 'inject' or 'off', found {dropout!r}")
    seed = spec.seed if seed is None else seed
    if dropout == "off":
        spec = without_dropout(spec)
    device = normalize_device(device)
    if program is None:
        be = get_backend(backend)
        prog, framework = be.compile(spec, dtype=dtype, device=device), be.version()
    else:
        prog = program
        framework = (program.version() if hasattr(program, "version")
                     else get_backend(backend).version())
    prog.load(spec.model.init_params(seed), spec.model.init_state())
    data = stream if stream is not None else batch_stream(spec, steps, seed, dtype)

    losses, grads, opt = [], {}, {}
    params = {k: [v] for k, v in prog.export_params().items()}
    state = {k: [v] for k, v in prog.export_state().items()}
    has_dropout = bool(mask_draws(spec.model))
    first = None
    for t, (x, y) in enumerate(data):
        if t == steps:
            break
        first = x if first is None else first
        masks = dropout_masks(spec.model, seed, t, len(y)) if has_dropout else None
        loss, g = prog.gradients(x, y, masks=masks) if masks else prog.gradients(x, y)
        for k, v in g.items():
            grads.setdefault(k, []).append(v)
        prog.train_step(x, y, masks=masks) if masks else prog.train_step(x, y)
        losses.append(loss)
        for k, v in prog.export_params().items():
            params[k].append(v)
        for k, v in prog.export_state().items():
            state[k].append(v)
        for k, v in prog.export_optimizer_state().items():
            opt.setdefault(k, []).append(v)
    ev = eval_outputs(prog.forward(first, training=False)) if first is not None else {}
    meta = {"model": spec.name, "backend": backend, "framework": framework,
            "device": device, "dtype": dtype, "steps": len(losses), "seed": seed,
            "spec_hash": spec_hash(spec), "dropout": dropout if has_dropout else "none",
            "devices": getattr(prog, "devices", 1)}
    stack = lambda d: {k: np.stack(v) for k, v in d.items()}  # noqa: E731
    return Trajectory(meta, np.array(losses), stack(grads), stack(params), stack(state),
                      stack(opt), ev)
