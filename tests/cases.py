"""Small specs that exercise every op and its tricky attribute combinations.

Each case is (id, builder); the builder returns a TrainSpec. Ops without parameters sit after a
Dense (or Conv2D) so that gradients flow through them into a parameter the tests can check.
"""

from __future__ import annotations

import rosetta as rs
from rosetta import layers as L

SCE = rs.losses.SoftmaxCrossEntropy
MSE = rs.losses.MeanSquaredError
BCE = rs.losses.BinaryCrossEntropy


def _spec(layers, shape, loss=None, kind="float", name="case"):
    model = rs.Sequential(layers, input_shape=shape, input_kind=kind, name=name)
    return rs.TrainSpec(model=model, loss=loss or MSE(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("images"), steps=5)


def _dag():
    a = rs.Input((5, 4), name="a")
    b = rs.Input((5, 4), name="b")
    h = rs.Dense(4, activation="tanh", name="proj")(a)
    r = rs.Add(name="residual")([h, b])
    c = rs.Concatenate(name="cat_features")([r, a])            # (5, 8)
    s = rs.Concatenate(axis=0, name="cat_time")([c, c])       # (10, 8)
    f = rs.Reshape((20, 4), name="reshape")(s)
    n = rs.LayerNorm(epsilon=1e-3, name="ln")(f)
    o = rs.Flatten(name="flat")(n)
    out = rs.Dense(3, name="head")(o)
    model = rs.Model([a, b], out, name="dag")
    return rs.TrainSpec(model=model, loss=SCE(0.1), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("images"), steps=5)


def _image_concat():
    x = rs.Input((6, 6, 2), name="x")
    a = rs.Conv2D(3, 3, padding="same", name="left")(x)
    b = rs.Conv2D(2, 1, name="right")(x)
    c = rs.Concatenate(name="cat")([a, b])
    d = rs.Conv2D(2, 3, strides=2, padding="same", name="after")(c)
    e = rs.Add(name="skip")([d, rs.Conv2D(2, 1, strides=2, name="down")(x)])
    out = rs.Dense(2, name="head")(rs.Flatten(name="flat")(e))
    return rs.TrainSpec(model=rs.Model(x, out, name="image_concat"), loss=MSE(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=5)


def _squeeze_excite():
    """Multiply's broadcasting: a (4, 4, 3) map times a per-channel gate (1, 1, 3) (the
    squeeze-excite block) times a per-position gate (4, 4, 1); gradients reach every side."""
    x = rs.Input((4, 4, 2), name="x")
    h = rs.Conv2D(3, 3, padding="same", name="conv")(x)
    s = rs.Reshape((1, 1, 3), name="squeeze")(rs.GlobalAvgPool2D(name="gap")(h))
    g = rs.Dense(3, activation="sigmoid", name="excite")(s)
    w = rs.Conv2D(1, 1, activation="tanh", name="spatial")(x)
    y = rs.Multiply(name="gate")([h, g, w])
    out = rs.Dense(2, name="head")(rs.Flatten(name="flat")(y))
    return rs.TrainSpec(model=rs.Model(x, out, name="squeeze_excite"), loss=MSE(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=5)


def _position_ids():
    """RoBERTa's position ids from its input ids (pad id 1): keep = 1 - (ids == 1),
    pos = cumsum(keep) * keep + 1, read by a second padding Embedding: int Equal, Subtract,
    Cumsum, Multiply, Add (exact, no gradient), then both tables' padding rows get none."""
    x = rs.Input((6,), kind="int", name="ids")
    keep = rs.Subtract(constant=1, reverse=True, name="ne")(rs.Equal(constant=1, name="eq")(x))
    pos = rs.Multiply(name="masked")([rs.Cumsum(0, name="cumsum")(keep), keep])
    pos = rs.Add(constant=1, name="offset")(pos)
    h = rs.Add(name="sum")([rs.Embedding(7, 4, padding_idx=1, name="tok")(x),
                            rs.Embedding(8, 4, padding_idx=1, name="pos")(pos)])
    out = rs.Dense(3, name="head")(rs.Flatten(name="flat")(h))
    return rs.TrainSpec(model=rs.Model(x, out, name="position_ids"), loss=SCE(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=5)


def _shared_padded_table():
    """One Parameter table read by two Gathers with padding_idx 2 (BART's tied encoder and
    decoder tables): row 2 gets no gradient from either lookup."""
    x = rs.Input((5,), kind="int", name="ids")
    table = rs.Parameter((7, 3), "glorot_uniform", name="table")()
    shifted = rs.Subtract(constant=6, reverse=True, name="flip")(x)      # 6 - id, in [0, 6]
    a = rs.Gather(0, padding_idx=2, name="enc")(table, x)
    b = rs.Gather(0, padding_idx=2, name="dec")(table, shifted)
    out = rs.Dense(2, name="head")(rs.Flatten(name="flat")(rs.Add(name="sum")([a, b])))
    return rs.TrainSpec(model=rs.Model(x, out, name="shared_padded"), loss=SCE(),
                        optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=5)


def _act(**attrs):
    return lambda: _spec([rs.Dense(6, name="pre"), rs.Activation(**attrs, name="act"),
                          rs.Dense(2, name="post")], (4,))


def _fused(act):
    return lambda: _spec([rs.Dense(5, activation=act, name="dense"), rs.Dense(2, name="post")],
                         (3,))


CASES = [
    ("dense_relu", lambda: _spec([rs.Dense(5, activation="relu", name="d")], (4,))),
    ("dense_rank3_nobias", lambda: _spec([rs.Dense(2, use_bias=False, activation="tanh",
                                                   name="d")], (3, 4))),
    ("conv_same_stride2", lambda: _spec([
        rs.Conv2D(4, 3, strides=2, padding="same", activation="sigmoid", name="conv"),
        rs.Flatten(name="flat"), rs.Dense(3, name="head")], (7, 7, 2), loss=SCE(0.1))),
    ("conv_explicit_dilated", lambda: _spec([
        rs.Conv2D(4, (3, 2), padding=((1, 0), (2, 1)), dilation=(2, 1), name="conv"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (7, 6, 2))),
    ("conv_groups", lambda: _spec([
        rs.Conv2D(4, 3, groups=2, strides=(1, 2), name="conv"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (6, 6, 4))),
    ("maxpool_same_stride2", lambda: _spec([
        rs.Dense(3, name="pre"), rs.MaxPool2D(3, strides=2, padding="same", name="pool"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (6, 7, 2))),
    ("maxpool_default_strides", lambda: _spec([
        rs.Dense(3, name="pre"), rs.MaxPool2D(2, name="pool"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (6, 5, 2))),
    ("avgpool_same_excludes_pad", lambda: _spec([
        rs.Dense(3, name="pre"), rs.AvgPool2D(3, strides=2, padding="same", name="pool"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (6, 7, 2))),
    ("avgpool_explicit_asym", lambda: _spec([
        rs.Dense(3, name="pre"), rs.AvgPool2D(2, strides=1, padding=((1, 0), (0, 1)),
                                              name="pool"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (4, 5, 2))),
    ("global_avg_pool", lambda: _spec([
        rs.Conv2D(5, 3, name="conv"), rs.GlobalAvgPool2D(name="gap"),
        rs.Dense(3, name="head")], (6, 6, 2), loss=SCE())),
    ("flatten_order", lambda: _spec([
        rs.Conv2D(3, 1, name="conv"), rs.Flatten(name="flat"), rs.Dense(2, name="head")],
        (4, 3, 2))),
    ("reshape_image_to_seq", lambda: _spec([
        rs.Conv2D(2, 1, name="conv"), rs.Reshape((12, 2), name="seq"),
        rs.Dense(1, name="head"), rs.Flatten(name="flat")], (4, 3, 2))),
    ("act_relu", _act(fn="relu")),
    ("act_tanh", _act(fn="tanh")),
    ("act_sigmoid", _act(fn="sigmoid")),
    ("act_silu", _act(fn="silu")),
    # a wide init puts the inputs on every piece of the clipped functions
    ("act_relu6", lambda: _spec([
        rs.Dense(6, kernel_init=rs.Initializer("normal", stddev=6.0), name="pre"),
        rs.Activation("relu6", name="act"), rs.Dense(2, name="post")], (4,))),
    ("act_hard_sigmoid", lambda: _spec([
        rs.Dense(6, kernel_init=rs.Initializer("normal", stddev=3.0), name="pre"),
        rs.Activation("hard_sigmoid", name="act"), rs.Dense(2, name="post")], (4,))),
    ("fused_relu6", _fused("relu6")),
    ("act_gelu_exact", _act(fn="gelu", approximate="none")),
    # a wide init puts the hard-swish inputs on all three pieces (< -3, between, > 3)
    ("hard_swish", lambda: _spec([
        rs.Dense(8, kernel_init=rs.Initializer("normal", stddev=3.0), name="pre"),
        rs.HardSwish(name="hswish"), rs.Dense(2, name="post")], (4,))),
    ("multiply_broadcast", _squeeze_excite),
    ("act_gelu_tanh", _act(fn="gelu", approximate="tanh")),
    ("act_leaky_relu", _act(fn="leaky_relu", slope=0.2)),
    ("act_softmax", _act(fn="softmax")),
    ("act_identity", _act(fn="identity")),
    # a bias constant along the softmax axis (or before BatchNorm) has an exactly zero gradient:
    # backends then differ only by rounding noise that Adam amplifies to ~lr * noise / eps, so
    # these cases drop that bias, as idiomatic models do (see docs/conformance/float32.md)
    ("act_softmax_axis0", lambda: _spec([
        rs.Dense(3, use_bias=False, name="pre"), rs.Activation("softmax", axis=0, name="act"),
        rs.Flatten(name="flat"), rs.Dense(2, name="post")], (4, 2))),
    ("fused_gelu_exact", _fused("gelu_exact")),
    ("fused_gelu_tanh", _fused("gelu_tanh")),
    ("fused_silu", _fused("silu")),
    ("fused_softmax", _fused("softmax")),
    ("batchnorm_dense", lambda: _spec([
        rs.Dense(6, use_bias=False, name="pre"), rs.BatchNorm(momentum=0.8, epsilon=1e-3, name="bn"),
        rs.Dense(2, name="post")], (4,))),
    ("batchnorm_image", lambda: _spec([
        rs.Conv2D(3, 3, padding="same", use_bias=False, name="conv"), rs.BatchNorm(name="bn"),
        rs.Activation("relu", name="act"), rs.Flatten(name="flat"), rs.Dense(2, name="head")],
        (5, 5, 2), loss=SCE())),
    # torch's rule: the running variance stores the unbiased batch variance (x n / (n - 1))
    ("batchnorm_image_unbiased", lambda: _spec([
        rs.Conv2D(3, 3, padding="same", use_bias=False, name="conv"),
        rs.BatchNorm(momentum=0.7, epsilon=1e-3, running_var="unbiased", name="bn"),
        rs.Activation("relu", name="act"), rs.Flatten(name="flat"), rs.Dense(2, name="head")],
        (3, 2, 2), loss=SCE())),
    ("layernorm", lambda: _spec([
        rs.Dense(6, name="pre"), rs.LayerNorm(epsilon=1e-3, name="ln"), rs.Dense(2, name="post")],
        (3, 4))),
    ("embedding", lambda: _spec([
        rs.Embedding(7, 4, name="emb"), rs.Flatten(name="flat"), rs.Dense(3, name="head")],
        (5,), loss=SCE(), kind="int")),
    # padding_idx: the forward reads row 2 like any other, its gradient is 0 (every sample of
    # these 20 ids holds a 2; the oracle checks the row is exactly 0 on every backend)
    ("embedding_padding_idx", lambda: _spec([
        rs.Embedding(7, 4, padding_idx=2, name="emb"), rs.Flatten(name="flat"),
        rs.Dense(3, name="head")], (5,), loss=SCE(), kind="int")),
    ("position_ids_from_input", _position_ids),
    ("gather_shared_table_padding_idx", _shared_padded_table),
    ("cumsum_float", lambda: _spec([
        rs.Dense(3, name="pre"), rs.Cumsum(0, name="cumsum"), rs.Flatten(name="flat"),
        rs.Dense(2, name="head")], (4, 2))),
    ("bce_loss", lambda: _spec([rs.Dense(3, name="d")], (4,), loss=BCE())),
    # more ops (``rs.layers``): padding, upsampling, global max, RMS/group norm, 1-D windows
    ("zeropad_asym", lambda: _spec([
        rs.Dense(3, name="pre"), L.ZeroPadding2D(((1, 0), (2, 1)), name="pad"),
        rs.Conv2D(2, 3, strides=2, name="conv"), rs.Flatten(name="flat"),
        rs.Dense(2, name="head")], (4, 5, 2))),
    ("upsample_nearest", lambda: _spec([
        rs.Dense(3, name="pre"), L.UpSampling2D((2, 3), name="up"),
        rs.Conv2D(2, 3, strides=2, padding="same", name="conv"), rs.Flatten(name="flat"),
        rs.Dense(2, name="head")], (3, 2, 2))),
    ("global_max_pool", lambda: _spec([
        rs.Conv2D(5, 3, name="conv"), L.GlobalMaxPool2D(name="gmp"),
        rs.Dense(3, name="head")], (6, 6, 2), loss=SCE())),
    # no conv bias: instance norm removes any per-channel shift, so its exact gradient is 0 and
    # Adam would amplify the rounding noise each backend leaves in it
    ("instancenorm_image", lambda: _spec([
        rs.Conv2D(3, 3, padding="same", use_bias=False, name="conv"),
        rs.InstanceNorm2D(momentum=0.8, epsilon=1e-3, name="inorm"),
        rs.Activation("tanh", name="act"), rs.Flatten(name="flat"), rs.Dense(2, name="head")],
        (4, 5, 2))),
    ("rmsnorm", lambda: _spec([
        rs.Dense(6, name="pre"), L.RMSNorm(epsilon=1e-3, name="rms"), rs.Dense(2, name="post")],
        (3, 4))),
    ("groupnorm_image", lambda: _spec([
        rs.Conv2D(6, 3, padding="same", use_bias=False, name="conv"),
        L.GroupNorm(3, epsilon=1e-3, name="gn"), rs.Activation("tanh", name="act"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (4, 5, 2))),
    ("conv1d_same_stride2", lambda: _spec([
        L.Conv1D(4, 3, strides=2, padding="same", activation="sigmoid", name="conv"),
        rs.Flatten(name="flat"), rs.Dense(3, name="head")], (9, 3), loss=SCE(0.1))),
    ("conv1d_explicit_dilated_groups", lambda: _spec([
        L.Conv1D(4, 3, padding=(2, 1), dilation=2, groups=2, name="conv"),
        L.Conv1D(2, 2, strides=2, padding="same", name="conv2"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (8, 4))),
    ("maxpool1d_same_stride2", lambda: _spec([
        rs.Dense(3, name="pre"), L.MaxPool1D(3, strides=2, padding="same", name="pool"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (8, 2))),
    ("avgpool1d_explicit_asym", lambda: _spec([
        rs.Dense(3, name="pre"), L.AvgPool1D(3, strides=2, padding=(2, 0), name="pool"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (7, 2))),
    ("avgpool1d_same_excludes_pad", lambda: _spec([
        rs.Dense(3, name="pre"), L.AvgPool1D(2, strides=1, padding="same", name="pool"),
        rs.Flatten(name="flat"), rs.Dense(2, name="head")], (5, 2))),
    ("dag_residual_concat_reshape", _dag),
    ("image_concat_add", _image_concat),
]



def _seq_pool(mode, lengths=True):
    def build():
        x = rs.Input((5, 3), name="x")
        ins = [x]
        h = rs.Dense(4, activation="tanh", name="pre")(x)
        if lengths:
            n = rs.Input((), name="lengths", kind="int")
            ins.append(n)
            h = L.SequencePool(mode, name="pool")([h, n])
        else:
            h = L.SequencePool(mode, name="pool")(h)
        out = rs.Dense(2, name="head")(h)
        return rs.TrainSpec(model=rs.Model(ins, out, name="seq_pool"), loss=SCE(),
                            optimizer=rs.optim.SGD(0.1), data=rs.DataSpec("images"), steps=5)
    return build


CASES += [
    ("seqpool_mean_lengths", _seq_pool("mean")),
    ("seqpool_max_lengths", _seq_pool("max")),
    ("seqpool_mean_all", _seq_pool("mean", lengths=False)),
]

# the op families, each in its own module (same shape: a CASES list)
from cases_attention import CASES as _ATTENTION  # noqa: E402
from cases_conv import CASES as _CONV  # noqa: E402
from cases_import_ops import CASES as _IMPORT_OPS  # noqa: E402
from cases_losses import CASES as _LOSSES  # noqa: E402
from cases_recurrent import CASES as _RECURRENT  # noqa: E402
from cases_tensor_math import CASES as _TENSOR_MATH  # noqa: E402
from cases_tensor_shape import CASES as _TENSOR_SHAPE  # noqa: E402

CASES += (_ATTENTION + _CONV + _IMPORT_OPS + _LOSSES + _RECURRENT + _TENSOR_MATH
          + _TENSOR_SHAPE)

IDS = [c[0] for c in CASES]
BUILD = dict(CASES)
