"""Keras 3, as its users write it: Keras's own layers (``Conv2D``, ``BatchNormalization``,
``LSTM`` / ``GRU`` with a mask, ``MultiHeadAttention``, ``LayerNormalization``...) in a
``keras.Sequential`` or functional model, ``model.compile`` with Keras's own defaults
(``jit_compile="auto"``: XLA on jax and TensorFlow, eager on torch) and ``model.train_on_batch``.
Keras binds one backend per process, so ``rosetta bench --keras`` runs this file as a script,
once per backend, with ``KERAS_BACKEND`` set:

    KERAS_BACKEND=jax python keras_native.py PAYLOAD.npz

The payload holds the same plain values as the other baselines (see ``__init__``): ``arch``,
``loss``, ``optimizer``, ``input_shape``, ``dtype``, ``policy`` (a Keras dtype policy name,
set globally before the model is built, or null), ``task`` (JSON ``meta``), the canonical
weights ``w:<path>``, the batches ``x<i>`` (``l<i>``: lengths), ``y<i>`` and ``steps``,
``warmup``. It prints one JSON line: Keras's version and backend, then with ``task`` "time" the
first call's seconds and the median and IQR of the steady-state step in ms, with "losses" the
loss of each of ``steps`` steps (computed in NumPy float64 from the model's outputs before
each ``train_on_batch``: see ``float64_loss``) and ``reported``, what ``train_on_batch``
returned (through Keras's float32 loss tracker). No rosetta import (the file is run by path).

Keras's update rules are its own, so it trains to rosetta's numbers only where they meet:
Adam / AdamW add epsilon before the bias correction ("epsilon hat": rosetta's
``epsilon_mode="hat"``); SGD folds the learning rate into the momentum (the same numbers at a
constant rate, not under a schedule) and its ``weight_decay`` is decoupled (rosetta's SGD decay
is coupled L2: no Keras equivalent that leaves the loss unchanged); ``activation="gelu"`` on the
TensorFlow backend is ``tf.nn.gelu``, off by 5e-9 in float64.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def sequential(keras, arch, w, input_shape):
    layers = [keras.Input(tuple(input_shape))]
    for la in arch["layers"]:
        relu = "relu" if la.get("relu") else None
        if la["op"] == "conv":
            k = w[la["name"] + "/kernel"]
            layers.append(keras.layers.Conv2D(k.shape[-1], k.shape[0], padding=la["padding"],
                                              activation=relu, name=la["name"]))
        elif la["op"] == "maxpool":
            layers.append(keras.layers.MaxPooling2D(la["size"]))
        elif la["op"] == "flatten":
            layers.append(keras.layers.Flatten())
        else:
            layers.append(keras.layers.Dense(w[la["name"] + "/kernel"].shape[-1],
                                             activation=relu, name=la["name"]))
    model = keras.Sequential(layers)
    return model, {la["name"]: [w[la["name"] + "/kernel"], w[la["name"] + "/bias"]]
                   for la in arch["layers"] if "name" in la}


def resnet(keras, arch, w, input_shape):
    L, values = keras.layers, {}

    def conv_bn(x, conv, bn, stride):
        k = w[conv + "/kernel"]
        x = L.Conv2D(k.shape[-1], k.shape[0], strides=stride, padding="same", use_bias=False,
                     name=conv)(x)
        values[conv] = [k]
        scale = w[bn + "/scale"]
        values[bn] = [scale, w[bn + "/bias"], np.zeros_like(scale), np.ones_like(scale)]
        return L.BatchNormalization(momentum=arch["momentum"], epsilon=arch["epsilon"],
                                    name=bn)(x)

    x = keras.Input(tuple(input_shape))
    h = L.ReLU()(conv_bn(x, arch["stem"]["conv"], arch["stem"]["bn"], 1))
    for b in arch["blocks"]:
        y = L.ReLU()(conv_bn(h, b["conv1"], b["bn1"], b["stride"]))
        y = conv_bn(y, b["conv2"], b["bn2"], 1)
        short = conv_bn(h, b["proj_conv"], b["proj_bn"], b["stride"]) if b["proj_conv"] else h
        h = L.ReLU()(L.Add()([y, short]))
    head = arch["head"]
    out = L.Dense(w[head + "/kernel"].shape[-1], name=head)(L.GlobalAveragePooling2D()(h))
    values[head] = [w[head + "/kernel"], w[head + "/bias"]]
    return keras.Model(x, out), values


def _gru_gates(a, units):
    """Canonical [r, z, n] gate blocks -> Keras's [z, r, h]."""
    r, z, n = (a[..., i * units:(i + 1) * units] for i in range(3))
    return np.concatenate([z, r, n], axis=-1)


def recurrent(keras, arch, w, input_shape):
    L, ops = keras.layers, keras.ops
    tokens = keras.Input(tuple(input_shape), dtype="int32")
    lengths = keras.Input((), dtype="int32")
    emb = w[arch["embed"] + "/embedding"]
    x = L.Embedding(*emb.shape, name=arch["embed"])(tokens)
    mask = ops.greater(ops.expand_dims(lengths, 1), ops.arange(input_shape[0])[None, :])
    rnn, units = arch["rnn"], arch["units"]
    if arch["cell"] == "lstm":
        layer = L.LSTM(units, name=rnn)
        values = [w[rnn + "/kernel"], w[rnn + "/recurrent_kernel"], w[rnn + "/bias"]]
    else:
        layer = L.GRU(units, reset_after=True, name=rnn)
        values = [_gru_gates(w[rnn + "/kernel"], units),
                  _gru_gates(w[rnn + "/recurrent_kernel"], units),
                  np.stack([_gru_gates(w[rnn + "/bias"], units),
                            _gru_gates(w[rnn + "/recurrent_bias"], units)])]
    head = arch["head"]
    out = L.Dense(w[head + "/kernel"].shape[-1], name=head)(layer(x, mask=mask))
    return keras.Model([tokens, lengths], out), {
        arch["embed"]: [emb], rnn: values, head: [w[head + "/kernel"], w[head + "/bias"]]}


def transformer(keras, arch, w, input_shape):
    L, ops = keras.layers, keras.ops

    class PositionEmbedding(L.Layer):
        """y = x + embedding[:T] (Keras has no learned positions of its own)."""

        def build(self, shape):
            self.embedding = self.add_weight(shape=w[arch["pos"] + "/embedding"].shape,
                                             name="embedding")

        def call(self, x):
            return x + self.embedding[: ops.shape(x)[1]]

    t = input_shape[0]
    tokens = keras.Input((t,), dtype="int32")
    inputs = [tokens]
    emb = w[arch["embed"] + "/embedding"]
    values = {arch["embed"]: [emb], arch["pos"]: [w[arch["pos"] + "/embedding"]]}
    h = L.Embedding(*emb.shape, name=arch["embed"])(tokens)
    h = PositionEmbedding(name=arch["pos"])(h)
    mask = None
    if arch["lengths"]:
        lengths = keras.Input((), dtype="int32")
        inputs.append(lengths)
        real = ops.greater(ops.expand_dims(lengths, 1), ops.arange(t)[None, :])
        mask = ops.repeat(real[:, None, :], t, axis=1)   # (N, Tq, Tk): padded keys
    eps = arch["epsilon"]

    def norm(name, x):
        values[name] = [w[name + "/scale"], w[name + "/bias"]]
        return L.LayerNormalization(epsilon=eps, name=name)(x)

    def dense(name, x, activation=None):
        values[name] = [w[name + "/kernel"], w[name + "/bias"]]
        return L.Dense(w[name + "/kernel"].shape[-1], activation=activation, name=name)(x)

    for b in arch["blocks"]:
        a = b["attn"]
        y = norm(b["ln1"], h)
        att = L.MultiHeadAttention(arch["heads"], arch["head_dim"], name=a)
        h = L.Add()([h, att(y, y, attention_mask=mask, use_causal_mask=arch["causal"])])
        values[a] = [w[f"{a}/{n}_{p}"] for n in ("query", "key", "value", "output")
                     for p in ("kernel", "bias")]
        h = L.Add()([h, dense(b["ff2"], dense(b["ff1"], norm(b["ln2"], h), "gelu"))])
    h = norm(arch["final_norm"], h)
    if arch["pool"] == "mean":
        h = L.GlobalAveragePooling1D()(h, mask=real)
    out = dense(arch["head"], h)
    return keras.Model(inputs, out), values


BUILDERS = {"sequential": sequential, "resnet": resnet, "recurrent": recurrent,
            "transformer": transformer}


def learning_rate(keras, lr):
    if not isinstance(lr, dict):
        return lr
    warm = lr["warmup_steps"]
    return keras.optimizers.schedules.CosineDecay(
        lr["init"], lr["decay_steps"] - warm, alpha=lr["final"] / lr["peak"],
        warmup_target=lr["peak"], warmup_steps=warm)


def build(keras, arch, weights, input_shape, loss, optimizer):
    model, values = BUILDERS[arch["model"]](keras, arch, weights, input_shape)
    for name, arrays in values.items():
        model.get_layer(name).set_weights(arrays)
    o = optimizer
    lr = learning_rate(keras, o["lr"])
    wd = o.get("weight_decay") or None
    if o["name"] == "adam":
        opt = (keras.optimizers.AdamW(lr, weight_decay=wd, beta_1=o["beta1"], beta_2=o["beta2"],
                                      epsilon=o["eps"]) if wd else
               keras.optimizers.Adam(lr, beta_1=o["beta1"], beta_2=o["beta2"], epsilon=o["eps"]))
    else:
        opt = keras.optimizers.SGD(lr, momentum=o["momentum"], nesterov=o["nesterov"],
                                   weight_decay=wd)
    loss_fn = (keras.losses.MeanSquaredError() if loss == "mse" else
               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=opt, loss=loss_fn)
    return model


def float64_loss(loss, out, y):
    """The loss of Keras's outputs in NumPy float64. Not Keras's own loss object: in float64
    its reduction comes back in float32 precision on jax (``keras.ops.mean`` computes in
    float32) and on torch (``Loss.__call__`` returns a float32 tensor)."""
    out = np.asarray(out, np.float64)
    if loss == "mse":
        return float(np.mean((out - y) ** 2))
    z = out - out.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-np.mean(np.take_along_axis(logp, np.asarray(y)[..., None], -1)))


def main(path):
    d = np.load(path, allow_pickle=False)
    meta = json.loads(str(d["meta"]))
    import keras

    keras.config.set_floatx(meta["dtype"])
    if meta.get("policy"):   # bfloat16, mixed_bfloat16, mixed_float16: Keras's own policy
        keras.config.set_dtype_policy(meta["policy"])
    weights = {k[2:]: d[k] for k in d.files if k.startswith("w:")}
    model = build(keras, meta["arch"], weights, meta["input_shape"], meta["loss"],
                  meta["optimizer"])
    to = keras.ops.convert_to_tensor

    def inputs(i):
        x = to(d[f"x{i}"])
        return [x, to(d[f"l{i}"])] if f"l{i}" in d.files else x

    batches = [(inputs(i), to(d[f"y{i}"])) for i in range(meta["batches"])]
    head = {"keras": keras.__version__, "backend": keras.backend.backend()}
    if meta["task"] == "losses":
        # train_on_batch reports its loss through a float32 Mean metric (the loss tracker),
        # so the float64 loss of each step is computed from the model's outputs before it
        losses, reported = [], []
        for i in range(meta["steps"]):
            x, y = batches[i % len(batches)]
            out = keras.ops.convert_to_numpy(model(x, training=True))
            losses.append(float64_loss(meta["loss"], out, keras.ops.convert_to_numpy(y)))
            reported.append(float(np.asarray(model.train_on_batch(x, y))))
        print(json.dumps({**head, "losses": losses, "reported": reported}))
        return
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
    head["policy"] = keras.config.dtype_policy().name
    print(json.dumps({**head, "compile_seconds": first, "step_ms_median": float(med),
                      "step_ms_iqr": float(p75 - p25), "last_loss": float(np.asarray(loss))}))


if __name__ == "__main__":
    main(sys.argv[1])
