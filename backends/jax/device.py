"""Device and precision setup for the JAX backend, and the benchmark's device hooks (the module
contract: ``rosetta.backend.Backend``).

Importing this module changes two JAX defaults for the whole process (it is imported only when the
jax backend is asked for):

* ``jax_enable_x64 = True``: without it JAX silently truncates float64 to float32, and rosetta's
  float64 programs (the exact conformance tier) would not be float64. With it, ``jnp`` creation
  functions default to float64/int64; every array rosetta makes carries an explicit dtype, so
  float32 programs stay float32.
* ``jax_default_matmul_precision = "highest"``: full float32 matmuls and convolutions (on GPU JAX
  otherwise uses TF32 / bf16 passes), the canonical float32 rule (docs/design.md section 3).
"""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp

from rosetta.backend import DTYPES, normalize_device
from rosetta.errors import BackendUnavailable

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
# "An NVIDIA GPU may be present on this machine, but ..." / "No GPU/TPU found": rosetta reports
# devices itself (Backend.devices), so the platform probe's warnings are noise here.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)

_PLATFORMS = {"cpu": "cpu", "gpu": "gpu"}


def dtype(name: str) -> str:
    """``float32`` / ``float64`` (the name JAX takes); ``BackendUnavailable`` otherwise."""
    if name not in DTYPES:
        raise BackendUnavailable(f"jax backend: dtype {name!r} is not supported; choose one of "
                                 f"{', '.join(DTYPES)}")
    return name


def resolve(device: str) -> jax.Device:
    """The first JAX device for a rosetta device name (``cpu``, ``gpu``/``cuda``)."""
    name = normalize_device(device)
    if name not in _PLATFORMS:
        raise BackendUnavailable(f"jax backend: unknown device {device!r}; choose cpu or gpu")
    try:
        found = jax.devices(_PLATFORMS[name])
    except RuntimeError:
        found = []
    if not found:
        raise BackendUnavailable(f"jax backend: no {name} device is visible to JAX "
                                 f"(jax.devices() = {[d.platform for d in jax.devices()]})")
    return found[0]


def available() -> list[str]:
    """Usable rosetta device names, cpu first."""
    out = []
    for name in _PLATFORMS:
        try:
            resolve(name)
            out.append(name)
        except BackendUnavailable:
            pass
    return out


# --- the benchmark's hooks ---------------------------------------------------------------------

def _gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


def gpu_peak_memory_mb() -> float | None:
    """XLA's peak bytes in use on the first GPU, in MiB (None where it keeps no statistic)."""
    dev = _gpu()
    peak = None if dev is None else (dev.memory_stats() or {}).get("peak_bytes_in_use")
    return None if peak is None else peak / 2 ** 20


def reset_gpu_peak_memory() -> None:
    pass  # XLA's peak cannot be reset: it is the process's


def gpu_name() -> str | None:
    dev = _gpu()
    return None if dev is None else dev.device_kind


def gpu_matmul_peak(n: int, repeats: int) -> dict | None:
    """The best of ``repeats`` float32 n x n products on the first GPU (HIGHEST), GFLOP/s."""
    dev = _gpu()
    if dev is None:
        return None
    a = jax.device_put(jnp.ones((n, n), jnp.float32), dev)
    f = jax.jit(lambda x: jnp.dot(x, x, precision=jax.lax.Precision.HIGHEST))
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return {"gflops": 2 * n ** 3 / best / 1e9, "how": f"jax float32 {n}x{n} matmul (HIGHEST), "
            f"best of {repeats}", "library": "jax " + jax.__version__}


def thread_settings() -> dict:
    return {"note": "XLA's CPU runtime: one intra-op pool of one thread per core unless "
                    "XLA_FLAGS says otherwise"}


def pin_threads(n: int) -> None:
    pass  # XLA reads its threads from XLA_FLAGS when it starts (rosetta.threads.pin_threads)
