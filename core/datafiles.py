"""Read a user's data files into a ``rosetta.data.Dataset`` (canonical layout, channels last).

``load(path, model)`` picks the reader by what the path is:

``.npz``
    Arrays by key, read with ``np.load(allow_pickle=False)`` (whole, into memory). A single-input
    model: ``x``, ``y``, and optionally ``x_test``, ``y_test``. A multi-input model: one array
    per model input name (``tokens``, ``lengths``, ...), ``y``, and optionally the held-out
    ``<input>_test`` for every input and ``y_test``. ``classes`` (optional, strings) names the
    class ids. Written by ``rosetta.data.save_npz``.
a folder of ``.npy`` files
    The same keys, one file each (``x.npy``, ``y.npy``, optional ``x_test.npy``,
    ``y_test.npy``; or ``tokens.npy``, ``tokens_test.npy``, ...). Inputs are opened with
    ``np.load(mmap_mode="r")`` and read by batch (``rosetta.data.Rows``): never loaded whole, so
    they may be larger than memory. Labels are read into memory. Written by
    ``rosetta.data.save_npy_dir`` (or ``np.lib.format.open_memmap``, chunk by chunk).
``.csv``
    A header line naming the columns, then one example per line: numeric feature columns and a
    label column (``label`` by default). The features are every column but the label, in file
    order; when their number equals the size of the model's single input they are reshaped to it
    (e.g. 64 columns to an (8, 8, 1) image, row-major), else they stay a vector. Integral labels
    are class ids (int64), others float targets; a model with output shape (1,) gets targets of
    shape (N, 1). An ``int`` model input gets integer features.
a folder of images in one sub-folder per class
    PNG or JPEG files (also BMP, GIF, TIFF, WebP), read with Pillow (``pip install
    'rosetta-ml[images]'``). Class ids are the sorted sub-folder names (``Dataset.classes``);
    each image is converted to RGB or grayscale (L) by the channels (3 or 1) of the model's
    (H, W, C) input, resized bilinearly to (H, W), scaled to [0, 1], float64 channels-last.
    Files without an image suffix and hidden files are skipped.

What a CSV file's and an image folder's reader did (columns, size, colour, scaling, class
names) is the ``Dataset.preprocessing`` a checkpoint records, so that ``rosetta predict`` and
``rosetta eval`` read new raw files the same way (``rosetta.preprocessing``): ``read_images`` and
``read_table`` are the one place each rule lives.

Without held-out arrays the held-out examples are split off (``test_fraction``, ``seed``: see
``rosetta.data._split``). Every problem is a ``DataError`` naming the file, the key, column or
line, and the fix; nothing here imports a framework.
"""

from __future__ import annotations

import csv
import zipfile
from array import array
from pathlib import Path

import numpy as np

from rosetta.data import RESERVED, Dataset, Rows, assemble
from rosetta.errors import DataError

KINDS = ("a .npz file, a .csv file, a folder of .npy files (x.npy, y.npy, optional x_test.npy, "
         "y_test.npy) or a folder of images in one sub-folder per class")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError)


def _reason(e: Exception, path: Path | None = None) -> str:
    """Why NumPy could not read a file, in words (its own message where it is clear)."""
    msg = str(e)
    if "Object arrays" in msg or "Python objects" in msg:
        return "it holds Python objects, which are never unpickled"
    if "pickled data" in msg:
        return "it has no NumPy header: not written by NumPy"
    if path is not None and path.exists() and path.stat().st_size == 0:
        return "an empty file"
    return msg or type(e).__name__


def shown(path: Path) -> str:
    """A path as messages show it: relative to the current folder when it is below it."""
    path = Path(path)
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
        return str(rel) if str(rel) != "." else str(path)
    except (ValueError, OSError):
        return str(path)


def load(path, model=None, *, label: str = "label", test_fraction: float = 0.2,
         seed: int = 0, classes=None, columns=None) -> Dataset:
    """The dataset at ``path`` (a file or folder; see the module docstring for the kinds).
    ``model`` (a ``Graph``) gives the input shapes a CSV file is reshaped to and images are
    resized to; .npz and .npy data need none. ``classes`` (an image folder) and ``columns`` (a
    CSV file) are a checkpoint's recorded class names and feature columns
    (``rosetta.preprocessing``): new data is read the way the training data was."""
    path = Path(path).expanduser()
    name = shown(path)
    if not path.exists():
        raise DataError(f"{name}: no such file or folder; give {KINDS}")
    if path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        if any(p.suffix.lower() == ".npy" and p.is_file() for p in entries):
            return load_npy_dir(path, test_fraction=test_fraction, seed=seed)
        if any(p.is_dir() for p in entries):
            return load_image_folder(path, model, test_fraction=test_fraction, seed=seed,
                                     classes=classes)
        raise DataError(f"{name}: a folder with no .npy files and no class sub-folders; give "
                        f"{KINDS}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path, test_fraction=test_fraction, seed=seed)
    if suffix == ".csv":
        return load_csv(path, model, label=label, test_fraction=test_fraction, seed=seed,
                        columns=columns)
    if suffix == ".npy":
        raise DataError(f"{name}: one .npy file holds no labels; put x.npy and y.npy (optional "
                        f"x_test.npy, y_test.npy) in a folder and give the folder, or save a "
                        f".npz (numpy.savez(path, x=x, y=y))")
    raise DataError(f"{name}: unknown kind of data file {suffix or '(no suffix)'!r}; accepted: "
                    f"{KINDS}")


def _keys_layout(keys: list, where: str, key_word: str, fix: str):
    """(input keys, held out given) of a set of keys; see the module docstring."""
    present = set(keys)
    if "y" not in present:
        raise DataError(f"{where}: no {key_word} 'y' (the labels); found "
                        f"{', '.join(repr(k) for k in keys) or 'none'}; {fix}")
    tests = {k for k in keys if k.endswith("_test") and k[:-5] in present}
    inputs = [k for k in keys if k not in RESERVED and k not in tests]
    if not inputs:
        raise DataError(f"{where}: no inputs besides the labels; {fix}")
    held = [k for k in inputs if f"{k}_test" in present] + (["y"] if "y_test" in present else [])
    if held:
        missing = [f"{k}_test" for k in inputs + ["y"] if f"{k}_test" not in present]
        if missing:
            raise DataError(f"{where}: held-out {key_word}s "
                            f"{', '.join(repr(f'{k}_test') for k in held)} but no "
                            f"{', '.join(repr(k) for k in missing)}; give every input's held-out "
                            f"array and y_test, or none (the held-out examples are then split "
                            f"off: test_fraction)")
    return inputs, bool(held)


def _classes(a, where: str) -> tuple:
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "US":
        raise DataError(f"{where} names the class ids: give a 1-D array of strings, found "
                        f"dtype {a.dtype} and shape {a.shape}")
    return tuple(str(c) for c in a)


NPZ_FIX = ("save x and y (optional x_test, y_test), or one array per model input: "
           "numpy.savez(path, x=x, y=y)")


def load_npz(path: Path, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    name = shown(path)
    try:
        f = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise DataError(f"{name}: not a readable .npz file ({_reason(e, path)}); write it with "
                        f"numpy.savez(path, x=x, y=y) or rosetta.data.save_npz") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError(f"{name}: holds one array, not named arrays (a .npy file with a .npz "
                        f"name?); {NPZ_FIX}")
    with f:
        keys = list(f.files)
        inputs, held = _keys_layout(keys, name, "key", NPZ_FIX)

        def read(k):
            try:
                return f[k]
            except _READ_ERRORS as e:
                raise DataError(f"{name}: key {k!r} cannot be read ({_reason(e)}); save numeric "
                                f"arrays with numpy.savez") from None

        x, x_test = _inputs(inputs, held, read)
        y = read("y")
        y_test = read("y_test") if held else None
        classes = _classes(read("classes"), f"{name}: key 'classes'") if "classes" in keys \
            else ()

    def locate(part, k):
        return f"{name}: key {layout_key(part, k)!r}"

    return assemble(path.stem, x, y, x_test, y_test, test_fraction=test_fraction, seed=seed,
                    locate=locate, origin=name, classes=classes,
                    description=f"arrays read from {name}")


def layout_key(part: str, k) -> str:
    """The file key of a dataset part: ``y``/``y_test`` (k None), an input ``k`` of the training
    part (``x`` or its name), or of the held-out part (``<name>_test``)."""
    return part if k is None else (k if part == "x" else f"{k}_test")


def _inputs(inputs: list, held: bool, read):
    """(x, x_test): one array when the only input is ``x``, else {input name: array}."""
    if inputs == ["x"]:
        return read("x"), (read("x_test") if held else None)
    x = {k: read(k) for k in inputs}
    return x, ({k: read(f"{k}_test") for k in inputs} if held else None)


NPY_FIX = ("put x.npy and y.npy (optional x_test.npy, y_test.npy) in the folder, or one .npy per "
           "model input")


def load_npy_dir(folder: Path, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    name = shown(folder)
    files = {p.stem: p for p in sorted(folder.iterdir())
             if p.suffix.lower() == ".npy" and p.is_file() and not p.name.startswith(".")}
    inputs, held = _keys_layout(list(files), name, "file", NPY_FIX)

    def fix(k):
        return ("write it with numpy.save (or numpy.lib.format.open_memmap for data larger "
                "than memory) or rosetta.data.save_npy_dir")

    def mapped(k):
        p = files[k]
        try:
            a = np.load(p, mmap_mode="r", allow_pickle=False)
        except _READ_ERRORS as e:
            raise DataError(f"{shown(p)}: not a readable .npy file ({_reason(e, p)}); "
                            f"{fix(k)}") from None
        if a.ndim < 1:
            raise DataError(f"{shown(p)}: holds a scalar; save one row per example")
        return Rows(a)

    def whole(k):
        p = files[k]
        try:
            return np.load(p, allow_pickle=False)
        except _READ_ERRORS as e:
            raise DataError(f"{shown(p)}: not a readable .npy file ({_reason(e, p)}); "
                            f"{fix(k)}") from None

    x, x_test = _inputs(inputs, held, mapped)
    y = whole("y")
    y_test = whole("y_test") if held else None
    classes = _classes(whole("classes"), shown(files["classes"])) if "classes" in files else ()

    def locate(part, k):
        key = layout_key(part, k)
        return shown(files[key])

    return assemble(folder.name, x, y, x_test, y_test, test_fraction=test_fraction, seed=seed,
                    locate=locate, origin=name, classes=classes,
                    description=f"memory-mapped .npy files in {name}")


def read_table(path: Path, label: str | None = None):
    """(header, values (N, columns) float64, line of each row) of a CSV file: a header line
    naming the columns, then numbers. ``label`` (optional) must be one of the columns."""
    name = shown(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{name}: cannot be read ({e.strerror})") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{name}: an empty file; a CSV file needs a header line naming "
                                f"its columns, then one example per line")
            header = [h.strip() for h in header]
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise DataError(f"{name}: line 1 names column {dup[0]!r} twice; give every "
                                f"column its own name")
            if label is not None and label not in header:
                raise DataError(f"{name}: no column {label!r} (columns: "
                                f"{', '.join(header[:10])}{', ...' if len(header) > 10 else ''}); "
                                f"name the label column with label=... (--label COLUMN)")
            values, lines = array("d"), array("q")
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue   # a blank line
                if len(row) != len(header):
                    raise DataError(f"{name}: line {line} has {len(row)} fields but the header "
                                    f"has {len(header)}; give every line one value per column")
                for i, cell in enumerate(row):
                    try:
                        values.append(float(cell))
                    except ValueError:
                        what = "is empty" if not cell.strip() else f"is {cell.strip()!r}"
                        raise DataError(f"{name}: line {line}, column {header[i]!r} {what}, "
                                        f"not a number; features and labels are numbers (fill "
                                        f"or drop that line)") from None
                lines.append(line)
        except csv.Error as e:
            raise DataError(f"{name}: line {reader.line_num}: not valid CSV ({e})") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{name}: not a UTF-8 text file ({e.reason}); give a CSV file") \
                from None
    n = len(lines)
    table = np.frombuffer(values, np.float64).reshape(n, len(header)).copy()
    return header, table, np.frombuffer(lines, np.int64).copy()


def feature_columns(header: list, label: str | None, columns=None, where: str = "") -> list:
    """The positions of the feature columns in ``header``: the recorded ``columns`` by name, in
    their order (what the model was trained on), else every column but ``label`` in file
    order."""
    if columns is None:
        idx = [i for i, h in enumerate(header) if h != label]
        if not idx:
            raise DataError(f"{where}: no feature columns besides {label!r}")
        return idx
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{where}: no column {missing[0]!r}; the model was trained on the columns "
                        f"{', '.join(columns)} (in that order; other columns are ignored)")
    return [header.index(c) for c in columns]


def csv_inputs(x: np.ndarray, model=None) -> np.ndarray:
    """CSV features (N, columns) as the model's single input: reshaped when their number equals
    its size (64 columns to an (8, 8, 1) image, row-major), integers for an ``int`` input."""
    n = len(x)
    if model is not None and len(model.inputs) == 1:
        inp = model.inputs[0]
        size = int(np.prod(inp.shape, dtype=np.int64))
        if size == x.shape[1] and tuple(inp.shape) != (x.shape[1],):
            x = x.reshape((n,) + tuple(inp.shape))
        if inp.kind == "int" and np.all(np.isfinite(x)) and np.all(x == np.round(x)):
            x = x.astype(np.int64)
    return x


def load_csv(path: Path, model=None, *, label: str = "label", test_fraction: float = 0.2,
             seed: int = 0, columns=None) -> Dataset:
    """``columns`` (optional): the feature columns by name, in order (a checkpoint's recorded
    ones); default every column but ``label``, in file order."""
    name = shown(path)
    header, table, lines = read_table(path, label)
    li = header.index(label)
    idx = feature_columns(header, label, columns, name)
    columns = tuple(header[i] for i in idx)
    n = len(lines)
    if n == 0:
        raise DataError(f"{name}: a header and no examples; give one example per line")
    x = table[:, idx]
    y = table[:, li].copy()
    integral = bool(np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    x = csv_inputs(x, model)
    if model is not None and tuple(model.output_type.shape) == (1,):
        y = y.reshape(n, 1)        # one target per example
    elif integral:
        y = y.astype(np.int64)

    def locate(part, k):
        return f"{name}: column {label!r}" if part.startswith("y") else name

    return assemble(path.stem, x, y, test_fraction=test_fraction, seed=seed, locate=locate,
                    origin=name, columns=columns, lines=lines,
                    preprocessing={"kind": "csv", "label": label, "columns": list(columns)},
                    description=f"CSV file {name} (label column {label!r})")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading a folder of images needs Pillow: pip install "
                        "'rosetta-ml[images]'") from None
    return Image


def image_preprocessing(model, where: str) -> dict:
    """How images become the input of ``model`` (one (H, W, C) input, C 1 or 3): converted to
    RGB or grayscale (L) by C, resized bilinearly to (H, W), scaled by 1/255."""
    shapes = [tuple(i.shape) for i in model.inputs]
    if len(shapes) != 1 or len(shapes[0]) != 3 or shapes[0][-1] not in (1, 3):
        raise DataError(f"{where}: a folder of images feeds a model with one (H, W, C) input, C 1 "
                        f"or 3; model {model.name!r} takes "
                        f"{', '.join(f'{i.name} {tuple(i.shape)}' for i in model.inputs)}")
    h, w, c = shapes[0]
    return {"kind": "images", "height": h, "width": w, "channels": c,
            "color": "RGB" if c == 3 else "L", "resize": "bilinear", "scale": 1 / 255}


def read_images(files: list, prep: dict) -> np.ndarray:
    """The images ``files`` as float64 (N, H, W, C) by the rule ``prep``
    (``image_preprocessing``): the one place an image file becomes model input."""
    Image = _pillow()
    if prep.get("resize", "bilinear") != "bilinear" or prep.get("color") not in ("RGB", "L"):
        raise DataError(f"unknown image preprocessing {prep!r}; this rosetta reads images "
                        f"resized bilinearly, RGB or L")
    resample = getattr(getattr(Image, "Resampling", Image), "BILINEAR")
    h, w, c = prep["height"], prep["width"], prep["channels"]
    x = np.empty((len(files), h, w, c), np.float64)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert(prep["color"])
                if im.size != (w, h):
                    im = im.resize((w, h), resample)
                a = np.asarray(im, dtype=np.float64)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"{shown(p)}: not a readable image ({e}); remove it or save it again "
                            f"as PNG or JPEG") from None
        x[i] = (a if c == 3 else a[..., None]) * prep["scale"]
    return x


def image_files(folder: Path) -> list:
    """The image files directly in ``folder`` (by suffix, hidden files skipped), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(folder: Path, model=None, *, test_fraction: float = 0.2,
                      seed: int = 0, classes=None) -> Dataset:
    """``classes`` (optional): the class names by id (a checkpoint's recorded ones); each
    sub-folder must then be one of them. Default: the sorted sub-folder names."""
    name = shown(folder)
    if model is None:
        raise DataError(f"{name}: images are resized to the model's input shape: load the "
                        f"folder with DataSpec.load(model) (rosetta train does)")
    prep = image_preprocessing(model, name)
    found_classes = sorted(p.name for p in folder.iterdir()
                           if p.is_dir() and not p.name.startswith("."))
    if classes is not None:
        classes = [str(c) for c in classes]
        unknown = [c for c in found_classes if c not in classes]
        if unknown:
            raise DataError(f"{shown(folder / unknown[0])}: not a class the model knows; its "
                            f"classes are {', '.join(classes)}")
    else:
        classes = found_classes
    files, labels = [], []
    for cls in found_classes:
        found = image_files(folder / cls)
        if not found:
            raise DataError(f"{shown(folder / cls)}: a class folder with no images (.png, .jpg, "
                            f"...); add images or remove the folder (it is class id "
                            f"{classes.index(cls)})")
        files += found
        labels += [classes.index(cls)] * len(found)
    x = read_images(files, prep)
    y = np.asarray(labels, np.int64)
    h, w, c = prep["height"], prep["width"], prep["channels"]

    def locate(part, k):
        return f"{name}: class sub-folders" if part.startswith("y") else f"{name}: images"

    return assemble(folder.name, x, y, test_fraction=test_fraction, seed=seed, locate=locate,
                    origin=name, classes=tuple(classes), preprocessing=prep,
                    description=f"images in {name}, one sub-folder per class, resized to "
                                f"{h}x{w}x{c}")
