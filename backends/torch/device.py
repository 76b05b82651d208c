"""Device and dtype names -> torch objects, full float32 precision, and the benchmark's device
hooks (the module contract: ``rosetta.backend.Backend``).

``cpu`` is ``torch.device("cpu")``; ``gpu`` (or ``cuda``) is the first CUDA device. TF32 is turned
off for cuBLAS matmuls and cuDNN convolutions (cuDNN enables it by default on Ampere and later),
so float32 means IEEE float32 on every device (docs/design.md section 3).
"""

from __future__ import annotations

import time

import torch

from rosetta.backend import DTYPES, normalize_device
from rosetta.errors import BackendUnavailable

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# the types of the precision policies (rosetta.precision): parameters and products
_POLICY_DTYPES = {**_DTYPES, "bfloat16": torch.bfloat16, "float16": torch.float16}


def available() -> list[str]:
    """Usable devices among ``cpu`` and ``gpu``."""
    return ["cpu", "gpu"] if torch.cuda.is_available() else ["cpu"]


def resolve(device: str) -> torch.device:
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


def dtype(name: str) -> torch.dtype:
    """The torch dtype for ``float32`` / ``float64``; ``BackendUnavailable`` otherwise (the
    low types of a precision policy: ``policy_dtype``)."""
    if name not in _DTYPES:
        raise BackendUnavailable(f"torch backend: dtype {name!r} is not supported; "
                                 f"use one of {', '.join(DTYPES)}")
    return _DTYPES[name]


def policy_dtype(name: str) -> torch.dtype:
    """The torch dtype of a type a precision policy names (``rosetta.precision.Policy``:
    ``param``, ``low``): float64, float32, bfloat16, float16."""
    return _POLICY_DTYPES[name]


def full_float32_precision() -> None:
    """TF32 off, IEEE float32 matmuls and convolutions.

    The legacy flags are used on purpose: in torch 2.13 mixing them with the newer
    ``fp32_precision`` API makes later reads of ``torch.backends.cudnn.allow_tf32`` raise.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


# --- the benchmark's hooks ---------------------------------------------------------------------

def gpu_peak_memory_mb() -> float | None:
    """Peak memory torch allocated on the first GPU since the last reset, in MiB."""
    return torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else None


def reset_gpu_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def gpu_name() -> str | None:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def gpu_matmul_peak(n: int, repeats: int) -> dict | None:
    """The best of ``repeats`` float32 n x n products on the first GPU (TF32 off), GFLOP/s."""
    if not torch.cuda.is_available():
        return None
    full_float32_precision()
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    (a @ b).sum().item()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t)
    return {"gflops": 2 * n ** 3 / best / 1e9, "how": f"torch float32 {n}x{n} matmul "
            f"(TF32 off), best of {repeats}", "library": "torch " + torch.__version__}


def thread_settings() -> dict:
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def pin_threads(n: int) -> None:
    """After torch is imported: its intra-op pool to ``n`` threads."""
    torch.set_num_threads(n)
