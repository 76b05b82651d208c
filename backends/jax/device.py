"""Device and precision setup for the JAX backend.

Importing this module changes two JAX defaults for the whole process (it is imported only when the
jax backend is asked for):

* ``jax_enable_x64 = True``: without it JAX silently truncates float64 to float32, and rosetta's
  float64 programs (the exact conformance tier) would not be float64. With it, ``jnp`` creation
  functions default to float64/int64; every array rosetta makes carries an explicit dtype, so
  float32 programs stay float32.
* ``jax_default_matmul_precision = "highest"``: full float32 matmuls and convolutions (on GPU JAX
  otherwise uses TF32 / bf16 passes), the canonical float32 rule (DESIGN section 3).
"""

from __future__ import annotations

import logging

import jax

from rosetta.backend import DTYPES, normalize_device
from rosetta.errors import BackendUnavailable

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
# "An NVIDIA GPU may be present on this machine, but ..." / "No GPU/TPU found": rosetta reports
# devices itself (Backend.devices), so the platform probe's warnings are noise here.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)

_PLATFORMS = {"cpu": "cpu", "gpu": "gpu"}


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise BackendUnavailable(f"jax backend: dtype {dtype!r} is not supported; choose one of "
                                 f"{', '.join(DTYPES)}")
    return dtype


def jax_device(device: str) -> jax.Device:
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
            jax_device(name)
            out.append(name)
        except BackendUnavailable:
            pass
    return out
