"""``rosetta.from_keras``: small Keras 3 models read as specs, their refusals, and certificates
with Keras as the source (float64, the exact tier).

This process runs Keras on its default backend (tensorflow unless KERAS_BACKEND says otherwise);
one test runs a compiled Adam under KERAS_BACKEND=jax in a subprocess (Keras's Adam is exact in
float64 there and not on tensorflow, which casts its betas through float32)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import rosetta  # noqa: E402
from rosetta.errors import RosettaError  # noqa: E402
from rosetta.importers import ImportRefused, from_keras  # noqa: E402

layers = keras.layers
ROOT = Path(__file__).resolve().parents[2]


def mlp(rate=0.3, noise_shape=None):
    return keras.Sequential([keras.Input((6,)), layers.Dense(8, activation="relu", name="fc1"),
                             layers.Dropout(rate, noise_shape=noise_shape, name="drop"),
                             layers.Dense(3, name="fc2")], name="mlp")


def cnn():
    """Conv, BatchNorm, MobileNetV3's written-out hard sigmoid (an Add operation with 3.0, a
    ReLU(6), a Multiply operation with 1/6), a broadcasting Multiply, pooling, Dense."""
    x0 = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(x0)
    x = layers.BatchNormalization(momentum=0.8, epsilon=1e-3, name="bn")(x)
    g = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    g = layers.ReLU(6.0, name="relu6")(g + 3.0) * (1.0 / 6.0)
    x = layers.Multiply(name="gate")([x, g])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(x0, layers.Dense(3, name="head")(x), name="cnn")


def test_sequential_mlp_maps_layers_and_dropout_and_certifies():
    m = mlp()
    m.compile(optimizer=keras.optimizers.SGD(0.05),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    imp = from_keras(m)
    ops = [(n.name, n.op) for n in imp.spec.model.nodes]
    assert ops == [("fc1", "Dense"), ("drop", "Dropout"), ("fc2", "Dense")]
    assert imp.spec.model.nodes[0].attrs["activation"] == "relu"
    assert imp.spec.model.nodes[1].attrs["rate"] == 0.3
    assert imp.names == {"mlp/fc1/kernel": "fc1/kernel", "mlp/fc1/bias": "fc1/bias",
                         "mlp/fc2/kernel": "fc2/kernel", "mlp/fc2/bias": "fc2/bias"}
    np.testing.assert_array_equal(imp.params["fc1/kernel"],
                                  keras.ops.convert_to_numpy(m.layers[0].kernel.value))
    assert type(imp.spec.optimizer).__name__ == "SGD"
    assert imp.spec.optimizer.momentum == 0.0
    cert = imp.certify(("torch",), steps=2)
    assert cert.dropout == "inject" and cert.source == "keras"
    assert cert.passed, cert.table()


def test_trainable_false_maps_to_frozen_and_certifies():
    """fc1 frozen (trainable=False): its weights are the spec optimizer's frozen patterns; the
    certificate's gradients (fc1's, through fc2) and parameters after each step (fc1 unmoved on
    both sides) equal Keras's, under a global clip norm over the trainable weights only."""
    m = mlp()
    m.get_layer("fc1").trainable = False
    # binary fractions: Keras on TensorFlow casts hyperparameters through float32
    m.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.5, global_clipnorm=0.25),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    imp = from_keras(m)
    assert imp.spec.optimizer.frozen == ["fc1/kernel", "fc1/bias"]
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed, cert.table()


def test_a_frozen_batchnorm_runs_in_inference_mode_and_certifies():
    """BatchNormalization(trainable=False): Keras 3 normalises by its moving statistics in
    training too and updates nothing; the spec's affine map written out, its four variables
    frozen Parameters (randomized by the certificate like every weight, gradients compared)."""
    x0 = keras.Input((3, 3, 2))
    bn = layers.BatchNormalization(epsilon=0.01, name="bn")
    bn.trainable = False
    y = layers.Dense(2, name="head")(layers.Flatten()(bn(layers.Conv2D(2, 1, name="c")(x0))))
    m = keras.Model(x0, y, name="frozen_bn")
    m.compile(optimizer=keras.optimizers.SGD(0.5),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    imp = from_keras(m)
    assert "BatchNorm" not in [n.op for n in imp.spec.model.nodes]
    assert imp.names["bn/moving_mean"] == "bn_moving_mean/value"
    assert sorted(imp.spec.optimizer.frozen) == sorted(
        f"bn_{k}/value" for k in ("moving_mean", "moving_variance", "gamma", "beta"))
    if keras.backend.backend() == "tensorflow":   # float32 BatchNormalization elsewhere
        cert = imp.certify(("torch",), steps=2)
        assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-10, cert.table()


def test_functional_cnn_with_batchnorm_and_op_nodes():
    keras.ops.add(keras.Input((1,)), 1.0)   # advances Keras's global counter of 'add' names
    m = cnn()
    imp = from_keras(m)
    by = {n.name: n for n in imp.spec.model.nodes}
    assert by["add"].op == "Activation" and by["add"].attrs["fn"] == "hard_sigmoid"
    assert "re_lu" not in str(list(by)) and "relu6" not in by
    assert re.match(r"add_\d+ \(keras.ops.Add\) \+ relu6 \(ReLU\) \+ ", imp.node_source["add"])
    # the spec is independent of Keras's process-wide auto-name counters: a second build of the
    # same model (its operations now 'add_<n+1>', 'multiply_<n+1>') gives the same spec
    again = from_keras(cnn())
    assert again.spec.to_json() == imp.spec.to_json() and again.spec.name == imp.spec.name
    assert by["bn"].attrs["momentum"] == 0.8 and by["bn"].attrs["epsilon"] == 1e-3
    assert by["squeeze_pool"].op == "GlobalAvgPool2D" and by["squeeze"].op == "Reshape"
    assert imp.names["bn/moving_variance"] == "bn/var"
    if keras.backend.backend() == "tensorflow":
        cert = imp.certify(("torch",), steps=2)
        assert cert.passed, cert.table()
        # a planted epsilon fails the float64 certificate, blamed on the BatchNorm node
        d = imp.spec.to_json()
        next(n for n in d["model"]["nodes"] if n["name"] == "bn")["attrs"]["epsilon"] = 1e-1
        bad = copy.copy(imp)
        bad.spec = rosetta.TrainSpec.from_json(d)
        bad.spec.data = imp.spec.data
        cert = bad.certify(("torch",), steps=1)
        assert not cert.passed
        assert cert.results[0]["blame"].startswith("first diverging node: bn (BatchNorm; "), \
            cert.table()
    else:   # Keras computes BatchNormalization in float32 there: refused, naming the layer
        with pytest.raises(RosettaError, match=r"bn \(BatchNormalization\).*float32"):
            imp.certify(("torch",), steps=1)


def test_refusals_name_the_layer_or_node():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ImportRefused, match="subclassed keras.Model has no layer graph"):
        from_keras(Sub())
    with pytest.raises(ImportRefused, match=r"drop \(Dropout\): noise_shape=\(1, None\)"):
        from_keras(mlp(noise_shape=(1, None)))   # one keep decision for the whole batch
    x0 = keras.Input((4,))
    y = keras.ops.power(layers.Dense(3, name="d")(x0), 3.0)
    with pytest.raises(ImportRefused) as e:
        from_keras(keras.Model(x0, y))
    assert len(e.value.lines) == 1
    assert re.fullmatch(r"power(_\d+)? \(keras.ops.Power\): a tensor power with the "
                        r"constant 3.0 \(the spec maps \+, -, \* and / of a tensor and a "
                        r"number\)", e.value.lines[0]), e.value.lines
    # every refused layer, loss and optimizer setting at once, one line each (a layer after a
    # refused one is still read)
    x0 = keras.Input((4,))
    y = layers.GaussianNoise(0.1, name="noise")(keras.ops.power(layers.Dense(3)(x0), 3.0))
    y = layers.LayerNormalization(rms_scaling=True, name="rms")(layers.Dense(5)(y))
    many = keras.Model(x0, y)
    many.compile(optimizer=keras.optimizers.Adam(clipnorm=1.0),
                 loss="sparse_categorical_crossentropy")
    with pytest.raises(ImportRefused) as e:
        from_keras(many)
    assert [line.split(":")[0] for line in e.value.lines] == [
        e.value.lines[0].split(":")[0], "noise (GaussianNoise)", "rms (LayerNormalization)",
        "loss (sparse_categorical_crossentropy)", "optimizer (Adam)"], e.value.lines
    assert e.value.lines[0].startswith("power")
    probs = mlp()
    probs.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ImportRefused, match="from_logits=False reads probabilities"):
        from_keras(probs)
    clipped = mlp()
    clipped.compile(optimizer=keras.optimizers.Adam(clipnorm=1.0), loss="mse")
    with pytest.raises(ImportRefused, match="clipnorm=1.0 clips each variable alone"):
        from_keras(clipped)


def test_preprocessing_layers_are_constants_and_certify():
    """Rescaling (a number, per channel), Normalization (adapted; given and inverted, one
    variance below epsilon²) and EfficientNet's per-example Dropout map to existing ops with
    fixed constants; the adapted statistics are no parameters or state."""
    x0 = keras.Input((4, 4, 3))
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(x0)
    norm = layers.Normalization(name="norm")
    norm.adapt(np.random.default_rng(0).standard_normal((6, 4, 4, 3)) * 2.0 + 1.0)
    x = norm(x)
    x = layers.Normalization(mean=[0.5, 1.0, -1.0], variance=[4.0, 0.25, 1e-16], invert=True,
                             name="denorm")(x)
    x = layers.Rescaling([0.5, 2.0, 3.0], name="gain")(x)
    x = layers.Conv2D(2, 3, name="conv")((0.5 - x) / 3.0)   # operations with a number
    x = layers.Dropout(0.5, noise_shape=(None, 1, 1, 1), name="drop")(x)
    m = keras.Model(x0, layers.Dense(3, name="head")(layers.Flatten(name="flat")(x)))
    imp = from_keras(m)
    ops = [(n.name, n.op) for n in imp.spec.model.nodes]
    assert ops[:12] == [
        ("rescale_scaled", "Multiply"), ("rescale", "Add"), ("norm_mean", "Constant"),
        ("norm_centered", "Subtract"), ("norm_std", "Constant"), ("norm", "Divide"),
        ("denorm_std", "Constant"), ("denorm_scaled", "Multiply"), ("denorm_mean", "Constant"),
        ("denorm", "Add"), ("gain_scale", "Constant"), ("gain", "Multiply")], ops
    assert [(n.op, n.attrs["constant"], n.attrs["reverse"]) for n in
            imp.spec.model.nodes[12:14]] == [("Subtract", 0.5, True), ("Divide", 3.0, False)]
    by = {n.name: n for n in imp.spec.model.nodes}
    assert by["rescale_scaled"].attrs["constant"] == float(np.float32(1.0 / 127.5))  # as held
    assert by["drop"].op == "StochasticDepth" and by["drop"].attrs["rate"] == 0.5
    np.testing.assert_array_equal(by["denorm_std"].attrs["value"].ravel(),
                                  np.maximum(np.sqrt(np.float32([4.0, 0.25, 1e-16])
                                                     .astype(np.float64)), 1e-7))
    assert sorted(imp.names.values()) == ["conv/bias", "conv/kernel", "head/bias",
                                          "head/kernel"] and not imp.state
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed and cert.dropout == "inject", cert.table()


def test_float32_certificate_runs_keras_in_float32_and_a_planted_epsilon_fails():
    """BatchNormalization and Adam: no exact float64 Keras source on any backend (docs); the
    float32 certificate holds a backend's float32 steps, teacher-forced along Keras's own
    float32 run, within the measured noise bound, and a planted epsilon fails it."""
    keras.utils.set_random_seed(0)
    x0 = keras.Input((5, 5, 2))
    x = layers.BatchNormalization(name="bn")(layers.Conv2D(3, 3, name="conv")(x0))
    x = layers.Flatten(name="flat")(layers.ReLU(name="relu")(x))
    m = keras.Model(x0, layers.Dense(4, name="head")(x), name="small")
    m.compile(optimizer=keras.optimizers.Adam(0.01),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    imp = from_keras(m)
    if keras.backend.backend() == "tensorflow":   # float64 Adam through float32 betas there
        with pytest.raises(RosettaError, match="runs Adam in float64 with a relative error"):
            imp.certify(("torch",), steps=1)
    cert = imp.certify(("torch",), dtype="float32", steps=1)
    assert cert.dtype == "float32" and cert.reference == "float32" and cert.passed, cert.table()
    assert 0 < max(cert.results[0]["worst"].values()) < 1   # a fraction of the bound
    d = imp.spec.to_json()
    next(n for n in d["model"]["nodes"] if n["name"] == "bn")["attrs"]["epsilon"] = 1e-2
    bad = copy.copy(imp)
    bad.spec = rosetta.TrainSpec.from_json(d)
    bad.spec.data = imp.spec.data
    cert = bad.certify(("torch",), dtype="float32", steps=1)
    assert not cert.passed
    assert cert.results[0]["blame"].startswith("first failure at step 0: "), cert.table()


def test_import_command_reads_a_keras_file(tmp_path, capsys):
    from rosetta.cli import main

    m = mlp(rate=0.0)
    m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = tmp_path / "mlp.keras"
    m.save(path)
    assert main(["import", str(path), "--out", str(tmp_path / "ck"), "--no-certify"]) == 0
    assert "imported mlp" in capsys.readouterr().out
    assert (tmp_path / "ck").is_dir()
    # certified from the file too: a loaded model's variable paths ('dense/kernel') differ from
    # its float64 clone's ('sequential/dense/kernel'); the clone is matched by order
    auto = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                             keras.layers.Dense(3)])
    auto.save(tmp_path / "auto.keras")
    assert main(["import", str(tmp_path / "auto.keras"), "--out", str(tmp_path / "ck2"),
                 "--backends", "torch", "--steps", "1"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "nothing.keras"), "--out", str(tmp_path / "x")]) == 2


JAX_ADAM = textwrap.dedent("""
    import numpy as np, keras, rosetta
    from keras import layers
    m = keras.Sequential([keras.Input((5,)), layers.Dense(7, activation="relu", name="a"),
                          layers.Dense(3, name="b")])
    m.compile(optimizer=keras.optimizers.Adam(0.01, beta_1=0.8, weight_decay=0.01),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    m.train_on_batch(rng.standard_normal((4, 5)), np.array([0, 1, 2, 1]))
    imp = rosetta.from_keras(m)
    opt = imp.spec.optimizer
    assert type(opt).__name__ == "AdamW" and opt.epsilon_mode == "hat", opt
    assert opt.epsilon == 1e-7 and opt.beta1 == 0.8 and imp.step == 1, (opt, imp.step)
    assert sorted(imp.optimizer_state) == ["m/a/bias", "m/a/kernel", "m/b/bias", "m/b/kernel",
                                           "v/a/bias", "v/a/kernel", "v/b/bias", "v/b/kernel"]
    cert = imp.certify(("jax",), steps=2)
    print(cert.table())
    assert cert.passed
    print("OK")
""")


def test_compiled_adam_with_state_certifies_under_keras_on_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", JAX_ADAM], env=env, capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("OK"), r.stdout + r.stderr[-3000:]


def test_example_inputs_set_the_certificates_batch_and_its_scale():
    """A model that rescales pixel values itself is certified on pixel-scale inputs (standard
    normal inputs rescaled by 1/255 make its first BatchNorm subtract a mean 100x its spread)."""
    from rosetta.importers.certificate import _batches

    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1),
                          keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                          keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 6, 6, 3))
    imp = from_keras(m, example_inputs=pixels)
    x, _ = _batches(imp, 1, 0, "float64")[0]
    assert x.shape == (4, 6, 6, 3) and 100 < x.mean() < 155 and 50 < x.std() < 100
    x, _ = _batches(from_keras(m, batch_size=3), 1, 0, "float64")[0]
    assert x.shape == (3, 6, 6, 3) and abs(x.mean()) < 0.5      # no example: standard normal
    assert imp.certify(("torch",), steps=1).passed
    with pytest.raises(ImportRefused, match=r"example_inputs of shape \(6, 6, 3\), the model "
                                            r"takes \(batch, 6, 6, 3\)"):
        from_keras(m, example_inputs=pixels[0])
    with pytest.raises(RosettaError, match="batch_size must be an integer >= 1, found 0"):
        from_keras(m, batch_size=0)


def test_a_keras_sources_own_noise_is_measured_with_its_examples_reordered():
    """32 Conv-BatchNorm-ReLU layers at batch 2: the torch backend differs from Keras (on its
    backend) past 1e-10 by float64 rounding; Keras itself, given each batch's examples in
    reverse order, differs by as much, and a planted BatchNorm momentum still fails."""
    keras.utils.set_random_seed(0)
    x0 = keras.Input((8, 8, 3))
    x = x0
    for _ in range(32):
        x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    m = keras.Model(x0, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    m.compile(optimizer=keras.optimizers.SGD(0.01),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    imp = from_keras(m)
    cert = imp.certify(("torch",), steps=1)
    row = cert.results[0]
    assert cert.passed and row["steps"] == "teacher-forced", cert.table()
    assert row["drift"]["grads"] > 1e-10 and row["noise"]["grads"] > 1e-11, cert.table()
    assert cert.noise == "examples reordered" and "examples reordered differs" in cert.table()
    d = imp.spec.to_json()
    bn = next(n for n in d["model"]["nodes"] if n["op"] == "BatchNorm")
    bn["attrs"]["momentum"] = 0.98          # Keras's 0.99: the moving statistics differ
    bad = copy.copy(imp)
    bad.spec = rosetta.TrainSpec.from_json(d)
    bad.spec.data = imp.spec.data
    cert = bad.certify(("torch",), steps=1)
    assert not cert.passed, cert.table()     # Keras numbers its layers across the process
    assert re.search(r"\(source batch_normalization(_\d+)?/moving_", cert.results[0]["blame"]), \
        cert.table()
