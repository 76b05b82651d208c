"""ONNX import (rosetta.from_onnx): one small hand-built graph per op family, checked node by node
against onnx.reference in float64 at 1e-10 (the spec's NumPy reference, no framework: fast);
torch models exported by both exporters, certified on every backend against onnx.reference and
onnxruntime; refusals, one line per node."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rosetta  # noqa: E402
from rosetta.importers import ImportRefused  # noqa: E402
from rosetta.importers.onnx_certificate import reference_agreement  # noqa: E402
from rosetta.importers.onnx_ops import SUPPORTED  # noqa: E402

RNG = np.random.default_rng(0)
COVERED = set()   # op types the hand-built graphs below exercise


def init(name, *shape, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(np.abs(a) + 0.5 if positive else a, name)


def ints(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def graph(nodes, inits, in_shape, out_name="y", opset=13, in_type=TensorProto.FLOAT):
    COVERED.update(n.op_type for n in nodes)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", in_type, in_shape)],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8

    return m


def agrees(model):
    imp = rosetta.from_onnx(model)
    worst, blame = reference_agreement(imp)
    assert blame == "", blame
    assert worst < 1e-10
    return imp


def conv_pool_gemm_graphs():
    """Conv (explicit pads, strides, groups, dilation; SAME_UPPER), MaxPool with ceil_mode,
    AveragePool with pads (padding excluded), Relu, Flatten of an (N, C, H, W) map into a Gemm
    (its rows permuted to channels-last order), GlobalAveragePool."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 2, 1, 0],
                         strides=[1, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", group=2,
                         dilations=[2, 1], auto_pad="SAME_UPPER"),
        helper.make_node("MaxPool", ["c2"], ["p1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["p1"], ["p2"], name="pool2", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Flatten", ["p2"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], name="fc", transB=1),
    ]
    m = graph(nodes, [init("w1", 4, 2, 3, 3), init("b1", 4), init("w2", 6, 2, 3, 2),
                      init("wd", 5, 6 * 5 * 3), init("bd", 5)], ["N", 2, 9, 11])
    m2 = graph([helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
                helper.make_node("Flatten", ["g"], ["f"], name="flat"),
                helper.make_node("Gemm", ["f", "wd"], ["y"], name="fc")],
               [init("wd", 3, 4)], [2, 3, 5, 5])
    return m, m2


def test_conv_pool_gemm_family():
    m, m2 = conv_pool_gemm_graphs()
    imp = agrees(m)
    assert imp.names["w1"].endswith("/kernel") and imp.inference_only == ""
    assert tuple(imp.spec.model.inputs[0].shape) == (9, 11, 2)   # channels last, batch dynamic
    agrees(m2)


def normalisation_gate_graph():
    """BatchNormalization (inference) with its statistics as state, a squeeze-excite gate
    (GlobalMaxPool, Sigmoid, Mul broadcasting (N, C, 1, 1)), a residual Add, Concat over
    channels, LeakyRelu, Tanh, HardSwish, Reshape from a shape initializer (a channels-first
    flatten) into a Gemm with transB=0, Softmax."""
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "bb", "mu", "var"], ["n"], name="bn",
                         epsilon=1e-3, momentum=0.8),
        helper.make_node("GlobalMaxPool", ["n"], ["g"], name="gmp"),
        helper.make_node("Sigmoid", ["g"], ["gs"], name="gate"),
        helper.make_node("Mul", ["n", "gs"], ["m"], name="scale"),
        helper.make_node("Add", ["m", "x"], ["a"], name="residual"),
        helper.make_node("LeakyRelu", ["a"], ["l"], name="leaky", alpha=0.1),
        helper.make_node("Tanh", ["a"], ["t"], name="tanh"),
        helper.make_node("HardSwish", ["a"], ["h"], name="hswish"),
        helper.make_node("Concat", ["l", "t", "h"], ["c"], name="cat", axis=1),
        helper.make_node("Reshape", ["c", "shape"], ["r"], name="flatten"),
        helper.make_node("Gemm", ["r", "wd"], ["d"], name="fc"),    # B as (in, out), rows permuted
        helper.make_node("Softmax", ["d"], ["y"], name="softmax", axis=-1),
    ]
    m = graph(nodes, [init("s", 3), init("bb", 3), init("mu", 3), init("var", 3, positive=True),
                      ints("shape", [-1, 9 * 4 * 4]), init("wd", 9 * 4 * 4, 5)], ["N", 3, 4, 4],
              opset=14)
    return m


def test_normalisation_gate_activations_family():
    imp = agrees(normalisation_gate_graph())
    assert set(imp.state) == {imp.names["mu"], imp.names["var"]}
    bn = next(n for n in imp.spec.model.nodes if n.op == "BatchNorm")
    assert bn.attrs["momentum"] == pytest.approx(0.8) and bn.attrs["running_var"] == "biased"


def sequence_linear_graph():
    """MatMul + Add of initializers as one Dense (the Linear pattern) on (N, T, F) tokens,
    LayerNormalization, Gelu (opset 20), Dropout, Identity, Reshape of per-example axes."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="proj"),
        helper.make_node("Add", ["mm", "b"], ["lin"], name="proj_bias"),
        helper.make_node("LayerNormalization", ["lin", "g", "be"], ["ln"], name="norm",
                         epsilon=1e-6),
        helper.make_node("Gelu", ["ln"], ["ge"], name="gelu", approximate="tanh"),
        helper.make_node("Dropout", ["ge", "ratio"], ["d"], name="drop"),
        helper.make_node("Identity", ["d"], ["i"], name="id"),
        helper.make_node("Reshape", ["i", "shape"], ["y"], name="merge"),
    ]
    m = graph(nodes, [init("w", 4, 6), init("b", 6), init("g", 6), init("be", 6),
                      numpy_helper.from_array(np.array(0.25, np.float32), "ratio"),
                      ints("shape", [0, 3, 2, 3])], ["N", 3, 4], opset=20)
    return m


def test_sequence_linear_family():
    imp = agrees(sequence_linear_graph())
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops == ["Dense", "LayerNorm", "Activation", "Dropout", "Reshape"]
    assert imp.spec.model.nodes[0].attrs["use_bias"]


def tensor_shape_graph():
    """Transpose (of an (N, C, H, W) input: composed with its channels-last holding; to NHWC:
    no node), Slice (steps, clamped ends, the channel axis of an image), Pad (constant value),
    Unsqueeze, Squeeze, Gather at constant indices, Add, Cast to int and back."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Slice", ["t", "st", "en", "ax", "sp"], ["s"], name="slice"),
        helper.make_node("Pad", ["s", "pads", "pv"], ["p"], name="pad"),
        helper.make_node("Unsqueeze", ["p", "ax2"], ["u"], name="unsq"),
        helper.make_node("Squeeze", ["u", "ax2"], ["q"], name="sq"),
        helper.make_node("Gather", ["q", "idx"], ["g"], name="gather", axis=-1),
        helper.make_node("Transpose", ["g"], ["a"], name="back", perm=[0, 3, 1, 2]),
        helper.make_node("Slice", ["x", "st1", "en1", "ax1"], ["xs"], name="chan"),
        helper.make_node("Pad", ["xs", "pads1"], ["xp"], name="pad_chan"),
        helper.make_node("Transpose", ["xp"], ["b"], name="swap", perm=[0, 1, 3, 2]),
        helper.make_node("Add", ["a", "b"], ["c"], name="sum"),
        helper.make_node("Cast", ["c"], ["ci"], name="to_int", to=TensorProto.INT64),
        helper.make_node("Cast", ["ci"], ["y"], name="to_float", to=TensorProto.FLOAT),
    ]
    inits = [ints("st", [1, 0]), ints("en", [4, 100]), ints("ax", [1, 3]), ints("sp", [2, 1]),
             ints("pads", [0, 1, 0, 0, 0, 1, 0, 0]),
             numpy_helper.from_array(np.array(0.5, np.float32), "pv"), ints("ax2", [2]),
             ints("idx", [2, 0, 1]), ints("st1", [0]), ints("en1", [2]), ints("ax1", [1]),
             ints("pads1", [0, 0, 0, 0, 0, 1, 0, 0])]
    return graph(nodes, inits, ["N", 3, 4, 4])


def test_tensor_shape_family():
    imp = agrees(tensor_shape_graph())
    ops = [n.op for n in imp.spec.model.nodes]
    # "back" and "swap" (to_nhwc is how the input is held already), "sum" brings "b" to the
    # source's layout: its (N, C, H, W) tensor is held channels last
    assert ops.count("Transpose") == 2 and "Gather" in ops and ops.count("Cast") == 2


def embedding_graph():
    """Gather of an initializer table at int token ids (an Embedding), MatMul + Add."""
    nodes = [helper.make_node("Gather", ["table", "x"], ["e"], name="embed"),
             helper.make_node("MatMul", ["e", "w"], ["m"], name="proj"),
             helper.make_node("Add", ["b", "m"], ["y"], name="proj_bias")]
    return graph(nodes, [init("table", 10, 4), init("w", 4, 3), init("b", 3)], ["N", 6],
                 in_type=TensorProto.INT64)


def test_embedding_family():
    imp = agrees(embedding_graph())
    assert [n.op for n in imp.spec.model.nodes] == ["Embedding", "Dense"]


def f32(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def tensor_math_graph():
    """The broadcasting binary ops (a scalar constant as the op's constant, reversed where it
    comes first; a vector constant of an ONNX Constant node as a Constant), comparisons, Where,
    IsNaN and Not,
    the unary functions, Split, MatMul of two computed tensors, the reductions (axes as input and as
    attribute, keepdims both ways), LogSoftmax, Expand, CumSum (a 0-D axis input)."""
    mk = helper.make_node
    nodes = [
        mk("Constant", [], ["cvec"], value=f32("v", RNG.standard_normal(6))),
        mk("Abs", ["x"], ["a"], name="abs"),
        mk("Add", ["a", "one"], ["a1"], name="plus1"),
        mk("Sqrt", ["a1"], ["sq"], name="sqrt"),
        mk("Log", ["a1"], ["lg"], name="log"),
        mk("Neg", ["x"], ["ng"], name="neg"),
        mk("Exp", ["ng"], ["ex"], name="exp"),
        mk("Reciprocal", ["a1"], ["rc"], name="recip"),
        mk("Sin", ["x"], ["si"], name="sin"),
        mk("Cos", ["x"], ["co"], name="cos"),
        mk("Erf", ["x"], ["er"], name="erf"),
        mk("Div", ["si", "a1"], ["d"], name="div"),
        mk("Pow", ["a1", "p15"], ["pw"], name="pow"),
        mk("Sub", ["two", "co"], ["sb"], name="rsub"),
        mk("Max", ["er", "d"], ["mx"], name="max"),
        mk("Min", ["pw", "sb"], ["mn"], name="min"),
        mk("Less", ["x", "zero"], ["lt"], name="less"),
        mk("Where", ["lt", "mx", "mn"], ["w1"], name="where"),
        mk("Greater", ["x", "cvec"], ["gt"], name="greater"),
        mk("Where", ["gt", "w1", "quarter"], ["w2"], name="where_c"),
        mk("Add", ["w2", "sq"], ["w3"], name="add"),
        mk("Sub", ["w3", "lg"], ["w4"], name="sub"),
        mk("Mul", ["w4", "ex"], ["w5"], name="mul"),
        mk("Add", ["w5", "rc"], ["w0"], name="add2"),
        mk("IsNaN", ["w0"], ["isn"], name="isnan"),
        mk("Not", ["isn"], ["ok"], name="not"),
        mk("Where", ["ok", "w0", "zero"], ["w0b"], name="where_nan"),
        mk("Split", ["w0b", "parts"], ["wa", "wb"], name="split", axis=-1),
        mk("Concat", ["wb", "wa"], ["w"], name="swap_halves", axis=2),
        mk("Transpose", ["w"], ["wt"], name="wt", perm=[0, 2, 1]),
        mk("MatMul", ["w", "wt"], ["m"], name="gram"),
        mk("ReduceSum", ["m", "ax2"], ["rs"], name="rsum"),
        mk("LogSoftmax", ["m"], ["ls"], name="logsoftmax", axis=-1),
        mk("Expand", ["rs", "shp"], ["e"], name="expand"),
        mk("Sub", ["ls", "e"], ["o1"], name="sub2"),
        mk("ReduceMean", ["m"], ["rm"], name="rmean", axes=[1], keepdims=0),
        mk("ReduceMax", ["m"], ["rx"], name="rmax", axes=[2], keepdims=0),
        mk("ReduceMin", ["m"], ["rn"], name="rmin", axes=[-1], keepdims=1),
        mk("Add", ["rm", "rx"], ["r2"], name="radd"),
        mk("Unsqueeze", ["r2", "ax2"], ["r3"], name="unsq"),
        mk("Add", ["o1", "r3"], ["o2"], name="add3"),
        mk("Add", ["o2", "rn"], ["o3"], name="add4"),
        mk("Equal", ["x", "x"], ["eq"], name="eq"),
        mk("Cast", ["eq"], ["eqf"], name="eqf", to=TensorProto.FLOAT),
        mk("ReduceSum", ["eqf", "ax2"], ["eqs"], name="eqsum", keepdims=1),
        mk("CumSum", ["o3", "axc"], ["cs"], name="cumsum"),
        mk("Div", ["cs", "eqs"], ["y"], name="div2"),
    ]
    inits = [f32("one", 1.0), f32("p15", 1.5), f32("two", 2.0), f32("zero", 0.0),
             f32("quarter", 0.25), ints("ax2", [2]), ints("shp", [1, 4, 4]),
             ints("parts", [2, 4]), ints("axc", -1)]
    return graph(nodes, inits, ["N", 4, 6])


def test_tensor_math_family():
    imp = agrees(tensor_math_graph())
    ops = {n.op for n in imp.spec.model.nodes}
    assert {"MatMul", "Reduce", "LogSoftmax", "Expand", "Where", "Unary", "Constant",
            "Cumsum"} <= ops


def attention_graph(masked=-1e4):
    """Self-attention written out as ONNX ops, the shape both torch exporters give a
    HuggingFace eager attention in eval mode: q, k, v projections (MatMul + Add), scores
    MatMul(q, Transpose(k)) / sqrt(d), a float mask added (``masked`` where a key is
    hidden), Softmax(-1), MatMul(., v)."""
    mk = helper.make_node
    nodes = [mk("MatMul", ["x", f"w{p}"], [f"{p}0"], name=f"{p}_proj") for p in "qkv"] + [
        mk("Add", [f"{p}0", f"b{p}"], [p], name=f"{p}_bias") for p in "qkv"] + [
        mk("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        mk("MatMul", ["q", "kt"], ["s0"], name="scores"),
        mk("Div", ["s0", "sqrt_d"], ["s1"], name="scale"),
        mk("Add", ["s1", "bias_mask"], ["s"], name="mask"),
        mk("Softmax", ["s"], ["w"], name="softmax", axis=-1),
        mk("MatMul", ["w", "v"], ["y"], name="attend"),
    ]
    mask = np.zeros((3, 3), np.float32)
    mask[0, 2] = masked
    inits = ([init(f"w{p}", 4, 4) for p in "qkv"] + [init(f"b{p}", 4) for p in "qkv"]
             + [f32("sqrt_d", 2.0), numpy_helper.from_array(mask, "bias_mask")])
    return graph(nodes, inits, ["N", 3, 4])


def test_written_out_attention_imports_as_the_fused_op():
    """The import runs the same pattern pass as from_torch: the chain becomes one
    DotProductAttention (named in the notes), and agrees with onnx.reference at 1e-10."""
    imp = agrees(attention_graph())
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops.count("DotProductAttention") == 1 and "Softmax" not in ops, ops
    assert any("attention x1" in n for n in imp.notes), imp.notes


def training_batch_norm_graph():
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "bb", "mu", "var"],
                              ["y", "m", "v"], name="bn", training_mode=1)]
    m = graph(nodes, [init("s", 3), init("bb", 3), init("mu", 3),
                      init("var", 3, positive=True)], [4, 3, 2, 2], opset=15)
    return m


def test_training_mode_batch_norm_is_the_training_forward():
    imp = agrees(training_batch_norm_graph())
    assert imp.source.captured.training_graph


def test_refusals_one_line_per_node_before_anything():
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top", axis=-1),
             helper.make_node("HardSigmoid", ["x"], ["h"], name="hsig", alpha=1 / 6),
             helper.make_node("Einsum", ["v", "v"], ["e"], name="ein", equation="nc,nc->nc"),
             helper.make_node("Add", ["e", "h"], ["y"], name="sum")]
    m = graph(nodes, [ints("k", [2])], ["N", 2])
    with pytest.raises(ImportRefused) as e:
        rosetta.from_onnx(m)
    lines = e.value.lines
    assert lines[0].startswith("top (TopK): unsupported ONNX op TopK")
    assert lines[1].startswith("hsig (HardSigmoid): HardSigmoid(alpha=0.1666666716337204")
    assert len(lines) == 2   # Einsum and Add read a refused input: its line names it
    old = graph([helper.make_node("Relu", ["x"], ["y"])], [], [1, 2], opset=12)
    with pytest.raises(ImportRefused, match="opset 12"):
        rosetta.from_onnx(old)
    bad = graph([helper.make_node("Add", ["x", "c"], ["y"], name="addc")], [init("c", 4, 3)],
                [4, 3])
    with pytest.raises(ImportRefused, match=r"addc \(Add\): input 1 of shape \(4, 3\) spans "
                                            r"the batch axis"):
        rosetta.from_onnx(bad)


def window_attention_graph():
    """Swin's window attention as the exporters write it: (N, 4, 4, 6) viewed as 2x2 windows
    (N, 2, 2, 2, 2, 6), Transpose, Reshape to (N*4, 4, 6) (the batch merged with the windows),
    qkv Dense, Reshape (N*4, 4, 3, 2, 3) and the Transpose (2, 0, 3, 1, 4) that moves the merged
    axis to 1, Split + Squeeze, q @ k^T, a relative-position bias, the (nW, 1, T, T) mask added
    on (N, nW, ...) (a Reshape back to the batch) and merged again, Softmax, @ v, projection,
    and the window reverse (N*4, 4, 6) -> (N, 4, 4, 6) plus the residual."""
    mk = helper.make_node
    mask = np.where(RNG.random((4, 1, 4, 4)) < 0.3, -100.0, 0.0).astype(np.float32)
    nodes = [
        mk("Constant", [], ["mask"], value=f32("m", mask)),
        mk("Reshape", ["x", "s_win"], ["w6"], name="partition_view"),
        mk("Transpose", ["w6"], ["w6t"], name="partition_perm", perm=[0, 1, 3, 2, 4, 5]),
        mk("Reshape", ["w6t", "s_tok"], ["tok"], name="partition"),
        mk("MatMul", ["tok", "wqkv"], ["qkv0"], name="qkv"),
        mk("Add", ["qkv0", "bqkv"], ["qkv1"], name="qkv_bias"),
        mk("Reshape", ["qkv1", "s_qkv"], ["q5"], name="qkv_view"),
        mk("Transpose", ["q5"], ["qp"], name="qkv_perm", perm=[2, 0, 3, 1, 4]),
        mk("Split", ["qp", "three"], ["qs", "ks", "vs"], name="unbind", axis=0),
        mk("Squeeze", ["qs", "z"], ["q"], name="q"),
        mk("Squeeze", ["ks", "z"], ["k"], name="k"),
        mk("Squeeze", ["vs", "z"], ["v"], name="v"),
        mk("Transpose", ["k"], ["kt"], name="kt", perm=[0, 1, 3, 2]),
        mk("MatMul", ["q", "kt"], ["a0"], name="scores"),
        mk("Add", ["a0", "rel"], ["a1"], name="rel_bias"),
        mk("Reshape", ["a1", "s_nw"], ["a2"], name="per_window"),
        mk("Add", ["a2", "mask"], ["a3"], name="mask_add"),
        mk("Reshape", ["a3", "s_att"], ["a4"], name="merge_again"),
        mk("Softmax", ["a4"], ["p"], name="softmax", axis=-1),
        mk("MatMul", ["p", "v"], ["o"], name="attend"),
        mk("Transpose", ["o"], ["ot"], name="heads_last", perm=[0, 2, 1, 3]),
        mk("Reshape", ["ot", "s_tok"], ["o3"], name="heads_merge"),
        mk("MatMul", ["o3", "wp"], ["pr0"], name="proj"),
        mk("Add", ["pr0", "bp"], ["pr"], name="proj_bias"),
        mk("Reshape", ["pr", "s_win"], ["r6"], name="reverse_view"),
        mk("Transpose", ["r6"], ["r6t"], name="reverse_perm", perm=[0, 1, 3, 2, 4, 5]),
        mk("Reshape", ["r6t", "s_img"], ["r"], name="reverse"),
        mk("Add", ["x", "r"], ["y"], name="residual"),
    ]
    inits = [init("wqkv", 6, 18), init("bqkv", 18), init("rel", 2, 4, 4), init("wp", 6, 6),
             init("bp", 6), ints("s_win", [-1, 2, 2, 2, 2, 6]), ints("s_tok", [-1, 4, 6]),
             ints("s_qkv", [-1, 4, 3, 2, 3]), ints("three", [1, 1, 1]), ints("z", [0]),
             ints("s_nw", [-1, 4, 2, 4, 4]), ints("s_att", [-1, 2, 4, 4]),
             ints("s_img", [-1, 4, 4, 6])]
    return graph(nodes, inits, ["N", 4, 4, 6])


def resize_patches_graph():
    """MobileViT's unfold and fold through ONNX: a linear Resize (half_pixel, by scales), the
    Reshape (N, C, H, W) -> (N*C*nh, ph, nw, pw) that merges the batch with the channels and a
    part of H, Transposes and Reshapes to (N*P, patches, C), LayerNormalization and a Dense per
    row, the fold back to (N, C, H, W), a Resize back (align_corners) and a 1x1 Conv."""
    mk = helper.make_node
    nodes = [
        mk("Resize", ["x", "", "up"], ["u"], name="resize_up", mode="linear",
           coordinate_transformation_mode="half_pixel"),
        mk("Reshape", ["u", "s_unf"], ["p4"], name="unfold"),
        mk("Transpose", ["p4"], ["p4t"], name="unfold_t", perm=[0, 2, 1, 3]),
        mk("Reshape", ["p4t", "s_bcp"], ["bc"], name="to_batch"),
        mk("Transpose", ["bc"], ["bct"], name="patch_first", perm=[0, 3, 2, 1]),
        mk("Reshape", ["bct", "s_tok"], ["tok"], name="patches"),
        mk("LayerNormalization", ["tok", "g", "be"], ["ln"], name="norm"),
        mk("MatMul", ["ln", "w"], ["m0"], name="fc"),
        mk("Add", ["m0", "b"], ["m"], name="fc_bias"),
        mk("Reshape", ["m", "s_bcp2"], ["f4"], name="fold_batch"),
        mk("Transpose", ["f4"], ["f4t"], name="fold_t", perm=[0, 3, 2, 1]),
        mk("Reshape", ["f4t", "s_fold"], ["f"], name="fold"),
        mk("Transpose", ["f"], ["ft"], name="fold_t2", perm=[0, 2, 1, 3]),
        mk("Reshape", ["ft", "s_img"], ["img"], name="image"),
        mk("Resize", ["img", "", "down"], ["d"], name="resize_down", mode="linear",
           coordinate_transformation_mode="align_corners"),
        mk("Conv", ["d", "wc"], ["y"], name="conv_1x1"),
    ]
    inits = [f32("up", [1, 1, 2, 2]), f32("down", [1, 1, 0.5, 0.5]),
             ints("s_unf", [-1, 2, 4, 2]), ints("s_bcp", [-1, 4, 16, 4]),
             ints("s_tok", [-1, 16, 4]), init("g", 4), init("be", 4), init("w", 4, 4),
             init("b", 4), ints("s_bcp2", [-1, 4, 16, 4]), ints("s_fold", [-1, 4, 2, 2]),
             ints("s_img", [-1, 4, 8, 8]), init("wc", 3, 4, 1, 1)]
    return graph(nodes, inits, ["N", 4, 4, 4], opset=13)


def merged_readers_graph():
    """The other per-row readers of a merged (N*4, 6) tensor: a Slice of the whole merged axis
    and part of another, ReduceSum, Concat, CumSum, Unsqueeze, Gather at constant indices,
    Squeeze, LogSoftmax, Flatten, then a Reshape back to (N, 16)."""
    mk = helper.make_node
    nodes = [
        mk("Reshape", ["x", "s_rows"], ["t"], name="merge"),
        mk("Slice", ["t", "st", "en", "ax"], ["s"], name="slice"),
        mk("ReduceSum", ["s", "one"], ["r"], name="rsum", keepdims=1),
        mk("Concat", ["s", "r"], ["c"], name="cat", axis=1),
        mk("CumSum", ["c", "one_s"], ["cs"], name="cumsum"),
        mk("Unsqueeze", ["cs", "two"], ["u"], name="unsq"),
        mk("Gather", ["u", "idx"], ["g"], name="gather", axis=1),
        mk("Squeeze", ["g", "two"], ["q"], name="squeeze"),
        mk("LogSoftmax", ["q"], ["ls"], name="logsoftmax", axis=1),
        mk("Flatten", ["ls"], ["f"], name="flatten", axis=1),
        mk("Reshape", ["f", "s_back"], ["y"], name="back"),
    ]
    inits = [ints("s_rows", [-1, 6]), ints("st", [0, 1]), ints("en", [2 ** 62, 5]),
             ints("ax", [0, 1]), ints("one", [1]), ints("one_s", 1), ints("two", [2]),
             ints("idx", [4, 0, 2, 2]), ints("s_back", [-1, 16])]
    return graph(nodes, inits, ["N", 4, 6])


def test_batch_merged_with_windows_and_patches():
    """Both merged-batch graphs match onnx.reference node by node (every merged tensor read
    back as (N, k, ...)): the batch is held unmerged, each op runs per row."""
    imp = agrees(window_attention_graph())
    assert {"Dense", "MatMul", "Softmax"} <= {n.op for n in imp.spec.model.nodes}
    imp = agrees(resize_patches_graph())
    assert {"LayerNorm", "Conv2D", "MatMul"} <= {n.op for n in imp.spec.model.nodes}
    imp = agrees(merged_readers_graph())
    assert {"Slice", "Reduce", "Cumsum", "Gather", "LogSoftmax"} <= {
        n.op for n in imp.spec.model.nodes}


def _merged_refusal(kind):
    mk = helper.make_node
    nodes = [mk("Reshape", ["x", "s_tok"], ["t"], name="merge")]
    inits = [ints("s_tok", [-1, 6])]
    if kind == "softmax":   # over the merged axis 0: across examples
        nodes += [mk("Softmax", ["t"], ["s"], name="mixes", axis=0),
                  mk("Reshape", ["s", "s_back"], ["y"], name="back")]
    elif kind == "fixed":   # a first axis of 8 fixed in the graph: 2 examples' rows at batch 2
        nodes[0] = mk("Reshape", ["x", "s_fixed"], ["t"], name="merge")
        nodes += [mk("Reshape", ["t", "s_back"], ["y"], name="back")]
        inits.append(ints("s_fixed", [8, 6]))
    elif kind == "output":
        nodes[0].output[0] = "y"
    inits.append(ints("s_back", [-1, 24]))
    return graph(nodes, inits, ["N", 4, 6])


@pytest.mark.parametrize("kind,line", [
    ("softmax", "mixes (Softmax): Softmax over the batch axis merged with other rows (it would "
                "mix examples)"),
    ("fixed", "merge (Reshape): a reshape to (8, 6) whose target does not follow the batch size"),
    ("output", "output y: its batch axis is merged with other rows ((8, 6), 4 rows per "
               "example"),
])
def test_merged_batch_readers_that_mix_examples_are_refused(kind, line):
    with pytest.raises(ImportRefused) as e:
        rosetta.from_onnx(_merged_refusal(kind))
    assert len(e.value.lines) == 1 and e.value.lines[0].startswith(line), e.value.lines


def test_every_claimed_op_has_a_graph_here():
    """The graphs above are built again here (no import): every op in the mapping table
    appears in one of them."""
    COVERED.clear()
    for build in (conv_pool_gemm_graphs, normalisation_gate_graph, sequence_linear_graph,
                  tensor_shape_graph, tensor_math_graph, embedding_graph,
                  training_batch_norm_graph, token_patterns_graph, window_attention_graph,
                  resize_patches_graph):
        build()
    assert set(SUPPORTED) <= COVERED, sorted(set(SUPPORTED) - COVERED)


def vit_patches_graph():
    """The exporters' ViT (HF, timm): Conv patches, Reshape (N, C, H, W) -> (N, C, H*W) of the
    image held channels last, Transpose, a class-token initializer Expanded to the batch size
    (Shape of the input) and Concatenated, a position table Added (both parameters), a
    Reshape to (N, T, 3, heads, d) and the batch-moving Transpose (2, 0, 3, 1, 4) read by
    Split + Squeeze (q, k, v), q @ k^T."""
    nodes = [
        helper.make_node("Conv", ["x", "wp", "bp"], ["c"], name="patch", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Reshape", ["c", "s1"], ["r"], name="flat_hw"),
        helper.make_node("Transpose", ["r"], ["t"], name="tokens", perm=[0, 2, 1]),
        helper.make_node("Shape", ["x"], ["sh"], name="shape"),
        helper.make_node("Slice", ["sh", "z", "one"], ["n"], name="batch_size"),
        helper.make_node("Concat", ["n", "one", "one"], ["es"], name="cls_shape", axis=0),
        helper.make_node("Expand", ["cls", "es"], ["ce"], name="cls_expand"),
        helper.make_node("Concat", ["ce", "t"], ["tok"], name="with_cls", axis=1),
        helper.make_node("Add", ["tok", "pos"], ["e"], name="add_pos"),
        helper.make_node("Reshape", ["e", "s2"], ["q5"], name="qkv_view"),
        helper.make_node("Transpose", ["q5"], ["qp"], name="qkv_perm", perm=[2, 0, 3, 1, 4]),
        helper.make_node("Split", ["qp", "three"], ["qs", "ks", "vs"], name="unbind", axis=0),
        helper.make_node("Squeeze", ["qs", "z"], ["q"], name="q"),
        helper.make_node("Squeeze", ["ks", "z"], ["k"], name="k"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["y"], name="scores"),
    ]
    m = graph(nodes, [init("wp", 6, 3, 2, 2), init("bp", 6), init("cls", 1, 1, 6),
                      init("pos", 1, 5, 6), ints("s1", [0, 6, 4]), ints("s2", [0, 5, 3, 2, 1]),
                      ints("z", [0]), ints("one", [1]), ints("three", [1, 1, 1])],
              ["N", 3, 4, 4])
    m.graph.node[-1].output[0] = "y"
    return m


def conv1d_graph():
    """Whisper's front: two 1-D Convs (pads, stride 2) of an (N, C, T) input and a Gelu."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1],
                              kernel_shape=[3]),
             helper.make_node("Relu", ["c1"], ["g"], name="act"),
             helper.make_node("Conv", ["g", "w2", "b2"], ["y"], name="conv2", pads=[1, 1],
                              strides=[2], kernel_shape=[3])]
    return graph(nodes, [init("w1", 4, 3, 3), init("b1", 4), init("w2", 5, 4, 3),
                         init("b2", 5)], ["N", 3, 8])


def shared_layer_graph():
    """ALBERT's one layer applied twice: the same MatMul weight (the second time through an
    Identity, as the TorchScript exporter writes it), bias and LayerNormalization scale and B."""
    nodes = [helper.make_node("Identity", ["w"], ["wi"], name="alias"),
             helper.make_node("MatMul", ["x", "w"], ["m1"], name="mm1"),
             helper.make_node("Add", ["m1", "bias"], ["a1"], name="add1"),
             helper.make_node("LayerNormalization", ["a1", "s", "bb"], ["l1"], name="ln1"),
             helper.make_node("MatMul", ["l1", "wi"], ["m2"], name="mm2"),
             helper.make_node("Add", ["bias", "m2"], ["a2"], name="add2"),
             helper.make_node("LayerNormalization", ["a2", "s", "bb"], ["y"], name="ln2")]
    return graph(nodes, [init("w", 4, 4), init("bias", 4), init("s", 4), init("bb", 4)],
                 ["N", 3, 4])


def test_mask_initializers_stay_constants_and_trained_ones_are_named():
    """ONNX does not say which initializers train. One read outside a weight position is a
    trainable Parameter, named in the notes; one holding float32's lowest value (the dynamo
    exporter's causal mask of scaled_dot_product_attention, HuggingFace's masks) or -inf is a
    mask, a Constant (a step would train its zeros)."""
    imp = agrees(attention_graph())
    assert "bias_mask" in imp.names
    assert any("trainable Parameters" in n and n.endswith(": bias_mask") for n in imp.notes)
    for masked in (float(np.finfo(np.float32).min), float("-inf")):
        imp = agrees(attention_graph(masked))
        assert "bias_mask" not in imp.names and "Parameter" not in [
            n.op for n in imp.spec.model.nodes]
        assert not any("trainable Parameters" in n for n in imp.notes), imp.notes


def position_table_graph():
    """GPT-2's position table read at constant position ids of shape (1, T), added to x."""
    nodes = [helper.make_node("Gather", ["wpe", "pos"], ["p"], name="wpe_at", axis=0),
             helper.make_node("Add", ["x", "p"], ["y"], name="add_pos")]
    return graph(nodes, [init("wpe", 6, 4), ints("pos", [[0, 1, 2]])], ["N", 3, 4])


def test_shared_initializers_are_one_parameter():
    imp = agrees(shared_layer_graph())
    assert sorted(imp.names) == ["bb", "bias", "s", "w"]   # one parameter each, every use
    imp = agrees(position_table_graph())   # the table at fixed positions: still a parameter
    assert list(imp.names) == ["wpe"]


def test_vit_patches_and_batch_moving_permute():
    imp = agrees(vit_patches_graph())
    assert imp.names["cls"].endswith("/value") and imp.names["pos"].endswith("/value")
    imp = agrees(conv1d_graph())
    assert {n.op for n in imp.spec.model.nodes} >= {"Conv1D"}


def token_patterns_graph():
    """RoBERTa's and BART's token-id code as the two torch exporters write it, on int ids
    (N, 6), vocabulary 10, eos 9, pad 1:
    * ``shift_tokens_right``: ScatterND of the ids[:, :-1] (its batch moved to axis 1 by a
      Transpose, as the dynamo exporter writes it) into zeros at rows 1..5 (a Pad); the
      decoder start 2 written at column 0 by ScatterElements of constants (an int Where); the
      same written again by ScatterND at indices (N, 1, 2) built from Range(N) (TorchScript's);
      ``masked_fill(ids == 3, 7)`` (an int Where) and a Cast of ints to bool;
    * a table read by two Gathers (one Parameter); RoBERTa's buffered token-type ids, zeros,
      GatherElements at position ids from CumSum (a constant) and a table read there;
    * BART's last-eos head: NonZero of ids == eos (Cast to bool) -> Transpose -> GatherND of the
      states -> Reshape (N, -1, 4) -> Gather of row -1."""
    mk = helper.make_node
    nodes = [
        mk("Shape", ["x"], ["shp"], name="shape"),
        mk("Slice", ["shp", "z", "one"], ["n"], name="batch_size"),
        mk("ConstantOfShape", ["shp"], ["zeros"], name="zeros",
           value=numpy_helper.from_array(np.array([0], np.int64))),
        mk("Transpose", ["zeros"], ["zt"], name="zeros_t", perm=[1, 0]),
        mk("Slice", ["x", "z", "five", "one"], ["head"], name="head"),
        mk("Transpose", ["head"], ["ht"], name="head_t", perm=[1, 0]),
        mk("ScatterND", ["zt", "rows", "ht"], ["st"], name="shift"),
        mk("Transpose", ["st"], ["s0"], name="shift_back", perm=[1, 0]),
        mk("Concat", ["n", "one"], ["n1"], name="n1", axis=0),
        mk("Expand", ["zero11", "n1"], ["col0"], name="col0"),
        mk("Expand", ["two11", "n1"], ["start"], name="start"),
        mk("ScatterElements", ["s0", "col0", "start"], ["s1"], name="set_start", axis=1),
        mk("Squeeze", ["n", "z"], ["n0"], name="n0"),
        mk("Range", ["z0", "n0", "one0"], ["r"], name="range"),
        mk("Unsqueeze", ["r", "ax12"], ["r3"], name="r3"),
        mk("Mul", ["r3", "z0"], ["c3"], name="c3"),
        mk("Concat", ["r3", "c3"], ["ij"], name="ij", axis=-1),
        mk("Expand", ["two1", "n"], ["upd"], name="upd"),
        mk("Unsqueeze", ["upd", "one"], ["upd2"], name="upd2"),
        mk("ScatterND", ["s1", "ij", "upd2"], ["s2"], name="set_start_nd"),
        mk("Equal", ["s2", "three"], ["is3"], name="is3"),
        mk("Where", ["is3", "seven", "s2"], ["s3"], name="masked_fill"),
        mk("Cast", ["s3"], ["nz"], name="nonzero_ids", to=TensorProto.BOOL),
        mk("Gather", ["table", "s3"], ["e1"], name="embed_shifted"),
        mk("Gather", ["table", "x"], ["e0"], name="embed"),
        mk("Unsqueeze", ["nz", "two1"], ["nz3"], name="nonzero_axis"),
        mk("Where", ["nz3", "e1", "half"], ["e2"], name="where_nonzero"),
        mk("Add", ["e0", "e2"], ["e3"], name="add_embeds"),
        mk("Equal", ["x", "eleven"], ["never"], name="never"),
        mk("Not", ["never"], ["ok"], name="ok"),
        mk("Cast", ["ok"], ["oki"], name="oki", to=TensorProto.INT64),
        mk("CumSum", ["oki", "one0"], ["pos"], name="positions"),
        mk("Concat", ["n", "minus1"], ["nb"], name="nb", axis=0),
        mk("Expand", ["tt", "n1"], ["ttx"], name="tt_expand"),
        mk("GatherElements", ["ttx", "pos"], ["tti"], name="tt_ids", axis=1),
        mk("Gather", ["tt_table", "tti"], ["te"], name="tt_embed"),
        mk("Add", ["e3", "te"], ["h"], name="add_tt"),
        mk("Equal", ["x", "nine"], ["eos"], name="eos"),
        mk("Cast", ["eos"], ["eosb"], name="eos_bool", to=TensorProto.BOOL),
        mk("NonZero", ["eosb"], ["nzp"], name="nonzero"),
        mk("Transpose", ["nzp"], ["nzt"], name="positions_t", perm=[1, 0]),
        mk("GatherND", ["h", "nzt"], ["sel"], name="selected"),
        mk("Concat", ["n", "minus1", "four"], ["gshape"], name="gshape", axis=0),
        mk("Reshape", ["sel", "gshape"], ["grp"], name="grouped"),
        mk("Gather", ["grp", "last"], ["y"], name="last_eos", axis=1),
    ]
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    inits = [i64("z", [0]), i64("one", [1]), i64("five", [5]), i64("rows", [[1], [2], [3], [4],
                                                                           [5]]),
             i64("zero11", [[0]]), i64("two11", [[2]]), i64("z0", 0), i64("one0", 1),
             i64("ax12", [1, 2]), i64("two1", [2]), i64("three", 3), i64("seven", 7),
             i64("eleven", 11), i64("minus1", [-1]), i64("tt", [[0] * 8]), i64("nine", 9),
             i64("four", [4]), i64("last", -1), init("table", 10, 4), init("tt_table", 2, 4),
             f32("half", 0.5)]
    return graph(nodes, inits, ["N", 6], in_type=TensorProto.INT64)


def test_token_patterns_scatter_gather_nonzero():
    """Every mapping of ``token_patterns_graph`` against onnx.reference in float64 (node by
    node) and onnxruntime in float32 (the certificate on torch), on an example batch with one
    eos (9) per example; the shifted ids a Pad, the token-type ids a constant, the head a
    weighted sum."""
    ids = np.array([[4, 3, 9, 5, 1, 6], [9, 7, 3, 1, 8, 0], [5, 6, 2, 3, 9, 3]], np.int64)
    imp = rosetta.from_onnx(token_patterns_graph(), example_inputs=ids)
    worst, blame = reference_agreement(imp)
    assert blame == "" and worst < 1e-10
    ops = [n.op for n in imp.spec.model.nodes]
    assert "Pad" in ops and "Where" in ops and ops.count("Parameter") == 2
    assert sorted(imp.names) == ["table", "tt_table"]
    cert = imp.certify(("torch",))
    rows = {r["backend"]: r for r in cert.results}
    assert cert.passed and rows["onnxruntime"]["worst"]["forward"] <= rows["onnxruntime"][
        "worst"]["bound"], cert.table()
    # NonZero's positions read other than by the head's pattern: refused, naming the reader
    m = token_patterns_graph()
    m.graph.node[-1].op_type = "Identity"
    del m.graph.node[-1].input[1:]
    del m.graph.node[-1].attribute[:]
    with pytest.raises(ImportRefused, match=r"last_eos \(Identity\): NonZero's data-dependent"):
        rosetta.from_onnx(m)
    mk = helper.make_node
    # at a fixed batch size (2): the token-type ids are two equal rows, the table a Parameter
    static = graph([mk("Equal", ["x", "one0"], ["e"], name="pad"),
                    mk("Not", ["e"], ["m"], name="keep"),
                    mk("Cast", ["m"], ["mi"], name="keep_int", to=TensorProto.INT64),
                    mk("CumSum", ["mi", "one0"], ["pos"], name="positions"),
                    mk("GatherElements", ["buf", "pos"], ["tt"], name="tt_ids", axis=1),
                    mk("Gather", ["tt_table", "tt"], ["te"], name="tt_embed"),
                    mk("Gather", ["table", "x"], ["we"], name="embed"),
                    mk("Add", ["we", "te"], ["y"], name="add")],
                   [ints("one0", 1), ints("buf", [[1] * 6] * 2), init("tt_table", 2, 4),
                    init("table", 10, 4)], [2, 4], in_type=TensorProto.INT64)
    imp = agrees(static)
    assert sorted(imp.names) == ["table", "tt_table"]
    bad = graph([mk("GatherElements", ["x", "i"], ["g"], name="ge", axis=1),
                 mk("Relu", ["g"], ["y"], name="after")], [ints("i", [[0, 1, 0]])], [1, 3])
    with pytest.raises(ImportRefused) as e:
        rosetta.from_onnx(bad)
    assert e.value.lines == [
        "ge (GatherElements): a GatherElements other than of a constant at computed indices "
        "(the spec gathers no per-example elements)"]


# --- torch exports, certified on every backend -----------------------------------------------

def _net():
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(4 * 3 * 3, 5)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))

    return Net()


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_export_eval_folds_batch_norm_inference_only(tmp_path, dynamo):
    import torch

    net = _net().eval()
    path = tmp_path / "net.onnx"
    kw = ({"dynamic_shapes": ({0: torch.export.Dim("N")},)} if dynamo
          else {"dynamic_axes": {"x": {0: "N"}}})
    torch.onnx.export(net, (torch.randn(2, 3, 6, 6),), str(path), input_names=["x"],
                      dynamo=dynamo, **kw)
    imp = rosetta.from_onnx(path)
    assert "folded a BatchNorm" in imp.inference_only
    assert not any(n.op == "BatchNorm" for n in imp.spec.model.nodes)
    with pytest.raises(rosetta.RosettaError, match="inference only, training refused"):
        imp.refuse_training()
    if not dynamo:
        with pytest.raises(ImportRefused, match="the graph is inference only"):
            rosetta.from_onnx(path, torch_module=net, example_inputs=torch.randn(2, 3, 6, 6))
    worst, blame = reference_agreement(imp)
    assert blame == "" and worst < 1e-10
    if dynamo:   # the full certificate once (CI time): the TorchScript export's
        return
    cert = imp.certify(("torch", "jax", "tensorflow"))
    assert cert.passed, cert.table()
    rows = {r["backend"]: r for r in cert.results}
    assert set(rows) == {"torch", "jax", "tensorflow", "onnxruntime"}
    assert all(rows[b]["worst"]["forward"] < 1e-10 for b in ("torch", "jax", "tensorflow"))


def test_torch_training_export_keeps_batch_norm_and_the_command(tmp_path, capsys):
    import torch

    from rosetta.cli import main

    net = _net().train()
    path = tmp_path / "train.onnx"
    torch.onnx.export(net, (torch.randn(2, 3, 6, 6),), str(path), input_names=["x"],
                      dynamo=False, training=torch.onnx.TrainingMode.TRAINING,
                      do_constant_folding=False, dynamic_axes={"x": {0: "N"}})
    rc = main(["import", str(path), "--out", str(tmp_path / "ckpt"), "--backends", "torch"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "onnx.reference float64, training mode" in out and "onnxruntime" in out
    imp = rosetta.from_onnx(path)
    assert imp.inference_only == "" and imp.names["bn.running_var"].endswith("/var")
    assert (tmp_path / "ckpt").is_dir()
    assert (tmp_path / "ckpt.certificate" / "certificate.json").is_file()
    # with the torch model it came from: its optimizer, its BatchNorm's exact momentum and
    # epsilon (the graph holds their float32 roundings), gradients and steps certified
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    imp = rosetta.from_onnx(path, torch_module=net, example_inputs=torch.randn(2, 3, 6, 6),
                            optimizer=opt, loss=torch.nn.CrossEntropyLoss())
    bn = next(n for n in imp.spec.model.nodes if n.op == "BatchNorm")
    assert bn.attrs["momentum"] == 0.9 and bn.attrs["running_var"] == "unbiased"
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed, cert.table()
    assert [r["against"] for r in cert.results][-1] == "torch source: gradients, 2 steps"


def test_command_refuses_with_one_line_per_node(tmp_path, capsys):
    from rosetta.cli import main

    m = graph([helper.make_node("Round", ["x"], ["e"], name="round1"),
               helper.make_node("Sign", ["e"], ["y"], name="sign1")], [], ["N", 3])
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    rc = main(["import", str(path), "--out", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["rosetta import: round1 (Round): unsupported ONNX op Round (no spec "
                               "op reproduces it)"]
    assert not (tmp_path / "ckpt").exists()



def test_docs_table_is_generated_from_the_mapping_table():
    from pathlib import Path

    from rosetta.importers.onnx_ops import markdown_table

    table = markdown_table()
    assert all(f"| {op} |" in table for op in SUPPORTED)
    page = Path(__file__).resolve().parents[2] / "docs" / "guide" / "import.md"
    assert "<!-- onnx-ops -->" in page.read_text()
