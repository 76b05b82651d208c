"""Run an exported TensorFlow SavedModel without rosetta (copied into the export as ``load.py``).

    python load.py EXPORT_DIR INPUTS.npz OUTPUTS.npz

Reads ``EXPORT_DIR/export.json`` (the inputs in order: name, per-example shape, dtype), loads
``EXPORT_DIR/saved_model`` with ``tf.saved_model.load`` and calls its ``serving_default``
signature with one keyword tensor per input (batch first, canonical layout: channels last; float
inputs in the export dtype, integer inputs int64), and writes its ``y`` output to OUTPUTS.npz as
``y``. Needs only NumPy and TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def import_tensorflow():
    """``import tensorflow`` without the Keras and JAX imports its ``__init__`` attempts inside
    ``try/except ImportError`` (a SavedModel of a ``tf.Module`` needs neither; it halves the
    import time)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    blocked = [name for name in ("keras", "jax") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None
    try:
        import tensorflow as tf
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return tf


def run(export_dir, inputs: dict) -> np.ndarray:
    """The ``serving_default`` output ``y`` of the SavedModel in ``export_dir`` on ``inputs``
    ({name: batch array}), cast to the dtypes export.json gives."""
    tf = import_tensorflow()
    export_dir = Path(export_dir)
    meta = json.loads((export_dir / "export.json").read_text())
    serve = tf.saved_model.load(str(export_dir / "saved_model")).signatures["serving_default"]
    args = {i["name"]: tf.constant(np.asarray(inputs[i["name"]], dtype=i["dtype"]))
            for i in meta["inputs"]}
    return serve(**args)["y"].numpy()


def main(argv) -> int:
    if len(argv) != 3:
        print("usage: python load.py EXPORT_DIR INPUTS.npz OUTPUTS.npz", file=sys.stderr)
        return 2
    export_dir, inputs_path, out_path = argv
    with np.load(inputs_path) as data:
        inputs = {k: data[k] for k in data.files}
    np.savez(out_path, y=run(export_dir, inputs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
