"""TensorFlow backend: a spec lowered to a ``tf.Module`` of ``tf.Variable``s named by canonical
path, tf.Module optimizers with the canonical update rules, and XLA-compiled ``tf.function`` steps.

Keras is never imported: Keras 3 binds one backend per process (``KERAS_BACKEND``), and this backend
must run beside torch and jax whatever that variable says.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: quiet C++ logs

import sys  # noqa: E402


def _import_tensorflow():
    """Import TensorFlow without the other frameworks its ``__init__`` drags in.

    ``import tensorflow`` eagerly imports Keras 3 (``keras.src.optimizers``), which loads the
    framework ``KERAS_BACKEND`` names (torch, jax), and ``tf.lite`` imports jax when it is
    installed; both imports sit in TensorFlow's own ``try/except ImportError``. Marking ``keras``
    and ``jax`` absent for the duration of the import keeps this backend from loading the other
    two frameworks (and halves the import time); afterwards they import normally, so ``tf.keras``
    still loads Keras lazily for a user who asks for it. Modules already imported are left alone.
    """
    blocked = [name for name in ("keras", "jax") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # makes ``import name`` raise ImportError
    try:
        import tensorflow
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return tensorflow


tf = _import_tensorflow()

from rosetta import backend as _contract  # noqa: E402
from rosetta.backends.tensorflow import device as _device  # noqa: E402


class Backend(_contract.Backend):
    """``rosetta.backends.tensorflow``: lowers a ``TrainSpec`` to a TensorFlow ``Program``."""

    name = "tensorflow"
    modes = ("xla", "function")

    def version(self) -> str:
        return f"tensorflow {tf.__version__}"

    def devices(self) -> list[str]:
        return _device.available()

    def compile(self, spec, *, dtype: str = "float32", device: str = "cpu",
                mode: str | None = None):
        """Lower ``spec``. ``mode``: ``"xla"`` (default: every step one
        ``tf.function(jit_compile=True)``) or ``"function"`` (``tf.function`` without XLA: the
        TensorFlow graph runtime and its own kernels)."""
        from rosetta.backends.tensorflow.program import Program

        return Program(spec, dtype=dtype, device=device, mode=self.resolve_mode(mode))


__all__ = ["Backend"]
