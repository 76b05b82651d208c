"""Device and dtype: ``cpu`` / ``gpu`` (``cuda`` accepted) -> a TensorFlow device string.

float32 matmuls and convolutions run at full precision: TensorFloat-32, which TensorFlow turns on
by default on Ampere and newer GPUs, is switched off (DESIGN section 3).
"""

from __future__ import annotations

import tensorflow as tf

from rosetta.backend import DTYPES, normalize_device
from rosetta.errors import BackendUnavailable

_TF_DEVICES = {"cpu": ("CPU", "/CPU:0"), "gpu": ("GPU", "/GPU:0")}


def available() -> list[str]:
    """Usable devices among ``cpu`` and ``gpu``."""
    return [d for d, (kind, _) in _TF_DEVICES.items() if tf.config.list_physical_devices(kind)]


def default_device() -> str:
    """Where TensorFlow places an op given no device scope: the first GPU, else the CPU."""
    return _TF_DEVICES["gpu" if "gpu" in available() else "cpu"][1]


def full_precision() -> None:
    """TF32 off: float32 matmul and convolution in true float32 (process-wide setting)."""
    tf.config.experimental.enable_tensor_float_32_execution(False)


def resolve(device: str, dtype: str) -> tuple[str, tf.DType]:
    """(TensorFlow device string, TensorFlow dtype); ``BackendUnavailable`` if either is absent."""
    if dtype not in DTYPES:
        raise BackendUnavailable(f"tensorflow backend: dtype {dtype!r} is not supported; "
                                 f"choose one of {', '.join(DTYPES)}")
    name = normalize_device(device)
    if name not in _TF_DEVICES:
        raise BackendUnavailable(f"tensorflow backend: unknown device {device!r}; "
                                 f"choose cpu or gpu")
    if name not in available():
        raise BackendUnavailable(f"tensorflow backend: device {device!r} is not available "
                                 f"(TensorFlow sees {', '.join(available()) or 'no device'}; "
                                 f"a GPU needs the 'tensorflow[and-cuda]' package)")
    full_precision()
    return _TF_DEVICES[name][1], tf.as_dtype(dtype)
