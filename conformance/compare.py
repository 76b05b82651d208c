"""The worst-element comparator: where two results differ most, absolutely and relatively.

The relative error of an element is ``|a - b| / max(|a|, |b|, floor)`` with
``floor = floor_fraction * scale``, where ``scale`` is the largest magnitude in the element's
*group*: the whole tree compared (all gradients of a step, all parameters, all running statistics)
or, for optimizer state, each slot (``m``, ``v``, ``velocity``: v lives at the scale of g^2).

The exact tier uses ``floor_fraction`` 1e-3, so an element that is zero up to rounding is not
reported as a 100% error while a tensor that is wrong everywhere is. This matters for parameters
whose exact gradient is zero (a bias before BatchNorm, a LayerNorm over one feature): backends
return rounding noise there (~1e-16 of the gradient scale), which is agreement, not a mismatch.
The float32 tier uses 1 (the normwise relative error ``|a - b| / max|b|``): float32 rounding is
proportional to the scale of the values, not to each element.
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
    noise: float | None = None  # float32 tier: the measured rounding noise there (noise.py)

    @property
    def passed(self) -> bool:
        return self.tolerance is None or self.rel_err <= self.tolerance

    def __str__(self):
        tol = f" (tolerance {self.tolerance:.1e})" if self.tolerance is not None else ""
        if self.noise is not None:
            tol = f", noise {self.noise:.2e}{tol}"
        return (f"worst at {self.where}{list(self.index)}: {self.a!r} vs {self.b!r}, "
                f"abs {self.abs_err:.3e}, rel {self.rel_err:.3e}{tol}")

    def max(self, other: "Worst") -> "Worst":
        return other if other.rel_err > self.rel_err else self


ELEMENT_FLOOR = 1e-3


def group_of(path: str) -> str:
    """The group whose scale sets an element's floor: an optimizer slot (``m/...``, ``v/...``,
    ``velocity/...``) is its own group, everything else shares one."""
    head = path.split("/", 1)[0]
    return head if head in OPTIMIZER_SLOTS else ""


OPTIMIZER_SLOTS = ("m", "v", "velocity")


def group_scales(tree: dict) -> dict:
    scales: dict = {}
    for k, v in tree.items():
        v = np.asarray(v, np.float64)
        if v.size and np.isfinite(v).all():
            g = group_of(k)
            scales[g] = max(scales.get(g, 0.0), float(np.max(np.abs(v))))
    return scales


def compare_arrays(a, b, where: str = "", tolerance: float | None = None,
                   floor_fraction: float = ELEMENT_FLOOR, scale: float = 0.0) -> Worst:
    """``scale``: the group's largest magnitude (0: this tensor alone sets the floor)."""
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
    floor = floor_fraction * max(float(np.max(np.abs(b))), scale)
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
    scales = group_scales(b)
    for k in a:
        path = f"{where}{'/' if where else ''}{k}" if where else k
        worst = worst.max(compare_arrays(a[k], b[k], path, tolerance, floor_fraction,
                                         scales.get(group_of(k), 0.0)))
    worst.tolerance = tolerance
    return worst
