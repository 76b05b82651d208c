"""``rosetta conformance``: the suite from the command line (DESIGN section 6, issue 4)."""

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
from rosetta.errors import BackendUnavailable, SpecError


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


def run_command(args, load_spec) -> int:
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.compare:
        return _compare_files(args)
    if args.native:
        return _native_command(args, load_spec, log)
    if args.devices:  # bad counts fail before anything runs
        from rosetta.conformance.parallel import parse_devices

        args.devices = parse_devices(args.devices)
    backends = args.backends or available_backends()
    for b in backends:
        get_backend(b)  # a clear BackendUnavailable for a missing one
    if len(backends) < 2 and not (args.oracle_only or args.save or args.devices):
        raise BackendUnavailable(f"conformance compares two or more backends (or, with --save, "
                                 f"records one backend's trajectories to compare elsewhere); "
                                 f"installed: {', '.join(backends) or 'none'}")
    if args.data and not args.specs:
        raise SpecError("--data needs the SPEC to run on it", where="command line")
    if args.specs:
        specs = [load_spec(s) for s in args.specs]
    else:
        from rosetta import models
        specs = [models.get(n) for n in models.ZOO]
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
                                           dropout=args.dropout, progress=log)
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


def _compare_files(args) -> int:
    a, b = (Trajectory.load(p) for p in args.compare)
    if a.meta["dtype"] != b.meta["dtype"]:
        raise SpecError(f"trajectories in different dtypes ({a.meta['dtype']} vs "
                        f"{b.meta['dtype']}) are not comparable", where="--compare")
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
    c.add_argument("--dtype", nargs="+", choices=["float32", "float64"],
                   default=["float64", "float32"])
    c.add_argument("--steps", type=positive_int, default=10)
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
                        "KerasNative or FlaxNative (see README, 'Your own native code under "
                        "the suite'); dropout off, no oracle tier")
    c.add_argument("--quiet", action="store_true")
    return c
