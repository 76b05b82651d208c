"""Lowerings of MultiHeadAttention, DotProductAttention and PositionEmbedding (merged into
``layers.LOWERINGS``).

DotProductAttention is ``F.scaled_dot_product_attention`` itself (the fused kernel, float64
included: it agrees with the NumPy reference to ~1e-16), causal alone as its ``is_causal``;
an int mask is its boolean ``attn_mask`` (combined with the causal triangle when both are
given), a float mask its float ``attn_mask`` (-inf above the diagonal when causal: SDPA takes no
mask together with ``is_causal``). SDPA's rule for a row that keeps no key (weights 0, output 0,
no gradient) is the spec's. q, k, v of any other rank are viewed as (N, heads, T, D), the
mask expanded to match: that is the shape SDPA's fused CPU kernel takes (its math kernel, for
other shapes or a mask with a gradient, computes a bf16 / float16 product in float32, which a
low policy's trace refuses; that case runs written out). Under a mixed policy the softmax must run in float32 between two
low-type products, which the fused kernel does not do: that path is written out.

MultiHeadAttention is three projections (``F.linear``, the q/k/v kernels as separate
parameters), torch's ``F.scaled_dot_product_attention`` on (N, heads, T, head_dim) views (SDPA
scales by 1/sqrt(head_dim) of its inputs, the canonical scale), and the output projection, for
any E, Ev and output width. With an injected keep-mask (conformance mode, and every training
step of a program: ``program.py`` draws the masks) SDPA would draw its own dropout mask, so the
attention weights are computed explicitly (softmax, mask, / (1 - dropout)).

It does not call ``F.multi_head_attention_forward`` (what ``nn.MultiheadAttention`` runs): that
takes sequence-first tensors (a transpose in and out), turns boolean masks into additive float
ones every call, and runs a causal mask as an explicit (T, T) mask rather than SDPA's
``is_causal``. On a CPU (one thread) the zoo ``transformer``'s attention (batch 32, T 16, E 32)
cost 1.2x in forward + backward through it, and its eager training step 1.14x the hand-written
``nn.TransformerEncoderLayer`` baseline's (``rosetta bench transformer --backends torch``); this
form: 1.02-1.04x. Same numbers: SDPA is the kernel it ends in too.

The module is not ``nn.MultiheadAttention`` itself: that packs the q/k/v biases into one (3E)
``in_proj_bias`` (and the kernels into one (3E, E) ``in_proj_weight`` when E == Ev), and a packed
tensor cannot be three canonical parameters, each a leaf that the optimizer steps and that
gradients are taken for. ``CanonicalMultiheadAttention`` keeps the eight parameters (four
without bias) apart, in torch's row layout (packing them with a ``cat`` per call into one
projection measured no faster); ``tests/backends/test_attention.py`` loads the same numbers
into ``nn.MultiheadAttention``.

The key bias adds q.bk to every score of a row, which softmax ignores: its gradient is exactly
0, while autodiff sums it from rounding noise (1e-17) that Adam then divides by its epsilon into
1e-13 drifts, different on every framework. All three backends therefore lower the key bias as
``stop_gradient(bk) + 0 * bk``: the same keys, and the exact gradient, 0.

Masks: SDPA's boolean ``attn_mask`` is True where a key is attended: key padding j < length
((N, 1, 1, Tk)), and with causal j <= i; causal without lengths is SDPA's ``is_causal`` (Tq ==
Tk, checked by the op), which needs no mask tensor at all."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rosetta.backends.torch.lowering import CHANNELS_LAST, lowers, native_params, same
from rosetta.backends.torch.math import full_rank
from rosetta.graph import Node


class CanonicalMultiheadAttention(nn.Module):
    """Multi-head attention with canonical semantics (see the module docstring).

    Parameters (torch layout, (out, in) rows like ``nn.Linear``): ``q_proj_weight`` (h, d, E),
    ``k_proj_weight`` and ``v_proj_weight`` (h, d, Ev), ``out_proj_weight`` (out, h, d); biases
    ``q_proj_bias``, ``k_proj_bias``, ``v_proj_bias`` (h, d) and ``out_proj_bias`` (out). Each
    is reshaped (a view) to the (h*d, in) / (out, h*d) matrix torch's functions take.
    ``forward(query, value, lengths=None)`` on batch-first tensors.
    """

    def __init__(self, e: int, ev: int, heads: int, head_dim: int, out: int, causal: bool,
                 dropout: float, bias: bool):
        super().__init__()
        self.heads, self.head_dim, self.causal, self.dropout = heads, head_dim, causal, dropout
        self.q_proj_weight = nn.Parameter(torch.empty(heads, head_dim, e))
        self.k_proj_weight = nn.Parameter(torch.empty(heads, head_dim, ev))
        self.v_proj_weight = nn.Parameter(torch.empty(heads, head_dim, ev))
        self.out_proj_weight = nn.Parameter(torch.empty(out, heads, head_dim))
        if bias:
            self.q_proj_bias = nn.Parameter(torch.empty(heads, head_dim))
            self.k_proj_bias = nn.Parameter(torch.empty(heads, head_dim))
            self.v_proj_bias = nn.Parameter(torch.empty(heads, head_dim))
            self.out_proj_bias = nn.Parameter(torch.empty(out))
        else:
            self.q_proj_bias = self.k_proj_bias = self.v_proj_bias = self.out_proj_bias = None
        self.mask: torch.Tensor | None = None
        # a mixed precision policy: the scores are cast to float32 for the softmax and its
        # weights back to the type of v (rosetta.precision: INNER_SOFTMAX); SDPA's fused kernel
        # would keep them in the low type, so the explicit path runs
        self.float32_softmax = False

    def set_mask(self, mask: torch.Tensor | None):
        """An injected keep-mask (N, h, Tq, Tk) for the attention weights, or None (RNG)."""
        self.mask = mask

    def _w(self, name):
        """A weight as torch's (out, in) matrix: (h, d, in) -> (h*d, in), (out, h, d) ->
        (out, h*d); a view."""
        w = getattr(self, name)
        if name == "out_proj_weight":
            return w.reshape(w.shape[0], -1)
        return w.reshape(-1, w.shape[-1])

    def _b(self, name):
        b = getattr(self, name)
        if b is None:
            return None
        if name == "k_proj_bias":  # its exact gradient, 0 (see the module docstring)
            b = b.detach() + 0.0 * b
        return b.reshape(-1)

    def forward(self, query, value, lengths=None):
        n, tq, tk = query.shape[0], query.shape[1], value.shape[1]
        h, d = self.heads, self.head_dim
        q = F.linear(query, self._w("q_proj_weight"), self._b("q_proj_bias"))
        k = F.linear(value, self._w("k_proj_weight"), self._b("k_proj_bias"))
        v = F.linear(value, self._w("v_proj_weight"), self._b("v_proj_bias"))
        q, k, v = (t.view(n, -1, h, d).transpose(1, 2) for t in (q, k, v))  # (N, h, T, d)
        keep = None  # True = attend, (N, 1, 1, Tk) or (N, 1, Tq, Tk)
        if lengths is not None:
            keep = (torch.arange(tk, device=query.device) < lengths[:, None])[:, None, None, :]
            if self.causal:
                keep = keep & torch.ones(tq, tk, dtype=torch.bool, device=query.device).tril()
        if (self.training and self.mask is not None and self.dropout > 0) \
                or self.float32_softmax:
            o = self._injected(q, k, v, keep)
        else:
            o = F.scaled_dot_product_attention(
                q, k, v, attn_mask=keep, is_causal=self.causal and keep is None,
                dropout_p=self.dropout if self.training else 0.0)
        o = o.transpose(1, 2).reshape(n, tq, h * d)
        return F.linear(o, self._w("out_proj_weight"), self.out_proj_bias)

    def _injected(self, q, k, v, keep):
        """softmax(q k^T / sqrt(d) + masks) * keep-mask / (1 - dropout) @ v, the injected
        keep-mask ``self.mask`` on the attention weights (SDPA would draw its own); without one
        (or outside training) no dropout. With ``float32_softmax`` the scores are cast to
        float32 and the weights back to v's type."""
        s = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        if self.float32_softmax:
            s = s.float()
        if keep is None and self.causal:
            keep = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        if keep is not None:
            s = s.masked_fill(~keep, float("-inf"))
        w = torch.softmax(s, dim=-1)
        if self.training and self.mask is not None and self.dropout > 0:
            w = w * self.mask / (1.0 - self.dropout)
        return w.to(v.dtype) @ v

    def extra_repr(self):
        return (f"heads={self.heads}, head_dim={self.head_dim}, causal={self.causal}, "
                f"dropout={self.dropout}")


@lowers("MultiHeadAttention", accepts=CHANNELS_LAST)
def multi_head_attention(node: Node, layout: str) -> nn.Module:
    a = node.attrs
    (_, e), (_, ev) = node.in_types[0].shape, node.in_types[1].shape
    return CanonicalMultiheadAttention(e, ev, a["heads"], a["head_dim"], node.out_type.shape[-1],
                                       a["causal"], a["dropout"], a["use_bias"])


class DotProductAttention(nn.Module):
    """``F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale)`` on batched
    (N, ..., T, D) tensors (see the module docstring); ``mask`` an int keep-mask or a float
    additive mask that broadcasts to the scores (right-aligned per example)."""

    def __init__(self, scale: float, causal: bool, rank: int, keep_mask: bool):
        super().__init__()
        self.scale, self.causal, self.rank, self.keep_mask = scale, causal, rank, keep_mask
        self.float32_softmax = False   # a mixed policy (rosetta.precision.INNER_SOFTMAX)

    def _mask(self, mask, tq, tk, device):
        """SDPA's attn_mask (bool keep or float bias, causal folded in), or None."""
        tril = (torch.ones(tq, tk, dtype=torch.bool, device=device).tril()
                if self.causal else None)
        if mask is None:
            return tril
        mask = full_rank(mask, self.rank)
        if self.keep_mask:
            mask = mask != 0
            return mask if tril is None else mask & tril
        return mask if tril is None else mask.masked_fill(~tril, float("-inf"))

    def forward(self, q, k, v, mask=None):
        if self.float32_softmax or (mask is not None and mask.requires_grad
                                    and q.dtype in (torch.bfloat16, torch.float16)):
            # a mask with a gradient sends SDPA to its math kernel, which computes a bf16 /
            # float16 product in float32: the low policy's products run written out instead
            return self.written(q, k, v, mask)
        out = q.shape[:-1] + v.shape[-1:]
        m = None if mask is None else self._mask(mask, q.shape[-2], k.shape[-2], q.device)
        if q.dim() != 4:   # (N, heads, T, D), the shape SDPA's fused CPU kernel takes (the
            # others go to its math kernel, which runs a bf16 / float16 product in float32)
            lead = q.shape[1:-2]
            q, k, v = (t.reshape(t.shape[0], -1, *t.shape[-2:]) for t in (q, k, v))
            if m is not None and m.dim() == len(lead) + 3:
                m = m.expand(m.shape[0], *lead, *m.shape[-2:])
                m = m.reshape(m.shape[0], -1, *m.shape[-2:])
            elif m is not None:   # the causal triangle (Tq, Tk)
                m = m[None, None]
        if m is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=self.scale)
        return y.reshape(out)

    def written(self, q, k, v, mask=None):
        """The same math written out (matmul, masks, softmax, matmul): the mixed policies'
        path (scores cast to float32 for the softmax, weights back to v's type) and the ONNX
        export's (torch.onnx does not translate SDPA with a mask of its own rank)."""
        m = self._mask(mask, q.shape[-2], k.shape[-2], q.device)
        s = q @ k.transpose(-1, -2) * self.scale
        if self.float32_softmax:
            s = s.float()
        if m is None:
            return torch.softmax(s, dim=-1).to(v.dtype) @ v
        if m.dtype == torch.bool:
            alive = m
        else:
            alive = m != float("-inf")
            s = s + m.to(s.dtype)
        dead = ~alive.any(-1, keepdim=True)
        if m.dtype == torch.bool:
            s = s.masked_fill(~(alive | dead), float("-inf"))
        w = torch.softmax(s.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)
        return w.to(v.dtype) @ v

    def extra_repr(self):
        return f"scale={self.scale}, causal={self.causal}"


@lowers("DotProductAttention", accepts=CHANNELS_LAST)
def dot_product_attention(node: Node, layout: str) -> nn.Module:
    from rosetta.ops.attention import DotProductAttention as Op

    q = node.in_types[0].shape
    keep = len(node.in_types) > 3 and node.in_types[3].kind == "int"
    return DotProductAttention(Op.scale(node.attrs, q[-1]), node.attrs["causal"],
                               len(q), keep)


class PositionEmbedding(nn.Module):
    """y = x + embedding[:T]; ``embedding`` is the canonical (max_length, E) table."""

    def __init__(self, max_length: int, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(max_length, dim))

    def forward(self, x):
        return x + self.embedding[: x.shape[1]]


@lowers("PositionEmbedding", accepts=CHANNELS_LAST)
def position_embedding(node: Node, layout: str) -> nn.Module:
    return PositionEmbedding(node.attrs["max_length"], node.in_types[0].shape[-1])



def _kernel_to_native(k):
    """(in, h, d) -> (h, d, in): torch's (out, in) rows, out = (h, d) head-major."""
    return np.transpose(k, (1, 2, 0))


def _kernel_to_canonical(w):
    return np.transpose(w, (2, 0, 1))


def _out_to_native(k):
    """(h, d, out) -> (out, h, d)."""
    return np.transpose(k, (2, 0, 1))


def _out_to_canonical(w):
    return np.transpose(w, (1, 2, 0))


_M = CanonicalMultiheadAttention


native_params({
    "MultiHeadAttention": {
        "query_kernel": (_M, "q_proj_weight", _kernel_to_native, _kernel_to_canonical),
        "key_kernel": (_M, "k_proj_weight", _kernel_to_native, _kernel_to_canonical),
        "value_kernel": (_M, "v_proj_weight", _kernel_to_native, _kernel_to_canonical),
        "output_kernel": (_M, "out_proj_weight", _out_to_native, _out_to_canonical),
        "query_bias": (_M, "q_proj_bias", same, same),
        "key_bias": (_M, "k_proj_bias", same, same),
        "value_bias": (_M, "v_proj_bias", same, same),
        "output_bias": (_M, "out_proj_bias", same, same),
    },
    "PositionEmbedding": {"embedding": (PositionEmbedding, "embedding", same, same)},
})
