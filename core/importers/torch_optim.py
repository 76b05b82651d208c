"""A ``torch.optim`` optimizer and a torch loss -> the spec's (docs/design.md section 3), with the
optimizer's state (a run in progress) in canonical slots.

* ``SGD(lr, momentum, nesterov, weight_decay, dampening=0)``: torch's rule is the canonical one
  (g += wd * p; v = mu * v + g, its first v = g; p -= lr * v or lr * (g + mu * v)); slot
  ``velocity`` = ``momentum_buffer``.
* ``Adam(lr, betas, eps)``: canonical (eps added to sqrt(v_hat)); torch's ``weight_decay`` on
  Adam is coupled L2, which the spec's Adam lacks: refused. ``AdamW``: decoupled decay
  p -= lr * wd * p, as the spec's. Slots ``m`` = ``exp_avg``, ``v`` = ``exp_avg_sq``; the update
  count is torch's ``step``.
* Parameter groups: each group's learning rate becomes an ``lr_scale`` factor (group lr / the
  first group's lr) on its parameters' canonical paths; weight decay must be one value on a set
  the spec's ``decay`` mask names ("all", or "kernels": every parameter but biases and
  normalisation scales); any other per-group difference is refused.
* Losses: ``CrossEntropyLoss(label_smoothing)`` -> ``SoftmaxCrossEntropy``, ``MSELoss`` ->
  ``MeanSquaredError``, ``BCEWithLogitsLoss`` -> ``BinaryCrossEntropy``, each with
  ``reduction="mean"`` and no class weights.
"""

from __future__ import annotations

import numpy as np

from rosetta import losses as L
from rosetta import optim as O

SLOTS = {"sgd": {"velocity": "momentum_buffer"}, "adam": {"m": "exp_avg", "v": "exp_avg_sq"},
         "adamw": {"m": "exp_avg", "v": "exp_avg_sq"}}


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
                      (torch.optim.SGD, "sgd")):
        if type(opt) is cls:
            return kind
    return None


def map_optimizer(opt, module, names, layouts, refuse):
    """(spec optimizer, canonical slots, update count, {slot: torch state key}) of ``opt``."""
    params = dict(module.named_parameters())
    frozen = [n for n, p in params.items() if not p.requires_grad]
    for n in frozen:
        refuse(f"{n}: requires_grad=False (the spec has no frozen parameters)")
    if opt is None:
        return O.SGD(learning_rate=0.01), {}, 0, {}
    label = f"optimizer ({type(opt).__name__})"
    kind = _kind(opt)
    if kind is None:
        refuse(f"{label}: unsupported optimizer (SGD, Adam and AdamW map)")
        return None, {}, 0, {}
    by_id = {id(p): n for n, p in params.items()}
    source_of = {}
    for gi, g in enumerate(opt.param_groups):
        for p in g["params"]:
            if id(p) not in by_id:
                refuse(f"{label}: group {gi} holds a tensor that is not a parameter of the model")
                continue
            source_of[by_id[id(p)]] = gi
    for n, p in params.items():
        if p.requires_grad and n not in source_of:
            refuse(f"{n}: not in the optimizer (the spec updates every parameter)")
    groups = opt.param_groups
    g0 = groups[0]
    shared = {"sgd": ("momentum", "nesterov", "dampening", "maximize"),
              "adam": ("betas", "eps", "amsgrad", "maximize", "weight_decay"),
              "adamw": ("betas", "eps", "amsgrad", "maximize")}[kind]
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
    lr = float(g0["lr"])
    if lr <= 0:
        refuse(f"{label}: learning rate {lr} (must be > 0)")
        return None, {}, 0, {}
    lr_scale = {}
    for n, gi in source_of.items():
        if float(groups[gi]["lr"]) != lr and n in names:
            lr_scale[names[n]] = float(groups[gi]["lr"]) / lr
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
            spec_opt = O.SGD(learning_rate=lr, momentum=float(g0["momentum"]),
                             nesterov=bool(g0["nesterov"]), weight_decay=decay,
                             decay=decay_mask, lr_scale=lr_scale or None)
        else:
            b1, b2 = (float(b) for b in g0["betas"])
            kw = dict(learning_rate=lr, beta1=b1, beta2=b2, epsilon=float(g0["eps"]),
                      lr_scale=lr_scale or None)
            spec_opt = (O.AdamW(weight_decay=decay, decay=decay_mask, **kw) if kind == "adamw"
                        else O.Adam(**kw))
    except Exception as e:  # a hyperparameter the spec refuses (SpecError names it)
        refuse(f"{label}: {e}")
        return None, {}, 0, {}
    slots_map = SLOTS[kind] if (kind != "sgd" or spec_opt.momentum) else {}
    slots, step = _state(opt, params, names, layouts, slots_map, label, refuse)
    return spec_opt, slots, step, slots_map


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
