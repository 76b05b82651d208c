"""HuggingFace-style models through from_torch: constant folding (masks and position ids from
shapes), tied parameters, and tiny BERT / GPT-2 certified (the sweep is
``python -m rosetta.conformance.import_sweep --hf``)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rosetta.importers import ImportRefused, from_torch  # noqa: E402
from rosetta.importers.hf import TokenCrossEntropy  # noqa: E402
from rosetta.errors import RosettaError  # noqa: E402


class MaskedLM(torch.nn.Module):
    """Token + position embeddings (positions from arange), one causal self-attention score
    masked with the dtype's minimum, a tied output projection."""

    def __init__(self, vocab=11, dim=6, tie=True):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, dim)
        self.pos = torch.nn.Embedding(8, dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        if tie:
            self.head.weight = self.tok.weight

    def forward(self, ids):
        t = ids.shape[1]
        pos = torch.arange(t).unsqueeze(0)
        h = self.tok(ids) + self.pos(pos)
        s = h @ h.transpose(1, 2) / h.shape[-1] ** 0.5
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        s = s.masked_fill(causal, torch.finfo(s.dtype).min)
        h = torch.softmax(s, dim=-1) @ h
        return self.head(self.norm(h))


def _ids(n=2, t=5, vocab=11):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(0))


def test_folded_mask_positions_and_tied_head_certify():
    torch.manual_seed(0)
    m = MaskedLM().double()
    imp = from_torch(m, _ids(), loss=TokenCrossEntropy(), name="masked_lm")
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops.count("Constant") == 2        # the positions and the causal mask
    consts = [n.attrs["value"] for n in imp.spec.model.nodes if n.op == "Constant"]
    assert any(np.array_equal(c, np.arange(5)) for c in consts)
    assert any(np.array_equal(c, np.triu(np.ones((5, 5), np.int64), 1)) for c in consts)
    # the tied table is one Parameter read by the lookup (Gather) and the head (MatMul)
    assert ops.count("Parameter") == 1 and "Gather" in ops and "Embedding" in ops
    assert imp.names["tok.weight"].endswith("/value") and "head.weight" not in imp.names
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results


def test_untied_head_is_a_dense():
    torch.manual_seed(0)
    imp = from_torch(MaskedLM(tie=False).double(), _ids(), loss=TokenCrossEntropy())
    ops = [n.op for n in imp.spec.model.nodes]
    assert "Parameter" not in ops and ops.count("Dense") == 1


class PerExample(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.lin(x) + torch.arange(x.shape[0], dtype=x.dtype)[:, None]


def test_constant_differing_per_example_is_refused():
    with pytest.raises(ImportRefused) as e:
        from_torch(PerExample().double(), torch.randn(2, 3, dtype=torch.float64))
    assert len(e.value.lines) == 1 and "differ per example" in e.value.lines[0]


@pytest.mark.parametrize("name,backends", [("bert", ("torch",)),
                                           ("gpt2", ("torch", "jax"))])
def test_tiny_hf_model_certifies(name, backends):
    pytest.importorskip("transformers")
    from rosetta.conformance.hf_models import build

    model, x, loss = build(name, hidden=16, layers=1)
    imp = from_torch(model, x, loss=loss, name=name)
    cert = imp.certify(backends, steps=1, dropout="off")
    assert cert.passed, cert.results


class Attention(torch.nn.Module):
    """Functional scaled_dot_product_attention (causal, and with a folded boolean mask), and
    (``mha``) nn.MultiheadAttention after it."""

    def __init__(self, dim=8, heads=2, mha=False):
        super().__init__()
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True) if mha else None
        self.heads = heads
        self.out = torch.nn.Linear(dim, 3)

    def forward(self, x):
        n, t, e = x.shape
        q, k, v = (z.view(n, t, self.heads, e // self.heads).transpose(1, 2)
                   for z in self.qkv(x).chunk(3, dim=-1))
        keep = torch.ones(t, t, dtype=torch.bool).tril()
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = a + torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                                                 scale=0.3)
        h = a.transpose(1, 2).reshape(n, t, e)
        if self.mha is not None:
            h = self.mha(h, h, h, need_weights=False)[0]
        return self.out(h)


def test_sdpa_and_multihead_attention_certify():
    torch.manual_seed(0)
    imp = from_torch(Attention().double(), torch.randn(2, 5, 8, dtype=torch.float64),
                     loss=TokenCrossEntropy())
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results


def test_multihead_attention_self_attention_certifies():
    """nn.MultiheadAttention (self-attention, batch_first) after the functional attention: its
    packed in_proj_weight is one Dense of 3E units sliced into q, k, v (SGD: the key bias's
    gradient is 0 in exact math, rounding noise on both sides, which Adam's 1/eps scales up)."""
    torch.manual_seed(0)
    m = Attention(mha=True).double()
    imp = from_torch(m, torch.randn(2, 5, 8, dtype=torch.float64), loss=TokenCrossEntropy(),
                     optimizer=torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    assert imp.names["mha.in_proj_weight"] == "mha_in_proj/kernel"
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed, cert.results


class Encoder(torch.nn.Module):
    """nn.TransformerEncoder of two pre-norm GELU layers (batch_first), its first position
    classified."""

    def __init__(self, dropout=0.0, batch_first=True, cross=False):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=dropout, norm_first=True,
                                                 activation="gelu", batch_first=batch_first)
        self.enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.cross = torch.nn.MultiheadAttention(8, 2, batch_first=True) if cross else None
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        h = self.enc(x)
        if self.cross is not None:
            h = self.cross(h, x, x)[0]
        return self.fc(h[:, 0])


def test_transformer_encoder_layers_certify_and_their_attention_dropout_needs_dropout_off():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    m = Encoder(dropout=0.1).double()
    imp = from_torch(m, x, loss=torch.nn.CrossEntropyLoss(),
                     optimizer=torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(RosettaError, match="self_attn .*dropout='off'"):
        imp.certify(("torch",), steps=1)       # the attention dropout is drawn inside the call
    cert = imp.certify(("torch",), steps=2, dropout="off")
    assert cert.passed, cert.results


def test_multihead_attention_on_a_sequence_first_model_input_is_refused_in_one_line():
    """batch_first=False on the model's own (T, N, E) input: the spec's batch is axis 0."""
    x = torch.randn(5, 2, 8, dtype=torch.float64)
    with pytest.raises(ImportRefused) as e:
        from_torch(Encoder(batch_first=False).double(), x, loss=torch.nn.CrossEntropyLoss())
    assert len(e.value.lines) == 1 and "batch_first=False" in e.value.lines[0], e.value.lines


E_, H_, T_, S_ = 8, 2, 3, 4      # embed, heads, queries, keys


class Attend(torch.nn.Module):
    """nn.MultiheadAttention on tensors computed from x (N, S, E): ``mode`` kv (cross-attention,
    key is value, T queries), three (query, key, value differ), qk (query is key, value
    differs), and the self-attention masks: float (``generate_square_subsequent_mask``), bool
    (True = not allowed), causal (``is_causal=True`` with its mask), buffer (a float buffer),
    finite (a float mask without -inf, added), pad (a constant key_padding_mask equal for
    every example); ``bf``: batch_first, the model transposing to (T, N, E) and back."""

    def __init__(self, mode="kv", bf=True, kdim=None, need_weights=False):
        super().__init__()
        self.mode, self.bf, self.need_weights = mode, bf, need_weights
        self.q = torch.nn.Linear(E_, E_)
        self.kv = torch.nn.Linear(E_, kdim or E_)
        self.mha = torch.nn.MultiheadAttention(E_, H_, batch_first=bf, kdim=kdim, vdim=kdim)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(S_))
        self.fc = torch.nn.Linear(E_, 3)

    def forward(self, x):
        k = self.kv(x)
        if self.mode in ("kv", "three"):                # cross-attention: T queries
            q = self.q(x[:, :T_])
        else:                                           # self-attention (qk: key is query)
            q = k = self.q(x) + k
        v = torch.tanh(k) if self.mode in ("three", "qk") else k
        kw = {}
        if self.mode == "float":
            kw["attn_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(
                S_, dtype=x.dtype)
        elif self.mode == "bool":
            kw["attn_mask"] = torch.ones(S_, S_, dtype=torch.bool).triu(1)
        elif self.mode == "causal":
            kw["attn_mask"], kw["is_causal"] = self.mask, True
        elif self.mode == "buffer":
            kw["attn_mask"] = self.mask
        elif self.mode == "finite":
            kw["attn_mask"] = torch.arange(S_ * S_, dtype=x.dtype).reshape(S_, S_) / 10
        elif self.mode == "pad":
            kw["key_padding_mask"] = (torch.arange(S_) >= S_ - 1).expand(x.shape[0], S_)
        if not self.bf:
            q, k, v = (z.transpose(0, 1) for z in (q, k, v))
        y = self.mha(q, k, v, need_weights=self.need_weights, **kw)[0]
        return self.fc(y if self.bf else y.transpose(0, 1))


def _certify_attend(m, backends=("torch",), steps=3):
    torch.manual_seed(0)
    imp = from_torch(m, torch.randn(2, S_, E_, dtype=torch.float64), loss=torch.nn.MSELoss(),
                     optimizer=torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    return imp, imp.certify(backends, steps=steps)


@pytest.mark.parametrize("kw, weight", [
    ({"mode": "kv", "need_weights": True}, "mha_in_proj/value"),
    ({"mode": "three", "bf": False}, "mha_in_proj/value"),
    ({"mode": "qk"}, "mha_in_proj/value"),
    ({"mode": "three", "kdim": 6}, None),
    ({"mode": "float", "bf": False}, "mha_in_proj/value"),   # (three transposes: torch's
    # own call then sees a query, key and value that differ)
    ({"mode": "bool", "need_weights": True}, "mha_in_proj/kernel"),
    ({"mode": "causal"}, "mha_in_proj/kernel"),
    ({"mode": "buffer"}, "mha_in_proj/kernel"),
    ({"mode": "finite"}, "mha_in_proj/kernel"),
    ({"mode": "pad"}, "mha_in_proj/kernel")])
def test_multihead_attention_cross_masks_and_sequence_first_certify(kw, weight):
    """Cross-attention keeps the packed in_proj_weight one Parameter (three MatMuls read its
    column blocks); kdim/vdim are three Dense kernels and the packed bias one Parameter; the
    masks reach the scores as -inf (Where) or added (finite); SGD: the key bias's gradient is 0
    in exact math."""
    imp, cert = _certify_attend(Attend(**kw).double())
    assert cert.passed, cert.results
    if weight is None:
        assert imp.names["mha.k_proj_weight"] == "mha_k_proj/kernel"
        assert imp.names["mha.in_proj_bias"] == "mha_in_proj_bias/value"
    else:
        assert imp.names["mha.in_proj_weight"] == weight
    ops = [n.op for n in imp.spec.model.nodes]
    masked = kw["mode"] not in ("kv", "three", "qk")
    assert ("Where" in ops) == (masked and kw["mode"] != "finite"), ops


class Seq2Seq(torch.nn.Module):
    """nn.Transformer (one encoder and one decoder layer, batch_first=False, a causal tgt_mask):
    src is x (N, S, E), tgt a projection of its first T positions (the importer takes one
    model input)."""

    def __init__(self):
        super().__init__()
        self.tgt = torch.nn.Linear(E_, E_)
        self.net = torch.nn.Transformer(E_, H_, 1, 1, 16, dropout=0.1)
        self.fc = torch.nn.Linear(E_, 3)

    def forward(self, x):
        tgt = self.tgt(x[:, :T_]).transpose(0, 1)
        mask = torch.nn.Transformer.generate_square_subsequent_mask(T_, dtype=x.dtype)
        y = self.net(x.transpose(0, 1), tgt, tgt_mask=mask, tgt_is_causal=True)
        return self.fc(y.transpose(0, 1))


def test_transformer_encoder_decoder_certifies():
    torch.manual_seed(0)
    m = Seq2Seq().double()
    imp = from_torch(m, torch.randn(2, S_, E_, dtype=torch.float64), loss=torch.nn.MSELoss(),
                     optimizer=torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    assert imp.names["net.decoder.layers.0.multihead_attn.in_proj_weight"].endswith("/value")
    cert = imp.certify(("torch",), steps=2, dropout="off")
    assert cert.passed, cert.results


class Refused(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.mha = torch.nn.MultiheadAttention(E_, H_, batch_first=True,
                                               add_bias_kv=kind == "bias_kv")

    def forward(self, x):
        kw = {"need_weights": False}
        if self.kind == "pad_input":
            kw["key_padding_mask"] = x[..., 0] > 1.5
        elif self.kind == "pad_rows":
            kw["key_padding_mask"] = (torch.arange(2)[:, None] + torch.arange(S_)) >= S_
        elif self.kind == "weights":
            y, w = self.mha(x, x, x)
            return y + w.sum()
        elif self.kind == "decoder":
            return self.dec(x, x, tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(
                S_, dtype=x.dtype))
        return self.mha(x, x, x, **kw)[0]


@pytest.mark.parametrize("kind, why", [
    ("pad_input", "key_padding_mask computed from the model input"),
    ("pad_rows", "a mask that differs per example"),
    ("weights", "its returned attention weights are read"),
    ("bias_kv", "add_bias_kv / add_zero_attn"),
    ("decoder", "pass is_causal / tgt_is_causal=True or False")])
def test_multihead_attention_refusals_are_one_line(kind, why):
    m = Refused(kind)
    if kind == "decoder":
        layer = torch.nn.TransformerDecoderLayer(E_, H_, 16, batch_first=True)
        m.dec = torch.nn.TransformerDecoder(layer, 1)
    with pytest.raises(ImportRefused) as e:
        from_torch(m.double(), torch.randn(2, S_, E_, dtype=torch.float64),
                   loss=torch.nn.MSELoss())
    assert len(e.value.lines) == 1 and why in e.value.lines[0], e.value.lines


class WrittenMask(torch.nn.Module):
    """A constant mask written in place through a view (``m[1, -1] = True``) after it is made."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(E_, E_)

    def forward(self, x):
        m = torch.zeros(2, S_, dtype=torch.bool)
        m[1, -1] = True
        return self.lin(x).masked_fill(m[..., None], 0.0)


def test_a_folded_tensor_written_through_a_view_does_not_fold_to_its_old_value():
    with pytest.raises(ImportRefused):     # (it folded to zeros before: silently wrong)
        from_torch(WrittenMask().double(), torch.randn(2, S_, E_, dtype=torch.float64),
                   loss=torch.nn.MSELoss())


class Rotary(torch.nn.Module):
    """A float buffer (RoPE's inverse frequencies) read only by folded calls."""

    def __init__(self):
        super().__init__()
        self.register_buffer("inv_freq", torch.tensor([1.0, 0.1, 0.01]), persistent=False)
        self.lin = torch.nn.Linear(6, 3)

    def forward(self, x):
        angles = torch.arange(x.shape[1], dtype=x.dtype)[:, None] * self.inv_freq[None]
        table = torch.cat([angles.cos(), angles.sin()], dim=-1)
        return self.lin(x * table)


def test_folded_float_buffer_is_kept_by_the_certificate():
    torch.manual_seed(0)
    imp = from_torch(Rotary().double(), torch.randn(2, 5, 6, dtype=torch.float64),
                     loss=TokenCrossEntropy())
    assert any("folded into constants" in n and "(5, 6)" in n for n in imp.notes)
    assert imp.source.constant_buffers == ("inv_freq",)
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results


class Float32Softmax(torch.nn.Module):
    """ViT's attention: ``softmax(s, dtype=torch.float32).to(q.dtype)``."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        s = self.lin(x) @ x.transpose(1, 2)
        w = torch.nn.functional.softmax(s, dim=-1, dtype=torch.float32).to(x.dtype)
        return w @ x


def test_float32_softmax_in_a_float64_model_is_refused_and_imports_in_float32():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    with pytest.raises(ImportRefused) as e:
        from_torch(Float32Softmax().double(), x, loss=TokenCrossEntropy())
    assert len(e.value.lines) == 1 and "softmax computed in torch.float32" in e.value.lines[0]
    imp = from_torch(Float32Softmax(), x.float(), loss=TokenCrossEntropy())
    assert imp.dtype == "float32"


class PermutedTable(torch.nn.Module):
    """RoPE's shape: a folded (1, 1, T, D) table times q viewed (N, T, H, D) and transposed to
    (N, H, T, D), so the table meets a tensor held with its axes permuted."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)

    def forward(self, x):
        n, t, _ = x.shape
        q = self.lin(x).view(n, t, 2, 3).transpose(1, 2)
        table = torch.arange(t * 3, dtype=x.dtype).reshape(1, 1, t, 3).cos()
        return (q * table).transpose(1, 2).reshape(n, t, 6)


def test_constant_broadcast_with_a_permuted_tensor_certifies():
    torch.manual_seed(0)
    imp = from_torch(PermutedTable().double(), torch.randn(2, 5, 6, dtype=torch.float64),
                     loss=TokenCrossEntropy())
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results


class AudioStem(torch.nn.Module):
    """Whisper's encoder stem: two Conv1d over (N, C, T) frames, a permute to (N, T, C), and
    position embeddings looked up at arange(T) (a (T, D) tensor without a batch axis)."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv1d(3, 4, 3, padding=1)
        self.c2 = torch.nn.Conv1d(4, 4, 3, stride=2, padding=1)
        self.pos = torch.nn.Embedding(4, 4)
        self.out = torch.nn.Linear(4, 2)

    def forward(self, x):
        gelu = torch.nn.functional.gelu
        h = gelu(self.c2(gelu(self.c1(x)))).permute(0, 2, 1)
        h = h + self.pos(torch.arange(h.shape[1]))
        return self.out(h.mean(1))


def test_conv1d_and_positions_without_a_batch_axis_certify():
    torch.manual_seed(0)
    imp = from_torch(AudioStem().double(), torch.randn(2, 3, 8, dtype=torch.float64),
                     loss=torch.nn.CrossEntropyLoss())
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops.count("Conv1D") == 2 and "Gather" in ops
    assert imp.names["pos.weight"].endswith("/value")
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results


class SharedLayer(torch.nn.Module):
    """ALBERT's sharing: one Linear + LayerNorm applied at two depths."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.out = torch.nn.Linear(4, 3)

    def forward(self, x):
        for _ in range(2):
            x = self.norm(x + torch.tanh(self.lin(x)))
        return self.out(x)


def test_layer_applied_twice_shares_its_parameters_and_certifies():
    torch.manual_seed(0)
    imp = from_torch(SharedLayer().double(), torch.randn(2, 5, 4, dtype=torch.float64),
                     loss=TokenCrossEntropy())
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops.count("Parameter") == 4 and "LayerNorm" not in ops   # lin and norm, shared
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed, cert.results


class StackedQKV(torch.nn.Module):
    """timm's attention: qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0) (the batch
    axis moved off axis 0, then back by the unbind); ``bad``: the permuted tensor summed."""

    def __init__(self, bad=False):
        super().__init__()
        self.qkv, self.out, self.bad = torch.nn.Linear(4, 12), torch.nn.Linear(4, 3), bad

    def forward(self, x):
        n, t, _ = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, 2, 2).permute(2, 0, 3, 1, 4)
        if self.bad:
            return self.out(qkv.sum(0).transpose(1, 2).reshape(n, t, 4))
        q, k, v = qkv.unbind(0)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(a.transpose(1, 2).reshape(n, t, 4))


def test_unbind_of_a_batch_moving_permute_certifies_and_other_readers_are_refused():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    imp = from_torch(StackedQKV().double(), x, loss=TokenCrossEntropy())
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results
    with pytest.raises(ImportRefused) as e:
        from_torch(StackedQKV(bad=True).double(), x, loss=TokenCrossEntropy())
    assert len(e.value.lines) == 1 and "moved off axis 0" in e.value.lines[0]


class RelativeBias(torch.nn.Module):
    """T5's relative-position bias: buckets folded from arange (with an in-place add), a table
    lookup at those (T, T) buckets (no batch axis), permute(2, 0, 1).unsqueeze(0) to (1, H, T,
    T), added to the attention scores."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Embedding(7, 2)
        self.out = torch.nn.Linear(4, 3)

    def forward(self, x):
        n, t, _ = x.shape
        rel = torch.arange(t)[None, :] - torch.arange(t)[:, None]
        buckets = (rel > 0).long() * 3
        buckets += rel.abs().clamp(max=2)
        bias = self.bias(buckets).permute(2, 0, 1).unsqueeze(0)
        h = x.view(n, t, 2, 2).transpose(1, 2)
        w = torch.softmax(h @ h.transpose(-1, -2) + bias, dim=-1)
        return self.out((w @ h).transpose(1, 2).reshape(n, t, 4))


def test_relative_position_bias_from_folded_buckets_certifies():
    torch.manual_seed(0)
    imp = from_torch(RelativeBias().double(), torch.randn(2, 5, 4, dtype=torch.float64),
                     loss=TokenCrossEntropy())
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results


class RotateHalf(torch.nn.Module):
    """EVA-02's rotary embedding: rotate-half with torch.stack, a folded table cast with
    type_as."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        rot = torch.stack([-h[..., 1::2], h[..., ::2]], -1).reshape(h.shape)
        table = torch.arange(x.shape[1] * 4, dtype=torch.float64).reshape(1, -1, 4).cos()
        return h * table.type_as(h) + rot


def test_stack_and_type_as_certify():
    torch.manual_seed(0)
    imp = from_torch(RotateHalf().double(), torch.randn(2, 5, 4, dtype=torch.float64),
                     loss=TokenCrossEntropy())
    assert "Concatenate" in [n.op for n in imp.spec.model.nodes]
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results


class ConcatBias(torch.nn.Module):
    """EVA-02's qkv bias: cat(q_bias, a zero k_bias buffer, v_bias) given to F.linear."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(2, 6, bias=False)
        self.q_bias, self.v_bias = torch.nn.Parameter(torch.randn(2)), torch.nn.Parameter(
            torch.randn(2))
        self.register_buffer("k_bias", torch.zeros(2), persistent=False)
        self.out = torch.nn.Linear(6, 3)

    def forward(self, x):
        bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        return self.out(torch.nn.functional.linear(x, self.qkv.weight, bias))


def test_concatenated_parameter_bias_certifies():
    torch.manual_seed(0)
    imp = from_torch(ConcatBias().double(), torch.randn(2, 5, 2, dtype=torch.float64),
                     loss=TokenCrossEntropy())
    assert imp.source.constant_buffers == ("k_bias",)
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results


class IndexedBias(torch.nn.Module):
    """BEiT's relative-position bias: table[index.view(-1)].view(T, T, -1).permute(2, 0, 1),
    a parameter indexed at a folded index buffer."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(7, 2))
        t = torch.arange(5)
        self.register_buffer("index", (t[None] - t[:, None]).abs().clamp(max=6))
        self.out = torch.nn.Linear(4, 3)

    def forward(self, x):
        n, t, _ = x.shape
        bias = self.table[self.index.view(-1)].view(t, t, -1).permute(2, 0, 1).contiguous()
        h = x.view(n, t, 2, 2).transpose(1, 2)
        w = torch.softmax(h @ h.transpose(-1, -2) + bias.unsqueeze(0), dim=-1)
        return self.out((w @ h).transpose(1, 2).reshape(n, t, 4))


def test_parameter_indexed_at_a_folded_index_certifies():
    torch.manual_seed(0)
    imp = from_torch(IndexedBias().double(), torch.randn(2, 5, 4, dtype=torch.float64),
                     loss=TokenCrossEntropy())
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.results
