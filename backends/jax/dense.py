"""Lowerings of Dense and Embedding: nn.Dense (``Precision.HIGHEST``; its bias added by
``bias.Biased``, the bias gradient accumulated in float32) and nn.Embed."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rosetta.backends.jax.bias import Biased
from rosetta.backends.jax.lowering import HIGHEST, activate, lowers


@lowers("Dense")
def dense(node, xs, ctx):
    a = node.attrs
    inner = nn.Dense(a["units"], use_bias=False, dtype=ctx.dtype, param_dtype=ctx.params,
                     precision=HIGHEST, parent=None)
    y = Biased(inner, a["units"], a["use_bias"], ctx.params, name=node.name)(xs[0])
    return activate(a["activation"], y)


@lowers("Embedding")
def embedding(node, xs, ctx):
    """nn.Embed; ``padding_idx`` p: the rows read at ids == p pass through
    ``lax.stop_gradient`` (a ``where`` selects: the forward is exactly the lookup), so row p's
    gradient is exactly 0."""
    a = node.attrs
    y = nn.Embed(a["vocab_size"], a["dim"], dtype=ctx.dtype, param_dtype=ctx.params,
                 name=node.name)(xs[0])
    if a["padding_idx"] is None:
        return y
    return jnp.where((xs[0] == a["padding_idx"])[..., None], jax.lax.stop_gradient(y), y)
