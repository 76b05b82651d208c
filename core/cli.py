"""The ``rosetta`` command line (docs/design.md section 6).

Exit status: 0 success, 1 a training failure, 2 bad input (one clear line on stderr, no traceback).
The CLI sits on top of everything: it reaches the zoo (``rosetta.models``) lazily.
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
import warnings
from pathlib import Path

from rosetta.errors import RosettaError, SpecError
from rosetta.backend_registry import backend_names
from rosetta.export import formats as export_formats
from rosetta.files import dumps_json
from rosetta.precision import PRECISIONS
from rosetta.hostmem import retain_freed_memory
from rosetta.validate import INT64, MAX_STEPS, memory_argument


def quiet_frameworks() -> None:
    """Users should see rosetta's output, not framework banners: each backend's quiet
    environment defaults and loggers (``Backend.quiet_env``, ``quiet_loggers``), and no
    UserWarning from the modules it requires."""
    from rosetta.backend_registry import backend_classes

    classes = backend_classes().values()
    for cls in classes:
        for k, v in cls.quiet_env.items():
            os.environ.setdefault(k, v)
        for name in cls.quiet_loggers:
            logging.getLogger(name).setLevel(logging.ERROR)
    modules = sorted({m for cls in classes for m in cls.requires})
    if modules:
        warnings.filterwarnings("ignore", category=UserWarning, module=f"({'|'.join(modules)})")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)  # exporters' notices of their own


def load_spec(arg: str):
    """SPEC is a zoo name, a ``.py`` file defining ``spec`` (a TrainSpec) or ``build()``, or a
    ``.json`` spec. Loading JSON never executes code; a ``.py`` file is the user's own code."""
    from rosetta.spec import TrainSpec

    path = Path(arg)
    if arg.endswith(".json"):
        return TrainSpec.load_json(path)
    if arg.endswith(".py"):
        namespace = run_spec_file(path)
        spec = namespace.get("spec")
        if spec is None and callable(namespace.get("build")):
            spec = _users_code(path, namespace["build"])
        if not isinstance(spec, TrainSpec):
            raise SpecError("a .py spec must define `spec` (a rosetta.TrainSpec) or a `build()` "
                            "function returning one", where=arg)
        return relative_to_file(spec, path)
    from rosetta import models
    return models.get(arg)


def relative_to_file(spec, path: Path):
    """A spec read from a ``.py`` file with its relative data path resolved against the file's
    folder: the same rule as a ``.json`` spec (``DataSpec.from_path`` in the file recorded the
    current folder, which depends on where rosetta was started)."""
    d = spec.data
    if d.source != "path" or Path(d.path).expanduser().is_absolute():
        return spec
    import dataclasses

    d = dataclasses.replace(d, base_dir=str(path.resolve().parent))
    return dataclasses.replace(spec, data=d)


def run_spec_file(path: Path) -> dict:
    """Run a ``.py`` spec file (the user's own code) and return its namespace. Whatever the file
    does wrong is one clear line naming it: it is missing or a folder, it raises (the line of
    the file it raised at), or it calls ``sys.exit`` (which would otherwise end rosetta with
    that status, 0 included, without training)."""
    where = str(path)
    if not path.exists():
        raise SpecError("no such file", where=where)
    if not path.is_file():
        raise SpecError("is a folder, expected a .py file", where=where)
    return _users_code(path, runpy.run_path, where, run_name="__rosetta_spec__")


def _users_code(path: Path, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``: running the user's spec file or its ``build()``; what goes
    wrong is one line naming the file and the line of it that raised."""
    where = str(path)
    try:
        return fn(*args, **kwargs)
    except SystemExit as e:
        raise SpecError(f"the file called sys.exit({e.code!r}) instead of defining `spec`; "
                        f"rosetta runs the file to read its spec: remove the call",
                        where=where) from None
    except RosettaError as e:
        raise SpecError(str(e), where=where) from None
    except Exception as e:  # the user's code: name its line, never a traceback
        import traceback

        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
                 if Path(f.filename).resolve() == path.resolve()]
        at = f" at line {lines[-1]}" if lines else ""
        raise SpecError(f"running the file failed{at}: {type(e).__name__}: {e}"[:300],
                        where=where) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"rosetta: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text):
    """A count on the command line: an integer in [1, 10**9] (``rosetta.validate.MAX_STEPS``)."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 1 <= v <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"expected a positive integer up to {MAX_STEPS:,}, "
                                         f"found {text!r}")
    return v


def _positive_seconds(text):
    """A duration on the command line: a positive number of seconds."""
    try:
        v = float(text)
    except ValueError:
        v = 0.0
    if not 0 < v < 1e9:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, found {text!r}")
    return v


def _seed(text):
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v < INT64:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63), found {text!r}")
    return v


def data_arguments(parser, help_text: str | None = None) -> None:
    """``--data PATH`` (and ``--label``) on every command that reads a dataset."""
    parser.add_argument("--data", metavar="PATH", help=help_text or (
        "train on this file instead of the spec's dataset: .npz (x, y, optional x_test, "
        "y_test), a folder of .npy files (memory-mapped), .csv, or a folder of images in "
        "per-class sub-folders; relative to the current folder (a data path written in a "
        ".json or .py spec is relative to the spec file's folder)"))
    parser.add_argument("--label", metavar="COLUMN",
                        help="the label column of a --data .csv file (default: the spec's "
                             "label column, else 'label')")


_data_arguments = data_arguments


def with_data(spec, path: str | None, label: str | None = None):
    """``spec`` with its data replaced by the file at ``path`` (None: unchanged). The label
    column of a CSV file is ``label``, else the spec's own (``spec.data.label``)."""
    if path is None:
        if label is not None:
            raise SpecError("--label applies to a --data .csv file", where="command line")
        return spec
    from rosetta.spec import DataSpec, TrainSpec

    kwargs = {"label": label if label is not None else spec.data.label}
    data = DataSpec.from_path(path, batch_size=spec.data.batch_size, **kwargs)
    return TrainSpec(spec.model, spec.loss, spec.optimizer, data, spec.steps, spec.seed,
                     spec.description)


def _version() -> str:
    """The installed distribution's version (``rosetta.__version__`` when run from a tree that
    is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rosetta-ml")
    except PackageNotFoundError:
        from rosetta import __version__
        return __version__


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rosetta", description="One model spec, native PyTorch, TensorFlow or JAX.")
    p.add_argument("--version", action="version", version=f"rosetta {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a spec on one backend")
    t.add_argument("spec", nargs="?", help="zoo name, .py file defining `spec`, or .json spec "
                   "(optional with --resume: the checkpoint's own)")
    t.add_argument("--backend", required=True, choices=[*backend_names(), "auto"],
                   help="auto: the fastest backend for this spec here, among those that pass a "
                        "short float64 check (measured once, then cached)")
    t.add_argument("--remeasure", action="store_true",
                   help="with --backend auto: check and time again instead of the cached choice")
    t.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda"])
    t.add_argument("--mode", help="how the step is compiled: torch eager (default) or compile, "
                   "tensorflow xla (default) or function, jax jit")
    t.add_argument("--dtype", choices=["float32", "float64"],
                   help="default float32 (resuming: the checkpoint's); an alias of --precision")
    t.add_argument("--precision", choices=list(PRECISIONS),
                   help="the precision policy (docs/guide/precision.md): float32, float64, "
                        "bfloat16, mixed_bfloat16, mixed_float16 (default: --dtype's)")
    t.add_argument("--steps", type=_positive_int, help="number of updates (default: the spec's; "
                   "resuming: updates to add, default the rest of the spec's)")
    t.add_argument("--epochs", type=_positive_int, help="whole passes over the training data "
                   "(instead of --steps)")
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--seed", type=_seed)
    _data_arguments(t)
    t.add_argument("--save", metavar="DIR", help="save checkpoints in this run folder "
                   "(DIR/step-NNNNNNNN; one at the end, and every --save-every updates)")
    t.add_argument("--save-every", type=_positive_int, metavar="N")
    t.add_argument("--keep", type=_positive_int, metavar="K",
                   help="keep the K newest checkpoints in --save DIR (default: all)")
    t.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint (or the newest "
                   "in a run folder), on any backend")
    t.add_argument("--log", metavar="DIR", help="write scalars.jsonl and TensorBoard event "
                   "files in DIR; a new run refuses a DIR that holds a run's log (give a new "
                   "one), a --resume run appends to it")
    t.add_argument("--log-every", type=_positive_int, default=10, metavar="N",
                   help="log the gradient norm every N updates (one extra gradient pass each; "
                        "loss and learning rate are logged every update; default 10)")
    t.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help="evaluate on the held-out data every N updates")
    t.add_argument("--json", action="store_true",
                   help="print the run record as one JSON object on the last line of stdout")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--threads", type=_positive_int,
                   help="compute threads per framework (default: the cores less the machine's "
                        "load average, at least 1, unless OMP_NUM_THREADS or TF_NUM_*_THREADS "
                        "is set)")
    t.add_argument("--devices", type=_positive_int, default=1, metavar="N",
                   help="train data-parallel on N devices with the backend's own engine (torch "
                        "DDP, tf.distribute, a JAX mesh); the batch must divide by N")
    t.add_argument("--worker-timeout", type=_positive_seconds, metavar="SECONDS",
                   help="with --devices: when a worker is lost (its host died, it was killed), "
                        "every other worker ends the run within about this many seconds with "
                        "one line naming it, never hangs (default 60)")
    t.add_argument("--batchnorm-stats", dest="batchnorm", default="global",
                   choices=["global", "replica"], help="with --devices: BatchNorm statistics "
                   "of the global batch (default, the one-device math) or of each replica's")
    t.add_argument("--shard-params", action="store_true",
                   help="with --devices N: shard parameters and optimizer state over the N "
                        "devices with the engine's own machinery (torch FSDP2, JAX "
                        "NamedSharding); checkpoints stay whole")
    memory_argument(t)

    e = sub.add_parser("eval", help="held-out loss and metrics of a checkpoint")
    e.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a run folder (its newest)")
    e.add_argument("--backend", required=True, choices=backend_names())
    e.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda"])
    e.add_argument("--dtype", choices=["float32", "float64"], help="default: the checkpoint's")
    _precision_argument(e)
    _data_arguments(e, "evaluate on this file: its held-out arrays (x_test, y_test) if it has "
                       "them, else every example (default: the checkpoint's held-out data)")
    e.add_argument("--json", action="store_true")

    pr = sub.add_parser("predict", help="model outputs of a checkpoint for an input file")
    pr.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a run folder (its newest)")
    pr.add_argument("--backend", required=True, choices=backend_names())
    pr.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda"])
    pr.add_argument("--dtype", choices=["float32", "float64"], help="default: the checkpoint's")
    _precision_argument(pr)
    pr.add_argument("--input", required=True, metavar="X",
                    help="raw inputs, read the way the training data was (the checkpoint "
                         "records it: image size, colour and scaling; CSV feature columns by "
                         "name): an image file, a folder of images (sub-folders too), a .csv "
                         "file; or arrays: .npy (a single-input model) or .npz (one array per "
                         "model input)")
    pr.add_argument("--output", required=True, metavar="Y",
                    help="where to write the outputs: .npy (the raw outputs), or .csv / .json "
                         "(one row per input; for a classifier the predicted class, named as "
                         "the training data named it, and the probability of each class)")
    pr.add_argument("--batch-size", type=_positive_int, default=512)

    x = sub.add_parser("export", help="a checkpoint as a framework's own deployable artifact, "
                                      "checked without rosetta")
    x.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a run folder (its newest)")
    x.add_argument("--format", required=True, choices=list(export_formats()))
    x.add_argument("--out", required=True, metavar="DIR", help="the export folder to write (a "
                   "new folder; an earlier export there is replaced only with --overwrite)")
    x.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export at --out (once the new one is whole)")
    x.add_argument("--dtype", choices=["float32", "float64"],
                   help="default: the checkpoint's where the format keeps it, else float32")
    x.add_argument("--no-check", dest="check", action="store_false",
                   help="skip running the artifact without rosetta against the NumPy reference")

    d = sub.add_parser("data", help="write the dataset a spec trains on to a file")
    d.add_argument("spec", help="zoo name, .py file or .json spec")
    d.add_argument("--out", required=True, metavar="PATH",
                   help="a .npz file, or a folder for memory-mapped .npy files")

    sub.add_parser("models", help="list the model zoo")
    b = sub.add_parser("backends", help="installed backends, versions and devices")
    b.add_argument("--capabilities", action="store_true",
                   help="what each backend can do (modes, precision policies, export formats, "
                        "devices, hosts), read from its declaration; imports no framework")
    from rosetta.conformance.command import add_parser as add_conformance
    add_conformance(sub, _positive_int)
    from rosetta.conformance.bench import add_parser as add_bench
    add_bench(sub, _positive_int)
    from rosetta.importers.command import add_certify_parser, add_parser as add_import
    add_import(sub, _positive_int)
    add_certify_parser(sub)
    s = sub.add_parser("spec", help="print a spec as rosetta/1 JSON")
    s.add_argument("spec")
    return p


def cmd_train(args) -> int:
    from rosetta.training import train

    if args.steps and args.epochs:
        raise SpecError("give --steps or --epochs, not both", where="command line")
    if args.spec is None and args.resume is None:
        raise SpecError("give a SPEC to train, or --resume CKPT to continue a run",
                        where="command line")
    if args.remeasure and args.backend != "auto":
        raise SpecError("--remeasure applies to --backend auto", where="command line")
    for flag in ("save", "log", "resume", "data", "spec"):
        if getattr(args, flag) == "":   # Path("") is the current folder: never what was meant
            raise SpecError(f"an empty {'SPEC' if flag == 'spec' else '--' + flag} path",
                            where="command line")
    if (args.save_every or args.keep) and not args.save:
        raise SpecError("--save-every and --keep need --save DIR", where="command line")
    if args.log and not args.resume:
        from rosetta.logs import check_fresh_log

        check_fresh_log(args.log)
    spec = None
    if args.spec is not None:
        spec = with_data(load_spec(args.spec), args.data, args.label)
    elif args.data is not None:
        from rosetta import checkpoint

        spec = with_data(checkpoint.load(args.resume).spec, args.data, args.label)
    _threads(args.threads)
    from rosetta.distributed import set_worker_timeout

    set_worker_timeout(args.worker_timeout)
    record = train(spec, args.backend, device=args.device, dtype=args.dtype, steps=args.steps,
                   epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                   progress=not args.quiet, mode=args.mode, save=args.save,
                   save_every=args.save_every, keep=args.keep, resume=args.resume,
                   log=args.log, log_every=args.log_every, eval_every=args.eval_every,
                   remeasure=args.remeasure, devices=args.devices, batchnorm=args.batchnorm,
                   ignore_memory=args.ignore_memory, precision=args.precision,
                   shard_params=args.shard_params)
    record.pop("program")
    from rosetta.distributed import is_main_process

    if not is_main_process(record["backend"]):  # a torchrun rank other than 0: rank 0 reports
        return 0
    if args.json:
        print(dumps_json(record))
    else:
        m = " ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
        start = f" (updates {record['start_step']}..{record['start_step'] + record['steps']})" \
            if record["start_step"] else ""
        print(f"{record['model']} on {record['backend']}/{record['mode']} "
              f"({record['framework']}, "
              f"{record['device']}{_times(record.get('devices'))}, {record['precision']}): "
              f"{record['steps']} steps{start} in "
              f"{record['seconds']:.1f}s, final loss {record['final_loss']:.4f}, held-out {m}")
        if record.get("saved"):
            print(f"checkpoint: {record['saved']}")
        if record.get("sample") is not None:
            print(f"sampled continuation of a held-out window:\n{record['sample']}")
    return 0


def _threads(n: int | None) -> None:
    """``--threads N``, else the default (``rosetta.threads.default_threads``: the cores less
    the machine's load), before any framework is imported."""
    from rosetta.threads import apply_default_threads, pin_threads

    pin_threads(n) if n else apply_default_threads()


def _times(devices) -> str:
    return f" x{devices}" if devices and devices > 1 else ""


def _precision_argument(parser) -> None:
    parser.add_argument("--precision", choices=list(PRECISIONS),
                        help="the precision policy to run the checkpoint under (default: the "
                             "one it was trained under, so that eval reproduces its metrics; "
                             "float32 runs a mixed checkpoint's float32 masters in float32)")


def _restored(args):
    """(checkpoint, program with it loaded) for ``eval`` and ``predict``: under the precision
    asked for, else the checkpoint's own (a mixed one's float32 masters under its policy)."""
    from rosetta import checkpoint
    from rosetta.backend_registry import get_backend
    from rosetta.precision import resolve

    ckpt = checkpoint.load(args.checkpoint)
    precision = resolve(args.dtype, args.precision, default=None) or ckpt.precision
    program = get_backend(args.backend).compile(ckpt.spec, dtype=precision,
                                                device=args.device)
    checkpoint.restore(program, ckpt)
    return ckpt, program


def cmd_eval(args) -> int:
    from rosetta import checkpoint
    from rosetta.training import check_data, dataset_inputs, evaluate, prepare_labels

    _threads(None)
    ckpt = checkpoint.load(args.checkpoint)
    spec = with_data(ckpt.spec, args.data, args.label)
    ds = _eval_data(spec, ckpt, args.data)
    check_data(spec, ds, 1)
    if args.data is not None and not ds.held_out_given:
        x, y = ds.x_train_all, ds.y_train_all   # a file without held-out arrays: all of it
    else:
        x, y = ds.x_test, ds.y_test
    _, program = _restored(args)
    dtype = program.dtype
    metrics = evaluate(program, spec, dataset_inputs(spec, x, dtype), prepare_labels(spec, y))
    record = {"checkpoint": str(ckpt.path), "model": spec.name, "step": ckpt.step,
              "backend": args.backend, "dtype": dtype, "precision": program.precision,
              "examples": len(y), "metrics": metrics}
    if args.json:
        print(dumps_json(record))
    else:
        m = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"{spec.name} at update {ckpt.step} on {args.backend} ({program.precision}), "
              f"{len(y)} held-out examples: {m}")
    return 0


def _eval_data(spec, ckpt, path):
    """The dataset ``eval`` reads: the checkpoint's own, or ``--data`` read the way the training
    data was (``rosetta.preprocessing``: an image folder's sub-folders named by the recorded
    classes, a CSV file's recorded feature columns)."""
    if path is None:
        return spec.data.load(model=spec.model)
    from rosetta import datafiles, preprocessing

    prep = preprocessing.of_checkpoint(ckpt)
    d = spec.data
    kw = {}
    target = d.resolved_path()
    if prep.get("kind") == "images" and target.is_dir() and prep.get("classes"):
        kw["classes"] = prep["classes"]
    if prep.get("kind") == "csv" and target.suffix.lower() == ".csv":
        kw["columns"] = prep["columns"]
    if not kw:
        return d.load(model=spec.model)
    return datafiles.load(target, spec.model, label=d.label, test_fraction=d.test_fraction,
                          seed=d.seed, **kw)


def cmd_predict(args) -> int:
    from rosetta import checkpoint, preprocessing
    from rosetta.predict import predict, write_outputs

    _threads(None)
    ckpt = checkpoint.load(args.checkpoint)
    prep = preprocessing.of_checkpoint(ckpt)
    inputs, names = preprocessing.inputs_from_files(args.input, ckpt.spec.model, prep,
                                                    label=ckpt.spec.data.label)
    out_path = write_outputs(args.output, None)  # the output path is checked before any work
    _, program = _restored(args)
    outputs = predict(program, inputs, args.batch_size)
    write_outputs(out_path, outputs, names, ckpt.spec.loss, preprocessing.classes(prep))
    what = (f"{outputs.shape} {outputs.dtype} outputs" if out_path.suffix.lower() == ".npy"
            else f"the predictions for {len(outputs)} inputs")
    print(f"wrote {what} of {ckpt.spec.name} (update {ckpt.step}, {args.backend}) to "
          f"{out_path}")
    return 0


def cmd_export(args) -> int:
    from rosetta import export

    out = Path(args.out)
    if (out / export.EXPORT_JSON).is_file() and not args.overwrite:   # before any work
        raise SpecError(f"--out {out}: an earlier export is already there; give a new folder, "
                        f"or --overwrite to replace it", where="command line")
    out = export.export(args.checkpoint, args.format, args.out, dtype=args.dtype)
    print(f"wrote {args.format} export to {out} (load it with: python {out / export.LOADER} "
          f"{out} INPUTS.npz OUTPUTS.npz)")
    if not args.check:
        return 0
    from rosetta.conformance.artifacts import check

    results = check(out)
    for w in results:
        print(f"{'PASS' if w.passed else 'FAIL'} {w}")
    return 0 if all(w.passed for w in results) else 1


def cmd_data(args) -> int:
    from rosetta import data

    spec = load_spec(args.spec)
    out = Path(args.out)
    if out.suffix not in (".npz", ""):   # checked before the data is made
        raise SpecError("--out must be a .npz file or a folder (no suffix) for .npy files",
                        where=str(out))
    ds = spec.data.load(model=spec.model)
    if out.suffix == ".npz":
        data.save_npz(ds, out)
    else:
        data.save_npy_dir(ds, out)
    print(f"wrote {spec.name}'s dataset {ds.name!r} ({ds.n_train} training, "
          f"{len(ds.y_test)} held-out examples) to {out}")
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
    from rosetta.backend_registry import backend_class, backend_names, get_backend

    if args.capabilities:
        from rosetta.capabilities import table
        for name, rows in table().items():
            print(name)
            for title, text in rows.items():
                print(f"  {title + ':':<28} {text}")
        return 0
    for name in backend_names():
        try:
            cls = backend_class(name)
        except RosettaError as e:
            print(f"{name:<11} unavailable: {e}")
            continue
        missing = cls.missing()
        if missing:
            print(f"{name:<11} not installed ({', '.join(missing)} missing): "
                  f"{cls.install_hint()}")
            continue
        try:
            be = get_backend(name)
            print(f"{name:<11} {be.version():<40} devices: {', '.join(be.devices())}")
        except (RosettaError, ImportError) as e:
            print(f"{name:<11} unavailable: {e}")
    return 0


def cmd_spec(args) -> int:
    print(load_spec(args.spec).dumps())
    return 0


def cmd_conformance(args) -> int:
    from rosetta.conformance.command import run_command
    return run_command(args, lambda s: with_data(load_spec(s), args.data, args.label))


def cmd_bench(args) -> int:
    from rosetta.conformance.bench import run_command
    return run_command(args, lambda s: with_data(load_spec(s), args.data, args.label))


def cmd_import(args) -> int:
    from rosetta.importers.command import run_command
    return run_command(args)


def cmd_certify(args) -> int:
    from rosetta.importers.command import run_certify
    return run_certify(args)


def main(argv=None) -> int:
    """The command line. Called without ``argv`` it is the process's entry point (the
    ``rosetta`` script, ``python -m rosetta.cli``): Ctrl-C then ends the process within
    ``rosetta.interrupts.GRACE`` seconds, status 130 and one line, whatever it was doing. Called
    with ``argv`` (in-process) an interrupt returns 130."""
    from rosetta import interrupts

    entry = argv is None
    if entry:
        interrupts.install()
    try:
        status = _main(argv)
    except KeyboardInterrupt:
        if entry:
            interrupts.stop()           # no interpreter teardown: see rosetta.interrupts
        print("rosetta: interrupted", file=sys.stderr)
        return 130
    except BaseException:
        if entry and interrupts.requested():   # a framework turned the interrupt into an error
            interrupts.stop()
        raise
    if entry and interrupts.requested():
        interrupts.stop()
    return status


def _main(argv) -> int:
    quiet_frameworks()
    retain_freed_memory()  # each step reuses the memory the last one freed (rosetta.hostmem)
    args = build_parser().parse_args(argv)
    handler = {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict, "data": cmd_data,
               "export": cmd_export,
               "models": cmd_models, "backends": cmd_backends, "spec": cmd_spec,
               "conformance": cmd_conformance, "bench": cmd_bench,
               "import": cmd_import, "certify": cmd_certify}[args.command]
    try:
        return handler(args)
    except RosettaError as e:
        return _failed(args, 2, f"rosetta: error: {_one_line(e)}")
    except FloatingPointError as e:
        return _failed(args, 1, f"rosetta: training failed: {_one_line(e)}")
    except BrokenPipeError:  # stdout closed early (``rosetta spec x | head``): not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


def _one_line(e) -> str:
    """An error message on one line (a user's text may hold newlines), at most 1000
    characters (a message quoting a huge value)."""
    text = " ".join(str(e).split("\n"))
    return text if len(text) <= 1000 else text[:997] + "..."


def _failed(args, status: int, message: str) -> int:
    """One line on stderr; with ``--json``, also a JSON object on stdout, so that a consumer of
    ``--json`` always reads JSON: ``{"error": message, "status": status}``. After a Ctrl-C
    (a framework may turn it into an error of its own) the interrupt's line instead."""
    from rosetta import interrupts

    if interrupts.requested():
        interrupts.stop()
    print(message, file=sys.stderr)
    if getattr(args, "json", False):
        print(dumps_json({"error": message, "status": status}))
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
