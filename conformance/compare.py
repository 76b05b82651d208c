"""The worst-element comparator: where two results differ most, absolutely and relatively.

The relative error of an element is ``|a - b| / max(|a|, |b|, floor)`` with
``floor = floor_fraction * max(|b|)`` over the whole tensor. The exact tier uses 1e-3, so an element
that is zero up to rounding in a tensor of ordinary size is not reported as a 100% error, while a
tensor that is wrong everywhere is. The float32 tier uses 1 (the normwise relative error
``|a - b| / max|b|``): float32 rounding is proportional to the tensor's scale, not to each element.
A result passes when the worst relative error is within the tolerance it is held to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Worst:
    where: str = ""          # tensor path (and step), e.g. "hidden1/kernel @ step 3"
    index: tuple = ()
    abs_err: float = 0.0
    rel_err: float = 0.0
    a: float = 0.0
    b: float = 0.0
    tolerance: float | None = None

    @property
    def passed(self) -> bool:
        return self.tolerance is None or self.rel_err <= self.tolerance

    def __str__(self):
        tol = f" (tolerance {self.tolerance:.1e})" if self.tolerance is not None else ""
        return (f"worst at {self.where}{list(self.index)}: {self.a!r} vs {self.b!r}, "
                f"abs {self.abs_err:.3e}, rel {self.rel_err:.3e}{tol}")

    def max(self, other: "Worst") -> "Worst":
        return other if other.rel_err > self.rel_err else self


ELEMENT_FLOOR = 1e-3


def compare_arrays(a, b, where: str = "", tolerance: float | None = None,
                   floor_fraction: float = ELEMENT_FLOOR) -> Worst:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return Worst(where=f"{where} (shape {a.shape} vs {b.shape})", abs_err=np.inf,
                     rel_err=np.inf, tolerance=tolerance)
    if a.size == 0:
        return Worst(where=where, tolerance=tolerance)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        bad = ~(np.isfinite(a) & np.isfinite(b)) & ~((a == b))
        if bad.any():
            idx = np.unravel_index(int(np.argmax(bad)), a.shape)
            return Worst(where, tuple(int(i) for i in idx), np.inf, np.inf, float(a[idx]),
                         float(b[idx]), tolerance)
    diff = np.abs(a - b)
    floor = floor_fraction * float(np.max(np.abs(b))) if b.size else 0.0
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    rel = np.where(diff == 0, 0.0, diff / np.where(scale == 0, 1.0, scale))
    i = np.unravel_index(int(np.argmax(rel)), a.shape)
    return Worst(where, tuple(int(k) for k in i), float(diff[i]), float(rel[i]), float(a[i]),
                 float(b[i]), tolerance)


def compare_trees(a: dict, b: dict, where: str = "", tolerance: float | None = None,
                  floor_fraction: float = ELEMENT_FLOOR) -> Worst:
    """Worst element over every shared key; a key missing on one side is itself a failure."""
    if set(a) != set(b):
        return Worst(where=f"{where} keys differ: {sorted(set(a) ^ set(b))}", abs_err=np.inf,
                     rel_err=np.inf, tolerance=tolerance)
    worst = Worst(where=where, tolerance=tolerance)
    for k in a:
        path = f"{where}{'/' if where else ''}{k}" if where else k
        worst = worst.max(compare_arrays(a[k], b[k], path, tolerance, floor_fraction))
    worst.tolerance = tolerance
    return worst
