"""Device names -> MXNet contexts, the dtypes this backend runs, and the benchmark's device hooks
(the module contract: ``rosetta.backend.Backend``).

``cpu`` is ``mx.cpu()``; ``gpu`` (``cuda``) is ``mx.gpu(0)`` when MXNet was built with CUDA and
sees a GPU (the CPU wheel ``mxnet==1.9.1`` never does). MXNet has no TF32 mode on the CPU, so
float32 is full precision already. float32 and float64 only: MXNet 1.9's CPU kernels have no
bfloat16 for the ops the registry needs.
"""

from __future__ import annotations

import mxnet as mx

from rosetta.backend import DTYPES, normalize_device
from rosetta.errors import BackendUnavailable


def available() -> list[str]:
    out = ["cpu"]
    try:
        if mx.context.num_gpus() > 0:
            out.append("gpu")
    except mx.base.MXNetError:  # a CPU build: no CUDA runtime to ask
        pass
    return out


def resolve(device: str) -> mx.Context:
    d = normalize_device(device)
    if d == "cpu":
        return mx.cpu()
    if d == "gpu" and "gpu" in available():
        return mx.gpu(0)
    raise BackendUnavailable(f"mxnet cannot run on device {device!r}; available: "
                             f"{', '.join(available())}")


def dtype(name: str) -> str:
    if name not in DTYPES:
        raise BackendUnavailable(f"mxnet runs {', '.join(DTYPES)}, not {name!r}")
    return name


# --- the benchmark's hooks: MXNet keeps no peak statistic rosetta reads ------------------------

def gpu_peak_memory_mb() -> float | None:
    return None


def reset_gpu_peak_memory() -> None:
    pass


def gpu_name() -> str | None:
    return None


def gpu_matmul_peak(n: int, repeats: int) -> dict | None:
    return None


def thread_settings() -> dict | None:
    return None


def pin_threads(n: int) -> None:
    pass  # MXNet's CPU kernels read OMP_NUM_THREADS when it starts (rosetta.threads.pin_threads)
