"""Composite blocks: functions of functional-API tensors built only from registered ops.

A block adds ordinary nodes to the graph (named ``{name}_...``), so every backend lowers it with
the lowerings it already has, and the JSON spec holds the nodes, not the block.
"""

from __future__ import annotations

from rosetta.errors import SpecError
from rosetta.graph import InputDef, Model, Tensor
from rosetta.layers import Add, Dense, Dropout, LayerNorm, MultiHeadAttention

_FF_ACTIVATIONS = ("gelu_exact", "gelu_tanh", "relu", "silu")


def TransformerBlock(x: Tensor, *, heads: int, head_dim: int, ff_dim: int,
                     lengths: Tensor | None = None, causal: bool = False, dropout: float = 0.0,
                     norm_first: bool = True, epsilon: float = 1e-5,
                     activation: str = "gelu_exact", name: str = "block") -> Tensor:
    """A transformer encoder (or, with ``causal``, decoder-only) block over x (T, E).

    With Att = MultiHeadAttention(heads, head_dim, causal, dropout on the attention weights)
    applied as self-attention (x, x, key lengths), FF(z) = Dense_E(act(Dense_ff(z))),
    LN = LayerNorm(epsilon) and Drop = Dropout(dropout) (left out when dropout = 0):

        pre-norm  (norm_first=True):   h = x + Drop(Att(LN1(x)));   y = h + Drop(FF(LN2(h)))
        post-norm (norm_first=False):  h = LN1(x + Drop(Att(x)));   y = LN2(h + Drop(FF(h)))

    Nodes: ``{name}_ln1``, ``{name}_attn``, ``{name}_drop1``, ``{name}_add1``, ``{name}_ln2``,
    ``{name}_ff1``, ``{name}_ff2``, ``{name}_drop2``, ``{name}_add2``. ``lengths`` (an int input
    of shape ()) masks padded keys; padded query rows are computed but meaningless, as in torch
    and Keras. Returns the block's output tensor (T, E).
    """
    if not isinstance(x, Tensor):
        raise SpecError(f"TransformerBlock takes a rosetta Tensor, found {type(x).__name__}",
                        where=f"block {name}")
    if activation not in _FF_ACTIVATIONS:
        raise SpecError(f"TransformerBlock activation must be one of {list(_FF_ACTIVATIONS)}, "
                        f"found {activation!r}", where=f"block {name}")
    if not isinstance(norm_first, bool):
        raise SpecError(f"TransformerBlock norm_first must be true or false, found "
                        f"{norm_first!r}", where=f"block {name}")
    width = _shape_of(x, name)[-1]

    def attend(z):
        args = (z, z) if lengths is None else (z, z, lengths)
        return MultiHeadAttention(heads, head_dim, causal=causal, dropout=dropout,
                                  name=f"{name}_attn")(*args)

    def drop(z, i):
        return z if dropout == 0.0 else Dropout(dropout, name=f"{name}_drop{i}")(z)

    def feed_forward(z):
        hidden = Dense(ff_dim, activation=activation, name=f"{name}_ff1")(z)
        return Dense(width, name=f"{name}_ff2")(hidden)

    def norm(z, i):
        return LayerNorm(epsilon=epsilon, name=f"{name}_ln{i}")(z)

    if norm_first:
        h = Add(name=f"{name}_add1")([x, drop(attend(norm(x, 1)), 1)])
        return Add(name=f"{name}_add2")([h, drop(feed_forward(norm(h, 2)), 2)])
    h = norm(Add(name=f"{name}_add1")([x, drop(attend(x), 1)]), 1)
    return norm(Add(name=f"{name}_add2")([h, drop(feed_forward(h), 2)]), 2)


def _shape_of(t: Tensor, name: str) -> tuple:
    """The per-example shape of a functional-API tensor: shape inference of the graph that
    produces it (functional tensors carry no shape until a Model is built)."""
    inputs, seen, todo = [], set(), [t]
    while todo:
        src = todo.pop().source
        if id(src) in seen:
            continue
        seen.add(id(src))
        if isinstance(src, InputDef):
            inputs.append(Tensor(src))
        else:
            todo.extend(src.inputs)
    return Model(inputs, t, name=name).output_type.shape
