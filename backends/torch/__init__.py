"""The PyTorch backend: a spec lowered to a ``torch.nn.Module`` and a ``torch.optim`` optimizer.

    from rosetta.backends.torch import Backend
    program = Backend().compile(spec, dtype="float64", device="cpu")
    program.train_step({"x": x}, y)
    program.model      # a GraphModule: call it on canonical (channels-last) tensors

Importing this package imports torch (and never TensorFlow or JAX).
"""

from __future__ import annotations

import torch

from rosetta import backend as contract
from rosetta.backends.torch.device import available_devices
from rosetta.backends.torch.program import Program


class Backend(contract.Backend):
    name = "torch"
    modes = ("eager", "compile")

    def version(self) -> str:
        return f"torch {torch.__version__}"

    def devices(self) -> list[str]:
        return available_devices()

    def compile(self, spec, *, dtype: str = "float32", device: str = "cpu",
                mode: str | None = None) -> Program:
        """Lower ``spec``. ``mode``: ``"eager"`` (default) or ``"compile"`` (the model's
        forward wrapped in ``torch.compile``, whose backward is compiled too)."""
        return Program(spec, dtype=dtype, device=device, mode=self.resolve_mode(mode))


__all__ = ["Backend", "Program"]
