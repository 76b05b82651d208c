"""Keras 3, as its users write it: ``keras.Sequential``, ``model.compile`` with Keras's own
defaults (``jit_compile="auto"``: XLA on jax and TensorFlow, eager on torch) and
``model.train_on_batch``. Keras binds one backend per process, so ``rosetta bench --keras`` runs
this file as a script, once per backend, with ``KERAS_BACKEND`` set:

    KERAS_BACKEND=jax python keras_native.py PAYLOAD.npz

The payload holds the same plain values as the other baselines (see ``__init__``): ``arch``,
``loss``, ``optimizer`` (JSON), ``input_shape``, the canonical weights ``k0, b0, k1, ...``, the
batches ``x0, y0, ...`` and ``steps``, ``warmup``. It prints one JSON line: Keras's version and
backend, the first call's seconds and the median and IQR of the steady-state step in ms. No rosetta
import (the file is run by path).

Keras's update rules are its own (Adam's "epsilon hat", SGD folding lr into the momentum), so it
does not train to rosetta's numbers exactly: this column compares speed, not agreement.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def build(keras, arch, weights, input_shape, loss, optimizer):
    layers = [keras.Input(tuple(input_shape))]
    if arch == "cnn":
        (k1, _), (k2, _), (kd, _) = weights
        layers += [keras.layers.Conv2D(k1.shape[-1], 3, padding="same", activation="relu"),
                   keras.layers.MaxPooling2D(2),
                   keras.layers.Conv2D(k2.shape[-1], 3, padding="same", activation="relu"),
                   keras.layers.Flatten(), keras.layers.Dense(kd.shape[-1])]
    else:
        if len(input_shape) > 1:
            layers.append(keras.layers.Flatten())
        for i, (k, _) in enumerate(weights):
            layers.append(keras.layers.Dense(k.shape[-1], activation="relu"
                                             if i < len(weights) - 1 else None))
    model = keras.Sequential(layers)
    with_weights = [la for la in model.layers if la.weights]
    for layer, (k, b) in zip(with_weights, weights):
        layer.set_weights([k, b])
    o = optimizer
    opt = (keras.optimizers.Adam(o["lr"], beta_1=o["beta1"], beta_2=o["beta2"],
                                 epsilon=o["eps"])
           if o["name"] == "adam" else
           keras.optimizers.SGD(o["lr"], momentum=o["momentum"], nesterov=o["nesterov"]))
    loss_fn = (keras.losses.SparseCategoricalCrossentropy(from_logits=True)
               if loss == "softmax_cross_entropy" else keras.losses.MeanSquaredError())
    model.compile(optimizer=opt, loss=loss_fn)
    return model


def main(path):
    import keras

    d = np.load(path, allow_pickle=False)
    meta = json.loads(str(d["meta"]))
    n = meta["layers"]
    weights = [(d[f"k{i}"], d[f"b{i}"]) for i in range(n)]
    model = build(keras, meta["arch"], weights, meta["input_shape"], meta["loss"],
                  meta["optimizer"])
    to = keras.ops.convert_to_tensor
    batches = [(to(d[f"x{i}"]), to(d[f"y{i}"])) for i in range(meta["batches"])]
    t = time.perf_counter()
    model.train_on_batch(*batches[0])
    first = time.perf_counter() - t
    times = []
    total = meta["warmup"] + meta["steps"]
    for i in range(1, total + 1):
        x, y = batches[i % len(batches)]
        t = time.perf_counter()
        loss = model.train_on_batch(x, y)  # returns a NumPy float: synchronised
        dt = time.perf_counter() - t
        if i > meta["warmup"]:
            times.append(dt)
    ms = np.asarray(times) * 1e3
    p25, med, p75 = np.percentile(ms, [25, 50, 75])
    print(json.dumps({"keras": keras.__version__, "backend": keras.backend.backend(),
                      "compile_seconds": first, "step_ms_median": float(med),
                      "step_ms_iqr": float(p75 - p25), "last_loss": float(np.asarray(loss))}))


if __name__ == "__main__":
    main(sys.argv[1])
