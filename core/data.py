"""Built-in datasets and deterministic batching, identical on every backend.

Batches are drawn in NumPy from (seed, epoch): the permutation of epoch e is
``default_rng([seed, e]).permutation(n)``, and an incomplete last batch is dropped so every
compiled step sees one shape. Every dataset is generated or read from an installed package: nothing
is downloaded.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rosetta.errors import DataError


@dataclass
class Dataset:
    """Inputs ``x_*`` are one array (a single-input model) or a dict {input name: array} (e.g.
    ``tokens`` and ``lengths`` for padded sequences); labels ``y_*`` one array. ``vocab`` is the
    alphabet of a character dataset (id i is ``vocab[i]``), else empty."""

    name: str
    x_train: np.ndarray | dict
    y_train: np.ndarray
    x_test: np.ndarray | dict
    y_test: np.ndarray
    description: str = ""
    vocab: str = ""

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


def as_inputs(x, names: list[str]) -> dict:
    """A dataset's inputs as {input name: array}: a single array goes to the one input."""
    return dict(x) if isinstance(x, dict) else {names[0]: x}


def take(inputs: dict, idx) -> dict:
    """The examples ``idx`` of every input."""
    return {k: v[idx] for k, v in inputs.items()}


def cast_inputs(inputs: dict, dtype: str) -> dict:
    """Float inputs in the program dtype; integer inputs (ids, lengths) as int64."""
    return {k: (v.astype(np.int64) if np.issubdtype(v.dtype, np.integer) else v.astype(dtype))
            for k, v in inputs.items()}


def _split(name, x, y, test_fraction, seed, description, vocab=""):
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"dataset {name!r}: test_fraction must be in (0, 1), found {test_fraction}")
    perm = np.random.default_rng([seed, 7919]).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    if isinstance(x, dict):
        return Dataset(name, take(x, tr), y[tr], take(x, te), y[te], description, vocab)
    return Dataset(name, x[tr], y[tr], x[te], y[te], description, vocab)


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
