"""How raw files became model inputs: recorded in a checkpoint, applied again to new files.

A data source turns raw files into arrays (``rosetta.datafiles``); a trained model only knows the
arrays. So a checkpoint records (``record.json``, key ``preprocessing``) what the source did,
and ``rosetta predict`` / ``rosetta eval`` (and ``TrainedModel.predict`` on files) apply the same
to raw inputs (``inputs_from_files``):

images (a folder of images by class)
    ``{"kind": "images", "height": H, "width": W, "channels": C, "color": "RGB" | "L",
    "resize": "bilinear", "scale": 1/255, "classes": [names by class id]}``: each new image is
    converted to ``color``, resized bilinearly to (H, W) and scaled, exactly as in training
    (``datafiles.read_images``, the one place that rule lives).
csv
    ``{"kind": "csv", "label": COLUMN, "columns": [feature names in order], "classes": []}``:
    a new CSV file gives those columns, by name, in that order (its column order and any other
    column, the label included, do not matter).
arrays (``.npz``, ``.npy`` folders, in-memory arrays, built-in datasets)
    ``{"kind": "arrays", "classes": [...]}``: new inputs are arrays already (``.npy``/``.npz``).

``classes`` names the class ids where the data named them (an image folder's sub-folders, a
``.npz``'s ``classes``), else is empty: predictions then name classes by id. A checkpoint
without the key (written before it existed) loads as ``{}``: images are then read by the rule
above from the model's input shape, a CSV file by every column but the spec's label column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rosetta.errors import DataError

KEY = "preprocessing"


def record(ds) -> dict:
    """The preprocessing record of a ``Dataset`` (see the module docstring)."""
    rec = dict(ds.preprocessing) if ds.preprocessing else {"kind": "arrays"}
    rec["classes"] = [str(c) for c in ds.classes]
    return rec


def of_checkpoint(ckpt) -> dict:
    """A checkpoint's record (``{}`` for one written before rosetta recorded it)."""
    rec = ckpt.record.get(KEY)
    return dict(rec) if isinstance(rec, dict) else {}


def classes(prep: dict) -> list:
    return [str(c) for c in prep.get("classes") or []]


def inputs_from_files(path, graph, prep: dict | None = None, label: str = "label",
                      flag: str = "--input") -> tuple[dict, list]:
    """({input name: array}, a name per example) for the raw inputs at ``path``, through the
    recorded preprocessing ``prep``: an image file, a folder of images (sub-folders too, named
    by their relative path), a ``.csv`` file (named by line), or a ``.npy``/``.npz`` (named by
    row). Checked against ``graph``'s inputs before any framework runs."""
    from rosetta import datafiles
    from rosetta.predict import read_inputs

    prep = prep or {}
    path = Path(path).expanduser()
    where = f"{flag} {path}"
    if not path.exists():
        raise DataError(f"{where}: no such file or folder")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in datafiles.IMAGE_SUFFIXES:
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in
            datafiles.IMAGE_SUFFIXES and not any(part.startswith(".") for part in
                                                 p.relative_to(path).parts))
        if not files:
            raise DataError(f"{where}: a folder with no image files (.png, .jpg, ...); give "
                            f"images, a .csv, .npy or .npz file")
        rule = image_rule(graph, prep, where)
        x = datafiles.read_images(files, rule)
        names = [p.name if p == path else str(p.relative_to(path)) for p in files]
        arrays = {graph.inputs[0].name: x}
    elif suffix == ".csv":
        if len(graph.inputs) != 1:
            raise DataError(f"{where}: a CSV file feeds a model with one input; model "
                            f"{graph.name!r} takes {[i.name for i in graph.inputs]}")
        header, table, lines = datafiles.read_table(path)
        columns = prep.get("columns") if prep.get("kind") == "csv" else None
        label = prep.get("label", label)
        idx = datafiles.feature_columns(header, label, columns, where)
        if len(lines) == 0:
            raise DataError(f"{where}: a header and no examples; give one example per line")
        x = datafiles.csv_inputs(table[:, idx], graph)
        arrays = {graph.inputs[0].name: x}
        names = [f"line {int(n)}" for n in lines]
        return _checked(arrays, graph, where), names
    elif suffix in (".npy", ".npz"):
        arrays = read_inputs(path, graph)
        return arrays, [str(i) for i in range(len(next(iter(arrays.values()))))]
    else:
        raise DataError(f"{where}: expected an image file or folder, a .csv, .npy or .npz file, "
                        f"found {suffix or 'no suffix'!r}")
    return _checked(arrays, graph, where), names


def image_rule(graph, prep: dict, where: str) -> dict:
    """The recorded image preprocessing, or (a checkpoint without one) the rule for the model's
    input shape; a model trained on another kind of data is refused."""
    from rosetta.datafiles import image_preprocessing

    rule = image_preprocessing(graph, where)
    if prep.get("kind") not in (None, "images", "arrays"):
        raise DataError(f"{where}: this model was trained on {prep['kind']} data, not images")
    if prep.get("kind") == "images":
        for k in ("height", "width", "channels"):
            if prep.get(k) != rule[k]:
                raise DataError(f"{where}: the checkpoint records images of {k} {prep.get(k)}, "
                                f"the model takes {rule[k]} (a damaged record)")
        rule = {**rule, **{k: v for k, v in prep.items() if k != "classes"}}
    return rule


def _checked(arrays: dict, graph, where: str) -> dict:
    """The arrays checked against the model's inputs (shape, kind, finite)."""
    for inp in graph.inputs:
        a = arrays[inp.name]
        if tuple(a.shape[1:]) != tuple(inp.shape):
            raise DataError(f"{where}: gives examples of shape {tuple(a.shape[1:])}; model "
                            f"{graph.name!r} input {inp.name!r} takes {tuple(inp.shape)}")
        if inp.kind == "int" and not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"{where}: model input {inp.name!r} takes integers, found "
                            f"non-integral values")
        bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1)) \
            if np.issubdtype(a.dtype, np.floating) else []
        if len(bad):
            raise DataError(f"{where}: example {bad[0]} holds NaN or Inf")
    return arrays
