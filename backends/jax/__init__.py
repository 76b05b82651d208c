"""The JAX backend: a ``flax.linen`` module, an ``optax.GradientTransformation`` and ``jax.jit``
steps.

Importing this package imports jax, flax and optax, and (through ``device``) turns on
``jax_enable_x64`` and ``jax_default_matmul_precision="highest"`` for the whole process; see
``rosetta.backends.jax.device`` for why. It never imports torch or tensorflow.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _dist_version

from rosetta import backend

from rosetta.backends.jax import device as device_setup
from rosetta.backends.jax.program import Program

__all__ = ["Backend", "Program"]


class Backend(backend.Backend):
    name = "jax"
    modes = ("jit",)

    def version(self) -> str:
        parts = []
        for dist in ("jax", "jaxlib", "flax", "optax"):
            try:
                parts.append(f"{dist} {_dist_version(dist)}")
            except PackageNotFoundError:
                parts.append(f"{dist} (unknown)")
        return ", ".join(parts)

    def devices(self) -> list[str]:
        return device_setup.available()

    def compile(self, spec, *, dtype: str = "float32", device: str = "cpu",
                mode: str | None = None) -> Program:
        """Lower ``spec``; ``mode`` ``"jit"`` (the only one): every step one ``jax.jit``."""
        return Program(spec, dtype=dtype, device=device, mode=self.resolve_mode(mode))
