"""TensorFlow backend: a spec lowered to a ``tf.Module`` of ``tf.Variable``s named by canonical
path, tf.Module optimizers with the canonical update rules, and XLA-compiled ``tf.function`` steps.

Keras is never imported: Keras 3 binds one backend per process (``KERAS_BACKEND``), and this backend
must run beside torch and jax whatever that variable says. Importing this package imports no
framework (its ``Backend`` declares what rosetta needs to know); the backend imports TensorFlow
through ``_import_tensorflow`` before any of its modules (``Backend.load_framework``).
"""

import os
import sys

from rosetta import backend as contract
from rosetta.backends.tensorflow.distributed import Engine
from rosetta.precision import PRECISIONS


def _import_tensorflow():
    """Import TensorFlow without the other frameworks its ``__init__`` drags in.

    ``import tensorflow`` eagerly imports Keras 3 (``keras.src.optimizers``), which loads the
    framework ``KERAS_BACKEND`` names (torch, jax), and ``tf.lite`` imports jax when it is
    installed; both imports sit in TensorFlow's own ``try/except ImportError``. Marking ``keras``
    and ``jax`` absent for the duration of the import keeps this backend from loading the other
    two frameworks (and halves the import time); afterwards they import normally, so ``tf.keras``
    still loads Keras lazily for a user who asks for it. Modules already imported are left alone.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow starts: quiet C++ logs
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


# the Keras export is checked under every Keras 3 backend, one run each
_KERAS_BACKENDS = ("tensorflow", "jax", "torch")


class Backend(contract.Backend):
    """``rosetta.backends.tensorflow``: lowers a ``TrainSpec`` to a TensorFlow ``Program``."""

    name = "tensorflow"
    order = 1
    requires = ("tensorflow",)
    distributions = ("tensorflow", "tensorflow-cpu")
    extra = "tensorflow"
    # xla: every step one tf.function(jit_compile=True); function: tf.function without XLA (the
    # TensorFlow graph runtime and its own kernels)
    modes = ("xla", "function")
    precisions = PRECISIONS  # bfloat16 and mixed policies: explicit casts (precision.py)
    formats = {
        "savedmodel": contract.ExportFormat(("float32", "float64"),
                                            "TensorFlow SavedModel, serving_default signature"),
        "keras": contract.ExportFormat(("float32",), "Keras 3 model (.keras) of Keras layers",
                                       tuple({"KERAS_BACKEND": b} for b in _KERAS_BACKENDS)),
    }
    engine = Engine()
    shard_params_refusal = (
        "tf.distribute's MirroredStrategy and MultiWorkerMirroredStrategy replicate every "
        "variable, and TensorFlow's sharded variables belong to other schemes "
        "(ParameterServerStrategy's partitioners, the experimental DTensor API) that do not "
        "keep the data-parallel step")
    quiet_env = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
                 "GRPC_VERBOSITY": "ERROR"}
    quiet_loggers = ("absl", "tensorflow")

    def load_framework(self) -> None:
        _import_tensorflow()

    def version(self) -> str:
        return f"tensorflow {_import_tensorflow().__version__}"


__all__ = ["Backend"]
