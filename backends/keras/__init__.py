"""The Keras 3 lowering: a graph as a ``keras.Model`` of Keras's own layers (``model.py``).

Not a training backend (no ``Backend``, no entry point): it is the ``keras`` export format, which
any training backend's program can write, and it runs under any ``KERAS_BACKEND`` (tensorflow,
jax, torch). Its lowerings register themselves with ``model.lowers`` like every backend's.
Importing this package imports nothing of Keras; ``model.export_keras`` imports it when called.
"""
