"""The MXNet backend: a spec lowered to Gluon ``HybridBlock``s (hybridized) and the canonical
optimizers on MXNet NDArrays.

    from rosetta.backends.mxnet import Backend
    program = Backend().compile(spec, dtype="float64", device="cpu")
    program.train_step({"x": x}, y)
    program.model      # a hybridized GraphBlock: call it on canonical (channels-last) arrays

MXNet 1.9.1 (its last release) needs NumPy < 1.24, which TensorFlow and JAX refuse: it lives in
an environment of its own (README, "MXNet in its own environment"), and its trajectories are
compared with the other backends' through saved files (``rosetta conformance --save`` /
``--compare``). Importing this package imports mxnet (and never torch, TensorFlow or JAX).
"""

from __future__ import annotations

import mxnet as mx
import numpy as np

from rosetta import backend as contract
from rosetta.backends.mxnet.device import available_devices
from rosetta.backends.mxnet.program import Program


class Backend(contract.Backend):
    name = "mxnet"
    modes = ("hybrid", "imperative")

    def version(self) -> str:
        return f"mxnet {mx.__version__}, numpy {np.__version__}"

    def devices(self) -> list[str]:
        return available_devices()

    def compile(self, spec, *, dtype: str = "float32", device: str = "cpu",
                mode: str | None = None) -> Program:
        """Lower ``spec``. ``mode``: ``"hybrid"`` (default: the blocks hybridized, MXNet's
        compiled graph) or ``"imperative"`` (op by op)."""
        return Program(spec, dtype=dtype, device=device, mode=self.resolve_mode(mode))


__all__ = ["Backend", "Program"]
