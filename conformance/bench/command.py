"""``rosetta bench``'s command line: the options (``add_parser``) and the run (``run_command``):
the matmul peak, every spec x backend x mode through ``cases.run_case``, the optional Keras
column, the table, the recommendations and the reports."""

from __future__ import annotations

import sys

from rosetta.backend_registry import backend_names, get_backend
from rosetta.precision import PRECISIONS
from rosetta.errors import BackendUnavailable, SpecError
from rosetta.threads import pin_threads
from rosetta import validate

from rosetta.conformance.bench.cases import (DEFAULT_BLOCK, DEFAULT_STEPS, mark_best,
                                             run_case, set_peak)
from rosetta.conformance.bench.imported import NAMES as IMPORTED_NAMES
from rosetta.conformance.bench.keras import run_keras
from rosetta.conformance.bench.plans import BENCH_SPECS, load_bench_spec, zoo_plan
from rosetta.conformance.bench.sweep import (DEFAULT_SWEEP_STEPS, check_axis, point_spec,
                                             run_sweep, sweep_argument)
from rosetta.conformance.bench.sweep import plot as sweep_plot, table as sweep_table
from rosetta.conformance.bench.sweep import write as sweep_write
from rosetta.conformance.bench.timing import (TRAIN_FLOPS_FACTOR, apply_thread_pin,
                                              environment, matmul_peak)


def _log(args):
    return (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr,
                                                                    flush=True))


def plan_modes(backends: list[str], modes: list[str] | None) -> list[tuple[str, str]]:
    """(backend, mode) pairs: every mode of each backend, or those of ``modes`` it has; a mode
    no selected backend has is bad input."""
    from rosetta.errors import BackendUnavailable

    known = {b: get_backend(b).modes for b in backends}
    if modes:
        unknown = [m for m in modes if not any(m in ms for ms in known.values())]
        if unknown:
            valid = ", ".join(f"{b}: {'/'.join(ms)}" for b, ms in known.items())
            raise BackendUnavailable(f"unknown mode(s) {', '.join(unknown)} for the selected "
                                     f"backends (modes: {valid})")
    return [(b, m) for b in backends for m in known[b] if not modes or m in modes]


def run_command(args, load_spec) -> int:
    from rosetta.backend_registry import available_backends
    from rosetta.conformance.bench import report as bench_report

    from rosetta.precision import LOW, resolve

    log = _log(args)
    args.dtype = resolve(args.dtype, args.precision)  # --dtype: an alias of --precision
    if args.dtype in LOW and args.sweep:
        raise SpecError(f"--precision {args.dtype} times rosetta against hand-written "
                        f"{args.dtype} code; it does not take --sweep", where="command line")
    reports = args.report or []
    for path, suffixes, flag in ([(r, (".json", ".md"), "--report") for r in reports]
                                 + [(args.plot, (".png",), "--plot")]):
        if path is not None:  # checked before any work: the suffix and a writable folder
            validate.check_output(path, flag, suffixes)
    if getattr(args, "imported", None):
        return _run_imported(args, reports, log)
    if args.data and not args.specs:
        raise SpecError("--data needs the SPEC to time on it", where="command line")
    if args.hosts > 1 and args.devices < 2:
        raise SpecError("--hosts H times --devices N over H hosts: give --devices N (N > 1)",
                        where="command line")
    if args.sweep and (not args.specs or args.keras or args.devices > 1):
        raise SpecError("--sweep needs the SPEC to sweep, and takes neither --keras nor "
                        "--devices", where="command line")
    if args.sweep and args.sweep[0] == "batch" and args.batch_size:
        raise SpecError("--sweep batch= sets the batch size of each point: drop --batch-size",
                        where="command line")
    skipped = []  # (model, why) of the zoo models a bare run leaves out
    names = args.specs or None
    if names is None:
        names, skipped = zoo_plan()
    args.steps = args.steps or (DEFAULT_SWEEP_STEPS if args.sweep else
                                DEFAULT_STEPS if args.specs else DEFAULT_ZOO_STEPS)
    specs = [load_bench_spec(n, load_spec) for n in names]  # bad input fails before any import
    points = [(s, args.batch_size or s.data.batch_size) for s in specs]
    if args.sweep:
        key, values = args.sweep
        for spec in specs:
            check_axis(spec, key)
        points = [(p, value if key == "batch" else args.batch_size or p.data.batch_size)
                  for s in specs for value in values for p in [point_spec(s, key, value)]]
    if args.devices > 1:  # data-parallel throughput and scaling (parallel.py)
        from rosetta import distributed
        from rosetta.conformance.bench import parallel

        backends = args.backends or available_backends()
        for b in backends:  # one line, before any worker, for a policy an engine refuses
            distributed.check_precision(b, args.dtype)
        return parallel.run_command(args, specs, backends)
    for spec, batch in points:  # before any framework loads
        validate.check_dtype_range(spec, args.dtype)
        validate.check_memory(spec, batch, args.dtype, ignore=args.ignore_memory)
    if args.threads:
        pin_threads(args.threads)
    backends = args.backends or available_backends()
    for b in backends:
        get_backend(b)  # a clear BackendUnavailable for a missing one
    pairs = plan_modes(backends, args.modes)   # bad input before any framework is imported
    device = validate.require_device(backends, args.device)
    if args.threads:
        apply_thread_pin(args.threads, backends)
    if args.sweep and not args.modes:  # each backend's default mode, its fastest on a CPU
        pairs = [(b, get_backend(b).modes[0]) for b in backends]
    log(f"measuring the float32 matmul peak on {device} ...")
    peak = matmul_peak(device, threads=args.threads)
    log(f"peak {peak['gflops']:.1f} GFLOP/s ({peak['how']})")
    if args.sweep:
        return _run_sweep(args, specs, backends, pairs, device, peak, log)
    for name, why in skipped:
        log(f"{name}: not timed, no hand-written baseline ({why})")
    rows, keras_done, refused = [], {}, []
    for spec in specs:
        for backend, mode in pairs:
            log(f"{spec.name} on {backend}/{mode}: compiling and timing "
                f"{args.steps} + {args.steps if not args.no_native else 0} steps ...")
            try:
                get_backend(backend).check_precision(args.dtype)
            except BackendUnavailable as e:  # one line in the table's notes, the rest timed
                refused.append({"model": spec.name, "backend": backend, "mode": mode,
                                "refused": str(e)})
                log(f"  refused: {e}")
                continue
            row = run_case(spec, backend, mode, batch_size=args.batch_size, steps=args.steps,
                           block=args.block, warmup=args.warmup, device=device,
                           dtype=args.dtype, peak_gflops=peak["gflops"],
                           native=not args.no_native)
            rows.append(row)
            ratio = row["overhead_ratio"]
            log(f"  step {row['step_ms_median']:.3f} ms"
                + (f", native {row['native_step_ms']:.3f} ms, ratio {ratio:.3f}"
                   if ratio is not None else ", no hand-written baseline for this spec")
                + (f"; float32 {row['float32_step_ms']:.3f} ms" if "float32_step_ms" in row
                   else "")
                + (f"; loss gap after a step {row['loss_gap_step']:.1e} (bound "
                   f"{row['loss_bound']:.1e})" if row.get("loss_gap_step") is not None else ""))
            if args.keras:
                key = (spec.name, backend)
                if key not in keras_done:
                    log(f"{spec.name} in Keras 3 on {backend} (train_on_batch, subprocess) ...")
                    keras_done[key] = run_keras(spec, backend, batch_size=args.batch_size,
                                                steps=args.steps, warmup=args.warmup,
                                                dtype=args.dtype)
                    k = keras_done[key]
                    log(f"  keras {k['keras_step_ms']:.3f} ms" if "keras_step_ms" in k
                        else f"  keras: {k['keras_error']}")
                row.update(keras_done[key])
    peak = _end_peak(args, device, peak)
    set_peak(rows, peak["gflops"])
    mark_best(rows)
    env = environment(backends, device, peak)
    settings = {"specs": [s.name for s in specs], "backends": backends,
                "modes": [f"{b}/{m}" for b, m in pairs], "device": device, "dtype": args.dtype,
                "batch_size": args.batch_size, "steps": args.steps, "block": args.block,
                "warmup": args.warmup, "threads": args.threads, "native": not args.no_native,
                "keras": args.keras,
                "flops_rule": f"{TRAIN_FLOPS_FACTOR} x forward FLOPs per example x batch"}
    settings["not_timed"] = [{"model": m, "why": why} for m, why in skipped]
    settings["refused"] = refused
    print(bench_report.table(rows, env, skipped, refused))
    from rosetta.conformance.auto import recommendations

    print("recommendation (fastest backend and mode per model; --backend auto also checks "
          "float64 agreement):")
    for line in recommendations(rows):
        print(f"  {line}")
    for path in reports:
        bench_report.write(path, rows, env, settings, skipped, refused)
        log(f"report written to {path}")
    if args.plot:
        bench_report.plot(args.plot, rows)
        log(f"plot written to {args.plot}")
    return 0


def _run_imported(args, reports, log) -> int:
    """``--imported gpt2 bert``: the imported HuggingFace models against the HuggingFace torch
    model and hand-written flax / TensorFlow code (``imported.py``)."""
    from rosetta.backend_registry import available_backends
    from rosetta.conformance.bench import imported
    from rosetta.files import dumps_json, write_text

    if (args.specs or args.sweep or args.keras or args.devices > 1 or args.plot
            or args.no_native or args.data or args.device != "cpu"
            or args.dtype not in (None, "float32") or args.precision not in (None, "float32")):
        raise SpecError("--imported times the HuggingFace models in float32 on the CPU against "
                        "their baselines: it takes no SPEC, --sweep, --keras, --devices, --plot, "
                        "--no-native, --data, --device or --precision", where="command line")
    backends = [b for b in (args.backends or available_backends()) if b in imported.BACKENDS]
    if not backends:
        raise SpecError(f"--imported has baselines on {', '.join(imported.BACKENDS)} only",
                        where="command line")
    if args.threads:
        pin_threads(args.threads)
    for b in backends:
        get_backend(b)  # a clear BackendUnavailable for a missing one
    if args.threads:
        apply_thread_pin(args.threads, backends)
    steps = args.steps or imported.DEFAULT_STEPS
    warmup = args.warmup if args.warmup is not None else max(3, steps // 10)
    before = imported.load_average()
    rows = imported.run_all(args.imported, backends, modes=args.modes, steps=steps,
                            block=args.block, warmup=warmup, log=log)
    load = f"before: {before}; after: {imported.load_average()}"
    text = imported.table(rows, load)
    print(text)
    for path in reports:
        write_text(path, dumps_json({"results": rows, "load": load, "sizes": imported.SIZES},
                                    indent=1) if str(path).endswith(".json") else text + "\n")
        log(f"report written to {path}")
    return 0


def _end_peak(args, device, peak) -> dict:
    """The peak again at the end: on a shared machine the load varies, and the best of the two
    is the better estimate of what the hardware does (both are recorded)."""
    end = matmul_peak(device, threads=args.threads)
    return dict(peak, start_gflops=peak["gflops"], end_gflops=end["gflops"],
                gflops=max(peak["gflops"], end["gflops"]))


def _run_sweep(args, specs, backends, pairs, device, peak, log) -> int:
    """``--sweep``: every point x (backend, mode) of each spec, rosetta alone (``sweep.py``)."""
    key, values = args.sweep
    rows = []
    for spec in specs:
        rows += run_sweep(spec, key, values, pairs, steps=args.steps, block=args.block,
                          warmup=args.warmup, device=device, dtype=args.dtype,
                          peak_gflops=peak["gflops"], batch_size=args.batch_size, log=log)
    peak = _end_peak(args, device, peak)
    set_peak(rows, peak["gflops"])  # the floor against the better of the two peaks
    env = environment(backends, device, peak)
    settings = {"specs": [s.name for s in specs], "sweep": {key: values},
                "modes": [f"{b}/{m}" for b, m in pairs], "device": device, "dtype": args.dtype,
                "batch_size": args.batch_size, "steps": args.steps, "block": args.block,
                "warmup": args.warmup, "threads": args.threads,
                "flops_rule": f"{TRAIN_FLOPS_FACTOR} x forward FLOPs per example x batch"}
    print(sweep_table(rows, env))
    for path in args.report or []:
        sweep_write(path, rows, env, settings)
        log(f"report written to {path}")
    if args.plot:
        sweep_plot(args.plot, rows)
        log(f"plot written to {args.plot}")
    return 0


# what a bare ``rosetta bench`` times: ``plans.zoo_plan`` (every zoo model with a hand-written
# baseline, and the design's MLP (docs/design.md section 7)), fewer steps each than a named SPEC so that the whole zoo on
# every backend and mode is a CLI run of tens of minutes on 2 cores
DEFAULT_ZOO_STEPS = 50


def add_parser(sub, positive_int):
    b = sub.add_parser("bench", help="time a spec on every backend and mode against "
                                     "hand-written native code")
    b.add_argument("specs", nargs="*", metavar="SPEC",
                   help=f"zoo names, the bench-only {', '.join(BENCH_SPECS)}, or spec files "
                        f"(default: the whole zoo, every model with a hand-written baseline, "
                        f"and {', '.join(BENCH_SPECS)})")
    b.add_argument("--backends", nargs="+", choices=backend_names())
    b.add_argument("--modes", nargs="+", metavar="MODE",
                   help="torch: eager, compile; tensorflow: xla, function; jax: jit "
                        "(default: every mode of each backend)")
    b.add_argument("--batch-size", type=positive_int,
                   help="examples per step (default: each spec's own)")
    b.add_argument("--steps", type=positive_int,
                   help=f"timed steps for rosetta and as many for the baseline (default "
                        f"{DEFAULT_STEPS} for a named SPEC, {DEFAULT_ZOO_STEPS} for the whole "
                        f"zoo, {DEFAULT_SWEEP_STEPS} per point of --sweep)")
    b.add_argument("--warmup", type=positive_int,
                   help="untimed steps after the first (default: steps / 10, at least 3)")
    b.add_argument("--block", type=positive_int, default=DEFAULT_BLOCK,
                   help=f"steps per alternating block (default {DEFAULT_BLOCK})")
    b.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda"])
    b.add_argument("--devices", type=positive_int, default=1, metavar="N",
                   help="time each backend's data-parallel step on 1 and N devices: throughput "
                        "and scaling efficiency (conformance/bench/parallel.py)")
    b.add_argument("--hosts", type=positive_int, default=1, metavar="H",
                   help="with --devices N: time the N devices as H hosts of N/H devices, each "
                        "started through the engine's own launcher over localhost (on one "
                        "machine this measures the launcher's and the network path's overhead, "
                        "not a speed-up)")
    b.add_argument("--dtype", choices=["float32", "float64"],
                   help="default float32; an alias of --precision")
    b.add_argument("--precision", choices=list(PRECISIONS),
                   help="the precision policy (docs/guide/precision.md): under bfloat16, "
                        "mixed_bfloat16 or mixed_float16 the baseline is each framework's own "
                        "hand-written mixed-precision code (torch autocast + GradScaler, flax "
                        "dtype= / param_dtype=, TensorFlow casts), and rosetta's float32 step "
                        "is timed beside it (default: --dtype's)")
    from rosetta.cli import data_arguments

    data_arguments(b, "time the steps on batches of this data file (see rosetta train --help)")
    b.add_argument("--threads", type=positive_int,
                   help="ask every framework for this many compute threads (default: their "
                        "own defaults; recorded in the report either way)")
    b.add_argument("--keras", action="store_true",
                   help="also time the model in Keras 3 (train_on_batch) on each backend, one "
                        "subprocess per backend (KERAS_BACKEND)")
    b.add_argument("--no-native", action="store_true",
                   help="time rosetta only, without the hand-written baselines")
    b.add_argument("--report", metavar="PATH", action="append",
                   help="write .json or .md (repeat for both)")
    b.add_argument("--plot", metavar="PATH.png", help="bar chart of step times (with "
                   "--sweep: time per step and per example against the swept value)")
    b.add_argument("--sweep", type=sweep_argument, metavar="KEY=V1,V2,...",
                   help="cost curves: time SPEC at each value of batch (any model), seq "
                        "(sequence length of token models) or width (hidden Dense units of an "
                        "MLP), each backend in its default mode (or --modes), rosetta alone: "
                        "step time, samples/s, peak memory and the arithmetic floor "
                        "(conformance/bench/sweep.py)")
    b.add_argument("--imported", nargs="+", metavar="MODEL", choices=IMPORTED_NAMES,
                   help="time HuggingFace models imported with from_torch (gpt2, bert) on each "
                        "backend against the HuggingFace torch model itself and hand-written "
                        "flax+optax and tf.function versions of the same blocks "
                        "(conformance/bench/imported.py); takes --backends, --modes, --steps, "
                        "--warmup, --block and --report")
    b.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    validate.memory_argument(b)
    return b
