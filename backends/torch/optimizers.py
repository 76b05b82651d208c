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
* Adam/AdamW ``epsilon_mode="hat"``: torch's Adam computes m_hat / (sqrt(v)/sqrt(c2) + eps'),
  c2 = 1 - b2^k, which is Keras's sqrt(c2)/c1 * m / (sqrt(v) + eps) for eps' = eps / sqrt(c2); a
  step pre-hook writes that eps' into the param group before update number k.
* RMSprop -> ``torch.optim.RMSprop(alpha=rho)``: the canonical form is torch's (eps outside the
  square root, accumulators from 0, lr not folded into the momentum buffer).
* Adagrad -> ``torch.optim.Adagrad(lr_decay=0, initial_accumulator_value=...)``: eps outside.
* Lion: torch has none; ``Lion`` below is a ``torch.optim.Optimizer`` with the canonical rule.
* ``decay="kernels"``: two param groups, the second (biases and norm scales, see
  ``rosetta.optim.decays``) with weight_decay 0.
* ``lr_scale``: one param group per (decays, lr factor), each with its own ``lr`` =
  schedule(t) * factor (the factor kept in the group as ``lr_factor``); torch's AdamW and Lion
  below decay by the group's lr, as the canonical rule does.
* ``clip_value`` / ``clip_norm``: a step pre-hook clips the gradients in place before the rule
  (values first, then g * c / ||g|| when ||g|| > c; ``torch.nn.utils.clip_grad_norm_`` would add
  1e-6 to the norm).

``torch.optim`` optimizers over ``FOREACH_MIN_TENSORS`` tensors or more run with
``foreach=True``: torch's multi-tensor implementation (its default on CUDA; on the CPU its default
is one loop over the parameters), the same operations on lists of tensors, so the same numbers
bit for bit (every optimizer case, float32 and float64: ``tests/backends/test_optim_torch.py``).
Canonical parameters are separate leaves (q, k, v apart), so a model has more of them than a
hand-packed one (the transformer: 38 against ``nn.TransformerEncoderLayer``'s 30); one step of
torch's CPU loop over 38 small tensors took 722 us for Adam, the multi-tensor one 408 us. Below
about 4 tensors the loop is the faster (one tensor: Adam 38 against 57 us, SGD 10 against 16;
at 4 they are even: SGD 16/19, with momentum 35/35, Adam 97/94, AdamW 111/100 us; one thread,
64-element tensors), so those keep torch's default (``foreach=None``).

Optimizer state keys and their canonical slot names: ``NATIVE_SLOTS`` (export), ``STATE_KEYS``
per optimizer (``load_state``: "v" is ``exp_avg_sq`` in Adam, ``square_avg`` in RMSprop).

Resuming (``load_state``): the per-parameter state is written through
``optimizer.load_state_dict`` (which casts it to each parameter's dtype and device, as it does
for a native checkpoint), with the ``step`` tensor Adam, AdamW, RMSprop and Adagrad count
updates in (a 0-d float tensor of torch's scalar dtype, on the CPU, as ``_init_group`` makes
it); ``ScheduleLR`` is put at ``last_epoch = step`` with each group's lr = lr(step) * its
``lr_factor``; the epsilon-hat pre-hook reads the update number from that same ``step``
tensor, so nothing else counts updates.

The schedule is evaluated on the host in float64 (``schedule(step, numpy)``) and written into
the param groups as is (not base_lr * factor, which could round differently). A constant
learning rate gets no scheduler (None), as a torch user writes it: the lr set at construction
never changes, and ``LRScheduler`` would wrap ``optimizer.step`` and run its own step each update.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from rosetta.backends.torch.params import native_like
from rosetta.errors import SpecError
from rosetta.optim import Optimizer
from rosetta.schedules import Constant, Schedule

# torch optimizer state key -> canonical slot name (rosetta.optim ``slots``)
NATIVE_SLOTS = (("momentum_buffer", "velocity"), ("exp_avg", "m"), ("exp_avg_sq", "v"),
                ("square_avg", "v"), ("grad_avg", "mg"), ("sum", "accumulator"))
# per optimizer kind: canonical slot -> its torch state key
STATE_KEYS = {"sgd": {"velocity": "momentum_buffer"},
              "adam": {"m": "exp_avg", "v": "exp_avg_sq"},
              "adamw": {"m": "exp_avg", "v": "exp_avg_sq"},
              "rmsprop": {"v": "square_avg", "mg": "grad_avg", "velocity": "momentum_buffer"},
              "adagrad": {"accumulator": "sum"},
              "lion": {"m": "exp_avg"}}
# from this many tensors on, torch's multi-tensor (foreach) implementation (see the docstring)
FOREACH_MIN_TENSORS = 5
# the optimizers whose per-parameter state counts the updates applied (``state["step"]``)
COUNTS_STEPS = ("adam", "adamw", "rmsprop", "adagrad")


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
        return [lr * group.get("lr_factor", 1.0) for group in self.optimizer.param_groups]


class Lion(torch.optim.Optimizer):
    """c = b1 m + (1 - b1) g;  p <- p - lr * (sign(c) + wd * p);  m <- b2 m + (1 - b2) g.
    State key ``exp_avg`` (m)."""

    def __init__(self, params, lr, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                d = torch.sign(b1 * m + (1 - b1) * g)
                if wd:
                    d = d + wd * p
                p.sub_(lr * d)
                m.copy_(b2 * m + (1 - b2) * g)


def _sgd(opt, params, lr, foreach):
    return torch.optim.SGD(params, lr=lr, momentum=opt.momentum, dampening=0.0,
                           weight_decay=opt.weight_decay, nesterov=opt.nesterov, foreach=foreach)


def _adam(opt, params, lr, foreach):
    return torch.optim.Adam(params, lr=lr, betas=(opt.beta1, opt.beta2), eps=opt.epsilon,
                            weight_decay=0.0, foreach=foreach)


def _adamw(opt, params, lr, foreach):
    return torch.optim.AdamW(params, lr=lr, betas=(opt.beta1, opt.beta2), eps=opt.epsilon,
                             weight_decay=opt.weight_decay, foreach=foreach)


def _rmsprop(opt, params, lr, foreach):
    return torch.optim.RMSprop(params, lr=lr, alpha=opt.rho, eps=opt.epsilon, weight_decay=0.0,
                               momentum=opt.momentum, centered=opt.centered, foreach=foreach)


def _adagrad(opt, params, lr, foreach):
    return torch.optim.Adagrad(params, lr=lr, lr_decay=0.0, weight_decay=0.0,
                               initial_accumulator_value=opt.initial_accumulator,
                               eps=opt.epsilon, foreach=foreach)


def _lion(opt, params, lr, foreach):  # foreach: torch.optim's; Lion above is one loop
    return Lion(params, lr=lr, betas=(opt.beta1, opt.beta2), weight_decay=opt.weight_decay)


OPTIMIZERS = {"sgd": _sgd, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop,
              "adagrad": _adagrad, "lion": _lion}


def _groups(opt: Optimizer, params, lr: float) -> list[dict]:
    """One param group, or one per (weight decay applies, lr factor) with ``decay="kernels"``
    (weight_decay 0 where it does not) or ``lr_scale`` (lr = lr * factor)."""
    if not isinstance(params, dict):
        return [{"params": list(params), "lr": lr}]
    groups = {}
    for path, tensor in params.items():
        key = (opt.decays(path), opt.lr_factor(path))
        groups.setdefault(key, []).append(tensor)
    if not groups:
        return [{"params": [], "lr": lr}]
    out = []
    for (decays, factor), tensors in groups.items():
        group = {"params": tensors, "lr": lr * factor, "lr_factor": factor}
        if not decays:
            group["weight_decay"] = 0.0
        out.append(group)
    return out


def _clip_hook(opt: Optimizer):
    c_value, c_norm = opt.clip_value, opt.clip_norm

    @torch.no_grad()
    def clip(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"]
                 if p.grad is not None]
        if c_value is not None:
            for g in grads:
                g.clamp_(-c_value, c_value)
        if c_norm is not None and grads:
            norm = float(torch.sqrt(sum(torch.sum(g * g) for g in grads)))
            if norm > c_norm:
                for g in grads:
                    g.mul_(c_norm / norm)

    return clip


def updates_applied(optimizer: torch.optim.Optimizer) -> int:
    """The update count Adam/AdamW/RMSprop/Adagrad keep in the ``step`` tensor of each
    parameter's state (read from the first parameter; 0 before the first update)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            return 0 if step is None else int(step)
    return 0


def _epsilon_hat_hook(opt: Optimizer):
    """Before update number t (k = t + 1), eps' = eps / sqrt(1 - b2^k) into every group. t is
    read from the optimizer's own state (``updates_applied``), so a resumed optimizer
    (``load_state``, or a native ``load_state_dict``) continues with the right k: one ``item()``
    a step, as torch's Adam itself does for each parameter."""

    def set_eps(optimizer, args, kwargs):
        k = updates_applied(optimizer) + 1
        eps = opt.epsilon / float(np.sqrt(1.0 - opt.beta2 ** k))
        for group in optimizer.param_groups:
            group["eps"] = eps

    return set_eps


def lower(opt: Optimizer, params):
    """(native optimizer, ScheduleLR or None for a constant lr) over ``params`` (a list of
    tensors, or ``{canonical path: tensor}``, needed for ``decay="kernels"``), fresh state,
    lr(0) set, clipping and epsilon-hat hooks registered."""
    try:
        make = OPTIMIZERS[opt.kind]
    except KeyError:
        raise SpecError(f"the torch backend has no lowering for optimizer {opt.kind!r} (it "
                        f"lowers {', '.join(sorted(OPTIMIZERS))})", where="$.optimizer") from None
    # one explicit param group: torch refuses a bare empty list (a model without parameters)
    if (getattr(opt, "decay", "all") != "all" or opt.lr_scale) and not isinstance(params, dict):
        raise SpecError("decay masks and lr_scale need the parameters by path",
                        where="$.optimizer")
    lr = float(opt.learning_rate(0, np))
    groups = _groups(opt, params, lr)
    # None: torch's own default (the loop on the CPU, multi-tensor on CUDA)
    foreach = True if sum(len(g["params"]) for g in groups) >= FOREACH_MIN_TENSORS else None
    optimizer = make(opt, groups, lr, foreach)
    if getattr(opt, "clip_value", None) is not None or getattr(opt, "clip_norm", None) is not None:
        optimizer.register_step_pre_hook(_clip_hook(opt))
    if getattr(opt, "epsilon_mode", "canonical") == "hat":
        optimizer.register_step_pre_hook(_epsilon_hat_hook(opt))
    if isinstance(opt.learning_rate, Constant):
        return optimizer, None
    return optimizer, ScheduleLR(optimizer, opt.learning_rate)



def load_state(opt: Optimizer, optimizer: torch.optim.Optimizer, scheduler,
               states: dict, step: int) -> None:
    """Put ``optimizer`` (and its ``ScheduleLR``, or None) where it is after ``step`` updates.

    ``states``: {parameter tensor: {canonical slot: native-layout array}} (checked by the core's
    ``Optimizer.check_slots``); every parameter of ``optimizer`` gets exactly that state (plus
    ``step`` where torch counts it), through ``optimizer.load_state_dict``. The param groups'
    lr become lr(step) * ``lr_factor`` and the scheduler's ``last_epoch`` step."""
    keys = STATE_KEYS.get(opt.kind, {})
    # torch's scalar dtype for ``step`` (``_init_group``: float64 only under a float64 default)
    step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    native = optimizer.state_dict()
    index = 0
    state = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            slots = states.get(p, {})
            entry = {keys[slot]: native_like(p, a) for slot, a in slots.items()}
            if opt.kind in COUNTS_STEPS:
                entry["step"] = torch.tensor(float(step), dtype=step_dtype)
            if entry:
                state[index] = entry
            index += 1
    native["state"] = state
    if scheduler is not None:
        scheduler.last_epoch = int(step)
        for saved, lr in zip(native["param_groups"], scheduler.get_lr()):
            saved["lr"] = lr
    optimizer.load_state_dict(native)
    if scheduler is not None:
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
