"""One benchmark case: a spec on one backend and mode, timed against its hand-written baseline in
alternating blocks (``run_case``; the rules are ``timing``'s docstring), the batches both sides
use (``bench_batches``), and the float64 check that the baseline trains to rosetta's numbers
(``compare_losses``)."""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time

import numpy as np

from rosetta.backend import normalize_device
from rosetta.backend_registry import get_backend
from rosetta.data import batches as batch_indices, take
from rosetta.errors import DataError, SpecError
from rosetta.spec import TrainSpec
from rosetta.training import check_data, dataset_inputs, prepare_labels

from rosetta.conformance.bench.plans import baseline_input, build_baseline
from rosetta.precision import LOW, policy
from rosetta.conformance.bench.timing import (_quantiles, _timed, peak_memory_mb,
                                              reset_peak_memory, train_flops)

DEFAULT_STEPS = 200
DEFAULT_BLOCK = 10
N_BATCHES = 4  # distinct batches prepared on the device and cycled
# unit roundoff of each low type: under a low precision the hand-written code's loss after one
# update must be within LOSS_ROUNDOFFS x u (relative) of rosetta's: two correct programs of the
# same policy differ by rounding only (a few roundings of the loss's order through the forward
# and the update), a wrong cast (a float32 op left in the low type, the update in bf16) by more
UNIT_ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
LOSS_ROUNDOFFS = 8


def loss_bound(dtype: str) -> float | None:
    """The relative bound on the loss gap after one update under precision ``dtype`` (None for
    float32 / float64, which the float64 test of the baselines covers)."""
    return LOSS_ROUNDOFFS * UNIT_ROUNDOFF[LOW[dtype]] if dtype in LOW else None


# --- data ---------------------------------------------------------------------------------------

def bench_batches(spec: TrainSpec, batch_size: int, dtype: str, count: int = N_BATCHES,
                  seed: int = 0) -> tuple[list, str]:
    """``count`` host batches (inputs dict, labels) from the spec's dataset when it fits the
    model, else synthetic (normal inputs, uniform labels); and which it was."""
    from rosetta.conformance.oracle import sample_inputs, sample_targets

    try:
        ds = spec.data.load(model=spec.model)
        check_data(spec, ds, batch_size)
    except (DataError, SpecError):
        if spec.data.source != "dataset":
            raise  # the user's own data: a bad file is their error, never a silent substitute
        out = [(sample_inputs(spec.model, batch_size, seed + i),
                sample_targets(spec, batch_size, seed + 100 + i)) for i in range(count)]
        return [({k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in x.items()},
                 prepare_labels(spec, y)) for x, y in out], "synthetic"
    x = dataset_inputs(spec, ds.x_train, dtype)
    y = prepare_labels(spec, ds.y_train)
    return [(take(x, idx), y[idx])
            for _, idx in batch_indices(ds.n_train, batch_size, seed, count)], ds.name


def _with_batch_size(spec: TrainSpec, batch_size: int) -> TrainSpec:
    data = dataclasses.replace(spec.data, batch_size=batch_size)
    return TrainSpec(spec.model, spec.loss, spec.optimizer, data, spec.steps, spec.seed,
                     spec.description)


def run_case(spec: TrainSpec, backend: str, mode: str, *, batch_size: int | None = None,
             steps: int = DEFAULT_STEPS, block: int = DEFAULT_BLOCK, warmup: int | None = None,
             device: str = "cpu", dtype: str = "float32", peak_gflops: float | None = None,
             native: bool = True) -> dict:
    """Time one spec on one backend and mode against its hand-written baseline (see the module
    docstring); returns one ``results`` entry of the report. ``dtype`` is a precision policy:
    under a low one (``rosetta.precision.LOW``) the baseline is the framework's own
    mixed-precision code, rosetta's float32 step is timed in the same blocks
    (``float32_step_ms``), and both losses after one update are recorded with their gap
    (``loss_gap_step``, bound ``loss_bound``)."""
    device = normalize_device(device)
    batch_size = batch_size or spec.data.batch_size
    spec = _with_batch_size(spec, batch_size)
    block = max(1, min(block, steps))
    warmup = max(3, steps // 10) if warmup is None else warmup
    host, source = bench_batches(spec, batch_size, policy(dtype).host)
    be = get_backend(backend)
    low = dtype in LOW

    gc.collect()
    reset_peak_memory(backend, device)
    t0 = time.perf_counter()
    program = be.compile(spec, dtype=dtype, device=device, mode=mode)
    lower_s = time.perf_counter() - t0
    rb = [program.prepare_batch(x, y) for x, y in host]
    t0 = time.perf_counter()
    first_loss = program.train_step(rb[0])
    compile_s = lower_s + time.perf_counter() - t0
    second_loss = program.train_step(rb[1 % len(rb)])  # after one update
    _timed(program.train_step, rb, warmup - 1, 2, [])
    memory = peak_memory_mb(backend, device)
    reference = None  # rosetta's float32 step, timed beside a low precision's
    if low:
        reference = be.compile(spec, dtype="float32", device=device, mode=mode)
        fb = [reference.prepare_batch(x, y) for x, y in host]
        reference.train_step(fb[0])
        _timed(reference.train_step, fb, warmup, 1, [])

    trainer = None
    if native:
        gc.collect()
        reset_peak_memory(backend, device)
        t0 = time.perf_counter()
        trainer = build_baseline(spec, backend, dtype=dtype, device=device, mode=mode)
        build_s = time.perf_counter() - t0
    if trainer is not None:
        nb = [trainer.put(baseline_input(spec, x), y) for x, y in host]
        t0 = time.perf_counter()
        native_first = trainer.step(nb[0])
        native_compile_s = build_s + time.perf_counter() - t0
        native_second = trainer.step(nb[1 % len(nb)])
        _timed(trainer.step, nb, warmup - 1, 2, [])
        native_memory = peak_memory_mb(backend, device)

    ros_times: list[float] = []
    nat_times: list[float] = []
    ref_times: list[float] = []
    block_ratios = []
    start = 1 + warmup
    done = 0
    i = 0
    while done < steps:
        n = min(block, steps - done)
        r_block: list[float] = []
        n_block: list[float] = []
        order = [(program.train_step, rb, r_block)]
        if trainer is not None:
            order.append((trainer.step, nb, n_block))
        if reference is not None:
            order.append((reference.train_step, fb, ref_times))
        if i % 2:
            order.reverse()
        for step, bs, out in order:
            _timed(step, bs, n, start, out)
        ros_times += r_block
        nat_times += n_block
        if n_block:
            block_ratios.append(statistics.median(r_block) / statistics.median(n_block))
        start += n
        done += n
        i += 1
    last_loss = program.train_step(rb[start % len(rb)])

    g = spec.model
    flops = train_flops(g, batch_size)
    q = _quantiles(ros_times)
    med_s = q["median"] / 1e3
    gflops = flops / med_s / 1e9
    row = {
        "model": spec.name, "backend": backend, "mode": mode, "device": device, "dtype": dtype,
        "batch_size": batch_size, "steps": steps, "warmup": warmup, "block": block,
        "data": source, "framework": be.version(),
        "compile_seconds": compile_s,
        "step_ms_median": q["median"], "step_ms_iqr": q["iqr"], "step_ms_p25": q["p25"],
        "step_ms_p75": q["p75"], "step_ms_min": q["min"], "step_ms_max": q["max"],
        "samples_per_second": batch_size / med_s,
        "peak_memory_mb": memory, "memory": "device" if device == "gpu" else "process RSS",
        "flops_per_step": int(flops), "gflops": gflops,
        "peak_fraction": gflops / peak_gflops if peak_gflops else None,
        "floor_ms": flops / (peak_gflops * 1e9) * 1e3 if peak_gflops else None,
        "first_loss": first_loss, "last_loss": last_loss,
        "native_compile_seconds": None, "native_step_ms": None, "native_step_ms_iqr": None,
        "native_peak_memory_mb": None, "native_first_loss": None, "native_last_loss": None,
        "overhead_ratio": None, "overhead_ratio_iqr": None, "loss_gap": None,
    }
    if low:
        row.update({"float32_step_ms": _quantiles(ref_times)["median"],
                    "second_loss": second_loss, "native_second_loss": None,
                    "loss_gap_step": None, "loss_bound": loss_bound(dtype)})
    if trainer is not None:
        nq = _quantiles(nat_times)
        native_last = trainer.step(nb[start % len(nb)])
        rp25, rp75 = np.percentile(block_ratios, [25, 75])
        row.update({
            "native_compile_seconds": native_compile_s, "native_step_ms": nq["median"],
            "native_step_ms_iqr": nq["iqr"], "native_step_ms_p25": nq["p25"],
            "native_step_ms_p75": nq["p75"], "native_step_ms_min": nq["min"],
            "native_step_ms_max": nq["max"], "native_peak_memory_mb": native_memory,
            "native_first_loss": native_first, "native_last_loss": native_last,
            "overhead_ratio": float(statistics.median(block_ratios)),
            "overhead_ratio_iqr": float(rp75 - rp25), "blocks": len(block_ratios),
            "loss_gap": abs(first_loss - native_first) / max(abs(native_first), 1e-30),
        })
        if low:
            row.update({"native_second_loss": native_second,
                        "loss_gap_step": abs(second_loss - native_second)
                        / max(abs(native_second), 1e-30)})
    return row


def set_peak(rows: list[dict], peak_gflops: float) -> list[dict]:
    """``peak_fraction`` and ``floor_ms`` of every row against ``peak_gflops``."""
    for r in rows:
        r["peak_fraction"] = r["gflops"] / peak_gflops
        r["floor_ms"] = r["flops_per_step"] / (peak_gflops * 1e9) * 1e3
    return rows


def mark_best(rows: list[dict]) -> list[dict]:
    """``best``: per (model, backend), the mode with the lowest median step time."""
    best = {}
    for r in rows:
        k = (r["model"], r["backend"])
        if k not in best or r["step_ms_median"] < best[k]["step_ms_median"]:
            best[k] = r
    for r in rows:
        r["best"] = best[(r["model"], r["backend"])] is r
    return rows


def compare_losses(spec: TrainSpec, backend: str, mode: str | None = None, *, steps: int = 4,
                   dtype: str = "float64", batch_size: int | None = None,
                   device: str = "cpu") -> tuple[list[float], list[float]]:
    """Per-step losses of rosetta's program and of the hand-written baseline, from the same
    initial weights on the same batches (the benchmark's own batches, cycled)."""
    be = get_backend(backend)
    mode = be.resolve_mode(mode)
    batch_size = batch_size or spec.data.batch_size
    spec = _with_batch_size(spec, batch_size)
    host, _ = bench_batches(spec, batch_size, dtype)
    program = be.compile(spec, dtype=dtype, device=device, mode=mode)
    trainer = build_baseline(spec, backend, dtype=dtype, device=device, mode=mode)
    if trainer is None:
        raise SpecError(f"no hand-written baseline fits spec {spec.name!r}")
    rb = [program.prepare_batch(x, y) for x, y in host]
    nb = [trainer.put(baseline_input(spec, x), y) for x, y in host]
    ours = [program.train_step(rb[i % len(rb)]) for i in range(steps)]
    theirs = [trainer.step(nb[i % len(nb)]) for i in range(steps)]
    return ours, theirs
