"""Proof that the suite can fail: lowerings mutated (in the test only) to reproduce real framework
traps must each make the conformance comparison fail, and the blame must name the right place.

Each trap patches one backend and compares it with another, unpatched one, in float64. The blame is
the first divergence in causal order (see conformance/diagnose.py): a forward trap is named by the
first graph node whose output differs, an optimizer trap by the parameters after the first update
(gradients still agree), a running-statistics trap by the BatchNorm state.

torch's second LSTM bias left trainable is planted in ``test_traps_recurrent.py``; every trap is
planted again in float32 in ``test_traps_float32.py``.
"""

from __future__ import annotations

import functools
import importlib

import pytest

import rosetta as rs
from rosetta.conformance.suite import run

from selection import BACKENDS

pytestmark = pytest.mark.skipif(
    not {"torch", "tensorflow", "jax"} <= set(BACKENDS),
    reason="each trap patches one framework and compares it with another: needs all three")


def _spec(layers, shape, optimizer, name):
    model = rs.Sequential(layers, input_shape=shape, name=name)
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(), optimizer=optimizer,
                        data=rs.DataSpec("digits", 16, {"layout": "image"}), steps=3)


def _image_spec(optimizer=None, middle=()):
    return _spec([rs.Conv2D(4, 3, padding="same", activation="tanh", name="conv"), *middle,
                  rs.Flatten(name="flat"), rs.Dense(10, name="head")], (8, 8, 1),
                 optimizer or rs.optim.SGD(0.05, momentum=0.9), "trap")


def _run(spec, trapped, other):
    results, _ = run(spec, [trapped, other], dtype="float64", steps=3)
    assert len(results) == 1
    return results[0]


# --- the traps ----------------------------------------------------------------------------------

def _mod(name):
    return importlib.import_module(f"rosetta.backends.{name}")


def trap_torch_adam_coupled_decay(monkeypatch):
    """torch.optim.Adam(weight_decay) is coupled L2 (g += wd*p before the moments), not AdamW."""
    import torch
    torch_optimizers = _mod("torch.optimizers")
    def adam_coupled(opt, params, lr, foreach):
        return torch.optim.Adam(params, lr=lr, betas=(opt.beta1, opt.beta2), eps=opt.epsilon,
                                weight_decay=opt.weight_decay, foreach=foreach)
    monkeypatch.setitem(torch_optimizers.OPTIMIZERS, "adamw", adam_coupled)


def trap_keras_epsilon_hat(monkeypatch):
    """Keras's Adam: p -= lr * sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(v) + eps)."""
    tf_optimizers = _mod("tensorflow.optimizers")
    def direction(self, var, g, slots, context):
        b1, b2 = self.beta1, self.beta2
        m = b1 * slots["m"] + (1 - b1) * g
        v = b2 * slots["v"] + (1 - b2) * g * g
        slots["m"].assign(m)
        slots["v"].assign(v)
        import tensorflow as tf
        return m * tf.sqrt(context["c2"]) / context["c1"] / (tf.sqrt(v) + self.epsilon)
    monkeypatch.setattr(tf_optimizers.Adam, "direction", direction)


def trap_avg_pool_counts_padding(monkeypatch):
    """torch's default count_include_pad=True: padded cells count in the average."""
    jax_layers = _mod("jax.lowering")
    def avg_pool_including_pad(node, xs, ctx):
        from flax import linen as nn
        from rosetta.ops.windows import spatial_plan
        a = node.attrs
        _, pads = spatial_plan(a, node.in_types[0].shape[:2])
        return nn.avg_pool(xs[0], a["kernel_size"], strides=a["strides"], padding=pads,
                           count_include_pad=True)
    monkeypatch.setitem(jax_layers.LOWERINGS, "AvgPool2D", avg_pool_including_pad)


def trap_batchnorm_momentum_flipped(monkeypatch):
    """torch's momentum weights the *new* batch statistic (momentum_torch = 1 - m)."""
    import torch
    torch_norms = _mod("torch.normalization")
    @torch.no_grad()
    def flipped(self, x):
        dims = [0, *range(2, x.ndim)]
        var, mean = torch.var_mean(x.detach(), dim=dims, correction=0)
        m = 1.0 - self.momentum
        self.running_mean.mul_(m).add_(mean, alpha=1.0 - m)
        self.running_var.mul_(m).add_(var, alpha=1.0 - m)
    monkeypatch.setattr(torch_norms.CanonicalBatchNorm, "_update_running_stats", flipped)


def trap_gelu_tanh_for_exact(monkeypatch):
    """flax/JAX gelu defaults to the tanh approximation."""
    import jax
    jax_layers = _mod("jax.lowering")
    monkeypatch.setitem(jax_layers.ACTIVATIONS, "gelu_exact",
                        functools.partial(jax.nn.gelu, approximate=True))


def trap_flatten_nchw(monkeypatch):
    """Flattening torch's NCHW tensor directly gives C*H*W order instead of H*W*C."""
    torch_lowering = _mod("torch.lowering")
    monkeypatch.setitem(torch_lowering.LOWERINGS, "Flatten",
                        torch_lowering.Lowering(torch_lowering.CHANNELS_FIRST,
                                                _mod("torch.shape").flatten))


def trap_dropout_not_inverted(monkeypatch):
    """Dropout that applies the keep-mask without the 1 / (1 - rate) scaling."""
    from torch import nn
    torch_dropout = _mod("torch.dropout")
    def forward(self, x):
        if self.training and self.mask is not None:
            return x * self.mask
        return nn.Dropout.forward(self, x)
    monkeypatch.setattr(torch_dropout.InjectableDropout, "forward", forward)


def trap_batchnorm_eval_on_batch_statistics(monkeypatch):
    """BatchNorm that normalises with the batch's statistics in eval mode too (a model left in
    training mode at inference): training steps agree, the eval-mode output does not."""
    import torch.nn.functional as F
    torch_norms = _mod("torch.normalization")
    def forward(self, x):
        if self.training and self.update_running_stats:
            self._update_running_stats(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.epsilon)
    monkeypatch.setattr(torch_norms.CanonicalBatchNorm, "forward", forward)


def trap_float32_bias_correction(monkeypatch):
    """Adam's bias corrections 1 - beta^k from betas rounded to float32, in float32 (as Keras 3
    on TensorFlow computes them): 1 - float32(0.999) is 1.3e-5 off 1e-3."""
    import tensorflow as tf
    tf_optimizers = _mod("tensorflow.optimizers")
    def prepare(self, dtype):
        k = tf.cast(self.step + 1, tf.float32)
        c1 = 1.0 - tf.pow(tf.constant(self.beta1, tf.float32), k)
        c2 = 1.0 - tf.pow(tf.constant(self.beta2, tf.float32), k)
        return {"c1": tf.cast(c1, dtype), "c2": tf.cast(c2, dtype)}
    monkeypatch.setattr(tf_optimizers.Adam, "prepare", prepare)


def trap_decay_mask_by_rank(monkeypatch):
    """A weight-decay mask that decays every tensor of rank >= 2 instead of deciding by name:
    the same on vector biases, wrong on attention's matrix-shaped (heads, head_dim) biases."""
    tf_optimizers = _mod("tensorflow.optimizers")
    monkeypatch.setattr(tf_optimizers.Optimizer, "decays",
                        lambda self, var: getattr(self, "decay", "all") == "all"
                        or var.shape.rank >= 2)


def _attention_spec():
    """Self-attention (2 heads x 3, biases of shape (2, 3)) with AdamW decaying kernels only."""
    x = rs.Input((64,), name="x")
    t = rs.Reshape((8, 8), name="tokens")(x)
    h = rs.MultiHeadAttention(2, 3, name="attn")(t, t)
    out = rs.Dense(10, name="head")(rs.Flatten(name="flat")(h))
    return rs.TrainSpec(model=rs.Model(x, out, name="trap_attention"),
                        loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.AdamW(0.05, weight_decay=0.5, decay="kernels"),
                        data=rs.DataSpec("digits", 16), steps=3)


def _batchnorm_spec():
    return _spec([rs.Conv2D(4, 3, use_bias=False, name="conv"),
                  rs.BatchNorm(momentum=0.9, name="bn"), rs.Flatten(name="flat"),
                  rs.Dense(10, name="head")], (8, 8, 1), rs.optim.SGD(0.05), "trap")


TRAPS = {
    # name: (trap, spec, trapped backend, other backend, expected blame)
    "torch_adam_coupled_decay": (
        trap_torch_adam_coupled_decay,
        lambda: _image_spec(rs.optim.AdamW(0.01, weight_decay=0.1)),
        "torch", "jax", {"step": 0, "category": "params"}),
    "keras_epsilon_hat": (
        trap_keras_epsilon_hat, lambda: _image_spec(rs.optim.Adam(0.01)),
        "tensorflow", "torch", {"step": 0, "category": "params"}),
    "avg_pool_counts_padding": (
        trap_avg_pool_counts_padding,
        lambda: _image_spec(middle=[rs.AvgPool2D(3, strides=2, padding="same", name="pool")]),
        "jax", "tensorflow", {"step": 0, "category": "loss", "node": "pool"}),
    "batchnorm_momentum_flipped": (
        trap_batchnorm_momentum_flipped,
        _batchnorm_spec, "torch", "tensorflow", {"step": 0, "category": "state"}),
    "gelu_tanh_for_exact": (
        trap_gelu_tanh_for_exact,
        lambda: _image_spec(middle=[rs.GELU("none", name="gelu")]),
        "jax", "torch", {"step": 0, "category": "loss", "node": "gelu"}),
    "flatten_nchw": (
        trap_flatten_nchw, lambda: _image_spec(),
        "torch", "jax", {"step": 0, "category": "loss", "node": "flat"}),
    "dropout_not_inverted": (
        trap_dropout_not_inverted,
        lambda: _image_spec(middle=[rs.Dropout(0.5, name="drop")]),
        "torch", "jax", {"step": 0, "category": "loss", "node": "drop"}),
    "batchnorm_eval_on_batch_statistics": (
        trap_batchnorm_eval_on_batch_statistics, _batchnorm_spec,
        "torch", "jax", {"category": "eval", "node": "bn"}),
    "float32_bias_correction": (
        trap_float32_bias_correction, lambda: _image_spec(rs.optim.Adam(0.1)),
        "tensorflow", "torch", {"step": 0, "category": "params"}),
    "decay_mask_by_rank": (
        trap_decay_mask_by_rank, _attention_spec,
        "tensorflow", "jax", {"step": 1, "category": "params"}),
}


@pytest.mark.parametrize("name", list(TRAPS))
def test_trap_is_caught_and_blamed(name, monkeypatch):
    trap, build, trapped, other, expected = TRAPS[name]
    spec = build()
    clean = _run(spec, trapped, other)
    assert clean.passed, f"control run without the trap must pass: {clean.where}"
    trap(monkeypatch)
    r = _run(spec, trapped, other)
    assert not r.passed, f"trap {name} went unnoticed: worst rel {r.worst_rel:.2e}"
    for key, value in expected.items():
        assert r.blame.get(key) == value, f"{name}: blamed {r.blame}, expected {expected}"
    check_blamed_tensor(name, spec, r.blame)


def check_blamed_tensor(name, spec, blame):
    """The tensor a trap must be blamed on, beyond step, category and node."""
    expected = TRAPS[name][4]
    if expected["category"] == "state":
        assert blame["tensor"].startswith("bn/"), blame
    if expected["category"] == "params":
        # the optimizer is blamed: the gradients of that step still agreed
        assert blame["tensor"] in spec.model.param_defs(), blame
    if name == "decay_mask_by_rank":
        assert blame["tensor"].startswith("attn/") and blame["tensor"].endswith("_bias"), blame
