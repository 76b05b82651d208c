"""A ``torch.optim`` optimizer and a torch loss -> the spec's (docs/design.md section 3), with the
optimizer's state (a run in progress) in canonical slots.

* ``SGD(lr, momentum, nesterov, weight_decay, dampening=0)``: torch's rule is the canonical one
  (g += wd * p; v = mu * v + g, its first v = g; p -= lr * v or lr * (g + mu * v)); slot
  ``velocity`` = ``momentum_buffer``.
* ``Adam(lr, betas, eps)``: canonical (eps added to sqrt(v_hat)); torch's ``weight_decay`` on
  Adam is coupled L2, which the spec's Adam lacks: refused. ``AdamW``: decoupled decay
  p -= lr * wd * p, as the spec's. Slots ``m`` = ``exp_avg``, ``v`` = ``exp_avg_sq``; the update
  count is torch's ``step``.
* ``requires_grad=False``: the parameter's canonical path is one of the spec optimizer's
  ``frozen`` patterns (``rosetta.optim.literal``): no update, no state, no decay, outside the
  clipping norm, as torch leaves a parameter without a gradient; gradients still flow through
  it. Its group's learning rate and weight decay do not matter (they act on nothing).
* Parameter groups: each group's learning rate becomes an ``lr_scale`` factor (group lr / the
  first group's lr) on its parameters' canonical paths; weight decay must be one value on a set
  the spec's ``decay`` mask names ("all", or "kernels": every parameter but biases and
  normalisation scales); any other per-group difference is refused.
* ``RMSprop(lr, alpha, eps, momentum, centered)``: the spec's RMSprop is torch's form (eps
  outside the square root, no bias correction); slots ``v`` = ``square_avg``, ``mg`` =
  ``grad_avg`` (centered), ``velocity`` = ``momentum_buffer`` (momentum). ``Adagrad(lr,
  lr_decay, initial_accumulator_value, eps)``: the spec's Adagrad; ``lr_decay`` d is the schedule
  lr / (1 + d t) (``InverseTime``); slot ``accumulator`` = ``sum``. Their ``weight_decay``
  (coupled L2) is refused: the spec's RMSprop and Adagrad have none.
* LR schedulers (stepped once per update, so torch's ``last_epoch`` is the update count t):
  ``StepLR`` -> ``Step``, ``ExponentialLR`` -> ``Exponential(decay_steps=1)``,
  ``CosineAnnealingLR`` -> ``CosineAnnealing`` (periodic as torch's), ``LinearLR`` -> ``Linear``,
  ``SequentialLR`` of those -> ``Sequential``; each with the group's ``initial_lr`` as its value.
  torch's SGD keeps no update count: with a scheduler, its ``last_epoch`` is the count.
  A scheduler whose ``last_epoch`` is not the update count, or whose current lr is not the
  schedule's, is refused; so are ``OneCycleLR`` (it also cycles momentum) and other schedulers.
* Losses: ``CrossEntropyLoss(label_smoothing)`` -> ``SoftmaxCrossEntropy``, ``MSELoss`` ->
  ``MeanSquaredError``, ``BCEWithLogitsLoss`` -> ``BinaryCrossEntropy``, each with
  ``reduction="mean"`` and no class weights.
"""

from __future__ import annotations

import numpy as np

from rosetta import losses as L
from rosetta import optim as O

SLOTS = {"sgd": {"velocity": "momentum_buffer"}, "adam": {"m": "exp_avg", "v": "exp_avg_sq"},
         "adamw": {"m": "exp_avg", "v": "exp_avg_sq"}, "adagrad": {"accumulator": "sum"},
         "rmsprop": {"v": "square_avg", "mg": "grad_avg", "velocity": "momentum_buffer"}}


def map_loss(loss, refuse):
    import torch.nn as nn

    if loss is None:
        return L.SoftmaxCrossEntropy()
    label = f"loss ({type(loss).__name__})"
    if getattr(loss, "reduction", "mean") != "mean":
        refuse(f"{label}: reduction={loss.reduction!r} (the spec's losses take the mean)")
        return None
    if isinstance(loss, nn.CrossEntropyLoss):
        if loss.weight is not None:
            refuse(f"{label}: class weights (the spec's cross-entropy has none)")
            return None
        return L.SoftmaxCrossEntropy(label_smoothing=float(loss.label_smoothing))
    if isinstance(loss, nn.MSELoss):
        return L.MeanSquaredError()
    if isinstance(loss, nn.BCEWithLogitsLoss):
        if loss.weight is not None or loss.pos_weight is not None:
            refuse(f"{label}: weight / pos_weight (the spec's binary cross-entropy has none)")
            return None
        return L.BinaryCrossEntropy()
    refuse(f"{label}: unsupported loss (CrossEntropyLoss, MSELoss and BCEWithLogitsLoss map)")
    return None


def _kind(opt):
    import torch

    for cls, kind in ((torch.optim.AdamW, "adamw"), (torch.optim.Adam, "adam"),
                      (torch.optim.SGD, "sgd"), (torch.optim.RMSprop, "rmsprop"),
                      (torch.optim.Adagrad, "adagrad")):
        if type(opt) is cls:
            if kind == "adam" and opt.param_groups[0].get("decoupled_weight_decay"):
                return "adamw"   # Adam(decoupled_weight_decay=True) is AdamW
            return kind
    return None


def _schedule(sched, group, label, refuse):
    """The spec schedule of torch scheduler ``sched`` for ``group`` (its ``initial_lr``)."""
    from torch.optim import lr_scheduler as T

    from rosetta import schedules as S

    base = float(group.get("initial_lr", group["lr"]))
    what = f"{label}: {type(sched).__name__}"
    if type(sched) is T.StepLR:
        return S.Step(base, int(sched.step_size), float(sched.gamma))
    if type(sched) is T.ExponentialLR:
        return S.Exponential(base, 1, float(sched.gamma))
    if type(sched) is T.CosineAnnealingLR:
        return S.CosineAnnealing(base, int(sched.T_max), float(sched.eta_min))
    if type(sched) is T.LinearLR:
        return S.Linear(base, float(sched.start_factor), float(sched.end_factor),
                        int(sched.total_iters))
    if type(sched) is T.SequentialLR:
        parts = [_schedule(s, group, label, refuse) for s in sched._schedulers]
        if any(p is None for p in parts):
            return None
        return S.Sequential(tuple(parts), tuple(int(m) for m in sched._milestones))
    if type(sched) is T.OneCycleLR:
        refuse(f"{what}: OneCycleLR (it also cycles the optimizer's momentum, which the spec's "
               f"optimizers hold constant)")
        return None
    refuse(f"{what}: unsupported scheduler (StepLR, ExponentialLR, CosineAnnealingLR, LinearLR "
           f"and SequentialLR of those map)")
    return None


def map_scheduler(sched, opt, lr, step, refuse):
    """The spec schedule of ``sched`` (None: the constant ``lr``), checked against torch's own
    position: ``last_epoch`` must be the update count ``step`` and every group's lr now must be
    the schedule's lr(step) times its scale."""
    from rosetta import schedules as S

    if sched is None:
        return lr
    label = f"scheduler ({type(sched).__name__})"
    if sched.optimizer is not opt:
        refuse(f"{label}: drives another optimizer than the one given")
        return None
    g0 = opt.param_groups[0]
    schedule = _schedule(sched, g0, label, refuse)
    if schedule is None:
        return None
    try:
        schedule = S.as_schedule(schedule, label)
    except Exception as e:
        refuse(f"{label}: {e}")
        return None
    if int(sched.last_epoch) != step:
        refuse(f"{label}: last_epoch={sched.last_epoch} but the optimizer has made {step} "
               f"updates (the spec's schedule is a function of the update count: step the "
               f"scheduler once per update, or pass step=)")
        return None
    base0 = float(g0.get("initial_lr", g0["lr"]))
    for gi, g in enumerate(opt.param_groups):
        scale = float(g.get("initial_lr", g["lr"])) / base0
        want = float(schedule(step)) * scale
        if abs(float(g["lr"]) - want) > 1e-12 * abs(want):
            refuse(f"{label}: group {gi} has lr {g['lr']!r} now, the schedule gives {want!r} at "
                   f"update {step} (an lr set by hand, or a scheduler chained with another)")
            return None
    return schedule


def map_optimizer(opt, module, names, layouts, refuse, scheduler=None, step=None):
    """(spec optimizer, canonical slots, update count, {slot: torch state key}) of ``opt``
    (with ``scheduler``'s schedule; ``step`` overrides the update count)."""
    params = dict(module.named_parameters())
    # requires_grad=False -> frozen (a parameter the graph does not read has no path)
    frozen = [O.literal(names[n]) for n, p in params.items()
              if not p.requires_grad and n in names]
    if opt is None:
        return O.SGD(learning_rate=0.01, frozen=frozen or None), {}, 0, {}
    label = f"optimizer ({type(opt).__name__})"
    kind = _kind(opt)
    if kind is None:
        refuse(f"{label}: unsupported optimizer (SGD, Adam, AdamW, RMSprop and Adagrad map)")
        return None, {}, 0, {}
    by_id = {id(p): n for n, p in params.items()}
    source_of = {}
    for gi, g in enumerate(opt.param_groups):
        for p in g["params"]:
            if id(p) not in by_id:
                refuse(f"{label}: group {gi} holds a tensor that is not a parameter of the model")
                continue
            if p.requires_grad:   # a frozen parameter's group acts on nothing
                source_of[by_id[id(p)]] = gi
    for n, p in params.items():
        if p.requires_grad and n not in source_of:
            refuse(f"{n}: not in the optimizer (the spec updates every parameter)")
    groups = opt.param_groups
    g0 = groups[0]
    shared = {"sgd": ("momentum", "nesterov", "dampening", "maximize"),
              "adam": ("betas", "eps", "amsgrad", "maximize", "weight_decay"),
              "adamw": ("betas", "eps", "amsgrad", "maximize"),
              "rmsprop": ("alpha", "eps", "momentum", "centered", "maximize", "weight_decay"),
              "adagrad": ("lr_decay", "initial_accumulator_value", "eps", "maximize",
                          "weight_decay")}[kind]
    for gi, g in enumerate(groups[1:], 1):
        for k in shared:
            if g.get(k) != g0.get(k):
                refuse(f"{label}: group {gi} has {k}={g.get(k)!r}, group 0 {g0.get(k)!r} (the "
                       f"spec's optimizer has one {k})")
    if g0.get("maximize"):
        refuse(f"{label}: maximize=True")
    if kind == "sgd" and g0.get("dampening", 0):
        refuse(f"{label}: dampening={g0['dampening']} (the spec's SGD has none)")
    if kind in ("adam", "adamw") and g0.get("amsgrad"):
        refuse(f"{label}: amsgrad=True (the spec's Adam has no AMSGrad)")
    if kind == "adam" and g0.get("weight_decay"):
        refuse(f"{label}: Adam(weight_decay={g0['weight_decay']}) is coupled L2 decay, which "
               f"the spec's Adam lacks (AdamW's decoupled decay maps)")
    if kind in ("rmsprop", "adagrad") and g0.get("weight_decay"):
        refuse(f"{label}: weight_decay={g0['weight_decay']} (coupled L2 decay, which the spec's "
               f"{type(opt).__name__} lacks)")
    if kind == "adagrad" and g0.get("lr_decay") and scheduler is not None:
        refuse(f"{label}: lr_decay together with an LR scheduler (the spec has one schedule)")
    lr = float(g0.get("initial_lr", g0["lr"]))
    if lr <= 0:
        refuse(f"{label}: learning rate {lr} (must be > 0)")
        return None, {}, 0, {}
    lr_scale = {}
    for n, gi in source_of.items():
        glr = float(groups[gi].get("initial_lr", groups[gi]["lr"]))
        if glr != lr and n in names:
            lr_scale[names[n]] = glr / lr
    if lr_scale and scheduler is not None and _has_floor(scheduler):
        refuse(f"scheduler ({type(scheduler).__name__}): a floor (eta_min) with groups of "
               f"different learning rates (torch's floor is the same for every group, the "
               f"spec scales the whole schedule by the group's factor)")
    slots_map = {k: v for k, v in SLOTS[kind].items()}
    if kind == "sgd" and not float(g0["momentum"]):
        slots_map = {}
    if kind == "rmsprop":
        slots_map = {k: v for k, v in slots_map.items()
                     if k == "v" or (k == "mg" and g0["centered"])
                     or (k == "velocity" and g0["momentum"])}
    slots, count = _state(opt, {n: p for n, p in params.items() if p.requires_grad}, names,
                          layouts, slots_map, label, refuse)
    if step is not None:
        count = int(step)
    elif kind == "sgd" and scheduler is not None:
        count = int(scheduler.last_epoch)   # torch's SGD keeps no update count: the scheduler's
    if kind == "adagrad" and g0.get("lr_decay"):
        from rosetta import schedules as S
        schedule = S.InverseTime(lr, float(g0["lr_decay"]))
    else:
        schedule = map_scheduler(scheduler, opt, lr, count, refuse)
        if schedule is None:
            return None, {}, 0, {}
    decay = 0.0
    decay_mask = "all"
    if kind in ("sgd", "adamw"):
        wds = {n: float(groups[gi].get("weight_decay", 0.0)) for n, gi in source_of.items()}
        values = {v for v in wds.values() if v}
        if len(values) > 1:
            refuse(f"{label}: weight decay {sorted(values)} in different groups (the spec has "
                   f"one weight decay)")
        elif values:
            decay = values.pop()
            decaying = {names[n] for n, v in wds.items() if v and n in names}
            every = {names[n] for n in wds if n in names}
            if decaying == every:
                decay_mask = "all"
            elif decaying == {p for p in every if O.decays(p, "kernels")}:
                decay_mask = "kernels"
            else:
                odd = sorted(p for p in every if (p in decaying) != O.decays(p, "kernels"))
                refuse(f"{label}: weight decay on a set of parameters the spec's decay mask "
                       f"cannot name ('all' or 'kernels'; differs at {odd[:3]})")
    try:
        if kind == "sgd":
            spec_opt = O.SGD(learning_rate=schedule, momentum=float(g0["momentum"]),
                             nesterov=bool(g0["nesterov"]), weight_decay=decay,
                             decay=decay_mask, lr_scale=lr_scale or None,
                             frozen=frozen or None)
        elif kind == "rmsprop":
            spec_opt = O.RMSprop(learning_rate=schedule, rho=float(g0["alpha"]),
                                 momentum=float(g0["momentum"]), centered=bool(g0["centered"]),
                                 epsilon=float(g0["eps"]), lr_scale=lr_scale or None,
                                 frozen=frozen or None)
        elif kind == "adagrad":
            spec_opt = O.Adagrad(learning_rate=schedule,
                                 initial_accumulator=float(g0["initial_accumulator_value"]),
                                 epsilon=float(g0["eps"]), lr_scale=lr_scale or None,
                                 frozen=frozen or None)
        else:
            b1, b2 = (float(b) for b in g0["betas"])
            kw = dict(learning_rate=schedule, beta1=b1, beta2=b2, epsilon=float(g0["eps"]),
                      lr_scale=lr_scale or None, frozen=frozen or None)
            spec_opt = (O.AdamW(weight_decay=decay, decay=decay_mask, **kw) if kind == "adamw"
                        else O.Adam(**kw))
    except Exception as e:  # a hyperparameter the spec refuses (SpecError names it)
        refuse(f"{label}: {e}")
        return None, {}, 0, {}
    return spec_opt, slots, count, slots_map


def _has_floor(sched) -> bool:
    from torch.optim import lr_scheduler as T

    if type(sched) is T.SequentialLR:
        return any(_has_floor(s) for s in sched._schedulers)
    return type(sched) is T.CosineAnnealingLR and bool(sched.eta_min)


def _state(opt, params, names, layouts, slots_map, label, refuse):
    """Canonical optimizer slots and the update count of an optimizer in progress."""
    with_state = {n: opt.state[p] for n, p in params.items() if opt.state.get(p)}
    if not with_state:
        return {}, 0
    if len(with_state) != len(params):
        refuse(f"{label}: state for {len(with_state)} of {len(params)} parameters (the spec's "
               f"optimizer state covers every parameter)")
        return {}, 0
    steps = {int(float(st["step"])) for st in with_state.values() if "step" in st}
    if len(steps) > 1:
        refuse(f"{label}: parameters at different update counts {sorted(steps)}")
        return {}, 0
    slots = {}
    for n, st in with_state.items():
        for slot, key in slots_map.items():
            if st.get(key) is None:
                refuse(f"{label}: {n} has no {key!r} in its state")
                continue
            arr = st[key].detach().cpu().numpy()
            slots[f"{slot}/{names[n]}"] = np.array(layouts[n].to_canonical(arr))
    return slots, (steps.pop() if steps else 0)
