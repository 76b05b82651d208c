"""Canonical <-> native parameters and state.

TensorFlow already uses every canonical layout (Dense kernel (in, out), Conv2D kernel
(kH, kW, in/groups, out), Conv1D kernel (k, in/groups, out), NHWC / NWC; RMSNorm and GroupNorm
``scale`` / ``bias`` per channel), so conversion is a dtype cast and a shape check; the variables
are named and found by canonical path (``GraphModule.param_variables``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rosetta.errors import CheckpointError


def checked(variables: dict, arrays: dict, what: str) -> dict[str, np.ndarray]:
    """The arrays cast to the variables' dtype, after checking paths and shapes."""
    missing = sorted(set(variables) - set(arrays))
    unknown = sorted(set(arrays) - set(variables))
    if missing or unknown:
        raise CheckpointError(f"{what} do not fit the model: missing {missing}, unknown {unknown}")
    values = {}
    for path, var in variables.items():
        a = np.asarray(arrays[path])
        if tuple(a.shape) != tuple(var.shape):
            raise CheckpointError(f"{what} {path!r}: expected shape {tuple(var.shape)}, "
                                  f"found {tuple(a.shape)}")
        values[path] = a.astype(var.dtype.as_numpy_dtype, copy=False)
    return values


def to_host(t) -> np.ndarray:
    """A tensor or variable as a NumPy array; bfloat16 / float16 as float32 (exact), the type
    arrays cross the Program API in under the low precision policies."""
    a = np.array(t.numpy(), copy=True)
    return a.astype(np.float32) if t.dtype in (tf.bfloat16, tf.float16) else a


def export(variables: dict) -> dict[str, np.ndarray]:
    """Canonical NumPy copies of the variables, by path (bf16 / float16 ones as float32)."""
    return {path: to_host(var) for path, var in variables.items()}


def load(model, params: dict, state: dict) -> None:
    """Set a ``GraphModule``'s parameters and state from canonical arrays (all checked first)."""
    targets = (model.param_variables(), model.state_variables())
    values = (checked(targets[0], params, "parameters"), checked(targets[1], state, "state"))
    for variables, arrays in zip(targets, values):
        for path, var in variables.items():
            var.assign(arrays[path])


def export_params(model) -> dict[str, np.ndarray]:
    return export(model.param_variables())


def export_state(model) -> dict[str, np.ndarray]:
    return export(model.state_variables())
