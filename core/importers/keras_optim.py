"""A compiled Keras model's optimizer and loss -> the spec's (docs/design.md section 3), with the
optimizer's state (a run in progress) in canonical slots.

* ``Adam(learning_rate, beta_1, beta_2, epsilon)``: Keras's rule is the spec's "epsilon hat"
  Adam, p -= lr·√(1−β₂ᵏ)/(1−β₁ᵏ)·m/(√v + eps) (``epsilon_mode="hat"``); slots ``m`` =
  ``_momentums``, ``v`` = ``_velocities``; the update count is ``iterations``. A ``weight_decay``
  on Keras's Adam (or ``AdamW``) is decoupled, p -= lr·wd·p applied to every trainable variable
  before the update: the spec's ``AdamW(weight_decay, epsilon_mode="hat", decay="all")``.
* ``SGD(learning_rate, momentum, nesterov)``: Keras keeps m = μm − lr·g and adds it (nesterov:
  adds μm − lr·g); with a constant lr that is the canonical v = μv + g, p -= lr·v (nesterov
  p -= lr·(g + μv)) with v = −m/lr, the slot conversion used both ways. Keras's SGD
  ``weight_decay`` is decoupled where the spec's SGD couples it: refused.
* Refused: a learning-rate schedule object, ``clipnorm`` (Keras clips each variable alone; the
  spec's ``clip_norm`` is global), ``use_ema``, ``loss_scale_factor``, gradient accumulation,
  ``amsgrad``, ``exclude_from_weight_decay`` lists. ``global_clipnorm`` maps to ``clip_norm``
  and ``clipvalue`` to ``clip_value``.
* Losses (``reduction="sum_over_batch_size"``, the mean): ``SparseCategoricalCrossentropy(
  from_logits=True)`` -> ``SoftmaxCrossEntropy``; ``MeanSquaredError`` -> ``MeanSquaredError``;
  ``BinaryCrossentropy(from_logits=True)`` -> ``BinaryCrossEntropy``. ``from_logits=False``
  (the loss reads probabilities) and one-hot ``CategoricalCrossentropy`` are refused.
"""

from __future__ import annotations

import numpy as np

from rosetta import losses as L
from rosetta import optim as O
from rosetta.importers.keras_parts import read, whole

# canonical slot -> (Keras optimizer attribute, conversion kind)
SLOTS = {"adam": {"m": "_momentums", "v": "_velocities"}, "sgd": {"velocity": "momentums"}}


def _loss_parts(loss):
    """(function name, keyword arguments, reduction) of a Keras loss given to compile."""
    if isinstance(loss, str):
        return {"mse": "mean_squared_error"}.get(loss, loss), {}, "sum_over_batch_size"
    fn = getattr(loss, "fn", None)
    if fn is not None:
        return fn.__name__, dict(getattr(loss, "_fn_kwargs", {})), getattr(
            loss, "reduction", "sum_over_batch_size")
    return getattr(loss, "__name__", type(loss).__name__), {}, "sum_over_batch_size"


def map_loss(loss, refuse):
    if loss is None:
        return L.SoftmaxCrossEntropy()
    name, kw, reduction = _loss_parts(loss)
    label = f"loss ({name})"
    if isinstance(loss, (list, tuple, dict)):
        refuse(f"loss: {type(loss).__name__} of losses (the spec trains one output, one loss)")
        return None
    if reduction not in ("sum_over_batch_size", "mean"):
        refuse(f"{label}: reduction={reduction!r} (the spec's losses take the mean)")
        return None
    if name in ("sparse_categorical_crossentropy", "binary_crossentropy"):
        if not kw.get("from_logits", False):
            refuse(f"{label}: from_logits=False reads probabilities (the spec's cross-entropy "
                   f"takes logits: end the model with logits and use from_logits=True)")
            return None
        if kw.get("ignore_class") is not None:
            refuse(f"{label}: ignore_class={kw['ignore_class']}")
            return None
        if kw.get("label_smoothing", 0.0):
            refuse(f"{label}: label_smoothing on binary cross-entropy")
            return None
        if kw.get("axis", -1) != -1:
            refuse(f"{label}: axis={kw['axis']} (the class axis is the last)")
            return None
        return L.SoftmaxCrossEntropy() if name.startswith("sparse") else L.BinaryCrossEntropy()
    if name == "mean_squared_error":
        return L.MeanSquaredError()
    refuse(f"{label}: unsupported loss (SparseCategoricalCrossentropy(from_logits=True), "
           f"MeanSquaredError and BinaryCrossentropy(from_logits=True) map)")
    return None


def kind_of(opt) -> str | None:
    import keras

    for cls, kind in ((keras.optimizers.AdamW, "adamw"), (keras.optimizers.Adam, "adam"),
                      (keras.optimizers.SGD, "sgd")):
        if isinstance(opt, cls):
            return kind
    return None


def slot_to_canonical(kind: str, slot: str, array, lr: float):
    """A Keras slot array as the canonical slot (SGD's m = −lr·v)."""
    return -np.asarray(array) / lr if kind == "sgd" else np.asarray(array)


def slot_to_keras(kind: str, slot: str, array, lr: float):
    return -np.asarray(array) * lr if kind == "sgd" else np.asarray(array)


def map_optimizer(opt, model, names, refuse, layouts=None):
    """(spec optimizer, canonical slots, update count, kind) of Keras ``opt``; ``names``: Keras
    source name (a variable path or a piece of one, ``keras_parts``) -> canonical path,
    ``layouts`` their layouts (absent: identity)."""
    import keras

    if opt is None:
        return O.SGD(learning_rate=0.01), {}, 0, None
    label = f"optimizer ({type(opt).__name__})"
    kind = kind_of(opt)
    if kind is None:
        refuse(f"{label}: unsupported optimizer (SGD, Adam and AdamW map)")
        return None, {}, 0, None
    cfg = opt.get_config()
    lr = cfg["learning_rate"]
    if not isinstance(lr, (int, float)):
        refuse(f"{label}: a learning-rate schedule ({lr!r}) (a constant learning rate maps)")
        return None, {}, 0, kind
    lr = float(lr)
    for key, why in (("clipnorm", "clips each variable alone (the spec's clip_norm is the "
                                  "global norm: use global_clipnorm)"),
                     ("use_ema", "keeps a moving average of the weights"),
                     ("loss_scale_factor", "scales the loss"),
                     ("gradient_accumulation_steps", "accumulates gradients over steps"),
                     ("amsgrad", "is AMSGrad (the spec's Adam has none)")):
        if cfg.get(key):
            refuse(f"{label}: {key}={cfg[key]!r} {why}")
    if getattr(opt, "_exclude_from_weight_decay", None) or getattr(
            opt, "_exclude_from_weight_decay_pattern", None):
        refuse(f"{label}: exclude_from_weight_decay (the spec's decay masks go by canonical "
               f"name: 'all' or 'kernels')")
    clip = {}
    if cfg.get("global_clipnorm"):
        clip["clip_norm"] = float(cfg["global_clipnorm"])
    if cfg.get("clipvalue"):
        clip["clip_value"] = float(cfg["clipvalue"])
    wd = float(cfg.get("weight_decay") or 0.0)
    if kind == "sgd":
        if wd:
            refuse(f"{label}: weight_decay={wd} is decoupled on Keras's SGD, coupled on the "
                   f"spec's")
        spec = O.SGD(learning_rate=lr, momentum=float(cfg["momentum"]),
                     nesterov=bool(cfg["nesterov"]), **clip)
    elif wd:
        spec = O.AdamW(learning_rate=lr, beta1=float(cfg["beta_1"]), beta2=float(cfg["beta_2"]),
                       epsilon=float(cfg["epsilon"]), weight_decay=wd, epsilon_mode="hat",
                       decay="all", **clip)
    else:
        spec = O.Adam(learning_rate=lr, beta1=float(cfg["beta_1"]), beta2=float(cfg["beta_2"]),
                      epsilon=float(cfg["epsilon"]), epsilon_mode="hat", **clip)
    slots = {}
    count = int(keras.ops.convert_to_numpy(opt.iterations)) if opt.built else 0
    base = "sgd" if kind == "sgd" else "adam"
    if count and opt.built:
        for slot, attr in SLOTS[base].items():
            lists = getattr(opt, attr, None) or []
            if not lists:
                continue
            variables = {v.path: v for v in model.trainable_variables}
            for n, path in names.items():
                v = variables.get(whole(n))
                if v is None:
                    continue
                a = read(keras.ops.convert_to_numpy(lists[opt._get_variable_index(v)].value), n)
                lay = (layouts or {}).get(n)
                a = slot_to_canonical(base, slot, a, lr)
                slots[f"{slot}/{path}"] = np.asarray(lay.to_canonical(a)) if lay else a
    return spec, slots, count, base
