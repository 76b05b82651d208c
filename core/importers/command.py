"""``rosetta import SOURCE --out DIR``: import a PyTorch or ONNX model, certify it, save a
checkpoint.

SOURCE ``model.onnx`` (opset 13 and later) is read by ``from_onnx`` and certified forward
against ``onnx.reference`` (float64) and onnxruntime (float32) (``onnx_certificate``); the
options --steps, --dropout and --input-shape concern torch sources only.

SOURCE is ``file.py:NAME`` (NAME a ``torch.nn.Module``, or a function returning one, or returning
``{"model": ..., "example_inputs": (...), "optimizer": ..., "loss": ...}``, only ``model``
required; a module without example inputs takes ``--input-shape``) or a ``.pt2`` file written by
``torch.export.save``. torch 2.13 cannot switch a loaded program's module between training and
eval mode (``ep.module().train()`` raises), and the importer captures both, so a ``.pt2`` is
refused with that line (exit 2) until torch can.

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
    p = sub.add_parser("import", help="import a PyTorch model (weights, optimizer, loss) or an "
                                      "ONNX model and certify it on every backend")
    p.add_argument("source", help="file.py:NAME (a module, a function returning one, or "
                                  "returning {model, example_inputs, optimizer, loss}), a "
                                  ".pt2 ExportedProgram, or a .onnx file")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the neutral checkpoint to write (certificate.json beside its files)")
    p.add_argument("--backends", nargs="+", default=None,
                   help="backends to certify on (default: every backend installed here)")
    p.add_argument("--dtype", default="float64", choices=["float64"],
                   help="certificate dtype (float64: the exact tier, 1e-10)")
    p.add_argument("--steps", type=positive_int, default=3, help="optimizer steps certified")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and batches")
    p.add_argument("--input-shape", default=None, metavar="N,C,H,W",
                   help="example input shape for a module given without example inputs")
    p.add_argument("--dropout", choices=["inject", "off"], default="inject",
                   help="certificate dropout: neutral masks injected into the source's "
                        "nn.Dropout modules and the spec (default), or every rate 0")
    p.add_argument("--no-certify", action="store_true", help="import and save only")
    return p


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
        path = Path(ref)
        if not path.is_file():
            raise RosettaError(f"{ref}: no such file")
        try:
            ep = torch.export.load(str(path))
        except Exception as e:
            raise RosettaError(f"{ref}: not a torch.export ExportedProgram ({e})") from None
        args = ep.example_inputs[0] if ep.example_inputs else None
        return {"model": ep.module(), "example_inputs": args, "name": path.stem}
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
    unknown = set(d) - {"model", "example_inputs", "optimizer", "loss"}
    if unknown:
        raise RosettaError(f"{ref}: unknown keys {sorted(unknown)}; a source dict has model, "
                           f"example_inputs, optimizer, loss")
    d.setdefault("name", name)
    return d


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
                       dropout=args.dropout)
    print(cert.table())
    return 0 if cert.passed else 1


def run_command(args) -> int:
    if args.source.endswith(".onnx"):
        from rosetta.importers.onnx_import import from_onnx

        try:
            imp = from_onnx(args.source)
        except ImportRefused as e:
            for line in e.lines:
                print(f"rosetta import: {line}", file=sys.stderr)
            return 2
        return _report(imp, args)

    import torch

    from rosetta.importers.imported import from_torch

    d = load_source(args.source)
    example = d.get("example_inputs")
    if example is None:
        if args.input_shape is None:
            raise RosettaError(f"{args.source}: no example inputs: give --input-shape N,C,H,W")
        dtype = next(d["model"].parameters()).dtype
        example = (torch.randn(_shape(args.input_shape), dtype=dtype),)
    try:
        imp = from_torch(d["model"], example, optimizer=d.get("optimizer"), loss=d.get("loss"),
                         name=d.get("name"))
    except ImportRefused as e:
        for line in e.lines:
            print(f"rosetta import: {line}", file=sys.stderr)
        return 2
    return _report(imp, args)
