"""DepthwiseConv2D, SeparableConv2D, Conv2DTranspose in the spec: shapes, parameters, errors, and
their references against independent computations (Conv2D's reference and the adjoint identity)."""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs
from rosetta.graph import Layer
from rosetta.ops import REGISTRY, RefContext
from rosetta.spec import TrainSpec


def _model(layer, shape):
    return rs.Sequential([layer], input_shape=shape, name="m")


@pytest.mark.parametrize("layer,shape,out,params", [
    (lambda: rs.DepthwiseConv2D(3, name="dw"), (5, 6, 2), (3, 4, 2),
     {"dw/kernel": (3, 3, 2, 1), "dw/bias": (2,)}),
    (lambda: rs.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=3, name="dw"),
     (7, 6, 2), (4, 3, 6), {"dw/kernel": (3, 3, 2, 3), "dw/bias": (6,)}),
    (lambda: rs.DepthwiseConv2D((2, 3), padding=((1, 0), (0, 2)), dilation=2, use_bias=False,
                                name="dw"), (4, 5, 3), (3, 3, 3), {"dw/kernel": (2, 3, 3, 1)}),
    (lambda: rs.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, name="sep"), (5, 4, 2),
     (5, 4, 4), {"sep/depthwise_kernel": (3, 3, 2, 2), "sep/pointwise_kernel": (1, 1, 4, 4),
                 "sep/bias": (4,)}),
    (lambda: rs.Conv2DTranspose(5, 3, strides=2, name="t"), (3, 4, 2), (7, 9, 5),
     {"t/kernel": (3, 3, 2, 5), "t/bias": (5,)}),
    (lambda: rs.Conv2DTranspose(5, (4, 3), strides=2, padding="same", name="t"), (3, 4, 2),
     (6, 8, 5), {"t/kernel": (4, 3, 2, 5), "t/bias": (5,)}),
    (lambda: rs.Conv2DTranspose(1, 2, strides=3, padding="same", use_bias=False, name="t"),
     (2, 3, 2), (6, 9, 1), {"t/kernel": (2, 2, 2, 1)}),
    (lambda: rs.Conv2DTranspose(2, 3, strides=(2, 1), dilation=2, name="t"), (3, 3, 1),
     (9, 7, 2), {"t/kernel": (3, 3, 1, 2), "t/bias": (2,)}),
])
def test_shapes_and_canonical_parameters(layer, shape, out, params):
    m = _model(layer(), shape)
    assert m.output_type.shape == out
    assert {p: tuple(d.shape) for p, d in m.param_defs().items()} == params


@pytest.mark.parametrize("build,words", [
    (lambda: _model(rs.DepthwiseConv2D(3, name="dw"), (5, 2)), ["m/dw", "rank 3", "(5, 2)"]),
    (lambda: _model(rs.DepthwiseConv2D(5, name="dw"), (3, 6, 2)),
     ["m/dw", "fits in the padded input (3, 6)", "output size (-1, 2)"]),
    (lambda: _model(rs.SeparableConv2D(2, 3, dilation=3, padding=1, name="sep"), (3, 3, 1)),
     ["m/sep", "padded input (5, 5)"]),
    (lambda: _model(rs.Conv2DTranspose(2, 3, name="t"), (4, 2)), ["m/t", "rank 3"]),
    (lambda: rs.Conv2DTranspose(2, 3, padding=((1, 1), (1, 1))), ["padding", "valid", "same"]),
    (lambda: rs.DepthwiseConv2D(3, depth_multiplier=0), ["depth_multiplier", "positive"]),
    # the constructor's signature requires filters (a TypeError); the spec path says it
    (lambda: Layer("SeparableConv2D", kernel_size=3), ["missing required attribute 'filters'"]),
    (lambda: rs.Conv2DTranspose(2, 3, activation="swish"), ["activation"]),
    (lambda: rs.Conv2DTranspose(2, 3, dilation=0), ["dilation", "positive"]),
])
def test_bad_specs_are_spec_errors(build, words):
    with pytest.raises(rs.SpecError) as e:
        build()
    for w in words:
        assert w in str(e.value), str(e.value)


def _rng_arrays(*shapes):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s) for s in shapes]


@pytest.mark.parametrize("attrs", [
    dict(kernel_size=3, strides=2, padding="same", depth_multiplier=2),
    dict(kernel_size=(2, 3), padding=((1, 0), (0, 2)), dilation=(2, 1)),
])
def test_depthwise_and_separable_match_grouped_conv(attrs):
    """Depthwise = Conv2D(groups=C) with the kernel (kH, kW, C, M) read as (kH, kW, 1, C·M);
    separable = that, then a 1x1 Conv2D."""
    c, m = 3, attrs.get("depth_multiplier", 1)
    x, k, b, pw, pb = _rng_arrays((2, 7, 6, c), (*np.broadcast_to(attrs["kernel_size"], 2), c, m),
                                  (c * m,), (1, 1, c * m, 4), (4,))
    conv, ctx = REGISTRY["Conv2D"], RefContext()
    window = {key: v for key, v in attrs.items() if key != "depth_multiplier"}
    ca = conv.resolve_attrs(dict(window, filters=c * m, groups=c), "t")
    want = conv.reference(ca, {"kernel": k.reshape(*k.shape[:2], 1, c * m), "bias": b}, [x], ctx)
    dw = REGISTRY["DepthwiseConv2D"]
    got = dw.reference(dw.resolve_attrs(attrs, "t"), {"kernel": k, "bias": b}, [x], ctx)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    sep = REGISTRY["SeparableConv2D"]
    got = sep.reference(sep.resolve_attrs(dict(attrs, filters=4), "t"),
                        {"depthwise_kernel": k, "pointwise_kernel": pw, "bias": pb}, [x], ctx)
    pa = conv.resolve_attrs(dict(filters=4, kernel_size=1), "t")
    want = conv.reference(pa, {"kernel": pw, "bias": pb}, [want - b], ctx)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attrs,hw", [
    (dict(kernel_size=3, strides=2, padding="valid"), (3, 4)),
    (dict(kernel_size=3, strides=2, padding="same"), (3, 3)),
    (dict(kernel_size=(4, 2), strides=2, padding="same"), (3, 2)),
    (dict(kernel_size=2, strides=3, padding="same"), (2, 3)),
    (dict(kernel_size=(2, 3), strides=(2, 1), dilation=2, padding="same"), (3, 4)),
    (dict(kernel_size=3, strides=(1, 3), dilation=(1, 2), padding="valid"), (4, 2)),
])
def test_transpose_is_the_adjoint_of_conv2d(attrs, hw):
    """<T(x), z> = <x, Conv2D(z)> with the same window attributes and the kernel's channel axes
    swapped: Conv2DTranspose is the adjoint of the Conv2D it transposes (which is how TensorFlow
    defines conv2d_transpose, so canonical 'same' is TF/Keras 'same')."""
    t = REGISTRY["Conv2DTranspose"]
    ta = t.resolve_attrs(dict(attrs, filters=3, use_bias=False), "t")
    out, _ = t.plan(ta, hw)
    x, k, z = _rng_arrays((2, *hw, 2), (*ta["kernel_size"], 2, 3), (2, *out, 3))
    y = t.reference(ta, {"kernel": k}, [x], RefContext())
    assert y.shape == (2, *out, 3)
    conv = REGISTRY["Conv2D"]
    ca = conv.resolve_attrs(dict(attrs, filters=2, use_bias=False), "t")
    back = conv.reference(ca, {"kernel": k.transpose(0, 1, 3, 2)}, [z], RefContext())
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, z), np.vdot(x, back), rtol=1e-12)


def test_transpose_scatter_small_example():
    """One input cell, stride 2: the kernel lands at (i·s, j·s), unflipped; 'same' crops
    max(k - s, 0) // 2 = 0 before for k = 3, s = 2 and one cell after."""
    t = REGISTRY["Conv2DTranspose"]
    k = np.arange(9.0).reshape(3, 3, 1, 1)
    x = np.zeros((1, 2, 2, 1))
    x[0, 1, 1, 0] = 1.0
    valid = t.reference(t.resolve_attrs(dict(filters=1, kernel_size=3, strides=2), "t"),
                        {"kernel": k}, [x], RefContext())
    want = np.zeros((5, 5))
    want[2:5, 2:5] = k[..., 0, 0]
    np.testing.assert_array_equal(valid[0, ..., 0], want)
    same = t.reference(t.resolve_attrs(dict(filters=1, kernel_size=3, strides=2,
                                            padding="same"), "t"), {"kernel": k}, [x],
                       RefContext())
    np.testing.assert_array_equal(same[0, ..., 0], want[:4, :4])


def test_flops_and_json_round_trip():
    x = rs.Input((6, 6, 2), name="x")
    h = rs.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    h = rs.SeparableConv2D(3, 3, strides=2, padding="same", name="sep")(h)
    h = rs.Conv2DTranspose(2, 3, strides=2, padding="same", name="t")(h)
    model = rs.Model(x, rs.Dense(2, name="head")(rs.Flatten(name="flat")(h)), name="m")
    nodes = {n.name: n for n in model.nodes}
    flops = {name: REGISTRY[n.op].flops(n.attrs, n.in_types, n.out_type)
             for name, n in nodes.items() if name in ("dw", "sep", "t")}
    assert flops == {"dw": 2 * 6 * 6 * 4 * 9,
                     "sep": 2 * 3 * 3 * 4 * 9 + 2 * 3 * 3 * 4 * 3,
                     "t": 2 * 3 * 3 * 3 * 9 * 2}
    spec = TrainSpec(model=model, loss=rs.losses.MeanSquaredError(), optimizer=rs.optim.SGD(0.1),
                     data=rs.DataSpec("images"), steps=1)
    again = TrainSpec.from_json(spec.to_json())
    assert again.to_json() == spec.to_json()
    assert {n.name: n.attrs for n in again.model.nodes} == {n.name: n.attrs for n in model.nodes}
