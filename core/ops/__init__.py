"""The op registry. Importing this package declares every op."""

from rosetta.ops import activation, conv, dense, norm, pool, shape  # noqa: F401  (registers)
from rosetta.ops import conv1d, normalize, spatial  # noqa: F401  (registers)
from rosetta.ops import attention, conv_variants, recurrent  # noqa: F401  (registers)
from rosetta.ops import sequence  # noqa: F401  (registers)
from rosetta.ops.registry import (REGISTRY, Attr, OpDef, ParamDef, RefContext, TensorType,
                                  get_op, register)

__all__ = ["REGISTRY", "Attr", "OpDef", "ParamDef", "RefContext", "TensorType", "get_op",
           "register"]
