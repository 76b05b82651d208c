"""Every TensorFlow lowering: the table ``LOWERINGS`` (op name -> ``NodeModule`` class), complete.

Each op-family module registers its lowerings with ``@lowers(op)`` (``lowering.py``, with
``NodeModule``, ``LoweringContext`` and the activation table). Importing this module imports every
family, so the table here is whole; a user's own op registers the same way from any module
imported before the model is compiled (see ``rosetta.ops.register``).
"""

from __future__ import annotations

from rosetta.backends.tensorflow import (attention, convolution, dense, dropout,  # noqa: F401
                                         elementwise, indexing, math, normalization, pooling,
                                         recurrent, reduction, shape)  # (register their lowerings)
from rosetta.backends.tensorflow.lowering import LOWERINGS, LoweringContext, NodeModule, lowers

__all__ = ["LOWERINGS", "LoweringContext", "NodeModule", "lowers"]
