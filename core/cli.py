"""The ``rosetta`` command line (DESIGN section 6).

Exit status: 0 success, 1 a training failure, 2 bad input (one clear line on stderr, no traceback).
The CLI sits on top of everything: it reaches the zoo (``rosetta.models``) lazily.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import runpy
import sys
import warnings
from pathlib import Path

from rosetta.errors import RosettaError, SpecError


def quiet_frameworks() -> None:
    """Users should see rosetta's output, not framework banners."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    for name in ("jax._src.xla_bridge", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(jax|flax|torch|tensorflow)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def load_spec(arg: str):
    """SPEC is a zoo name, a ``.py`` file defining ``spec`` (a TrainSpec) or ``build()``, or a
    ``.json`` spec. Loading JSON never executes code; a ``.py`` file is the user's own code."""
    from rosetta.spec import TrainSpec

    path = Path(arg)
    if arg.endswith(".json"):
        return TrainSpec.load_json(path)
    if arg.endswith(".py"):
        if not path.exists():
            raise SpecError("no such file", where=arg)
        namespace = runpy.run_path(str(path))
        spec = namespace.get("spec")
        if spec is None and callable(namespace.get("build")):
            spec = namespace["build"]()
        if not isinstance(spec, TrainSpec):
            raise SpecError("a .py spec must define `spec` (a rosetta.TrainSpec) or a `build()` "
                            "function returning one", where=arg)
        return spec
    from rosetta import models
    return models.get(arg)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"rosetta: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return v


def _non_negative_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rosetta", description="One model spec, native PyTorch, TensorFlow or JAX.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a spec on one backend")
    t.add_argument("spec", help="zoo name, .py file defining `spec`, or .json spec")
    t.add_argument("--backend", required=True, choices=["torch", "tensorflow", "jax"])
    t.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda"])
    t.add_argument("--mode", help="how the step is compiled: torch eager (default) or compile, "
                   "tensorflow xla (default) or function, jax jit")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--steps", type=_positive_int, help="number of updates (default: the spec's)")
    t.add_argument("--epochs", type=_positive_int, help="whole passes over the training data "
                   "(instead of --steps)")
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--seed", type=_non_negative_int)
    t.add_argument("--json", action="store_true",
                   help="print the run record as one JSON object on the last line of stdout")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--threads", type=_positive_int,
                   help="compute threads per framework (default: the framework's own; 1 is often "
                        "fastest on a small or busy machine)")

    sub.add_parser("models", help="list the model zoo")
    sub.add_parser("backends", help="installed backends, versions and devices")
    from rosetta.conformance.command import add_parser as add_conformance
    add_conformance(sub, _positive_int)
    from rosetta.conformance.bench import add_parser as add_bench
    add_bench(sub, _positive_int)
    s = sub.add_parser("spec", help="print a spec as rosetta/1 JSON")
    s.add_argument("spec")
    return p


def cmd_train(args) -> int:
    from rosetta.train import train

    if args.steps and args.epochs:
        raise SpecError("give --steps or --epochs, not both", where="command line")
    spec = load_spec(args.spec)
    if args.threads:
        from rosetta.threads import pin_threads

        pin_threads(args.threads)           # before the framework is imported
    record = train(spec, args.backend, device=args.device, dtype=args.dtype, steps=args.steps,
                   epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                   progress=not args.quiet, mode=args.mode)
    record.pop("program")
    if args.json:
        print(json.dumps(record))
    else:
        m = " ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
        print(f"{record['model']} on {record['backend']}/{record['mode']} "
              f"({record['framework']}, "
              f"{record['device']}, {record['dtype']}): {record['steps']} steps in "
              f"{record['seconds']:.1f}s, final loss {record['final_loss']:.4f}, held-out {m}")
        if record.get("sample") is not None:
            print(f"sampled continuation of a held-out window:\n{record['sample']}")
    return 0


def cmd_models(args) -> int:
    from rosetta import models

    print(f"{'name':<13} {'params':>9} {'FLOPs/ex':>12} {'dataset':<10} {'optimizer':<9} "
          f"{'steps':>5}  description")
    for r in models.describe():
        print(f"{r['name']:<13} {r['params']:>9,} {r['flops']:>12,} {r['dataset']:<10} "
              f"{r['optimizer']:<9} {r['steps']:>5}  {' '.join(r['description'].split())}")
    return 0


def cmd_backends(args) -> int:
    from rosetta.backend_registry import backend_names, get_backend, install_hint, missing_modules

    for name in backend_names():
        missing = missing_modules(name)
        if missing:
            print(f"{name:<11} not installed ({', '.join(missing)} missing): {install_hint(name)}")
            continue
        try:
            be = get_backend(name)
            print(f"{name:<11} {be.version():<40} devices: {', '.join(be.devices())}")
        except RosettaError as e:
            print(f"{name:<11} unavailable: {e}")
    return 0


def cmd_spec(args) -> int:
    print(load_spec(args.spec).dumps())
    return 0


def cmd_conformance(args) -> int:
    from rosetta.conformance.command import run_command
    return run_command(args, load_spec)


def cmd_bench(args) -> int:
    from rosetta.conformance.bench import run_command
    return run_command(args, load_spec)


def main(argv=None) -> int:
    quiet_frameworks()
    args = build_parser().parse_args(argv)
    handler = {"train": cmd_train, "models": cmd_models, "backends": cmd_backends,
               "spec": cmd_spec, "conformance": cmd_conformance,
               "bench": cmd_bench}[args.command]
    try:
        return handler(args)
    except RosettaError as e:
        print(f"rosetta: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"rosetta: training failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rosetta: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
