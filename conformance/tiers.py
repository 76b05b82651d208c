"""Conformance tiers and their bounds (docs/design.md section 5). One place for every tolerance."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    name: str
    tolerance: float
    checked_steps: int | None   # steps held to the bound (None: all); later steps are drift
    doc: str
    floor_fraction: float = 1e-3  # relative errors are measured down to this fraction of a
    #                               tensor's largest magnitude (see compare.py)


ORACLE_FORWARD = 1e-12          # op forward vs NumPy float64 reference
ORACLE_FINITE_DIFFERENCE = 1e-6  # gradients vs central finite differences
ORACLE_OPTIMIZER = 1e-12        # one update vs the NumPy reference of the canonical math

EXACT = Tier("exact", 1e-10, None,
             "float64 on CPU, every step: loss, gradients, parameters, state, optimizer state")
# The float32 tier proper is teacher-forced, its bound derived from measured rounding noise
# (conformance/forced.py, noise.py: K, c and the floors live there). This fixed normwise bound
# only reads free-running float32 trajectories: the drift reported beside the tier, and
# ``--compare`` of two saved float32 trajectories (no state to re-run from there).
FLOAT32 = Tier("float32", 1e-5, 5,
               "free-running float32 with TF32 off: the first 5 steps against 1e-5, normwise per "
               "tensor; later steps reported as drift", floor_fraction=1.0)
DEVICE = Tier("device", 1e-5, 5, "the same backend on CPU and GPU, float32 bounds",
              floor_fraction=1.0)


def tier_for(dtype: str, same_backend: bool = False) -> Tier:
    if same_backend:
        return DEVICE
    return EXACT if dtype == "float64" else FLOAT32
