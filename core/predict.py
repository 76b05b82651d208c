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


OUTPUT_SUFFIXES = (".npy", ".csv", ".json")


def check_output_path(path) -> Path:
    """The ``--output`` path, checked before any work: a suffix it can be written in, not a
    folder, its folder writable."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"--output {path}: expected a path ending in .npy (the raw outputs), .csv "
                        f"or .json (one row per example: predicted class and probabilities for "
                        f"a classifier)")
    if path.is_dir():
        raise DataError(f"--output {path}: is a folder")
    return writable_parent(path, "--output")


def probabilities(outputs: np.ndarray, loss) -> np.ndarray | None:
    """Class probabilities (float64, (N, K)) of a classifier's logits, else None: softmax for a
    softmax cross-entropy model with one (K,) logit vector per example; for a binary
    cross-entropy model with one logit, [1 - sigmoid(z), sigmoid(z)]."""
    z = np.asarray(outputs, np.float64)
    kind = getattr(loss, "kind", "")
    if kind == "softmax_cross_entropy" and z.ndim == 2:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if kind == "binary_cross_entropy" and z.ndim == 2 and z.shape[1] == 1:
        p = 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))   # sigmoid, without overflow
        return np.stack([1.0 - p, p], axis=1)
    return None


def rows(outputs: np.ndarray, names: list, loss, classes: list) -> tuple[list, list]:
    """(header, rows) of the per-example table a .csv or .json output holds: ``input``, then
    for a classifier the predicted ``class`` (its name where the data named the classes, else
    its id) and one probability per class, else the output values ``output_0``, ..."""
    probs = probabilities(outputs, loss)
    if probs is not None:
        k = probs.shape[1]
        names_k = classes if len(classes) == k else [str(i) for i in range(k)]
        header = ["input", "class", *names_k]
        top = np.argmax(probs, axis=1)
        return header, [[n, names_k[int(c)], *map(float, p)]
                        for n, c, p in zip(names, top, probs)]
    flat = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    return (["input", *[f"output_{j}" for j in range(flat.shape[1])]],
            [[n, *map(float, r)] for n, r in zip(names, flat)])


def write_outputs(path, outputs: np.ndarray | None, names: list | None = None, loss=None,
                  classes: list | None = None) -> Path:
    """Write ``outputs`` to ``path`` atomically: ``.npy`` the raw outputs (N, *output shape);
    ``.csv`` / ``.json`` one row per example (``rows``: the example's ``names``, the predicted
    class and the probabilities for a classifier). With ``outputs`` None, only check that it
    can be written."""
    path = check_output_path(path)
    if outputs is None:
        return path
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_file(path) as f:
            np.save(f, outputs, allow_pickle=False)
        return path
    names = names if names is not None else [str(i) for i in range(len(outputs))]
    header, table = rows(outputs, names, loss, classes or [])
    if suffix == ".csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows([[c if isinstance(c, str) else repr(c) for c in r] for r in table])
        text = buf.getvalue()
    else:
        from rosetta.files import dumps_json

        if "class" in header:
            objs = [{"input": r[0], "class": r[1], "probabilities": dict(zip(header[2:], r[2:]))}
                    for r in table]
        else:
            objs = [{"input": r[0], "output": r[1:]} for r in table]
        text = dumps_json(objs, indent=1) + "\n"
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))
    return path
