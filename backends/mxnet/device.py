"""Device names -> MXNet contexts, and the dtypes this backend runs.

``cpu`` is ``mx.cpu()``; ``gpu`` (``cuda``) is ``mx.gpu(0)`` when MXNet was built with CUDA and
sees a GPU (the CPU wheel ``mxnet==1.9.1`` never does). MXNet has no TF32 mode on the CPU, so
float32 is full precision already. float32 and float64 only: MXNet 1.9's CPU kernels have no
bfloat16 for the ops the registry needs.
"""

from __future__ import annotations

import mxnet as mx

from rosetta.backend import DTYPES, normalize_device
from rosetta.errors import BackendUnavailable


def available_devices() -> list[str]:
    out = ["cpu"]
    try:
        if mx.context.num_gpus() > 0:
            out.append("gpu")
    except mx.base.MXNetError:  # a CPU build: no CUDA runtime to ask
        pass
    return out


def mx_context(device: str) -> mx.Context:
    d = normalize_device(device)
    if d == "cpu":
        return mx.cpu()
    if d == "gpu" and "gpu" in available_devices():
        return mx.gpu(0)
    raise BackendUnavailable(f"mxnet cannot run on device {device!r}; available: "
                             f"{', '.join(available_devices())}")


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise BackendUnavailable(f"mxnet runs {', '.join(DTYPES)}, not {dtype!r}")
    return dtype
