"""Learning-rate schedules as pure functions of the update count.

``lr(step)`` where ``step`` counts updates already applied: the first update uses ``lr(0)``.
Each schedule is written once, against a tiny array namespace ``xp`` (``floor``, ``cos``,
``minimum``, ``where``), so NumPy, ``jax.numpy`` and a TensorFlow shim evaluate the same formula;
torch evaluates it on the host in float64.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from rosetta.errors import SpecError


class Schedule:
    kind = ""

    def __call__(self, step, xp=np):
        raise NotImplementedError  # every subclass defines it; Schedule itself is abstract

    def to_json(self) -> dict:
        return {"schedule": self.kind, **asdict(self)}

    def validate(self, where):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or (isinstance(v, float) and not np.isfinite(v)):
                raise SpecError(f"{f.name} must be a finite number, found {v!r}", where=where)


def _positive(where, **values):
    for k, v in values.items():
        if not v > 0:
            raise SpecError(f"{k} must be > 0, found {v!r}", where=where)


@dataclass(frozen=True)
class Constant(Schedule):
    """lr(t) = value."""
    value: float
    kind = "constant"

    def __call__(self, step, xp=np):
        return self.value + 0.0 * step

    def validate(self, where):
        super().validate(where)
        _positive(where, value=self.value)


@dataclass(frozen=True)
class Step(Schedule):
    """lr(t) = value * gamma ** floor(t / step_size)  (torch StepLR)."""
    value: float
    step_size: int
    gamma: float = 0.1
    kind = "step"

    def __call__(self, step, xp=np):
        return self.value * self.gamma ** xp.floor(step / self.step_size)

    def validate(self, where):
        super().validate(where)
        _positive(where, value=self.value, step_size=self.step_size, gamma=self.gamma)


@dataclass(frozen=True)
class Exponential(Schedule):
    """lr(t) = value * rate ** (t / decay_steps); with staircase the exponent is floored."""
    value: float
    decay_steps: int
    rate: float
    staircase: bool = False
    kind = "exponential"

    def __call__(self, step, xp=np):
        e = step / self.decay_steps
        if self.staircase:
            e = xp.floor(e)
        return self.value * self.rate ** e

    def validate(self, where):
        for k in ("value", "decay_steps", "rate"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpecError(f"{k} must be a number, found {v!r}", where=where)
        if not isinstance(self.staircase, bool):
            raise SpecError(f"staircase must be true or false, found {self.staircase!r}",
                            where=where)
        _positive(where, value=self.value, decay_steps=self.decay_steps, rate=self.rate)


@dataclass(frozen=True)
class Cosine(Schedule):
    """lr(t) = final + (value - final) * (1 + cos(pi * min(t, decay_steps) / decay_steps)) / 2."""
    value: float
    decay_steps: int
    final: float = 0.0
    kind = "cosine"

    def __call__(self, step, xp=np):
        t = xp.minimum(step, self.decay_steps) / self.decay_steps
        return self.final + (self.value - self.final) * 0.5 * (1.0 + xp.cos(math.pi * t))

    def validate(self, where):
        super().validate(where)
        _positive(where, value=self.value, decay_steps=self.decay_steps)
        if self.final < 0:
            raise SpecError(f"final must be >= 0, found {self.final}", where=where)


@dataclass(frozen=True)
class WarmupCosine(Schedule):
    """Linear warm-up, then cosine decay; ``decay_steps`` counts from step 0 (includes warm-up).

    t < warmup_steps:  lr(t) = init + (peak - init) * t / warmup_steps
    otherwise:         lr(t) = final + (peak - final) * (1 + cos(pi * u)) / 2,
                       u = min(t - warmup_steps, D) / D,  D = decay_steps - warmup_steps
    """
    peak: float
    warmup_steps: int
    decay_steps: int
    init: float = 0.0
    final: float = 0.0
    kind = "warmup_cosine"

    def __call__(self, step, xp=np):
        d = self.decay_steps - self.warmup_steps
        warm = self.init + (self.peak - self.init) * step / self.warmup_steps
        u = xp.minimum(xp.maximum(step - self.warmup_steps, 0.0), d) / d
        cos = self.final + (self.peak - self.final) * 0.5 * (1.0 + xp.cos(math.pi * u))
        return xp.where(step < self.warmup_steps, warm, cos)

    def validate(self, where):
        super().validate(where)
        _positive(where, peak=self.peak, warmup_steps=self.warmup_steps)
        if not self.decay_steps > self.warmup_steps:
            raise SpecError(f"decay_steps ({self.decay_steps}) must exceed warmup_steps "
                            f"({self.warmup_steps}); it counts from step 0", where=where)


@dataclass(frozen=True)
class CosineAnnealing(Schedule):
    """lr(t) = final + (value - final) * (1 + cos(pi * t / period)) / 2, for every t: periodic,
    rising again after ``period`` (torch ``CosineAnnealingLR(T_max=period, eta_min=final)``;
    ``cosine`` instead holds ``final`` after ``decay_steps``)."""
    value: float
    period: int
    final: float = 0.0
    kind = "cosine_annealing"

    def __call__(self, step, xp=np):
        return self.final + (self.value - self.final) * 0.5 * (
            1.0 + xp.cos(math.pi * (step / self.period)))

    def validate(self, where):
        super().validate(where)
        _positive(where, value=self.value, period=self.period)
        if self.final < 0:
            raise SpecError(f"final must be >= 0, found {self.final}", where=where)


@dataclass(frozen=True)
class Linear(Schedule):
    """lr(t) = value * (start + (end - start) * min(t, steps) / steps): a linear ramp of the
    factor from ``start`` to ``end`` over ``steps`` updates, then ``end`` (torch
    ``LinearLR(start_factor=start, end_factor=end, total_iters=steps)``; a warm-up)."""
    value: float
    start: float
    end: float
    steps: int
    kind = "linear"

    def __call__(self, step, xp=np):
        return self.value * (self.start + (self.end - self.start)
                             * (xp.minimum(step, self.steps) / self.steps))

    def validate(self, where):
        super().validate(where)
        _positive(where, value=self.value, start=self.start, steps=self.steps)
        if self.end < 0:
            raise SpecError(f"end must be >= 0, found {self.end}", where=where)


@dataclass(frozen=True)
class InverseTime(Schedule):
    """lr(t) = value / (1 + decay * t) (torch ``Adagrad(lr_decay=decay)``)."""
    value: float
    decay: float
    kind = "inverse_time"

    def __call__(self, step, xp=np):
        return self.value / (1.0 + self.decay * step)

    def validate(self, where):
        super().validate(where)
        _positive(where, value=self.value)
        if self.decay < 0:
            raise SpecError(f"decay must be >= 0, found {self.decay}", where=where)


@dataclass(frozen=True)
class Sequential(Schedule):
    """Schedules one after another: with milestones m_1 < ... < m_k (m_0 = 0),
    lr(t) = schedules[i](t - m_i) for m_i <= t < m_(i+1): each schedule restarts from its own
    step 0 at its milestone (torch ``SequentialLR(schedulers, milestones)``)."""
    schedules: tuple
    milestones: tuple
    kind = "sequential"

    def __post_init__(self):
        object.__setattr__(self, "schedules", tuple(self.schedules))
        object.__setattr__(self, "milestones", tuple(self.milestones))

    def __call__(self, step, xp=np):
        out = as_schedule(self.schedules[0])(step, xp)
        for m, s in zip(self.milestones, self.schedules[1:]):
            out = xp.where(step >= m, as_schedule(s)(step - m, xp), out)
        return out

    def to_json(self) -> dict:
        return {"schedule": self.kind,
                "schedules": [as_schedule(s).to_json() for s in self.schedules],
                "milestones": list(self.milestones)}

    def validate(self, where):
        scheds = [as_schedule(s, f"{where}.schedules[{i}]") for i, s in enumerate(self.schedules)]
        object.__setattr__(self, "schedules", tuple(scheds))
        ms = self.milestones
        if len(scheds) < 2 or len(ms) != len(scheds) - 1:
            raise SpecError(f"sequential needs at least 2 schedules and one milestone fewer, "
                            f"found {len(scheds)} schedules and {len(ms)} milestones",
                            where=where)
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ms) \
                or list(ms) != sorted(set(ms)):
            raise SpecError(f"milestones must be increasing integers >= 1, found {list(ms)}",
                            where=where)


KINDS = {c.kind: c for c in (Constant, Step, Exponential, Cosine, WarmupCosine, CosineAnnealing,
                             Linear, InverseTime, Sequential)}


def as_schedule(value, where="learning_rate") -> Schedule:
    """A number means Constant(number); a Schedule or its JSON is checked and returned."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, int) and abs(value) > 2 ** 63:
            raise SpecError(f"a learning rate must be a finite number, found {value}",
                            where=where)
        s = Constant(float(value))
    elif isinstance(value, Schedule):
        s = value
    elif isinstance(value, dict):
        kind = value.get("schedule")
        if kind not in KINDS:
            raise SpecError(f"unknown schedule {kind!r}; known: {sorted(KINDS)}", where=where)
        args = {k: v for k, v in value.items() if k != "schedule"}
        allowed = {f.name for f in fields(KINDS[kind])}
        if set(args) - allowed:
            raise SpecError(f"unknown key(s) {sorted(set(args) - allowed)} for schedule "
                            f"{kind!r}; allowed: {sorted(allowed)}", where=where)
        try:
            s = KINDS[kind](**args)
        except TypeError as e:
            raise SpecError(f"schedule {kind!r}: {e}", where=where) from None
    else:
        raise SpecError(f"a learning rate is a number or a schedule, found {value!r}",
                        where=where)
    s.validate(where)
    return s
