"""The op registry. Importing this package declares every op.

One module per op family: ``elementwise`` (Activation, HardSwish), ``math`` (Constant,
Parameter, Expand, MatMul, the broadcasting binary ops, comparisons, Where, Unary; the
batch-broadcast rule), ``reduction`` (Reduce, Softmax, LogSoftmax), ``dense`` (Dense, Embedding),
``convolution``, ``pooling``, ``normalization``, ``dropout`` (dropout and noise), ``shape``,
``indexing`` (Slice, Gather),
``recurrent``, ``attention``; ``windows`` holds the padding rule convolutions and pools share.
A user's own op is declared the same way (see ``register``).
"""

from rosetta.ops import (attention, convolution, dense, dropout, elementwise,  # noqa: F401
                         indexing, math, normalization, pooling, recurrent, reduction,
                         shape)  # (registers)
from rosetta.ops.registry import (REGISTRY, Attr, OpDef, ParamDef, RefContext, TensorType,
                                  get_op, register)

__all__ = ["REGISTRY", "Attr", "OpDef", "ParamDef", "RefContext", "TensorType", "get_op",
           "register"]
