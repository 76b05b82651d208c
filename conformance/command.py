"""``rosetta conformance``: the suite from the command line (docs/design.md section 6)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rosetta.backend_registry import available_backends, backend_names, get_backend
from rosetta.conformance import oracle, report
from rosetta.conformance.suite import Result, compare_trajectories, run
from rosetta.conformance.tiers import DEVICE, tier_for
from rosetta.conformance.trajectory import Trajectory
from rosetta.cli import data_arguments
from rosetta import validate
from rosetta.errors import BackendUnavailable, CheckpointError, RosettaError, SpecError


def _oracle_rows(spec, backend) -> list[Result]:
    rows = []
    for name, check in (("forward", oracle.check_forward), ("finite-difference",
                                                            oracle.check_gradients),
                        ("optimizer", oracle.check_optimizer)):
        w = check(spec, backend)
        rows.append(Result(model=spec.name, backend_a=f"{backend}/cpu/float64",
                           backend_b=f"numpy-oracle:{name}", tier="oracle", dtype="float64",
                           device="cpu", worst_abs=w.abs_err, worst_rel=w.rel_err,
                           tolerance=w.tolerance, where=str(w), passed=w.passed))
    return rows


REPORT_SUFFIXES = (".json", ".md", ".html", ".htm")


def _check_outputs(args) -> None:
    """Every destination checked before any work (suffix, writable folder)."""
    validate.distinct_outputs({"--report": args.report, "--plot": args.plot},
                              {"--save": getattr(args, "save", None)})
    if args.report is not None:
        validate.check_output(args.report, "--report", REPORT_SUFFIXES)
    if args.plot is not None:
        validate.check_output(args.plot, "--plot", (".png",))
    if getattr(args, "save", None) is not None:
        validate.check_output_folder(args.save, "--save")


def with_batch_size(spec, batch_size: int | None):
    """``spec`` with its data's batch size replaced (``--batch-size``; None: unchanged)."""
    if batch_size is None or batch_size == spec.data.batch_size:
        return spec
    import dataclasses

    return dataclasses.replace(spec, data=dataclasses.replace(spec.data,
                                                              batch_size=batch_size))


def run_command(args, load_spec) -> int:
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if getattr(args, "threads", None):
        from rosetta.threads import pin_threads

        pin_threads(args.threads)            # before any framework is imported
    _check_outputs(args)
    if args.compare:
        return _compare_files(args)
    if args.native:
        return _native_command(args, load_spec, log)
    if args.devices:  # bad counts fail before anything runs
        from rosetta.conformance.parallel import parse_devices

        args.devices = parse_devices(args.devices)
    if args.shard_params:  # before any framework runs: the parallel tier, backends that shard
        from rosetta.distributed import check_shard_params

        if not args.devices:
            raise SpecError("--shard-params runs the parallel tier: give --devices 1,N",
                            where="command line")
        for b in args.backends or available_backends():
            check_shard_params(b, args.devices[-1])
    if args.data and not args.specs:
        raise SpecError("--data needs the SPEC to run on it", where="command line")
    if args.specs:
        specs = [load_spec(s) for s in args.specs]
    else:
        from rosetta import models
        specs = [models.get(n) for n in models.ZOO]
    specs = [with_batch_size(s, getattr(args, "batch_size", None)) for s in specs]
    for spec in specs:
        for n in args.devices or ():   # every split checked before any framework runs
            from rosetta.distributed import check_devices

            try:
                check_devices(n, spec.data.batch_size)
            except RosettaError as e:
                raise type(e)(f"{spec.name}: {e}") from None
        for dtype in args.dtype:
            validate.check_dtype_range(spec, dtype)
        validate.check_memory(spec, spec.data.batch_size, "float64", ignore=args.ignore_memory)
    backends = args.backends or available_backends()
    for b in backends:
        get_backend(b)  # a clear BackendUnavailable for a missing one
    if getattr(args, "precision", None):
        return _precision_command(args, specs, backends, log)
    validate.require_device(backends, args.device)
    if len(backends) < 2 and not (args.oracle_only or args.save or args.devices):
        raise BackendUnavailable(f"conformance compares two or more backends (or, with --save, "
                                 f"records one backend's trajectories to compare elsewhere); "
                                 f"installed: {', '.join(backends) or 'none'}")
    t0 = time.perf_counter()
    results, trajs_by_model = [], {}
    for spec in specs:
        if args.oracle:
            for b in backends:
                log(f"{spec.name}: oracle tier on {b}")
                results += _oracle_rows(spec, b)
        if args.oracle_only:
            continue
        for dtype in args.dtype:
            if args.devices:  # the parallel tier (conformance/parallel.py)
                from rosetta.conformance import parallel

                rows, trajs = parallel.run(spec, backends, devices=args.devices, dtype=dtype,
                                           device=args.device, steps=args.steps,
                                           dropout=args.dropout, progress=log,
                                           shard_params=args.shard_params)
            else:
                rows, trajs = run(spec, backends, dtype=dtype, device=args.device,
                                  steps=args.steps, dropout=args.dropout, progress=log)
            results += rows
            trajs_by_model.setdefault((spec.name, dtype), []).extend(trajs)
            _save(args, trajs)
    seconds = time.perf_counter() - t0
    _emit(args, results, trajs_by_model, {"seconds": seconds, "steps": args.steps})
    log(f"{len(results)} comparisons in {seconds:.1f}s: "
        f"{sum(r.passed for r in results)} passed, {sum(not r.passed for r in results)} failed")
    return 0 if all(r.passed for r in results) else 1


def _precision_command(args, specs, backends, log) -> int:
    """``rosetta conformance --precision P``: the precision tier (conformance/precision.py) of
    each spec on each backend that lowers P (a backend named with --backends that does not is
    an error; the default backends that do not are listed as refusing it)."""
    from rosetta.conformance.noise import use
    from rosetta.conformance.precision import precision_tier

    for name in ("report", "plot", "save", "devices", "native"):
        if getattr(args, name, None):
            raise SpecError(f"--{name} is not available with --precision (the precision tier "
                            f"prints its table)", where="command line")
    failed = 0
    for prec in args.precision:
        able = [b for b in backends if prec in get_backend(b).precisions]
        for b in backends:
            if b not in able:
                if args.backends:
                    get_backend(b).check_precision(prec)   # raises its one line
                print(f"{b}: refuses {prec} (it lowers {', '.join(get_backend(b).precisions)})")
        for spec in specs:
            for b in able:
                r = precision_tier(spec, b, prec, steps=min(args.steps, 3), progress=log)
                cats = {}
                for _, k, w in r.rows:
                    c = k.split("/", 1)[0]
                    if c not in cats or use(w) > use(cats[c]):
                        cats[c] = w
                status = "ok" if r.passed else "FAIL"
                failed += not r.passed
                print(f"{spec.name} {b} {prec}: {status}; types "
                      f"{'as the policy says' if not r.types else r.types[0]}")
                for c, w in cats.items():
                    print(f"  {c:6s} worst {w.rel_err:.2e} of scale, bound {w.tolerance:.2e}, "
                          f"noise {w.noise:.2e} ({use(w):.2f} of the bound) at {w.where}")
    return 1 if failed else 0


def _save(args, trajs):
    """--save DIR: every trajectory as ``model-backend-device-dtype.npz``."""
    for t in trajs if args.save else ():
        m = t.meta
        t.save(Path(args.save) / f"{m['model']}-{m['backend']}-{m['device']}-{m['dtype']}.npz")


def _native_command(args, load_spec, log) -> int:
    """``--native module:factory``: the user's own native code against the spec on each
    backend (``native.py``); the oracle tier (which checks rosetta's backends) is not run."""
    from rosetta.conformance.native import load_factory
    from rosetta.conformance.native_suite import run_native

    if len(args.specs) != 1:
        raise SpecError("--native compares your code with one SPEC: give exactly one",
                        where="command line")
    factory = load_factory(args.native)
    backends = args.backends or available_backends()
    for b in backends:
        get_backend(b)
    if not backends:
        raise BackendUnavailable("--native compares with a backend; none is installed")
    spec = load_spec(args.specs[0])
    t0 = time.perf_counter()
    results, trajs_by_model = [], {}
    for dtype in args.dtype:
        rows, trajs = run_native(spec, factory, backends, dtype=dtype, device=args.device,
                                 steps=args.steps, progress=log)
        results += rows
        trajs_by_model[(spec.name, dtype)] = trajs
        _save(args, trajs)
    seconds = time.perf_counter() - t0
    _emit(args, results, trajs_by_model, {"seconds": seconds, "steps": args.steps,
                                          "native": args.native})
    log(f"{len(results)} comparisons in {seconds:.1f}s: "
        f"{sum(r.passed for r in results)} passed, {sum(not r.passed for r in results)} failed")
    return 0 if all(r.passed for r in results) else 1


def _consistent(t: Trajectory, path) -> Trajectory:
    """A loaded trajectory whose metadata and arrays agree with each other (N steps: N losses,
    N gradients, N + 1 parameters and states), else a ``CheckpointError`` naming the file."""
    m = t.meta
    for key in ("backend", "dtype", "device", "spec_hash"):
        if not isinstance(m[key], str):
            raise CheckpointError(f"{path}: trajectory metadata {key!r} must be a string, found "
                                  f"{m[key]!r}"[:200])
    n = m["steps"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CheckpointError(f"{path}: trajectory metadata 'steps' must be a positive integer, "
                              f"found {n!r}"[:200])
    lengths = [("loss", t.loss, n)] + [(f"{cat}/{k}", v, n + (cat in ("params", "state")))
                                       for cat in ("grads", "params", "state", "opt")
                                       for k, v in getattr(t, cat).items()]
    for name, a, want in lengths:
        if a.ndim == 0 or a.shape[0] != want or a.dtype.kind not in "fiu":
            raise CheckpointError(f"{path}: {name} has shape {a.shape} ({a.dtype}), expected "
                                  f"{want} numbers on its first axis for {n} steps")
    return t


def _first_steps(t: Trajectory, n: int) -> Trajectory:
    cut = {cat: {k: v[:n + (cat in ("params", "state"))] for k, v in getattr(t, cat).items()}
           for cat in ("grads", "params", "state", "opt")}
    return Trajectory(meta={**t.meta, "steps": n}, loss=t.loss[:n], **cut)


def _compare_files(args) -> int:
    a, b = (_consistent(Trajectory.load(p), p) for p in args.compare)
    if a.meta["dtype"] != b.meta["dtype"]:
        raise SpecError(f"trajectories in different dtypes ({a.meta['dtype']} vs "
                        f"{b.meta['dtype']}) are not comparable", where="--compare")
    for cat in ("grads", "params", "state", "opt"):
        x, y = getattr(a, cat), getattr(b, cat)
        for k in set(x) & set(y):
            if x[k].shape != y[k].shape:
                raise SpecError(f"{cat}/{k} has shape {x[k].shape} in one trajectory and "
                                f"{y[k].shape} in the other: not comparable", where="--compare")
    if a.meta["steps"] != b.meta["steps"]:  # compared over the common steps
        n = min(a.meta["steps"], b.meta["steps"])
        a, b = (_first_steps(t, n) for t in (a, b))
    same_backend = a.meta["backend"] == b.meta["backend"]
    tier = DEVICE if same_backend and a.meta["device"] != b.meta["device"] else \
        tier_for(a.meta["dtype"])
    r = compare_trajectories(a, b, tier)
    _emit(args, [r], {(a.meta["model"], a.meta["dtype"]): [a, b]},
          {"compared": list(map(str, args.compare))})
    return 0 if r.passed else 1


def _emit(args, results, trajs_by_model, extra):
    print(report.table(results))
    if args.report:
        report.write(args.report, results, extra)
    if args.plot:
        report.plot(args.plot, trajs_by_model, results)


def add_parser(sub, positive_int):
    c = sub.add_parser("conformance", help="prove that backends train a spec to the same numbers")
    c.add_argument("specs", nargs="*", metavar="SPEC", help="zoo names or spec files "
                   "(default: the whole zoo)")
    c.add_argument("--backends", nargs="+", choices=backend_names())
    c.add_argument("--devices", metavar="1,N", help="the parallel tier: each backend on one "
                   "device against N devices of its own distributed engine, and every backend "
                   "pair at N (e.g. --devices 1,2)")
    c.add_argument("--shard-params", action="store_true", help="with --devices: the N-device "
                   "runs shard parameters and optimizer state over the devices (torch FSDP2, "
                   "JAX NamedSharding; float64)")
    c.add_argument("--dtype", nargs="+", choices=["float32", "float64"],
                   default=["float64", "float32"])
    c.add_argument("--precision", nargs="+", metavar="P",
                   choices=["bfloat16", "mixed_bfloat16", "mixed_float16"],
                   help="the precision tier: each backend's step under policy P (bfloat16, "
                        "mixed_bfloat16, mixed_float16) teacher-forced from the float64 state, "
                        "held to noise measured at the format's rounding level, and the types "
                        "it computes in checked against the policy (at most 3 steps)")
    c.add_argument("--steps", type=positive_int, default=10)
    c.add_argument("--batch-size", type=positive_int,
                   help="the batch size of every spec compared (default: each spec's own)")
    c.add_argument("--threads", type=positive_int,
                   help="compute threads per framework (default: the framework's own)")
    c.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda"])
    data_arguments(c, "run the comparison on this data file instead of the spec's dataset "
                      "(.npz, .npy folder, .csv, image folder; see rosetta train --help)")
    c.add_argument("--dropout", default="inject", choices=["inject", "off"],
                   help="inject neutral dropout masks on every backend, or switch dropout off")
    c.add_argument("--no-oracle", dest="oracle", action="store_false",
                   help="skip the oracle tier (NumPy references, finite differences)")
    c.add_argument("--oracle-only", action="store_true", help="only the oracle tier")
    c.add_argument("--report", metavar="PATH", help="write .json, .md or .html")
    c.add_argument("--plot", metavar="PATH.png", help="loss curves and per-step gaps")
    c.add_argument("--save", metavar="DIR", help="save every trajectory as .npz")
    c.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="compare two saved trajectories instead of running")
    c.add_argument("--native", metavar="MODULE:FACTORY",
                   help="compare your own hand-written model instead: FACTORY(dtype) in MODULE "
                        "(importable from here) returns a TorchNative, TensorFlowNative, "
                        "KerasNative or FlaxNative (see docs/conformance/native.md); dropout off, "
                        "no oracle tier")
    c.add_argument("--quiet", action="store_true")
    validate.memory_argument(c)
    return c
