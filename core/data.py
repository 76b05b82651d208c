"""Datasets and deterministic batching, identical on every backend.

Batches are drawn in NumPy from (seed, epoch): the permutation of epoch e is
``default_rng([seed, e]).permutation(n)``, and an incomplete last batch is dropped so every
compiled step sees one shape. Every built-in dataset is generated or read from an installed
package: nothing is downloaded. A user's own data comes in through ``DataSpec.from_arrays`` or
``DataSpec.from_path`` (the file readers live in ``rosetta.datafiles``) and is checked by
``rosetta.datacheck.check_data`` before any framework is imported.

Inputs read from a folder of ``.npy`` files are ``Rows``: the rows of a memory-mapped array, read
only when a batch asks for them, so data larger than memory streams by batch and is never loaded
whole. ``take`` and ``cast_inputs`` work on them unchanged (``cast_inputs`` casts lazily, each
batch as it is read).
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rosetta.errors import DataError
from rosetta.files import atomic_file, install_folder, temp_folder


class Rows:
    """The rows of an array (usually a read-only ``np.load(..., mmap_mode="r")`` memory map),
    read on demand.

    ``index`` (optional) selects and orders rows of ``array`` (a held-out split of a file is two
    ``Rows`` over one map); ``dtype`` is the dtype rows are returned in (``astype`` is lazy: it
    returns a ``Rows`` that casts each batch when it is read). ``rows[key]`` with an integer index
    array, a boolean mask, a slice or one integer reads just those rows and returns an ndarray:
    rows are read from the file in ascending order (sequential access is what a memory map is fast
    at) and put back in the order asked for. ``np.asarray(rows)`` reads every row: avoid it for
    data larger than memory.
    """

    __slots__ = ("array", "index", "_dtype")

    def __init__(self, array, index=None, dtype=None):
        if isinstance(array, Rows):
            index = array.index if index is None else (
                np.asarray(index, np.intp) if array.index is None else array.index[index])
            dtype = array.dtype if dtype is None else dtype
            array = array.array
        if getattr(array, "ndim", 0) < 1:
            raise DataError(f"Rows needs an array with a leading example axis, found shape "
                            f"{getattr(array, 'shape', None)}")
        self.array = array
        self.index = None if index is None else np.asarray(index, np.intp)
        self._dtype = np.dtype(array.dtype if dtype is None else dtype)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def shape(self) -> tuple:
        return (len(self),) + tuple(self.array.shape[1:])

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    def __len__(self) -> int:
        return len(self.array) if self.index is None else len(self.index)

    def __repr__(self):
        return f"Rows(shape={self.shape}, dtype={self.dtype})"

    def astype(self, dtype, copy=True) -> "Rows":
        """These rows, returned in ``dtype`` when read (nothing is read now)."""
        return Rows(self.array, self.index, dtype)

    def subset(self, idx) -> "Rows":
        """The rows at positions ``idx`` of these rows (nothing is read)."""
        idx = self._positions(idx)
        return Rows(self.array, idx if self.index is None else self.index[idx], self._dtype)

    def file_rows(self, idx) -> np.ndarray:
        """The rows of ``array`` behind positions ``idx`` (for messages)."""
        idx = self._positions(idx)
        return idx if self.index is None else self.index[idx]

    def _positions(self, key) -> np.ndarray:
        n = len(self)
        if isinstance(key, slice):
            return np.arange(n)[key]
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (n,):
                raise IndexError(f"boolean index of shape {key.shape} for {n} rows")
            return np.flatnonzero(key)
        if not np.issubdtype(key.dtype, np.integer):
            raise IndexError(f"rows are indexed by integers, a boolean mask or a slice, found "
                             f"dtype {key.dtype}")
        key = key.astype(np.intp, copy=False)
        if key.size and (key.min() < -n or key.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return np.where(key < 0, key + n, key)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        if rows.size == 0:
            return np.empty((0,) + tuple(self.array.shape[1:]), self._dtype)
        if rows.size == 1 or bool(np.all(rows[1:] >= rows[:-1])):
            out = np.asarray(self.array[rows])
        else:
            order = np.argsort(rows, kind="stable")
            got = np.asarray(self.array[rows[order]])
            out = np.empty_like(got)
            out[order] = got
        return out.astype(self._dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if not key:
                return np.asarray(self)
            first, rest = key[0], key[1:]
            head = self[first]
            if isinstance(first, (int, np.integer)):
                return head[rest]
            return head[(slice(None),) + rest]
        if isinstance(key, (int, np.integer)):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            r = int(key) % n if self.index is None else int(self.index[key])
            return np.array(self.array[r], dtype=self._dtype)
        if isinstance(key, slice) and self.index is None:
            return np.array(self.array[key], dtype=self._dtype)   # one contiguous read
        rows = self._positions(key)
        return self._read(rows if self.index is None else self.index[rows])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


def _subset(v, idx):
    """Examples ``idx`` of one input: a ``Rows`` stays lazy, an array is indexed."""
    return v.subset(idx) if isinstance(v, Rows) else v[idx]


@dataclass
class Dataset:
    """Inputs ``x_*`` are one array (a single-input model) or a dict {input name: array} (e.g.
    ``tokens`` and ``lengths`` for padded sequences); labels ``y_*`` one array. An input read
    from a ``.npy`` folder is a ``Rows`` (read by batch). ``vocab`` is the alphabet of a
    character dataset (id i is ``vocab[i]``), else empty; ``classes`` the class names (class id
    i is ``classes[i]``) where the data names them (an image folder's sub-folders).

    ``origin`` is the file or folder the data was read from ("" for a built-in dataset);
    ``where`` maps (part, input name) to the place each array was read from, e.g.
    ``("x", None) -> "digits.npz: key 'x'"``, for messages; ``rows`` holds, when the held-out
    examples were split off (``_split``), the positions of the train and test examples among all
    of them ({"train": idx, "test": idx}); ``columns`` the feature column names of a CSV file,
    whose example i sits on line ``lines[i]``. ``preprocessing`` says how a file source's raw
    examples became these arrays (``rosetta.preprocessing``: image size, colour mode and scaling;
    a CSV file's feature columns and their order); empty for arrays and built-in datasets.
    """

    name: str
    x_train: np.ndarray | dict
    y_train: np.ndarray
    x_test: np.ndarray | dict
    y_test: np.ndarray
    description: str = ""
    vocab: str = ""
    classes: tuple = ()
    origin: str = ""
    where: dict = field(default_factory=dict, repr=False)
    rows: dict = field(default_factory=dict, repr=False)
    columns: tuple = field(default=(), repr=False)
    lines: np.ndarray | None = field(default=None, repr=False)
    preprocessing: dict = field(default_factory=dict, repr=False)

    def preprocessing_record(self) -> dict:
        """What a checkpoint records of this data (``rosetta.preprocessing.record``)."""
        from rosetta.preprocessing import record

        return record(self)

    @property
    def input_shape(self) -> tuple:
        """Per-example shape of a single-input dataset (see ``input_shapes``)."""
        return tuple(self.x_train.shape[1:]) if not isinstance(self.x_train, dict) else ()

    @property
    def input_shapes(self) -> dict:
        """{input name: per-example shape}; a single array is named None."""
        if isinstance(self.x_train, dict):
            return {k: tuple(v.shape[1:]) for k, v in self.x_train.items()}
        return {None: tuple(self.x_train.shape[1:])}

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def held_out_given(self) -> bool:
        """True when the source gave its own held-out examples (``x_test``/``y_test``), False
        when they were split off the training examples."""
        return not self.rows

    @property
    def x_train_all(self):
        """Every example's inputs, in the source's order: the training inputs when the source
        gave its own held-out examples, else the training and held-out examples put back
        together (a ``Rows`` over a file stays lazy)."""
        if not self.rows:
            return self.x_train
        if isinstance(self.x_train, dict):
            return {k: _unsplit(v, self.x_test[k], self.rows) for k, v in self.x_train.items()}
        return _unsplit(self.x_train, self.x_test, self.rows)

    @property
    def y_train_all(self):
        """The labels of ``x_train_all``."""
        return self.y_train if not self.rows else _unsplit(self.y_train, self.y_test, self.rows)

    def locate(self, part: str, name=None) -> str | None:
        """Where ``part`` ("x", "x_test", "y", "y_test") of input ``name`` was read from, or None
        for a built-in dataset."""
        return self.where.get((part, name))

    def row_name(self, part: str, i: int) -> str:
        """How a message names example ``i`` of ``part``: its row in the source (``line n`` of
        a CSV file)."""
        split = "test" if part.endswith("_test") else "train"
        r = int(self.rows[split][i]) if split in self.rows else int(i)
        return f"row {r}" if self.lines is None else f"line {int(self.lines[r])}"


def _unsplit(train, test, rows):
    tr, te = rows["train"], rows["test"]
    if isinstance(train, Rows) and isinstance(test, Rows) and train.array is test.array:
        index = np.empty(len(tr) + len(te), np.intp)
        index[tr] = train.file_rows(slice(None))
        index[te] = test.file_rows(slice(None))
        if np.array_equal(index, np.arange(len(index))):
            index = None
        return Rows(train.array, index, train.dtype)
    train, test = np.asarray(train), np.asarray(test)
    out = np.empty((len(tr) + len(te),) + train.shape[1:], np.result_type(train, test))
    out[tr] = train
    out[te] = test
    return out


def as_inputs(x, names: list[str]) -> dict:
    """A dataset's inputs as {input name: array}: a single array goes to the one input."""
    return dict(x) if isinstance(x, dict) else {names[0]: x}


def take(inputs: dict, idx) -> dict:
    """The examples ``idx`` of every input (a ``Rows`` reads just those rows)."""
    return {k: v[idx] for k, v in inputs.items()}


def cast_inputs(inputs: dict, dtype: str) -> dict:
    """Float inputs in the program dtype; integer inputs (ids, lengths) as int64. A ``Rows``
    input is cast lazily, each batch as it is read."""
    return {k: (v.astype(np.int64) if np.issubdtype(v.dtype, np.integer) else v.astype(dtype))
            for k, v in inputs.items()}


def _split(name, x, y, test_fraction, seed, description, vocab="", **fields):
    """Hold out ``round(n * test_fraction)`` examples, chosen by a permutation drawn from
    ``default_rng([seed, 7919])``; a ``Rows`` input stays lazy (its split is an index)."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0.0 < test_fraction < 1.0:
        raise DataError(f"dataset {name!r}: test_fraction must be in (0, 1), found "
                        f"{test_fraction!r}")
    perm = np.random.default_rng([seed, 7919]).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    rows = {"train": tr, "test": te}
    if isinstance(x, dict):
        return Dataset(name, {k: _subset(v, tr) for k, v in x.items()}, y[tr],
                       {k: _subset(v, te) for k, v in x.items()}, y[te], description, vocab,
                       rows=rows, **fields)
    return Dataset(name, _subset(x, tr), y[tr], _subset(x, te), y[te], description, vocab,
                   rows=rows, **fields)


def regression(n: int = 512, noise: float = 0.1, test_fraction: float = 0.2, seed: int = 0):
    """y = 2x + noise, x ~ U(-1, 1): the classic first example (one feature, one target)."""
    rng = np.random.default_rng([seed, 1])
    x = rng.uniform(-1.0, 1.0, (n, 1))
    y = 2.0 * x + noise * rng.standard_normal((n, 1))
    return _split("regression", x, y, test_fraction, seed, regression.__doc__)


def _digits_file() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the digits dataset is read from scikit-learn's data files: "
                        "pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.exists():
        raise DataError(f"scikit-learn is installed but {path} is missing; reinstall scikit-learn")
    return path


def digits(layout: str = "flat", size: int = 8, channels: int = 1, test_fraction: float = 0.2,
           seed: int = 0):
    """The 1,797 8x8 handwritten digits shipped with scikit-learn, pixels scaled to [0, 1].

    layout ``flat`` gives (64,) vectors; ``image`` gives (size, size, channels) channels-last
    images: each pixel repeated size/8 times along both axes (nearest upsampling; size a multiple
    of 8) and copied to every channel (channels 1 or 3), e.g. 32x32x3 for CIFAR-sized models.
    """
    if layout not in ("flat", "image"):
        raise DataError(f"digits layout must be 'flat' or 'image', found {layout!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size % 8:
        raise DataError(f"digits size must be a multiple of 8 (8, 16, 32, ...), found {size!r}")
    if channels not in (1, 3):
        raise DataError(f"digits channels must be 1 or 3, found {channels!r}")
    if layout == "flat" and (size, channels) != (8, 1):
        raise DataError("digits size and channels apply to layout='image' only")
    with gzip.open(_digits_file(), "rt") as f:
        raw = np.loadtxt(f, delimiter=",")
    x = raw[:, :-1] / 16.0
    y = raw[:, -1].astype(np.int64)
    if layout == "image":
        f = size // 8
        x = x.reshape(-1, 8, 8, 1).repeat(f, axis=1).repeat(f, axis=2).repeat(channels, axis=3)
    return _split("digits", x, y, test_fraction, seed, digits.__doc__)


def images(n: int = 512, height: int = 16, width: int = 16, channels: int = 3,
           test_fraction: float = 0.2, seed: int = 0):
    """Synthetic images for shape tests: noise plus one bright square in one of the four
    quadrants; the label is the quadrant (4 classes)."""
    rng = np.random.default_rng([seed, 2])
    x = 0.1 * rng.standard_normal((n, height, width, channels))
    y = rng.integers(0, 4, n)
    hh, hw = height // 2, width // 2
    s = max(1, min(hh, hw) // 2)
    for i in range(n):
        top = (y[i] // 2) * hh + rng.integers(0, hh - s + 1)
        left = (y[i] % 2) * hw + rng.integers(0, hw - s + 1)
        x[i, top:top + s, left:left + s, :] += 1.0
    return _split("images", x, y.astype(np.int64), test_fraction, seed, images.__doc__)


def patterns(n: int = 2000, size: int = 32, classes: int = 10, noise: float = 0.6,
             test_fraction: float = 0.2, seed: int = 0):
    """Synthetic CIFAR-shaped colour images (size x size x 3, default 32): class k is a sine
    grating at orientation k * 180 / classes degrees with a random phase, frequency in
    [2, 4] cycles per image and a random colour, plus Gaussian noise. Telling the classes apart
    needs oriented spatial filters, as in real images; no pixel alone says the class."""
    if isinstance(n, bool) or not isinstance(n, int) or n < classes:
        raise DataError(f"patterns needs n >= classes ({classes}), found {n!r}")
    rng = np.random.default_rng([seed, 3])
    y = rng.integers(0, classes, n)
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    angle = np.pi * y / classes + rng.normal(0.0, 0.05, n)
    freq = rng.uniform(2.0, 4.0, n)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    proj = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
    wave = np.sin(2 * np.pi * freq[:, None, None] * proj + phase[:, None, None])
    colour = rng.uniform(0.3, 1.0, (n, 1, 1, 3))
    x = wave[..., None] * colour + noise * rng.standard_normal((n, size, size, 3))
    return _split("patterns", x, y.astype(np.int64), test_fraction, seed, patterns.__doc__)


def clusters(n: int = 2000, features: int = 100, classes: int = 10, spread: float = 3.0,
             test_fraction: float = 0.2, seed: int = 0):
    """Gaussian clusters: ``classes`` centres drawn N(0, 1) in ``features`` dimensions, each
    example its centre plus N(0, spread^2) noise per feature. At the default spread the classes
    overlap (no feature alone separates them; the best possible accuracy is below 100%)."""
    rng = np.random.default_rng([seed, 4])
    centres = rng.standard_normal((classes, features))
    y = rng.integers(0, classes, n)
    x = centres[y] + spread * rng.standard_normal((n, features))
    return _split("clusters", x, y.astype(np.int64), test_fraction, seed, clusters.__doc__)


def majority(n: int = 4000, length: int = 16, min_length: int = 4, symbols: int = 3,
             test_fraction: float = 0.2, seed: int = 0):
    """Variable-length token sequences: which symbol occurs most often? A task that needs memory
    (counting across the whole sequence) and masking (padding must not count).

    Inputs ``tokens`` (length,) with symbols 1..symbols and padding id 0 after the real tokens,
    and ``lengths`` () in [min_length, length]; the label is (most frequent symbol - 1), ties
    re-drawn so every label is unambiguous."""
    if not 1 <= min_length <= length:
        raise DataError(f"majority needs 1 <= min_length <= length, found {min_length}, {length}")
    rng = np.random.default_rng([seed, 5])
    tokens = np.zeros((n, length), np.int64)
    lengths = rng.integers(min_length, length + 1, n)
    y = np.zeros(n, np.int64)
    for i in range(n):
        while True:
            seq = rng.integers(1, symbols + 1, lengths[i])
            counts = np.bincount(seq, minlength=symbols + 1)[1:]
            if (counts == counts.max()).sum() == 1:
                break
        tokens[i, :lengths[i]] = seq
        y[i] = int(np.argmax(counts))
    return _split("majority", {"tokens": tokens, "lengths": lengths.astype(np.int64)}, y,
                  test_fraction, seed, majority.__doc__)


def text(length: int = 64, n: int = 4000, test_fraction: float = 0.1, seed: int = 0):
    """Character windows of Python's own standard library sources (``rosetta.text.corpus``):
    inputs ``tokens`` (length,) character ids, labels the next character at every position
    (length,), for a character language model. Nothing is downloaded."""
    from rosetta import text as text_mod

    ids = text_mod.encode(text_mod.corpus())
    if len(ids) < length + 2:
        raise DataError(f"the text corpus has {len(ids)} characters, fewer than a window")
    starts = np.random.default_rng([seed, 6]).integers(0, len(ids) - length - 1, n)
    window = starts[:, None] + np.arange(length + 1)
    seqs = ids[window]
    return _split("text", {"tokens": seqs[:, :-1]}, seqs[:, 1:], test_fraction, seed,
                  text.__doc__, vocab=text_mod.VOCAB)


DATASETS = {"regression": regression, "digits": digits, "images": images, "patterns": patterns,
            "clusters": clusters, "majority": majority, "text": text}


def load(name: str, **kwargs) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; built-in: {', '.join(DATASETS)}")
    try:
        return DATASETS[name](**kwargs)
    except TypeError as e:
        raise DataError(f"dataset {name!r}: {e}") from None


def batches(n: int, batch_size: int, seed: int, steps: int):
    """Yield (epoch, index array) for ``steps`` batches, reshuffling each epoch from (seed, epoch)."""
    if batch_size > n:
        raise DataError(f"batch size {batch_size} exceeds the {n} training examples")
    per_epoch = n // batch_size
    done, epoch = 0, 0
    while done < steps:
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        for b in range(per_epoch):
            if done == steps:
                return
            yield epoch, perm[b * batch_size:(b + 1) * batch_size]
            done += 1
        epoch += 1


# --- a user's own data ------------------------------------------------------------------------

def _check_rows(x, y, where: dict, xp: str, yp: str) -> None:
    """Every input and the labels of one split have one row per example (checked before a split
    indexes them; ``rosetta.datacheck`` checks the rest)."""
    if getattr(y, "ndim", 0) < 1:
        raise DataError(f"{where[(yp, None)]} is a scalar; give one label per example")
    for k, v in (x.items() if isinstance(x, dict) else [(None, x)]):
        if getattr(v, "ndim", 0) < 1:
            raise DataError(f"{where[(xp, k)]} is a scalar; give one row per example")
        if len(v) != len(y):
            raise DataError(f"{where[(xp, k)]} has {len(v)} examples but {where[(yp, None)]} "
                            f"has {len(y)}; give one label per example")


def assemble(name: str, x, y, x_test=None, y_test=None, *, test_fraction: float = 0.2,
             seed: int = 0, locate=None, description: str = "", check_only: bool = False,
             **fields) -> Dataset | None:
    """A ``Dataset`` from a source's arrays. Without held-out arrays ``_split`` holds out
    ``round(n * test_fraction)`` examples (permutation from ``seed``). ``locate(part, input)``
    names where each array came from ("x", "x_test", "y", "y_test"; input None for a single
    array), for messages."""
    locate = locate or (lambda part, k: f"{name}: {part}" + (f"[{k!r}]" if k else ""))
    names = list(x) if isinstance(x, dict) else [None]
    where = {("x", k): locate("x", k) for k in names}
    where[("y", None)] = locate("y", None)
    if (x_test is None) != (y_test is None):
        given, missing = ("x_test", "y_test") if y_test is None else ("y_test", "x_test")
        raise DataError(f"{name}: {given} given without {missing}; give both or neither (the "
                        f"held-out examples are then split off: test_fraction)")
    if x_test is None:
        where.update({("x_test", k): where[("x", k)] for k in names})
        where[("y_test", None)] = where[("y", None)]
    else:
        if isinstance(x, dict) != isinstance(x_test, dict) or (
                isinstance(x, dict) and set(x) != set(x_test)):
            raise DataError(f"{name}: the held-out inputs "
                            f"{sorted(x_test) if isinstance(x_test, dict) else 'x_test'} are not "
                            f"the training inputs "
                            f"{sorted(x) if isinstance(x, dict) else 'x'}; give the same ones")
        where.update({("x_test", k): locate("x_test", k) for k in names})
        where[("y_test", None)] = locate("y_test", None)
    _check_rows(x, y, where, "x", "y")
    if x_test is not None:
        _check_rows(x_test, y_test, where, "x_test", "y_test")
    if check_only:
        return None
    if x_test is None:
        if len(y) == 0:
            raise DataError(f"{where[('y', None)]}: no examples (an empty file?); give at least "
                            f"one batch of examples")
        return _split(name, x, y, test_fraction, seed, description, where=where, **fields)
    return Dataset(name, x, y, x_test, y_test, description, where=where, **fields)


def _as_array(v, what: str):
    if isinstance(v, (Rows, np.ndarray)):
        return v
    try:
        a = np.asarray(v)
    except (ValueError, TypeError) as e:
        raise DataError(f"{what}: not an array (ragged rows? {e}); give a numeric NumPy "
                        f"array with one row per example") from None
    if a.dtype == object:
        raise DataError(f"{what}: holds Python objects (ragged rows?); give a numeric NumPy "
                        f"array with one row per example")
    return a


def from_arrays(x, y, x_test=None, y_test=None, *, test_fraction: float = 0.2, seed: int = 0,
                name: str = "arrays", check_only: bool = False) -> Dataset | None:
    """A ``Dataset`` from in-memory arrays: ``x`` one array or {input name: array}, ``y`` the
    labels; without ``x_test``/``y_test`` the held-out examples are split off (``_split``)."""

    def inputs(v, part):
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str):
                    raise DataError(f"{name}: {part} keys are model input names (strings), "
                                    f"found {k!r}")
            return {k: _as_array(a, f"{name}: {part}[{k!r}]") for k, a in v.items()}
        return _as_array(v, f"{name}: {part}")

    x = inputs(x, "x")
    y = _as_array(y, f"{name}: y")
    if x_test is not None:
        x_test = inputs(x_test, "x_test")
    if y_test is not None:
        y_test = _as_array(y_test, f"{name}: y_test")
    return assemble(name, x, y, x_test, y_test, test_fraction=test_fraction, seed=seed,
                    origin=name, description="in-memory arrays (DataSpec.from_arrays)",
                    check_only=check_only)


# --- writing a dataset: the layouts that rosetta.datafiles reads ----------------------------
#
# One file per array, named by key: a single-input dataset is x, y, x_test, y_test; a
# multi-input one is one array per model input name (tokens, lengths, ...), the held-out ones
# <input>_test, then y and y_test. ``classes`` (optional) is a string array naming the class ids.
# A .npz file holds the keys; a folder holds <key>.npy files (memory-mapped when read).

RESERVED = ("y", "y_test", "classes")


def layout(ds: Dataset) -> dict:
    """{key: array} of ``ds`` in the file layout (see above); held-out arrays always written, so
    the file gives back exactly this split."""
    out = {}
    for part, x in (("x", ds.x_train), ("x_test", ds.x_test)):
        if isinstance(x, dict):
            for k, v in x.items():
                if k in RESERVED or k.endswith("_test"):
                    raise DataError(f"dataset {ds.name!r}: an input named {k!r} cannot be saved "
                                    f"(the names {', '.join(RESERVED)} and *_test are the labels, "
                                    f"class names and held-out arrays); rename the model input")
                out[k if part == "x" else f"{k}_test"] = v
        else:
            out[part] = x
    out["y"], out["y_test"] = ds.y_train, ds.y_test
    if ds.classes:
        out["classes"] = np.array([str(c) for c in ds.classes])
    return out


def save_npz(ds: Dataset, path) -> Path:
    """Write ``ds`` to a ``.npz`` file (keys as in ``layout``), atomically: to a temporary file in
    the same folder, then renamed over ``path``; a killed process leaves any old file whole.
    Every array is read into memory: for data larger than memory use ``save_npy_dir``."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise DataError(f"{path}: save_npz writes a .npz file; give a path ending in .npz (or "
                        f"a folder, for save_npy_dir)")
    arrays = {k: np.asarray(v) for k, v in layout(ds).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        np.savez(f, **arrays)
    return path


def _write_npy(path: Path, a, chunk_bytes: int = 1 << 26) -> None:
    """One array to ``path`` as .npy, a ``Rows`` copied by chunks (never whole in memory)."""
    if not isinstance(a, Rows):
        np.save(path, np.asarray(a), allow_pickle=False)
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=a.dtype, shape=a.shape)
    step = max(1, chunk_bytes // max(1, a.nbytes // max(1, len(a))))
    for s in range(0, len(a), step):
        out[s:s + step] = a[s:s + step]
    out.flush()
    del out


def save_npy_dir(ds: Dataset, folder) -> Path:
    """Write ``ds`` to a folder of ``<key>.npy`` files (keys as in ``layout``), the layout read
    memory-mapped by batch. Written to a temporary folder beside it, then put in place; an
    existing ``folder`` is replaced only if it holds nothing but ``.npy`` files."""
    folder = Path(folder)
    if folder.suffix.lower() in (".npz", ".npy", ".csv"):
        raise DataError(f"{folder}: save_npy_dir writes a folder of .npy files; give a folder "
                        f"name (a .npz path: save_npz)")
    if folder.exists():
        if not folder.is_dir():
            raise DataError(f"{folder}: exists and is not a folder; give a new folder name")
        other = [p.name for p in folder.iterdir() if p.suffix != ".npy" or not p.is_file()]
        if other:
            raise DataError(f"{folder}: exists and holds {other[0]!r}, not just .npy files; "
                            f"give a new folder name")
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(folder)   # the files' one rule: rosetta.files
    try:
        for key, a in layout(ds).items():
            _write_npy(tmp / f"{key}.npy", a)
        install_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder

def sample_inputs(graph, batch: int, seed: int = 0, int_high: int | None = None) -> dict:
    """Normal floats, sequence lengths in [1, T] (``Graph.lengths_inputs``), or integers in
    [0, int_high) (default: the smallest Embedding vocabulary or gathered axis size)."""
    rng = np.random.default_rng(seed)
    if int_high is None:
        from rosetta.datacheck import embedding_vocab
        vocab = list(embedding_vocab(graph).values()) + [
            n.attrs["vocab_size"] for n in graph.nodes if n.op == "Embedding"]
        int_high = min(vocab) if vocab else 5
    lengths = graph.lengths_inputs()
    out = {}
    for i in graph.inputs:
        if i.name in lengths:
            out[i.name] = rng.integers(1, lengths[i.name] + 1, (batch,)).astype(np.int64)
        elif i.kind == "int":
            out[i.name] = rng.integers(0, int_high, (batch, *i.shape)).astype(np.int64)
        else:
            out[i.name] = rng.standard_normal((batch, *i.shape))
    return out
