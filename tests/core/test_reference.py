"""The oracles themselves: each NumPy reference against an independent, naive computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rosetta as rs
from rosetta.ops import REGISTRY, RefContext
from rosetta.ops.windows import spatial_plan


def _conv_naive(x, k, b, strides, pads, dilation, groups):
    n, h, w, c = x.shape
    kh, kw, cg, f = k.shape
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    ho = (xp.shape[1] - dilation[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (xp.shape[2] - dilation[1] * (kw - 1) - 1) // strides[1] + 1
    fg = f // groups
    y = np.zeros((n, ho, wo, f))
    for bi in range(n):
        for i in range(ho):
            for j in range(wo):
                for o in range(f):
                    g = o // fg
                    acc = b[o]
                    for di in range(kh):
                        for dj in range(kw):
                            for ci in range(cg):
                                acc += (xp[bi, i * strides[0] + di * dilation[0],
                                           j * strides[1] + dj * dilation[1], g * cg + ci]
                                        * k[di, dj, ci, o])
                    y[bi, i, j, o] = acc
    return y


@pytest.mark.parametrize("attrs", [
    dict(filters=4, kernel_size=3, strides=2, padding="same"),
    dict(filters=4, kernel_size=(3, 2), padding=((1, 0), (2, 1)), dilation=(2, 1)),
    dict(filters=4, kernel_size=3, groups=2, strides=(1, 2)),
])
def test_conv_reference_against_loops(attrs):
    op = REGISTRY["Conv2D"]
    a = op.resolve_attrs(attrs, "t")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 4))
    k = rng.standard_normal((*a["kernel_size"], 4 // a["groups"], 4))
    b = rng.standard_normal(4)
    _, pads = spatial_plan(a, (7, 6), a["dilation"])
    got = op.reference(a, {"kernel": k, "bias": b}, [x], RefContext())
    want = _conv_naive(x, k, b, a["strides"], pads, a["dilation"], a["groups"])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_pool_references_against_loops():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 5, 4, 2))
    a = REGISTRY["AvgPool2D"].resolve_attrs({"kernel_size": 3, "strides": 2, "padding": "same"},
                                            "t")
    out = REGISTRY["AvgPool2D"].reference(a, {}, [x], RefContext())
    mx = REGISTRY["MaxPool2D"].reference(a, {}, [x], RefContext())
    _, pads = spatial_plan(a, (5, 4))
    (t, _), (l, _) = pads
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            r0, c0 = i * 2 - t, j * 2 - l
            cells = x[0, max(r0, 0):r0 + 3, max(c0, 0):c0 + 3, :].reshape(-1, 2)
            np.testing.assert_allclose(out[0, i, j], cells.mean(axis=0), rtol=1e-14)
            np.testing.assert_allclose(mx[0, i, j], cells.max(axis=0), rtol=1e-14)


def test_activation_references():
    x = np.linspace(-3, 3, 13)
    act = REGISTRY["Activation"]

    def run(**attrs):
        return act.reference(act.resolve_attrs(attrs, "t"), {}, [x[None]], RefContext())[0]

    erf = np.array([math.erf(v / math.sqrt(2)) for v in x])
    np.testing.assert_allclose(run(fn="gelu", approximate="none"), 0.5 * x * (1 + erf))
    assert not np.allclose(run(fn="gelu", approximate="tanh"), 0.5 * x * (1 + erf), atol=1e-5)
    np.testing.assert_allclose(run(fn="leaky_relu", slope=0.2), np.where(x > 0, x, 0.2 * x))
    np.testing.assert_allclose(run(fn="softmax").sum(), 1.0)
    np.testing.assert_allclose(run(fn="silu"), x / (1 + np.exp(-x)))


def test_batchnorm_reference_updates_with_biased_variance():
    op = REGISTRY["BatchNorm"]
    a = op.resolve_attrs({"momentum": 0.8}, "t")
    x = np.random.default_rng(2).standard_normal((6, 3))
    ctx = RefContext(training=True, state={"mean": np.zeros(3), "var": np.ones(3)})
    y = op.reference(a, {"scale": np.ones(3), "bias": np.zeros(3)}, [x], ctx)
    np.testing.assert_allclose(ctx.state["mean"], 0.2 * x.mean(0))
    np.testing.assert_allclose(ctx.state["var"], 0.8 + 0.2 * x.var(0, ddof=0))
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-12)


def test_batchnorm_reference_unbiased_running_var():
    """running_var="unbiased" (torch's rule) stores var * n / (n - 1), n the values per channel
    (batch x spatial); the output still normalises with the biased variance; n == 1 refused."""
    op = REGISTRY["BatchNorm"]
    a = op.resolve_attrs({"momentum": 0.8, "running_var": "unbiased"}, "t")
    x = np.random.default_rng(2).standard_normal((2, 3, 1, 4))
    ctx = RefContext(training=True, state={"mean": np.zeros(4), "var": np.ones(4)})
    biased = op.reference(op.resolve_attrs({"momentum": 0.8}, "t"),
                          {"scale": np.ones(4), "bias": np.zeros(4)}, [x],
                          RefContext(training=True, state={"mean": np.zeros(4),
                                                           "var": np.ones(4)}))
    y = op.reference(a, {"scale": np.ones(4), "bias": np.zeros(4)}, [x], ctx)
    np.testing.assert_array_equal(y, biased)
    np.testing.assert_allclose(ctx.state["var"],
                               0.8 + 0.2 * x.reshape(-1, 4).var(0, ddof=1), rtol=1e-14)
    ctx1 = RefContext(training=True, state={"mean": np.zeros(4), "var": np.ones(4)})
    with pytest.raises(rs.DataError, match="more than 1 value per channel"):
        op.reference(a, {"scale": np.ones(4), "bias": np.zeros(4)}, [x[:1, :1]], ctx1)
    with pytest.raises(rs.SpecError, match="running_var"):
        op.resolve_attrs({"running_var": "sample"}, "t")


def test_batchnorm_json_leaves_out_the_default_running_var():
    """Specs written before the attribute keep their JSON (and checkpoint spec hash)."""
    op = REGISTRY["BatchNorm"]
    assert "running_var" not in op.attrs_to_json(op.resolve_attrs({}, "t"))
    assert op.attrs_to_json(op.resolve_attrs({"running_var": "unbiased"}, "t"))[
        "running_var"] == "unbiased"


def test_losses():
    z = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
    y = np.array([0, 2])
    ls = z - np.log(np.exp(z).sum(1, keepdims=True))
    plain = -np.mean(ls[[0, 1], y])
    assert rs.losses.SoftmaxCrossEntropy().reference(z, y) == pytest.approx(plain, rel=1e-14)
    eps = 0.1
    smooth = -np.mean(((1 - eps) * np.eye(3)[y] + eps / 3) * ls) * 3
    assert rs.losses.SoftmaxCrossEntropy(eps).reference(z, y) == pytest.approx(smooth, rel=1e-14)
    t = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    p = 1 / (1 + np.exp(-z))
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert rs.losses.BinaryCrossEntropy().reference(z, t) == pytest.approx(bce, rel=1e-12)
    assert rs.losses.MeanSquaredError().reference(z, t) == pytest.approx(np.mean((z - t) ** 2))
