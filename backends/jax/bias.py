"""The bias add of the product ops, with its gradient accumulated in float32.

y = p + b, b broadcast over the leading axes of the product p: its bias gradient is a
reduction, db = Σ_{leading axes} ∂L/∂y, and a reduction accumulates in float32
(``rosetta.precision``: reductions in float32), rounded once to the bias's type. Autodiff would
transpose the broadcast into a ``reduce_sum`` in the product's type, and XLA:CPU accumulates a
bf16 / float16 ``reduce_sum`` in that type (an addend below half an ulp of the running sum is
lost: the 4096-row sum of a bf16 tensor of values near 1 came out 4096 where float64 gives
4132; a 1024-row Dense bias gradient 2.6 % off, tests/backends/test_precision_jax.py). torch
(its CPU sums of a reduced type accumulate in float32) and TensorFlow's XLA step (tf2xla sums
bf16 / float16 in float32) accumulate the same gradient in float32 (4128), so this is the one
rule on every backend.

``add_bias(p, b)``: b is cast to p's type first (the cast's transpose brings the gradient back
to the master's type); in float32 and float64 it is the ordinary add, gradient included."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LOW = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@jax.custom_vjp
def _add(p, b):
    return p + b


def _add_fwd(p, b):
    return p + b, b


def _add_bwd(b, g):
    axes = tuple(range(g.ndim - b.ndim))
    return g, jnp.sum(g.astype(jnp.float32), axes).astype(b.dtype)


_add.defvjp(_add_fwd, _add_bwd)


def add_bias(p, b):
    """p + b (b broadcast over p's leading axes); a low-type bias gradient accumulated in
    float32 (module docstring)."""
    b = b.astype(p.dtype)
    if p.dtype in LOW:
        return _add(p, b)
    return p + b


class Biased(nn.Module):
    """A flax product module ``inner`` (built with ``use_bias=False`` and ``parent=None``) whose
    kernel lives in this module's scope (``nn.share_scope``: the canonical ``node/kernel``),
    followed by ``add_bias`` with the parameter ``node/bias`` (``features``,)."""

    inner: nn.Module
    features: int
    use_bias: bool
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        nn.share_scope(self, self.inner)
        y = self.inner(x)
        if self.use_bias:
            y = add_bias(y, self.param("bias", nn.initializers.zeros, (self.features,),
                                       self.param_dtype))
        return y
