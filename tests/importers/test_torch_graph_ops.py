"""rosetta.from_torch on tiny hand-written modules for the mapping side: stochastic depth
(torchvision's StochasticDepth written out, as torchvision is not a test dependency), layout
tracking through permutes (ConvNeXt's channels-last LayerNorm + Linear), layer scale.
Small: 4x4 inputs, float64, torch certificate of 1-2 steps."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402
from rosetta.importers import ImportRefused  # noqa: E402


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth, its forward as torchvision writes it."""

    def __init__(self, p, mode):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return x * noise.div_(1.0 - self.p)


StochasticDepth.__module__ = "torchvision.ops.stochastic_depth"   # what the importer matches


class Residual(nn.Module):
    def __init__(self, mode="row"):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.sd = StochasticDepth(0.4, mode)
        self.fc = nn.Linear(48, 2)

    def forward(self, x):
        return self.fc(torch.flatten(x + self.sd(self.conv(x)), 1))


def _import(module, x, **kw):
    torch.manual_seed(0)
    m = module.double()
    return rosetta.from_torch(m, (x,), optimizer=torch.optim.SGD(m.parameters(), lr=0.1), **kw)


def _x(*shape):
    torch.manual_seed(1)
    return torch.randn(*shape, dtype=torch.float64)


def test_stochastic_depth_imports_and_certifies_with_injected_masks():
    imp = _import(Residual(), _x(4, 3, 4, 4))
    node = next(n for n in imp.spec.model.nodes if n.name == "sd")
    assert node.op == "StochasticDepth" and node.attrs["rate"] == 0.4
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed and cert.dropout == "inject", cert.table()
    assert max(cert.results[0]["worst"].values()) < 1e-12


def test_stochastic_depth_batch_mode_is_refused_with_one_line():
    with pytest.raises(ImportRefused) as e:
        _import(Residual("batch"), _x(2, 3, 4, 4))
    assert len(e.value.lines) == 1
    assert e.value.lines[0].startswith("sd (StochasticDepth): unsupported module: "
                                       "StochasticDepth(mode='batch')"), e.value.lines


class PermutedBlock(nn.Module):
    """ConvNeXt's block without the layer scale: depthwise conv, permute to channels last,
    LayerNorm + Linear + GELU + Linear, permute back, residual; then a view that splits and
    merges held axes, a transposed softmax and a flatten."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.ln = nn.LayerNorm(4)
        self.l1, self.l2 = nn.Linear(4, 8), nn.Linear(8, 4)
        self.fc = nn.Linear(36, 2)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = x + self.l2(nn.functional.gelu(self.l1(self.ln(y)))).permute(0, 3, 1, 2)
        z = y.permute(0, 2, 3, 1).reshape(y.shape[0], 9, 4).transpose(1, 2)   # (N, 4, 9)
        z = torch.softmax(z, dim=2).transpose(1, 2)
        return self.fc(z.reshape(z.shape[0], -1))


def test_permutes_cancel_and_axis_arguments_follow_the_held_order():
    imp = _import(PermutedBlock(), _x(2, 4, 3, 3))
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops == ["Conv2D", "LayerNorm", "Dense", "Activation", "Dense", "Add", "Reshape",
                   "Activation", "Flatten", "Dense"], ops     # no layer for any permute
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


class MixedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        y = self.conv(x).transpose(1, 3)                       # (N, W, H, C)
        return self.fc(y.reshape(y.shape[0], 3, 12)[:, 0])   # a select of the middle axis


def test_a_view_of_axes_held_out_of_order_gets_a_transpose_first():
    imp = _import(MixedView(), _x(2, 4, 3, 3))
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops[:3] == ["Conv2D", "Transpose", "Reshape"], ops
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


class BatchView(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(x.reshape(-1, 8))   # 72 / 8 = 9 rows: not 2 examples' rows apart


def test_a_view_that_mixes_examples_is_refused_naming_it():
    with pytest.raises(ImportRefused) as e:
        _import(BatchView(), _x(2, 4, 3, 3))
    assert "a view that mixes the batch axis ((2, 4, 3, 3) -> (9, 8)" in e.value.lines[0], \
        e.value.lines


class ScaledShuffle(nn.Module):
    """Layer scale (torchvision's (C, 1, 1) parameter, timm's gamma.reshape(1, -1, 1, 1)),
    scalar arithmetic, and ShuffleNet's channel shuffle (view, transpose, view) before a pool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.layer_scale = nn.Parameter(torch.rand(4, 1, 1))
        self.gamma = nn.Parameter(torch.rand(4))
        self.fc = nn.Linear(36, 2)

    def forward(self, x):
        y = self.layer_scale * self.conv(x) + x
        y = y.mul(self.gamma.reshape(1, -1, 1, 1)) * 0.5 - 1.0
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.fc(torch.flatten(nn.functional.max_pool2d(y, 1), 1))


def test_layer_scale_scalar_math_and_channel_shuffle_import_exactly():
    imp = _import(ScaledShuffle(), _x(2, 4, 3, 3))
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops.count("Parameter") == 2 and ops.count("Transpose") == 1, ops
    assert imp.names["layer_scale"].endswith("/value") and imp.names["gamma"].endswith("/value")
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


class Pieces(nn.Module):
    """chunk, slices with steps, a negative select, split with sizes of a permuted tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        a, b, c = self.conv(x).chunk(3, dim=1)                          # (N, 2, 3, 3) each
        z = (a * b + c)[:, :, 1:, ::2].select(3, -1)                    # (N, 2, 2)
        p, q = torch.split(torch.cat([a, b, c], 1).permute(0, 2, 3, 1), [2, 4], dim=3)
        return self.fc(torch.cat([z.flatten(1), p[:, 0, 0], q[:, 1, 2, :2]], 1))


def test_chunk_split_slice_select_map_to_slice_and_squeeze():
    imp = _import(Pieces(), _x(2, 4, 3, 3))
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops.count("Slice") == 13 and ops.count("Squeeze") == 5, ops
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


class Functional(nn.Module):
    """Tensor math written with functional calls: a hand LayerNorm (mean, var, rsqrt), scaled
    dot-product attention by hand (matmul, softmax, bmm), a parameter matrix, unary math,
    reductions."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 1)
        self.w = nn.Parameter(torch.randn(6, 5))
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)                      # (N, 9, 6)
        mu, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True, correction=0)
        t = (t - mu) * torch.rsqrt(var + 1e-5)
        a = torch.softmax(t @ t.transpose(1, 2) * 0.125, dim=-1)        # (N, 9, 9)
        t = torch.bmm(a, t) @ self.w                                    # (N, 9, 5)
        t = torch.exp(-t.abs()) + t.pow(2) + torch.erf(t)
        return self.fc(t.amax(1) + t.sum(dim=1) / 9.0)


def test_functional_tensor_math_maps_to_the_tensor_ops():
    imp = _import(Functional(), _x(2, 4, 3, 3))
    ops = {n.op for n in imp.spec.model.nodes}
    assert {"Reduce", "MatMul", "Parameter", "Unary", "Power", "Subtract", "Divide",
            "Transpose"} <= ops, ops
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


class UnequalAdaptive(nn.Module):
    """AdaptiveAvgPool2d from 5x4 to (3, 3): windows of sizes 2-3 (rows) and 2 (columns),
    overlapping, the case no fixed-stride pool reproduces."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.fc = nn.Linear(27, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.conv(x)), 1))


def test_adaptive_average_pooling_with_unequal_windows_is_exact():
    from rosetta.importers.torch_ops import adaptive_avg_matrix, adaptive_windows

    assert adaptive_windows(5, 3) == [(0, 2), (1, 4), (3, 5)]
    for (h, w), (oh, ow) in (((5, 4), (3, 3)), ((2, 2), (7, 7)), ((7, 6), (4, 5))):
        x = torch.randn(2, 3, h, w, dtype=torch.float64)   # (2, 2) -> (7, 7): VGG at 64x64
        want = nn.functional.adaptive_avg_pool2d(x, (oh, ow)).numpy()
        held = x.numpy().transpose(0, 2, 3, 1).reshape(2, h * w, 3)
        got = (adaptive_avg_matrix((h, w), (oh, ow)) @ held).reshape(2, oh, ow, 3)
        assert np.max(np.abs(got.transpose(0, 3, 1, 2) - want)) < 1e-15
    imp = _import(UnequalAdaptive(), _x(2, 2, 5, 4))
    assert [n.op for n in imp.spec.model.nodes].count("MatMul") == 1
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


class AdaptiveMax(nn.Module):
    """tanh(conv) -> AdaptiveMaxPool2d(out) -> Linear; ``indices``: its argmax positions read."""

    def __init__(self, out, indices=False):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.pool = nn.AdaptiveMaxPool2d(out, return_indices=indices)
        self.fc = nn.Linear(3 * out[0] * out[1], 2)
        self.indices = indices

    def forward(self, x):
        y = self.pool(torch.tanh(self.conv(x)))
        if self.indices:
            y = y[0] + y[1].to(y[0].dtype)
        return self.fc(torch.flatten(y, 1))


@pytest.mark.parametrize("hw, out", [((5, 4), (3, 3)), ((2, 2), (7, 7)), ((6, 4), (3, 2))])
def test_adaptive_max_pooling_of_unequal_or_equal_windows_certifies(hw, out):
    """Unequal (and, from (2, 2) to (7, 7), overlapping) windows: a row pass and a column pass of
    Slice + Reduce(max) + Concatenate; the gradient summed where windows overlap, as torch's."""
    imp = _import(AdaptiveMax(out), _x(2, 2, *hw))
    ops = [n.op for n in imp.spec.model.nodes]
    assert ("MaxPool2D" in ops) == (hw[0] % out[0] == 0 and hw[1] % out[1] == 0), ops
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


def test_max_pool_indices_read_by_the_model_are_refused_in_one_line():
    with pytest.raises(ImportRefused) as e:
        _import(AdaptiveMax((3, 3), indices=True), _x(2, 2, 5, 4))
    assert len(e.value.lines) == 1 and "indices of a max pool" in e.value.lines[0]


class WrittenOutGelus(nn.Module):
    """HuggingFace's NewGELUActivation (GPT-2's gelu_new) and the erf GELU written out by hand,
    a Dropout(0) between them, and a near miss (0.5 x (1 + tanh(0.79 x))) left written out."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        import math

        h = self.l1(x)
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                         * (h + 0.044715 * torch.pow(h, 3.0))))
        h = self.l2(self.drop(h))
        h = h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))
        h = 0.5 * h * (1.0 + torch.tanh(0.79 * h))
        return self.l3(h)


def test_written_out_gelus_map_to_the_gelu_op_and_certify():
    imp = _import(WrittenOutGelus(), _x(3, 4))
    nodes = imp.spec.model.nodes
    gelus = [n.attrs["approximate"] for n in nodes
             if n.op == "Activation" and n.attrs["fn"] == "gelu"]
    assert gelus == ["tanh", "none"], [(n.op, n.attrs) for n in nodes]
    assert not any(n.op in ("Dropout", "Power", "Unary") for n in nodes), [n.op for n in nodes]
    assert sum(n.op == "Activation" and n.attrs["fn"] == "tanh" for n in nodes) == 1  # near miss
    assert any("gelu_tanh x1" in note and "gelu_erf x1" in note for note in imp.notes), imp.notes
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()


class WrittenOutAttention(nn.Module):
    """Attention written out as HuggingFace's eager code writes it: q k^T * scale + a folded
    additive causal mask (finfo.min), softmax, Dropout(0), @ v; q k^T / sqrt(d) with
    where(keep, s, -inf) (k^T from a tensor, not a transpose of k); and a near miss (a softmax
    over the queries) left written out."""

    def __init__(self):
        super().__init__()
        self.qkv, self.out = nn.Linear(4, 12), nn.Linear(12, 2)
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        n, t, _ = x.shape
        q, k, v = (z.view(n, t, 2, 2).transpose(1, 2) for z in self.qkv(x).chunk(3, dim=-1))
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        bias = torch.zeros(t, t, dtype=x.dtype).masked_fill(~causal, torch.finfo(x.dtype).min)
        a = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * 0.7 + bias, dim=-1)
        a = torch.matmul(self.drop(a), v)
        kt = k.permute(0, 1, 3, 2).contiguous() * 1.0
        s = torch.where(causal, torch.matmul(q, kt) / 2.0 ** 0.5, float("-inf"))
        b = torch.matmul(torch.softmax(s, dim=-1), v)
        c = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)), dim=-2), v)
        return self.out(torch.cat([a, b, c], -1).transpose(1, 2).reshape(n, t, 12))


def test_written_out_attention_maps_to_dot_product_attention_and_certifies():
    from rosetta.importers.hf import TokenCrossEntropy

    imp = _import(WrittenOutAttention(), _x(2, 3, 4), loss=TokenCrossEntropy())
    nodes = imp.spec.model.nodes
    dpa = [n for n in nodes if n.op == "DotProductAttention"]
    assert [(len(n.inputs), n.attrs["scale"], n.attrs["causal"]) for n in dpa] == [
        (4, 0.7, False), (4, 1.0 / 2.0 ** 0.5, False)], [(n.op, n.attrs) for n in nodes]
    assert sum(n.op == "Activation" and n.attrs["fn"] == "softmax" for n in nodes) == 1
    assert not any(n.op == "Dropout" for n in nodes)
    assert any("attention x2" in note for note in imp.notes), imp.notes
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed and max(cert.results[0]["worst"].values()) < 1e-12, cert.table()
