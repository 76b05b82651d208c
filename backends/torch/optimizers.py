"""Optimizer and schedule lowering: ``rosetta.optim`` -> ``torch.optim`` + an LR scheduler.

Each native optimizer is configured to the canonical math of ``rosetta.optim`` (checked against
its NumPy ``update`` by the conformance suite):

* SGD -> ``torch.optim.SGD(dampening=0)``: its ``weight_decay`` is coupled L2 (g + wd * p), its
  buffer is v = momentum * v + g (the first step stores g, the same thing from v = 0), nesterov
  steps by g + momentum * v; lr is not folded into v.
* Adam -> ``torch.optim.Adam``: eps is added to sqrt(v_hat) after bias correction.
* AdamW -> ``torch.optim.AdamW``: decoupled decay p *= 1 - lr * wd before the Adam step, which is
  p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p) since the Adam step does not depend on p.
  (``torch.optim.Adam(weight_decay=...)`` would be coupled L2: never used for AdamW.)

The schedule is evaluated on the host in float64 (``schedule(step, numpy)``) and written into
the param groups as is (not base_lr * factor, which could round differently). A constant
learning rate gets no scheduler (None), as a torch user writes it: the lr set at construction
never changes, and ``LRScheduler`` would wrap ``optimizer.step`` and run its own step each update.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from rosetta.errors import SpecError
from rosetta.optim import Optimizer
from rosetta.schedules import Constant, Schedule


class ScheduleLR(LRScheduler):
    """lr = schedule(t), t = updates already applied.

    torch's scheduler protocol gives exactly that: the scheduler's constructor sets lr(0) with
    ``last_epoch = 0`` before any update, and each ``scheduler.step()`` after
    ``optimizer.step()`` advances ``last_epoch`` to the number of updates applied.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule):
        self.schedule = schedule
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        return float(self.schedule(step, np))

    def get_lr(self):
        lr = self.lr_at(self.last_epoch)
        return [lr for _ in self.optimizer.param_groups]


def _sgd(opt, params, lr):
    return torch.optim.SGD(params, lr=lr, momentum=opt.momentum, dampening=0.0,
                           weight_decay=opt.weight_decay, nesterov=opt.nesterov)


def _adam(opt, params, lr):
    return torch.optim.Adam(params, lr=lr, betas=(opt.beta1, opt.beta2), eps=opt.epsilon,
                            weight_decay=0.0)


def _adamw(opt, params, lr):
    return torch.optim.AdamW(params, lr=lr, betas=(opt.beta1, opt.beta2), eps=opt.epsilon,
                             weight_decay=opt.weight_decay)


OPTIMIZERS = {"sgd": _sgd, "adam": _adam, "adamw": _adamw}


def lower_optimizer(opt: Optimizer, params: list[torch.Tensor]):
    """(native optimizer, ScheduleLR or None for a constant lr) over ``params``, fresh state,
    lr(0) set."""
    try:
        make = OPTIMIZERS[opt.kind]
    except KeyError:
        raise SpecError(f"the torch backend has no lowering for optimizer {opt.kind!r} (it "
                        f"lowers {', '.join(sorted(OPTIMIZERS))})", where="$.optimizer") from None
    # one explicit param group: torch refuses a bare empty list (a model without parameters)
    optimizer = make(opt, [{"params": list(params)}], float(opt.learning_rate(0, np)))
    if isinstance(opt.learning_rate, Constant):
        return optimizer, None
    return optimizer, ScheduleLR(optimizer, opt.learning_rate)
