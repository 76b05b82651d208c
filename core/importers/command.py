"""``rosetta import SOURCE --out DIR``: import a PyTorch, Keras or ONNX model, certify it, save
a checkpoint.

A ``.keras`` file (``model.save("model.keras")``) is loaded with ``keras.saving.load_model``
(compiled optimizer and loss included) under this process's ``KERAS_BACKEND`` and imported with
``from_keras``; its certificate runs Keras as the source.

SOURCE ``model.onnx`` (opset 13 and later) is read by ``from_onnx`` and certified forward
against ``onnx.reference`` (float64) and onnxruntime (float32) (``onnx_certificate``); the
options --steps, --dropout and --input-shape concern torch sources only.

SOURCE is ``file.py:NAME`` (NAME a ``torch.nn.Module``, or a function returning one, or returning
``{"model": ..., "example_inputs": (...), "optimizer": ..., "loss": ..., "scheduler": ...}``,
only ``model`` required; a module without example inputs takes ``--input-shape``) or a ``.pt2`` file written by
``torch.export.save`` (``rosetta.importers.pt2``: its graph in both modes, by the flags of its
BatchNorm and dropout calls; its example inputs are used unless ``--input-shape`` is given).

Exit status: 0 imported and certified (or imported, with ``--no-certify``); 1 the certificate
fails (the checkpoint is still written, with the certificate beside it); 2 not importable (one
line per unsupported module or call on stderr; nothing written).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from rosetta.errors import RosettaError
from rosetta.importers.errors import ImportRefused


def add_parser(sub, positive_int):
    p = sub.add_parser("import", help="import a PyTorch or Keras model (weights, optimizer, "
                                      "loss) or an ONNX model and certify it on every backend")
    p.add_argument("source", help="file.py:NAME (a module, a function returning one, or "
                                  "returning {model, example_inputs, optimizer, loss}), a "
                                  ".pt2 ExportedProgram, a .keras file or a .onnx file")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the neutral checkpoint to write (certificate.json beside its files)")
    p.add_argument("--backends", nargs="+", default=None,
                   help="backends to certify on (default: every backend installed here)")
    p.add_argument("--dtype", default=None, choices=["float64", "float32"],
                   help="certificate dtype (default the source's: float64, the exact tier, "
                        "1e-10; float32, teacher-forced at the measured noise bounds)")
    p.add_argument("--steps", type=positive_int, default=3, help="optimizer steps certified")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and batches")
    p.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                   help="example input shape for a module given without example inputs")
    p.add_argument("--dropout", choices=["inject", "off"], default="inject",
                   help="certificate dropout: neutral masks injected into the source's "
                        "nn.Dropout modules and the spec (default), or every rate 0")
    p.add_argument("--isolate", action="store_true",
                   help="certify each backend in a process of its own from the saved source "
                        "run (float64): memory holds one framework at a time, for large models")
    p.add_argument("--no-certify", action="store_true", help="import and save only")
    return p


def add_certify_parser(sub):
    p = sub.add_parser("certify", help="certify backends against a source run a certificate "
                                       "saved (MXNet in its own environment), without the "
                                       "source's framework")
    p.add_argument("folder", help="the certificate folder (rosetta import writes "
                                  "OUT.certificate)")
    p.add_argument("--backends", nargs="+", required=True,
                   help="backends to certify on (installed in this environment)")
    return p


def run_certify(args) -> int:
    """``rosetta certify FOLDER --backends ...``: 0 every row of the folder's certificate
    passes, 1 one fails."""
    from rosetta.backend_registry import available_backends
    from rosetta.importers.certificate import certify_saved

    backends = [b for item in args.backends for b in item.split(",") if b]
    here = available_backends()
    missing = [b for b in backends if b not in here]
    if missing:
        raise RosettaError(f"--backends: {', '.join(missing)} not installed in this environment "
                           f"(installed: {', '.join(here)}); run rosetta certify where it is")
    cert = certify_saved(args.folder, backends, progress=print)
    print(cert.table())
    return 0 if cert.passed else 1


def _shape(text):
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise RosettaError(f"--input-shape {text!r}: give positive sizes with the batch, e.g. "
                           f"2,3,64,64")
    return shape


def load_source(ref: str, input_shape=None) -> dict:
    """{model, example_inputs, optimizer, loss} from SOURCE (see the module docstring)."""
    import torch

    if ref.endswith(".pt2"):
        from rosetta.importers.pt2 import load_pt2

        model, args = load_pt2(ref)
        return {"model": model, "example_inputs": args, "name": Path(ref).stem}
    file, sep, name = ref.rpartition(":")
    if not sep or not file.endswith(".py") or not name:
        raise RosettaError(f"SOURCE {ref!r}: give file.py:NAME or a .pt2 file")
    path = Path(file)
    if not path.is_file():
        raise RosettaError(f"{file}: no such file")
    spec = importlib.util.spec_from_file_location(f"_rosetta_import_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # the user's code: name its error, never a traceback
        raise RosettaError(f"{file}: {type(e).__name__}: {e}") from None
    finally:
        sys.path.pop(0)
    if not hasattr(mod, name):
        raise RosettaError(f"{file} defines no {name!r}")
    obj = getattr(mod, name)
    if callable(obj) and not isinstance(obj, torch.nn.Module):
        try:
            obj = obj()
        except Exception as e:
            raise RosettaError(f"{file}:{name}(): {type(e).__name__}: {e}") from None
    d = dict(obj) if isinstance(obj, dict) else {"model": obj}
    if not isinstance(d.get("model"), torch.nn.Module):
        raise RosettaError(f"{ref}: gives {type(d.get('model')).__name__}, not a "
                           f"torch.nn.Module (or a dict with 'model')")
    unknown = set(d) - {"model", "example_inputs", "optimizer", "loss", "scheduler"}
    if unknown:
        raise RosettaError(f"{ref}: unknown keys {sorted(unknown)}; a source dict has model, "
                           f"example_inputs, optimizer, loss, scheduler")
    d.setdefault("name", name)
    return d


def load_keras(ref: str):
    """The Keras model saved in the ``.keras`` file ``ref`` (compiled state included)."""
    path = Path(ref)
    if not path.is_file():
        raise RosettaError(f"{ref}: no such file")
    import keras
    try:
        return keras.saving.load_model(str(path))
    except Exception as e:
        raise RosettaError(f"{ref}: not a loadable .keras model ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None


def run_command(args) -> int:
    if args.source.endswith(".onnx"):
        from rosetta.importers.onnx_import import from_onnx

        return _finish(args, lambda: from_onnx(args.source))
    if args.source.endswith(".keras"):
        from rosetta.importers.keras_import import from_keras

        model = load_keras(args.source)
        return _finish(args, lambda: from_keras(model, name=Path(args.source).stem))

    import torch

    from rosetta.importers.imported import from_torch

    d = load_source(args.source)
    example = d.get("example_inputs")
    if args.input_shape is not None and args.source.endswith(".pt2"):
        example = None
    if example is None:
        if args.input_shape is None:
            raise RosettaError(f"{args.source}: no example inputs: give --input-shape N,C,H,W")
        dtype = next(d["model"].parameters()).dtype
        example = (torch.randn(_shape(args.input_shape), dtype=dtype),)
    return _finish(args, lambda: from_torch(d["model"], example, optimizer=d.get("optimizer"),
                                            loss=d.get("loss"), scheduler=d.get("scheduler"),
                                            name=d.get("name")))


def _finish(args, do_import) -> int:
    """Import (refusal: exit 2), save, certify (exit 1 when it fails)."""
    try:
        imp = do_import()
    except ImportRefused as e:
        for line in e.lines:
            print(f"rosetta import: {line}", file=sys.stderr)
        return 2
    return _report(imp, args)
def _report(imp, args) -> int:
    """Save ``imp`` to ``--out``, certify it unless ``--no-certify``; the exit status."""
    for n in imp.notes:
        print(f"note: {n}")
    out = Path(args.out)
    imp.save(out)
    print(f"imported {imp.spec.name}: {imp.spec.model.param_count():,} parameters, "
          f"{len(imp.names)} source tensors mapped, step {imp.step} -> {out}")
    if args.no_certify:
        return 0
    backends = ([b for item in args.backends for b in item.split(",") if b]
                if args.backends else None)
    cert = imp.certify(tuple(backends) if backends else None, dtype=args.dtype,
                       steps=args.steps, seed=args.seed,
                       out=out.parent / f"{out.name}.certificate", progress=print,
                       dropout=args.dropout, isolate=args.isolate)
    print(cert.table())
    return 0 if cert.passed else 1
