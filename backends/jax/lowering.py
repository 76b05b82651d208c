"""One lowering per registered op: ``LOWERINGS[op](node, inputs, ctx) -> output``.

Lowerings run inside ``GraphModule.__call__`` (a ``@nn.compact`` method), so every flax submodule
they create is a child of the graph module, named by the node name: the variables come out as
``{"params": {node: {param}}, "batch_stats": {node: {"mean", "var"}}}``, the canonical paths.

Where flax's default differs from the canonical rule (docs/design.md section 3) the lowering sets it:

* Conv2D and the pools get explicit ((top, bottom), (left, right)) pads from
  ``rosetta.ops.windows.spatial_plan`` (the one padding rule), never the string ``"SAME"``;
* Conv1D and the 1-D pools get the explicit (lo, hi) pad of the same rule (``time_plan``);
* pools pass ``strides`` explicitly (flax defaults to 1; canonical defaults to the window);
* AvgPool2D excludes padded cells (flax's ``count_include_pad=False`` rule);
* BatchNorm, LayerNorm, GroupNorm and RMSNorm use ``use_fast_variance=False``
  (E[x^2] - E[x]^2 cancels badly) and an explicit epsilon (flax LayerNorm, GroupNorm and RMSNorm
  default to 1e-6); BatchNorm ``momentum`` is the weight of the old running value in both flax
  and rosetta, and both store the biased batch variance;
* gelu passes ``approximate`` explicitly (flax/JAX default to tanh), leaky_relu its slope;
* Dense and Conv use ``Precision.HIGHEST`` (no TF32 / bf16 passes on GPU)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from rosetta.ops.registry import LoweringTable
from rosetta.ops import elementwise as act_ops


HIGHEST = jax.lax.Precision.HIGHEST


@dataclass(frozen=True)
class Context:
    """What a lowering needs beyond the node: ``dtype`` the type the node computes in (the
    program dtype; under a mixed precision policy the node's type in ``rosetta.precision``'s
    table), ``param_dtype`` the type of the parameters (float32 masters under a mixed policy),
    the mode, and injected dropout keep-masks ({Dropout node: mask}, conformance mode) if any."""

    dtype: jnp.dtype
    train: bool
    masks: dict | None = None
    batch: int | None = None   # N of the run (Expand of a batch-broadcast value)
    param_dtype: jnp.dtype | None = None   # None: ``dtype``
    float32_softmax: bool = False          # attention's softmax in float32 (mixed policies)

    @property
    def params(self) -> jnp.dtype:
        """The type parameters are created in (``param_dtype``, else ``dtype``)."""
        return self.dtype if self.param_dtype is None else self.param_dtype


# --- activations: ONE table, for the Activation op and the fused ``activation`` attribute ------
ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "relu6": jax.nn.relu6,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "leaky_relu": lambda x, slope: jax.nn.leaky_relu(x, negative_slope=slope),
    # ``axis`` is per-example (rosetta); the batch axis shifts non-negative axes by one
    "softmax": lambda x, axis=-1: jax.nn.softmax(x, axis=axis + 1 if axis >= 0 else axis),
}


assert set(act_ops.FUSED) <= set(ACTIVATIONS), "an activation name has no JAX lowering"


def activate(name: str, x, **kwargs):
    return ACTIVATIONS[name](x, **kwargs)


# --- the table: every lowering registers itself ------------------------------------------------

LOWERINGS = LoweringTable("the jax backend")


def lowers(*ops: str):
    """Decorator: register ``lower(node, xs, ctx) -> output`` (called inside the graph module's
    ``@nn.compact``) as the JAX lowering of ``ops``::

        @lowers("HardSwish")
        def hard_swish(node, xs, ctx):
            return jax.nn.hard_swish(xs[0])
    """
    return LOWERINGS.register(ops)
