"""``rosetta export``: a checkpoint turned into each framework's own deployable artifact, made by
the framework's own exporter, and checked without rosetta (docs/design.md section 9).

An export is a folder (written to a hidden temporary folder beside it, then renamed into place):

    export.json       format, model name, dtype, the inputs in order ({name, shape, dtype}, batch
                      axis open), the output shape, the checkpoint it came from and its update
                      count, the files below: plain JSON for the loader, no rosetta needed
    <artifact files>  the format's own: model.pt2 + state_dict.pt, saved_model/,
                      model.stablehlo + variables.msgpack, model.keras, model.onnx
    load.py           a standalone script (it never imports rosetta) that loads the artifact with
                      its framework and runs it: ``python load.py EXPORT_DIR INPUTS.npz OUT.npz``
                      reads one array per input name (canonical layout: batch first, channels
                      last) and writes the outputs as ``y``. It is the script the check runs.

Formats (``formats()``: format -> the backend that writes it, read from each backend's
``Backend.formats``, an ``ExportFormat`` with the dtypes it keeps): ``torch`` (torch.export ``model.pt2`` + ``state_dict.pt``; float32, float64), ``onnx`` (torch's
ONNX exporter, run by onnxruntime; float32), ``savedmodel`` (``tf.saved_model.save`` with a
``serving_default`` signature; float32, float64), ``keras`` (a ``keras.Model`` of Keras 3 layers,
``model.keras``; float32), ``jax`` (``jax.export`` serialized StableHLO with a symbolic batch
axis, + the flax variables; float32, float64).

Each backend's ``export.py`` has the same shape: ``FORMATS`` (the formats it writes, its
``Backend.formats``) and
``export(program, fmt, out, *, example) -> list[str]``: write the artifact of ``fmt`` for the
lowered ``program`` (its parameters and state already loaded from the checkpoint) into the empty
folder ``out``, and return the names of the files and folders written; an op the format cannot
express is a ``BackendUnavailable`` naming the node and the op, raised before anything is written.
Each format's standalone loader lives beside it as ``backends/<name>/load_<format>.py``; each is
self-contained on purpose (a user copies one file, with no rosetta to import), so their few lines
of argument and ``.npz`` handling are repeated rather than shared.

The check (``check``): the loader is run in a fresh Python process in which ``import rosetta``
fails, on held-out inputs; its outputs are compared with the spec's NumPy float64 reference
forward (eval mode) from the checkpoint's parameters: normwise relative error within 1e-5 for
float32, 1e-10 for float64.
"""

from __future__ import annotations


import importlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

from rosetta.errors import BackendUnavailable, DataError
from rosetta.files import install_folder, temp_folder, writable_parent

EXPORT_JSON = "export.json"
LOADER = "load.py"

def formats() -> dict:
    """{format: (backend that writes it, its ``ExportFormat``)} over every registered backend
    (read from their ``Backend.formats``; no framework is imported)."""
    from rosetta.backend_registry import backend_classes

    return {fmt: (name, f) for name, cls in backend_classes().items()
            for fmt, f in cls.formats.items()}


def export_format(fmt: str):
    """The ``ExportFormat`` of ``fmt``; ``DataError`` naming the formats otherwise."""
    return _lookup(fmt)[1]


def backend_of(fmt: str) -> str:
    return _lookup(fmt)[0]


def _lookup(fmt: str):
    known = formats()
    if fmt not in known:
        raise DataError(f"unknown export format {fmt!r}; formats: {', '.join(known)}")
    return known[fmt]


def export_dtype(fmt: str, ckpt_dtype: str, dtype: str | None) -> str:
    """The artifact's dtype: the one asked for, else the checkpoint's where the format keeps
    it, else float32."""
    keeps = export_format(fmt).dtypes
    if dtype is None:
        return ckpt_dtype if ckpt_dtype in keeps else "float32"
    if dtype not in keeps:
        raise BackendUnavailable(f"format {fmt!r} exports {' or '.join(keeps)}, not {dtype}")
    return dtype


def loader_path(fmt: str) -> Path:
    """The standalone loader script of ``fmt`` (``backends/<name>/load_<fmt>.py``)."""
    spec = importlib.util.find_spec(f"rosetta.backends.{backend_of(fmt)}")
    return Path(list(spec.submodule_search_locations)[0]) / f"load_{fmt}.py"


def check_out_path(out) -> Path:
    """``--out``: a new folder, or an earlier export (replaced once the new one is whole)."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and (out / EXPORT_JSON).is_file()):
        raise DataError(f"--out {out}: exists and is not an export folder; give a new folder")
    return writable_parent(out, "--out")


def example_inputs(spec, n: int = 8) -> dict:
    """Held-out inputs of the spec's data (its first ``n``), else None."""
    try:
        ds = spec.data.load(model=spec.model)
    except DataError:
        return None
    from rosetta.data import as_inputs, take

    x = as_inputs(ds.x_test, [i.name for i in spec.model.inputs])
    n = min(n, len(ds.y_test))
    return {k: np.asarray(v) for k, v in take(x, slice(0, n)).items()}


def export(ckpt_path, fmt: str, out, *, dtype: str | None = None) -> Path:
    """Export the checkpoint at ``ckpt_path`` to ``fmt`` in the folder ``out`` (see the module
    docstring); returns ``out``. Nothing is left at ``out`` if the exporter fails."""
    from rosetta import checkpoint
    from rosetta.backend_registry import get_backend

    backend = backend_of(fmt)
    out = check_out_path(out)
    ckpt = checkpoint.load(ckpt_path)
    spec = ckpt.spec
    dtype = export_dtype(fmt, ckpt.dtype, dtype)
    example = example_inputs(spec)
    if example is None:  # the data lived in memory: random inputs of the right kinds
        from rosetta.data import sample_inputs

        example = sample_inputs(spec.model, 8)
    program = get_backend(backend).compile(spec, dtype=dtype)
    checkpoint.restore(program, ckpt)
    module = importlib.import_module(f"rosetta.backends.{backend}.export")
    tmp = temp_folder(out)
    try:
        files = module.export(program, fmt, tmp, example=cast_example(spec, example, dtype))
        shutil.copyfile(loader_path(fmt), tmp / LOADER)
        meta = {"format": fmt, "model": spec.name, "dtype": dtype,
                "inputs": [{"name": i.name, "shape": list(i.shape),
                            "dtype": dtype if i.kind == "float" else "int64"}
                           for i in spec.model.inputs],
                "output_shape": list(spec.model.output_type.shape),
                "checkpoint": str(ckpt.path), "step": ckpt.step,
                "files": sorted(files) + [LOADER],
                "usage": f"python {LOADER} THIS_FOLDER INPUTS.npz OUTPUTS.npz"}
        (tmp / EXPORT_JSON).write_text(json.dumps(meta, indent=1))
        install_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cast_example(spec, inputs: dict, dtype: str) -> dict:
    """Float inputs in ``dtype``, int inputs int64 (as the loaders receive them)."""
    kinds = {i.name: i.kind for i in spec.model.inputs}
    return {k: np.asarray(v, dtype if kinds[k] == "float" else np.int64)
            for k, v in inputs.items()}
