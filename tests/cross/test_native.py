"""Your own native code under the suite (``conformance/native*.py``): the project's hand-written
baselines (``conformance/bench/baselines``) wrapped as a user would wrap their port, compared whole
training steps against the spec on every backend in float64 (exact tier, 1e-10), through the
pytest plugin and the command line; a planted porting bug (a Dense kernel copied as is into a
torch model that flattens NCHW) is caught and blamed on that kernel."""

from __future__ import annotations

import re

import numpy as np
import pytest

import rosetta as rs
from rosetta import models
from rosetta.cli import main
from rosetta.conformance.bench import baseline_plan, build_baseline
from rosetta.conformance.native import NativeError, build_native, flatten_nchw
from rosetta.conformance.pytest_plugin import ConformanceError, assert_conformant

from selection import BACKENDS

STEPS = 3


def small(name, **optimizer):
    spec = models.get(name)
    spec.data.batch_size = 4
    if optimizer:
        spec.optimizer = rs.optim.Adam(spec.optimizer.learning_rate.value, **optimizer)
    return spec


# --- the baselines, wrapped as their users would wrap them ------------------------------------

def flatten_input(arch, input_shape):
    """The (H, W, C) that the plan's flatten sees (convs stride 1, 'same' or 'valid'; pools)."""
    h, w, c = input_shape
    for la in arch["layers"]:
        if la["op"] == "flatten":
            return h, w, c
        if la["op"] == "maxpool":
            h, w = h // la["size"], w // la["size"]
        elif la["op"] == "conv":
            if la["padding"] == "valid":
                h, w = h - la["kernel"] + 1, w - la["kernel"] + 1
            c = None  # the conv's output channels: read from the module below
    return None


def torch_port(spec, *, nchw_bug=False):
    """The torch baseline: Linear weights (out, in), Conv2d OIHW, NCHW data, and a flatten of
    NCHW activations before the Dense layer (its kernel rows reordered: ``flatten_nchw``).
    ``nchw_bug``: the classic porting bug, the canonical kernel copied as a plain Linear weight."""
    from torch import nn

    from rosetta.conformance.native_torch import TorchNative
    plan = baseline_plan(spec)
    arch = plan["arch"]
    convs = any(la["op"] == "conv" for la in arch["layers"])

    def factory(dtype):
        tr = build_baseline(spec, "torch", dtype=dtype, device="cpu", mode="eager")
        modules = [(n, m) for n, m in tr.model.named_modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear))]
        named = [la for la in arch["layers"] if la["op"] in ("conv", "dense")]
        names, flat, channels = {}, flatten_input(arch, plan["input_shape"]), None
        for (n, m), la in zip(modules, named):
            if la["op"] == "conv":
                layout, channels = "conv2d", m.out_channels
            elif flat is not None and convs:  # the first Dense after the flatten
                h, w, _ = flat
                layout = "linear" if nchw_bug else flatten_nchw(channels, h, w)
                flat = None
            else:
                layout = "linear"
            names[f"{n}.weight"] = (f"{la['name']}/kernel", layout)
            names[f"{n}.bias"] = f"{la['name']}/bias"
        return TorchNative(tr.model, tr.opt, tr.loss_fn, names,
                           slots={"m": "exp_avg", "v": "exp_avg_sq"},
                           data_layout="NCHW" if convs else "NHWC")
    return factory


def tensorflow_port(spec):
    """The hand-written TensorFlow baseline: a tf.Module holding its variables by canonical path
    (``p/by_path/<path>``) and its own Adam (``apply(grads, params)``, slots in its lists ``m``,
    ``v``, in the order of ``params``)."""
    import tensorflow as tf

    from rosetta.conformance.native_tensorflow import TensorFlowNative

    def loss(out, y):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                            logits=out))

    def factory(dtype):
        tr = build_baseline(spec, "tensorflow", dtype=dtype, device="cpu", mode="function")
        names = {f"p/by_path/{path}": path for path in tr.params.by_path}
        return TensorFlowNative(tr.model, tr.opt, loss, names, variables=tr.params.params,
                                slots={"m": "m", "v": "v"})
    return factory


def jax_port(spec):
    """The JAX baseline: a flax.linen module (its modules named after the spec's nodes) and an
    optax transformation (slots mu, nu)."""
    import optax

    from rosetta.conformance.native_jax import FlaxNative

    def loss(out, y):
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    def factory(dtype):
        tr = build_baseline(spec, "jax", dtype=dtype, device="cpu", mode="jit")
        names = {f"{m}/{k}": f"{m}/{k}" for m, leaves in tr.state.params.items()
                 for k in leaves}
        st = tr.state
        return FlaxNative(st.apply_fn.__self__, {"params": st.params}, st.tx, loss, names,
                          slots={"m": "mu", "v": "nu"})
    return factory


def keras_port(spec, plan):
    """The Keras baseline (``keras.Sequential``, Keras's Adam and loss), built in ``dtype``."""
    import keras

    from rosetta.conformance.bench.baselines import keras_native
    from rosetta.conformance.native_tensorflow import KerasNative

    def factory(dtype):
        weights = {k: np.asarray(v, dtype) for k, v in spec.model.init_params(spec.seed).items()}
        floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx(dtype)  # the default policy follows floatx only until first used
        keras.config.set_dtype_policy(dtype)
        try:
            model = keras_native.build(keras, plan["arch"], weights, plan["input_shape"],
                                       plan["loss"], plan["optimizer"])
        finally:
            keras.config.set_floatx(floatx)
            keras.config.set_dtype_policy(policy)
        names = {}
        for layer in model.layers:  # the baseline names each layer after its spec node
            if layer.weights:
                names[layer.kernel.path] = f"{layer.name}/kernel"
                names[layer.bias.path] = f"{layer.name}/bias"
        return KerasNative(model, names, slots={"m": "_momentums", "v": "_velocities"})
    return factory


# Keras's Adam is the "epsilon hat" rule, and on TensorFlow it rounds its betas through float32
# even in float64 (see test_keras_rounds_its_betas_through_float32): its port is compared with
# epsilon_mode="hat" and betas that float32 holds exactly
KERAS_BETAS = {"beta1": 0.875, "beta2": 1 - 2 ** -9}


def keras_case(name, betas):
    spec = small(name)
    plan = dict(baseline_plan(spec))
    plan["optimizer"] = dict(plan["optimizer"], **betas)
    spec = small(name, epsilon_mode="hat", **betas)
    return spec, keras_port(spec, plan)


def torch_cnn(dtype):
    """``--native test_native:torch_cnn`` (the zoo's cnn)."""
    return torch_port(models.get("cnn"))(dtype)


def torch_cnn_nchw_bug(dtype):
    return torch_port(models.get("cnn"), nchw_bug=True)(dtype)


# --- agreement --------------------------------------------------------------------------------

NATIVE = [f for f in ("torch", "tensorflow", "jax") if f in BACKENDS]
NATIVE += ["keras"] if "tensorflow" in BACKENDS else []
# (model, the backend compared with): another framework's backend, the cheapest in CI time;
# measure() below compares every baseline on both models with every backend (docs/bench/baselines.md)
MODELS = {"torch": ("cnn", ["jax", "tensorflow"]), "tensorflow": ("mlp", ["jax", "torch"]),
          "jax": ("cnn", ["torch", "tensorflow"]), "keras": ("mlp", ["torch", "jax"])}


def compared_with(preferred):
    return [next((b for b in preferred if b in BACKENDS), BACKENDS[0])]


@pytest.mark.parametrize("framework", NATIVE)
def test_hand_written_baseline_trains_to_the_spec(framework):
    name, preferred = MODELS[framework]
    backends = compared_with(preferred)
    if framework == "keras":
        spec, factory = keras_case(name, KERAS_BETAS)
    else:
        spec = small(name)
        factory = {"torch": torch_port, "tensorflow": tensorflow_port,
                   "jax": jax_port}[framework](spec)
    results = assert_conformant(spec, native=factory, backends=backends, steps=STEPS)
    assert len(results) == len(backends)
    for r in results:
        assert r.backend_a == f"native-{framework}/cpu/float64" and r.tier == "exact"
        assert r.checked_steps == STEPS and r.worst_rel <= 1e-10
        # every category compared, the optimizer state included (its slots are mapped)
        assert set(r.per_category) == {"loss", "grads", "params", "opt", "eval"}, \
                r.per_category
        print(f"native {framework} {name} vs {r.backend_b}: worst rel {r.worst_rel:.2e} "
              f"({r.where})")


@pytest.mark.skipif("torch" not in BACKENDS, reason="the planted bug is in the torch baseline")
def test_planted_nchw_flatten_is_caught_and_blamed_on_the_dense_kernel():
    from rosetta.conformance.native_suite import run_native
    spec = small("cnn")
    results, _ = run_native(spec, torch_port(spec, nchw_bug=True), BACKENDS[:1], steps=2)
    (r,) = results
    assert not r.passed
    assert r.blame["tensor"] == "logits/kernel" and r.blame["step"] == 0, r.blame
    assert r.where.startswith("blamed tensor: logits/kernel")
    print(f"planted NCHW flatten vs {r.backend_b}: {r.where}")
    # the same through the pytest plugin: the message names the tensor
    with pytest.raises(ConformanceError, match="blamed tensor: logits/kernel"):
        assert_conformant(spec, native=torch_port(spec, nchw_bug=True), backends=BACKENDS[:1],
                          steps=1)


@pytest.mark.skipif("torch" not in BACKENDS, reason="the planted bug is in the torch baseline")
def test_planted_conv_kernel_with_height_and_width_swapped_is_blamed_on_it():
    """A second porting bug, elsewhere in the graph: conv2's kernel copied with kH and kW
    swapped (a transpose the shapes cannot reveal for a 3x3 kernel)."""
    from rosetta.conformance.native import transposed
    from rosetta.conformance.native_suite import run_native
    from rosetta.conformance.native_torch import TorchNative
    spec = small("cnn")

    def factory(dtype):
        good = torch_port(spec)(dtype)
        names = dict(good.names)
        names["3.weight"] = ("conv2/kernel", transposed((3, 2, 1, 0), "kH/kW swapped"))
        return TorchNative(good.model, good.optimizer, good.loss, names, data_layout="NCHW")
    (r,), _ = run_native(spec, factory, BACKENDS[:1], steps=1)
    assert not r.passed and r.blame["tensor"] == "conv2/kernel", r.blame


@pytest.mark.skipif("tensorflow" not in BACKENDS, reason="Keras runs on TensorFlow here")
def test_keras_rounds_its_betas_through_float32():
    """Keras 3 on TensorFlow casts beta1 = 0.9, beta2 = 0.999 to float32 inside its float64 Adam:
    the suite sees the first update's parameters off by ~1e-5 relative (loss and gradients
    exact) and blames the parameters of step 0, i.e. the optimizer."""
    from rosetta.conformance.native_suite import run_native
    spec, factory = keras_case("mlp", {"beta1": 0.9, "beta2": 0.999})
    (r,), _ = run_native(spec, factory, ["tensorflow"], steps=1)
    assert not r.passed and r.blame["category"] == "params" and r.blame["step"] == 0, r.blame
    assert 1e-7 < r.worst_rel < 1e-3
    print(f"keras betas 0.9/0.999 vs tensorflow: {r.where}")


# --- the command line -------------------------------------------------------------------------

@pytest.mark.skipif("torch" not in BACKENDS, reason="the port is the torch baseline")
def test_command_line_native(capsys):
    other = BACKENDS[0]
    common = ["conformance", "cnn", "--backends", other, "--dtype", "float64", "--steps", "2",
              "--quiet"]
    assert main(common + ["--native", "test_native:torch_cnn"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(common + ["--native", "test_native:torch_cnn_nchw_bug"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "blamed tensor: logits/kernel" in out
    for bad in ("test_native", "no_such_module:f", "test_native:no_such_factory"):
        assert main(common + ["--native", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--native" in err, err


# --- bad user input: one clear line naming the parameter and the fix --------------------------

@pytest.mark.skipif("torch" not in BACKENDS, reason="the port is the torch baseline")
@pytest.mark.parametrize("edit, message", [
    (lambda n: n.pop("6.bias"), "native parameter '6.bias' is not in the name map"),
    (lambda n: n.update({"6.weight": ("logits/kernel", "conv2d")}),
     "'6.weight' -> 'logits/kernel': canonical shape"),
    (lambda n: n.update({"6.weight": ("logits/kernel", "identity")}),
     "fix the path or the layout"),
    (lambda n: n.update({"6.bias": "dense/bias"}), "the spec has no parameter 'dense/bias'"),
    (lambda n: n.update({"0.bias": "conv2/bias", "3.bias": "conv1/bias"}),
     "'0.bias' -> 'conv2/bias': canonical shape (32,) becomes"),
    (lambda n: n.update({"6.bias": "conv1/bias"}),
     "'0.bias' and '6.bias' both map to 'conv1/bias'"),
    (lambda n: n.update({"6.scale": "other/x"}), "your model has no such parameter"),
    (lambda n: n.update({"6.weight": ("logits/kernel", "rows")}), "unknown layout 'rows'"),
])
def test_bad_name_map_is_one_clear_error(edit, message):
    from rosetta.conformance.native_torch import TorchNative
    spec = small("cnn")
    good = torch_port(spec)("float64")
    names = {n: (p, la) for n, (p, la) in good.names.items()}
    edit(names)
    with pytest.raises(NativeError, match=re.escape(message)) as e:
        TorchNative(good.model, good.optimizer, good.loss, names, data_layout="NCHW").bind(spec)
    assert "\n" not in str(e.value)
    with pytest.raises(NativeError, match="asked for float32 and built a float64"):
        build_native(lambda dtype: good, spec, "float32")


@pytest.mark.skipif("torch" not in BACKENDS, reason="the port is the torch baseline")
def test_a_spec_path_no_parameter_reaches_is_named():
    from rosetta.conformance.native_torch import TorchNative
    spec = small("cnn")
    good = torch_port(spec)("float64")
    good.model[3].bias = None           # a port that forgot conv2's bias
    names = {n: (p, la) for n, (p, la) in good.names.items() if n != "3.bias"}
    with pytest.raises(NativeError, match="spec path 'conv2/bias' is reached by no entry"):
        TorchNative(good.model, good.optimizer, good.loss, names, data_layout="NCHW").bind(spec)


def test_layouts_round_trip():
    from rosetta.conformance.native import CONV1D, CONV2D, LINEAR
    rng = np.random.default_rng(0)
    for lay, shape, native in ((LINEAR, (3, 5), (5, 3)), (CONV2D, (3, 3, 2, 4), (4, 2, 3, 3)),
                               (CONV1D, (3, 2, 4), (4, 2, 3)),
                               (flatten_nchw(2, 3, 4), (24, 5), (5, 24))):
        k = rng.normal(size=shape)
        assert lay.to_native(k).shape == native
        np.testing.assert_array_equal(lay.to_canonical(lay.to_native(k)), k)
    # flatten_nchw: row (h, w, c) of the canonical kernel is column (c, h, w) of torch's weight
    k = rng.normal(size=(24, 5))
    t = flatten_nchw(2, 3, 4).to_native(k)
    h, w, c = 1, 2, 1
    np.testing.assert_array_equal(t[:, c * 12 + h * 4 + w], k[(h * 4 + w) * 2 + c])


# --- model state: running statistics are mapped and compared -----------------------------------

def bn_spec():
    """Dense without bias (a bias before BatchNorm has a zero gradient: rounding noise that Adam
    amplifies, see README) - ReLU - BatchNorm - Dense."""
    model = rs.Sequential([rs.Dense(16, activation="relu", use_bias=False, name="d1"),
                           rs.BatchNorm(name="bn"), rs.Dense(10, name="d2")],
                          input_shape=(64,), name="bn_mlp")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(1e-2), data=rs.DataSpec("digits", 4), steps=3)


def flax_bn(dtype):
    """A flax MLP with BatchNorm (biased variance, momentum the old value's weight: the spec's
    rule), its running statistics in the ``batch_stats`` collection."""
    import flax.linen as nn
    import jax
    import optax

    from rosetta.conformance.native_jax import FlaxNative
    jax.config.update("jax_enable_x64", True)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.relu(nn.Dense(16, use_bias=False, dtype=dtype, param_dtype=dtype)(x))
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=dtype, param_dtype=dtype)(x)
            return nn.Dense(10, dtype=dtype, param_dtype=dtype)(x)

    net = Net()
    variables = net.init(jax.random.PRNGKey(0), np.zeros((1, 64), dtype), train=False)
    # flax creates batch_stats in float32 whatever param_dtype says: FlaxNative refuses that
    with pytest.raises(NativeError, match="batch_stats/BatchNorm_0/mean is float32"):
        FlaxNative(net, variables, optax.adam(1e-2), None, {"x": "y"})
    variables = jax.tree.map(lambda a: a.astype(dtype), variables)
    names = {"Dense_0/kernel": "d1/kernel", "BatchNorm_0/scale": "bn/scale",
             "BatchNorm_0/bias": "bn/bias",
             "Dense_1/kernel": "d2/kernel", "Dense_1/bias": "d2/bias",
             "batch_stats/BatchNorm_0/mean": "bn/mean", "batch_stats/BatchNorm_0/var": "bn/var"}

    def loss(out, y):
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    return FlaxNative(net, variables, optax.adam(1e-2), loss, names, slots={"m": "mu", "v": "nu"},
                      train_kwargs={"train": True}, eval_kwargs={"train": False})


def torch_bn(dtype):
    """The same in torch: BatchNorm1d stores the *unbiased* batch variance in running_var."""
    import torch
    from torch import nn

    from rosetta.conformance.native_torch import TorchNative
    net = nn.Sequential(nn.Linear(64, 16, bias=False), nn.ReLU(), nn.BatchNorm1d(16, momentum=0.1),
                        nn.Linear(16, 10)).to(getattr(torch, dtype))
    names = {"0.weight": ("d1/kernel", "linear"), "2.weight": "bn/scale", "2.bias": "bn/bias",
             "2.running_mean": "bn/mean", "2.running_var": "bn/var",
             "3.weight": ("d2/kernel", "linear"), "3.bias": "d2/bias"}
    return TorchNative(net, torch.optim.Adam(net.parameters(), lr=1e-2), nn.CrossEntropyLoss(),
                       names)


@pytest.mark.skipif("jax" not in BACKENDS, reason="the port is flax")
def test_flax_batchnorm_statistics_agree():
    spec = bn_spec()
    (r,) = assert_conformant(spec, native=flax_bn, backends=compared_with(["torch"]),
                             steps=STEPS)
    assert "state" in r.per_category and r.worst_rel <= 1e-10
    print(f"native flax bn_mlp vs {r.backend_b}: worst rel {r.worst_rel:.2e}")


@pytest.mark.skipif("torch" not in BACKENDS, reason="the port is torch")
def test_torch_unbiased_running_variance_is_caught_in_the_state():
    from rosetta.conformance.native_suite import run_native
    (r,), _ = run_native(bn_spec(), torch_bn, compared_with(["jax", "torch"]), steps=2)
    assert not r.passed
    assert (r.blame["step"], r.blame["category"], r.blame["tensor"]) == (0, "state", "bn/var")
    print(f"torch BatchNorm1d vs {r.backend_b}: {r.where}")


def measure():
    """Every baseline on mlp and cnn against every backend (the README's table), and the
    planted bug's blame on every backend:

        python -c "import sys; sys.path[:0] = ['tests', 'tests/cross']; import test_native; \\
                   test_native.measure()"
    """
    from rosetta.conformance.native_suite import run_native
    backends = ["torch", "tensorflow", "jax"]
    print("| your code | model | " + " | ".join(f"vs {b}" for b in backends) + " |")
    for fw in ("torch", "tensorflow", "jax", "keras"):
        for name in ("mlp", "cnn"):
            if fw == "keras":
                spec, factory = keras_case(name, KERAS_BETAS)
            else:
                spec = small(name)
                factory = {"torch": torch_port, "tensorflow": tensorflow_port,
                           "jax": jax_port}[fw](spec)
            results, _ = run_native(spec, factory, backends, steps=STEPS)
            print(f"| {fw} | {name} | " + " | ".join(
                f"{r.worst_rel:.1e}{'' if r.passed else ' FAIL'}" for r in results) + " |")
    spec = small("cnn")
    results, _ = run_native(spec, torch_port(spec, nchw_bug=True), backends, steps=STEPS)
    for r in results:
        print(f"planted NCHW flatten vs {r.backend_b}: {r.where}")



def test_no_framework_is_imported_until_an_adapter_is():
    import subprocess
    import sys
    code = ("import sys, rosetta.conformance.native, rosetta.conformance.native_suite, "
            "rosetta.conformance.pytest_plugin, rosetta.conformance.command; print(sorted(m for m "
            "in ('torch', 'tensorflow', 'jax', 'keras', 'flax', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out
