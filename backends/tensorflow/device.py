"""Device and dtype: ``cpu`` / ``gpu`` (``cuda`` accepted) -> a TensorFlow device string, and the
benchmark's device hooks (the module contract: ``rosetta.backend.Backend``).

float32 matmuls and convolutions run at full precision: TensorFloat-32, which TensorFlow turns on
by default on Ampere and newer GPUs, is switched off (docs/design.md section 3).
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


def dtype(name: str) -> tf.DType:
    """The TensorFlow dtype for ``float32`` / ``float64``; ``BackendUnavailable`` otherwise."""
    if name not in DTYPES:
        raise BackendUnavailable(f"tensorflow backend: dtype {name!r} is not supported; "
                                 f"choose one of {', '.join(DTYPES)}")
    return tf.as_dtype(name)


def policy_dtype(name: str) -> tf.DType:
    """The TensorFlow dtype of a type a precision policy names (``rosetta.precision.Policy``:
    ``param``, ``low``, ``host``): float64, float32, bfloat16, float16."""
    return {"float64": tf.float64, "float32": tf.float32, "bfloat16": tf.bfloat16,
            "float16": tf.float16}[name]


def resolve(device: str) -> str:
    """The TensorFlow device string; ``BackendUnavailable`` if it is absent. Turns TF32 off."""
    name = normalize_device(device)
    if name not in _TF_DEVICES:
        raise BackendUnavailable(f"tensorflow backend: unknown device {device!r}; "
                                 f"choose cpu or gpu")
    if name not in available():
        raise BackendUnavailable(f"tensorflow backend: device {device!r} is not available "
                                 f"(TensorFlow sees {', '.join(available()) or 'no device'}; "
                                 f"a GPU needs the 'tensorflow[and-cuda]' package)")
    full_precision()
    return _TF_DEVICES[name][1]


# --- the benchmark's hooks ---------------------------------------------------------------------

def gpu_peak_memory_mb() -> float | None:
    """TensorFlow's peak memory on the first GPU since the last reset, in MiB."""
    if "gpu" not in available():
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20


def reset_gpu_peak_memory() -> None:
    if "gpu" in available():
        tf.config.experimental.reset_memory_stats("GPU:0")


def gpu_name() -> str | None:
    return None  # TensorFlow names no device model; another backend's hook does


def gpu_matmul_peak(n: int, repeats: int) -> dict | None:
    return None


def thread_settings() -> dict:
    t = tf.config.threading
    return {"intra_op": t.get_intra_op_parallelism_threads(),
            "inter_op": t.get_inter_op_parallelism_threads(),
            "note": "0 = TensorFlow's default (one thread per core)"}


def pin_threads(n: int) -> None:
    """Only before TensorFlow's runtime starts; the environment variables cover it after."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        pass
