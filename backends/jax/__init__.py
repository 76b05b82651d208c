"""The JAX backend: a ``flax.linen`` module, an ``optax.GradientTransformation`` and ``jax.jit``
steps.

Importing this package imports no framework (its ``Backend`` declares what rosetta needs to
know). Its modules import jax, flax and optax, and the backend first imports ``device``, which
turns on ``jax_enable_x64`` and ``jax_default_matmul_precision="highest"`` for the whole process;
see ``rosetta.backends.jax.device`` for why. It never imports torch or tensorflow.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _dist_version

from rosetta import backend as contract
from rosetta.backends.jax.distributed import Engine
from rosetta.precision import PRECISIONS


class Backend(contract.Backend):
    name = "jax"
    order = 2
    requires = ("jax", "flax", "optax")
    distributions = ("jax", "jaxlib", "flax", "optax")
    extra = "jax"
    modes = ("jit",)  # every step one jax.jit
    precisions = PRECISIONS  # bfloat16 and mixed policies: docs/guide/precision.md
    formats = {
        "jax": contract.ExportFormat(("float32", "float64"),
                                     "jax.export StableHLO + flax variables"),
    }
    engine = Engine()
    shard_params = ("NamedSharding of parameters and optimizer state over the mesh (the "
                    "largest axis that divides by N, the rest replicated); each node gathers "
                    "its parameters only while it runs, as FSDP2 does")
    # "An NVIDIA GPU may be present on this machine, but ..." / "No GPU/TPU found": rosetta
    # reports devices itself (Backend.devices), so the platform probe's warnings are noise
    quiet_loggers = ("jax._src.xla_bridge",)

    def load_framework(self) -> None:
        import rosetta.backends.jax.device  # noqa: F401 - the process-wide JAX settings first

    def version(self) -> str:
        parts = []
        for dist in self.distributions:
            try:
                parts.append(f"{dist} {_dist_version(dist)}")
            except PackageNotFoundError:
                parts.append(f"{dist} (unknown)")
        return ", ".join(parts)


__all__ = ["Backend"]
