"""Every MXNet lowering: the table ``LOWERINGS[op](F, node, xs, p, ctx) -> output``, complete.

Each op-family module registers its lowerings with ``@lowers(op)`` (``lowering.py``, with the
``Context``, the activation table and the layout helpers the families share). Importing this
module imports every family, so the table here is whole; a user's own op registers the same way
from any module imported before the model is compiled (see ``rosetta.ops.register``).
"""

from __future__ import annotations

from rosetta.backends.mxnet import (attention, convolution, dense, dropout,  # noqa: F401
                                    elementwise, indexing, math, normalization, pooling,
                                    recurrent, reduction, shape)  # (register their lowerings)
from rosetta.backends.mxnet.lowering import LOWERINGS, Context, lowers

__all__ = ["LOWERINGS", "Context", "lowers"]
