"""Neutral parameter initialization in NumPy, keyed on (seed, parameter path).

Every backend loads these arrays, so all backends start from the same numbers. The random stream
of a parameter depends only on the global seed and its stable path (``conv1/kernel``), never on
creation order: adding a layer does not change the others' initial values.

Fans are read from the canonical layout:

* rank 1 ``(n,)``: fan_in = fan_out = n
* rank 2 ``(in, out)`` (Dense kernel, Embedding table): fan_in = in, fan_out = out
* rank >= 3 ``(k..., in, out)`` (conv kernels): receptive = prod(k...); fan_in = in * receptive,
  fan_out = out * receptive

Variance scaling, with ``fan`` the named fan (glorot uses (fan_in + fan_out) / 2):

* ``*_uniform``: U(-limit, limit), limit = sqrt(3 * scale / fan)
* ``*_normal``: normal truncated at 2 standard deviations, stddev = sqrt(scale / fan) / 0.8796...
  (the Keras and flax convention; the divisor restores the requested variance after truncation)

glorot: scale 1, fan_avg; he: scale 2, fan_in; lecun: scale 1, fan_in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rosetta.errors import SpecError

# stddev of a unit normal truncated to [-2, 2]
_TRUNC_STD = 0.87962566103423978


def rng_for(seed: int, path: str) -> np.random.Generator:
    """A NumPy generator keyed on (seed, path), stable across platforms and Python runs."""
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words]))


def fans(shape: tuple[int, ...]) -> tuple[float, float]:
    """(fan_in, fan_out) of a canonical-layout parameter shape."""
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = float(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(rng: np.random.Generator, shape, mean: float, stddev: float) -> np.ndarray:
    """Normal(mean, stddev) resampled until every value lies within 2 standard deviations."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return mean + stddev * out


def _variance_scaling(rng, shape, scale: float, mode: str, distribution: str) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, fan)
    if distribution == "uniform":
        limit = np.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, shape)
    return _truncated_normal(rng, shape, 0.0, np.sqrt(variance) / _TRUNC_STD)


def _orthogonal(rng, shape, gain: float) -> np.ndarray:
    """QR of a Gaussian matrix (rows = prod(shape[:-1]), cols = shape[-1]), signs fixed by diag(R)."""
    if len(shape) < 2:
        raise SpecError(f"orthogonal needs a parameter of rank >= 2, found shape {tuple(shape)}",
                        where="initializer")
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


# name -> (allowed keyword arguments with defaults)
_KINDS: dict[str, dict[str, Any]] = {
    "zeros": {},
    "ones": {},
    "constant": {"value": 0.0},
    "normal": {"mean": 0.0, "stddev": 0.05},
    "uniform": {"low": -0.05, "high": 0.05},
    "truncated_normal": {"mean": 0.0, "stddev": 0.05},
    "orthogonal": {"gain": 1.0},
    "glorot_uniform": {},
    "glorot_normal": {},
    "he_uniform": {},
    "he_normal": {},
    "lecun_uniform": {},
    "lecun_normal": {},
}

_SCALING = {
    "glorot": (1.0, "fan_avg"),
    "he": (2.0, "fan_in"),
    "lecun": (1.0, "fan_in"),
}


@dataclass(frozen=True)
class Initializer:
    """A named initializer with its arguments, e.g. ``Initializer("normal", stddev=0.02)``."""

    name: str
    kwargs: dict = field(default_factory=dict)

    def __init__(self, name: str, **kwargs):
        if name not in _KINDS:
            raise SpecError(f"unknown initializer {name!r}; known: {', '.join(sorted(_KINDS))}",
                            where="initializer")
        unknown = set(kwargs) - set(_KINDS[name])
        if unknown:
            raise SpecError(f"initializer {name!r} takes {sorted(_KINDS[name]) or 'no arguments'}, "
                            f"got {sorted(unknown)}", where="initializer")
        full = dict(_KINDS[name])
        full.update({k: float(v) for k, v in kwargs.items()})
        for k, v in full.items():
            if not np.isfinite(v) or (k == "stddev" and v < 0):
                raise SpecError(f"initializer {name!r}: {k} must be a finite number"
                                f"{' >= 0' if k == 'stddev' else ''}, found {v}",
                                where="initializer")
        if name == "uniform" and full["low"] > full["high"]:
            raise SpecError(f"initializer 'uniform': low ({full['low']}) exceeds high "
                            f"({full['high']})", where="initializer")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kwargs", full)

    def __hash__(self):
        return hash((self.name, tuple(sorted(self.kwargs.items()))))

    def sample(self, shape: tuple[int, ...], seed: int, path: str) -> np.ndarray:
        """The float64 array for parameter ``path`` under global ``seed``."""
        shape = tuple(int(s) for s in shape)
        k = self.kwargs
        if self.name == "zeros":
            return np.zeros(shape)
        if self.name == "ones":
            return np.ones(shape)
        if self.name == "constant":
            return np.full(shape, k["value"])
        rng = rng_for(seed, path)
        if self.name == "normal":
            return rng.normal(k["mean"], k["stddev"], shape)
        if self.name == "uniform":
            return rng.uniform(k["low"], k["high"], shape)
        if self.name == "truncated_normal":
            return _truncated_normal(rng, shape, k["mean"], k["stddev"])
        if self.name == "orthogonal":
            return _orthogonal(rng, shape, k["gain"])
        family, distribution = self.name.split("_")
        scale, mode = _SCALING[family]
        return _variance_scaling(rng, shape, scale, mode, distribution)

    def to_json(self):
        if self.kwargs == _KINDS[self.name]:
            return self.name
        return {"name": self.name, **self.kwargs}

    @classmethod
    def from_json(cls, value, where: str = "initializer") -> "Initializer":
        if isinstance(value, Initializer):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            args = {k: v for k, v in value.items() if k != "name"}
            for k, v in args.items():
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise SpecError(f"initializer argument {k!r} must be a number, found {v!r}",
                                    where=where)
            return cls(value["name"], **args)
        raise SpecError(f"an initializer is a name or {{'name': ..., args}}, found {value!r}",
                        where=where)


def as_initializer(value, where: str = "initializer") -> Initializer:
    try:
        return Initializer.from_json(value, where)
    except SpecError as e:
        raise SpecError(e.detail, where=where) from None
