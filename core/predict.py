"""``rosetta predict``: a checkpoint's model outputs (eval mode) for the examples of a file.

Inputs: a ``.npy`` array for a single-input model, or a ``.npz`` with one array per model input
name; every array batch-first in canonical layout (channels last), checked against the model's
inputs before any framework runs. Outputs: one ``.npy`` (N, *output shape) in the program dtype,
written atomically (a temporary file in the same folder, then renamed).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from rosetta.errors import DataError
from rosetta.datacheck import check_input_ranges
from rosetta.files import atomic_file, writable_parent


def read_inputs(path, graph) -> dict[str, np.ndarray]:
    """{input name: array} from ``path``, checked against the model's inputs."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--input {path}: no such file")
    names = [i.name for i in graph.inputs]
    try:
        if path.suffix == ".npy":
            if len(names) != 1:
                raise DataError(f"--input {path}: model {graph.name!r} has inputs {names}; give "
                                f"a .npz with one array per input")
            arrays = {names[0]: np.load(path, allow_pickle=False)}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if len(names) == 1 and len(keys) == 1:
                    arrays = {names[0]: z[keys[0]]}
                else:
                    missing = [n for n in names if n not in keys]
                    if missing:
                        raise DataError(f"--input {path}: no array named {missing[0]!r} (model "
                                        f"{graph.name!r} takes {names}; the file has {keys})")
                    arrays = {n: z[n] for n in names}
        else:
            raise DataError(f"--input {path}: expected a .npy or .npz file")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"--input {path}: not a readable NumPy file ({e})") from None
    lengths = set()
    for inp in graph.inputs:
        a = arrays[inp.name]
        where = f"--input {path}: array {inp.name!r}"
        if a.ndim != len(inp.shape) + 1 or tuple(a.shape[1:]) != tuple(inp.shape):
            raise DataError(f"{where} has shape {a.shape}; model {graph.name!r} expects "
                            f"(N, {', '.join(map(str, inp.shape))})")
        if inp.kind == "int" and not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"{where} must hold integers (ids or lengths), found {a.dtype}")
        if inp.kind == "float":
            if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise DataError(f"{where} must be numeric, found {a.dtype}")
            bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
            if bad.size:
                raise DataError(f"{where}: example {bad[0]} holds NaN or Inf")
        lengths.add(len(a))
    if len(lengths) > 1:
        raise DataError(f"--input {path}: the arrays hold different numbers of examples "
                        f"{sorted(lengths)}")
    if lengths == {0}:
        raise DataError(f"--input {path}: no examples")
    check_input_ranges(graph, arrays, f"--input {path}:")
    return arrays


def predict(program, inputs: dict, batch_size: int = 512) -> np.ndarray:
    """Eval-mode outputs of ``program`` for every example, ``batch_size`` at a time."""
    from rosetta.data import cast_inputs, take

    inputs = cast_inputs(inputs, program.dtype)
    n = len(next(iter(inputs.values())))
    outs = [program.forward(take(inputs, slice(i, i + batch_size)), training=False)
            for i in range(0, n, batch_size)]
    return np.concatenate(outs)


def write_outputs(path, outputs: np.ndarray | None) -> Path:
    """Write ``outputs`` to ``path`` (.npy) atomically; with None, only check that it can be."""
    path = Path(path)
    if path.suffix != ".npy":
        raise DataError(f"--output {path}: expected a path ending in .npy")
    if path.is_dir():
        raise DataError(f"--output {path}: is a folder")
    writable_parent(path, "--output")
    if outputs is None:
        return path
    with atomic_file(path) as f:
        np.save(f, outputs, allow_pickle=False)
    return path
