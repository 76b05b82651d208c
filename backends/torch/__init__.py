"""The PyTorch backend: a spec lowered to a ``torch.nn.Module`` and a ``torch.optim`` optimizer.

    from rosetta.backends.torch import Backend
    program = Backend().compile(spec, dtype="float64", device="cpu")
    program.train_step({"x": x}, y)
    program.model      # a GraphModule: call it on canonical (channels-last) tensors

Importing this package imports no framework (its ``Backend`` declares what rosetta needs to
know); the backend's modules import torch (and never TensorFlow or JAX).
"""

from __future__ import annotations

from rosetta import backend as contract
from rosetta.backends.torch.distributed import Engine
from rosetta.precision import PRECISIONS


class Backend(contract.Backend):
    name = "torch"
    order = 0
    requires = ("torch",)
    distributions = ("torch",)
    extra = "torch"
    precisions = PRECISIONS  # bfloat16 and mixed policies: docs/guide/precision.md
    modes = ("eager", "compile")  # compile: the forward in torch.compile (its backward too)
    formats = {
        "torch": contract.ExportFormat(("float32", "float64"),
                                       "torch.export program (.pt2) + state_dict"),
        "onnx": contract.ExportFormat(("float32",), "ONNX model (torch.onnx), for onnxruntime"),
    }
    engine = Engine()
    shard_params = "FSDP2 (torch.distributed.fsdp.fully_shard) over the data-parallel ranks"

    def version(self) -> str:
        import torch

        return f"torch {torch.__version__}"


__all__ = ["Backend"]
