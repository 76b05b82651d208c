"""Device and dtype names -> torch objects, and full float32 precision.

``cpu`` is ``torch.device("cpu")``; ``gpu`` (or ``cuda``) is the first CUDA device. TF32 is turned
off for cuBLAS matmuls and cuDNN convolutions (cuDNN enables it by default on Ampere and later),
so float32 means IEEE float32 on every device (DESIGN section 3).
"""

from __future__ import annotations

import torch

from rosetta.backend import DTYPES, normalize_device
from rosetta.errors import BackendUnavailable

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def available_devices() -> list[str]:
    """Usable devices among ``cpu`` and ``gpu``."""
    return ["cpu", "gpu"] if torch.cuda.is_available() else ["cpu"]


def torch_device(device: str) -> torch.device:
    """The torch device for a rosetta device name; ``BackendUnavailable`` if it is absent."""
    name = normalize_device(device)
    if name == "cpu":
        return torch.device("cpu")
    if name == "gpu":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"torch {torch.__version__}: no CUDA device is available "
                                     f"(device {device!r}); use device='cpu'")
        return torch.device("cuda", 0)
    raise BackendUnavailable(f"torch backend: unknown device {device!r}; use 'cpu' or 'gpu'")


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype for ``float32`` / ``float64``; ``BackendUnavailable`` otherwise."""
    if dtype not in DTYPES:
        raise BackendUnavailable(f"torch backend: dtype {dtype!r} is not supported; "
                                 f"use one of {', '.join(DTYPES)}")
    return _DTYPES[dtype]


def full_float32_precision() -> None:
    """TF32 off, IEEE float32 matmuls and convolutions.

    The legacy flags are used on purpose: in torch 2.13 mixing them with the newer
    ``fp32_precision`` API makes later reads of ``torch.backends.cudnn.allow_tf32`` raise.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
