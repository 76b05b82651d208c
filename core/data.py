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
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    description: str = ""

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])


def _split(name, x, y, test_fraction, seed, description):
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"dataset {name!r}: test_fraction must be in (0, 1), found {test_fraction}")
    perm = np.random.default_rng([seed, 7919]).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    return Dataset(name, x[tr], y[tr], x[te], y[te], description)


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


def digits(layout: str = "flat", test_fraction: float = 0.2, seed: int = 0):
    """The 1,797 8x8 handwritten digits shipped with scikit-learn, pixels scaled to [0, 1].

    layout ``flat`` gives (64,) vectors; ``image`` gives (8, 8, 1) channels-last images.
    """
    if layout not in ("flat", "image"):
        raise DataError(f"digits layout must be 'flat' or 'image', found {layout!r}")
    with gzip.open(_digits_file(), "rt") as f:
        raw = np.loadtxt(f, delimiter=",")
    x = raw[:, :-1] / 16.0
    y = raw[:, -1].astype(np.int64)
    if layout == "image":
        x = x.reshape(-1, 8, 8, 1)
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


DATASETS = {"regression": regression, "digits": digits, "images": images}


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
