"""Every torch lowering: the table ``LOWERINGS`` (op name -> ``Lowering``), complete.

Each op-family module registers its lowerings with ``@lowers(op, accepts=...)`` and, for ops with
parameters or state, their native homes with ``native_params`` (both in ``lowering.py``, with the
layout rule and the helpers the families share). Importing this module imports every family, so
the tables here are whole; a user's own op registers the same way from any module imported
before the model is compiled (see ``rosetta.ops.register``).
"""

from __future__ import annotations

from rosetta.backends.torch import (attention, convolution, dense, dropout,  # noqa: F401
                                    elementwise, indexing, math, normalization, pooling,
                                    recurrent, reduction, shape)  # (register their lowerings)
from rosetta.backends.torch.lowering import LOWERINGS, NATIVE, Lowering, lowers
from rosetta.errors import SpecError
from rosetta.graph import Node

__all__ = ["LOWERINGS", "NATIVE", "Lowering", "lowering", "lowers"]


def lowering(node: Node, where: str) -> Lowering:
    """The lowering of a node's op; a clear SpecError for an op this backend does not know."""
    try:
        return LOWERINGS[node.op]
    except KeyError:
        raise SpecError(f"the torch backend has no lowering for op {node.op!r} (it lowers "
                        f"{', '.join(sorted(LOWERINGS))})", where=where, op=node.op) from None
