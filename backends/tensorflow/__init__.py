"""TensorFlow backend: a spec lowered to a ``tf.Module`` of ``tf.Variable``s named by canonical path,
tf.Module optimizers with the canonical update rules, and XLA-compiled ``tf.function`` steps.

Keras is never imported: Keras 3 binds one backend per process (``KERAS_BACKEND``), and this backend
must run beside torch and jax whatever that variable says.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported: quiet C++ logs

import tensorflow as tf  # noqa: E402

from rosetta import backend as _contract  # noqa: E402
from rosetta.backends.tensorflow import device as _device  # noqa: E402


class Backend(_contract.Backend):
    """``rosetta.backends.tensorflow``: lowers a ``TrainSpec`` to a TensorFlow ``Program``."""

    name = "tensorflow"

    def version(self) -> str:
        return f"tensorflow {tf.__version__}"

    def devices(self) -> list[str]:
        return _device.available()

    def compile(self, spec, *, dtype: str = "float32", device: str = "cpu"):
        from rosetta.backends.tensorflow.program import Program

        return Program(spec, dtype=dtype, device=device)


__all__ = ["Backend"]
