"""Load and run a rosetta ``keras`` export with Keras 3 alone (this script never imports rosetta).

    python load_keras.py EXPORT_DIR INPUTS.npz OUT.npz [--fit] [--save PATH.keras]

The backend is Keras's: set ``KERAS_BACKEND`` (tensorflow, jax or torch) in the environment.

* Loads ``EXPORT_DIR/model.keras`` with ``keras.saving.load_model`` (safe mode: the model is
  built-in Keras layers and ``keras.ops`` operations only).
* Reads one array per model input from INPUTS.npz, by the Keras input's name (the graph input
  names, also listed in ``EXPORT_DIR/export.json``), in the model's input order, each cast to the
  input's dtype (float32; int32 for token ids and sequence lengths, given as int64).
* Writes ``model.predict(inputs)`` as ``y`` to OUT.npz (float32, batch first, channels last).
* float32 matmuls and convolutions run at full precision: TensorFloat-32 is switched off on the
  active backend (GPUs would otherwise round float32 matmul inputs to 10 mantissa bits).

``--fit`` then trains the loaded model the Keras way and proves it is a working Keras model:
``compile`` with ``keras.optimizers.Adam(1e-3)`` and, for integer labels
(``INPUTS.npz["__labels__"]``, class ids), ``SparseCategoricalCrossentropy(from_logits=True)``,
for float labels ``MeanSquaredError``; ``fit`` 2 epochs; checks that every loss is finite and
that the trainable weights changed; saves the trained model to a new ``.keras`` file
(``--save``, default ``OUT.refit.keras`` beside OUT.npz) and reloads it, checking that the
reloaded model predicts what the trained one does. It prints one line of JSON: backend, losses,
weights changed, the reload's max difference, the file, and ``ok``; the exit status is 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

MODEL_FILE = "model.keras"
LABELS = "__labels__"


def full_precision(backend: str) -> None:
    """Switch off TensorFloat-32 on the active Keras backend (a no-op on CPU)."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def model_inputs(model, arrays) -> list:
    """The arrays by Keras input name, in the model's input order, in each input's dtype."""
    missing = [t.name for t in model.inputs if t.name not in arrays]
    if missing:
        raise SystemExit(f"INPUTS.npz lacks the model input(s) {missing}; it holds "
                         f"{sorted(k for k in arrays if k != LABELS)}")
    return [np.asarray(arrays[t.name], dtype=t.dtype) for t in model.inputs]


def fit_check(keras, model, xs, labels, save_path: Path) -> dict:
    """compile + fit 2 epochs + save + reload (see the module docstring); the summary."""
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.integer):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        labels = labels.astype("int32")
    else:
        loss = keras.losses.MeanSquaredError()
        labels = labels.astype("float32")
    before = [np.array(w) for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss=loss)
    history = model.fit(xs, labels, epochs=2, batch_size=min(len(labels), 32), shuffle=False,
                        verbose=0)
    losses = [float(v) for v in history.history["loss"]]
    after = [np.array(w) for w in model.trainable_weights]
    changed = sum(not np.array_equal(b, a) for b, a in zip(before, after))
    model.save(save_path)
    reloaded = keras.saving.load_model(save_path)
    y_trained = np.asarray(model.predict(xs, verbose=0))
    y_reloaded = np.asarray(reloaded.predict(xs, verbose=0))
    diff = float(np.max(np.abs(y_trained - y_reloaded)))
    ok = (bool(np.all(np.isfinite(losses))) and changed > 0 and diff <= 1e-6
          and len(reloaded.weights) == len(model.weights))
    return {"backend": keras.backend.backend(), "losses": losses,
            "weights_changed": changed, "trainable_weights": len(before),
            "reload_max_diff": diff, "saved": str(save_path), "ok": ok}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir")
    ap.add_argument("inputs")
    ap.add_argument("out")
    ap.add_argument("--fit", action="store_true",
                    help="also compile, fit 2 epochs on INPUTS.npz['__labels__'], save, reload")
    ap.add_argument("--save", default=None, help="where --fit saves the trained model (.keras)")
    args = ap.parse_args(argv)

    import keras

    full_precision(keras.backend.backend())
    model = keras.saving.load_model(Path(args.export_dir) / MODEL_FILE)
    with np.load(args.inputs) as f:
        arrays = {k: f[k] for k in f.files}
    xs = model_inputs(model, arrays)
    y = np.asarray(model.predict(xs, verbose=0))
    np.savez(args.out, y=y)
    if not args.fit:
        return 0
    if LABELS not in arrays:
        raise SystemExit(f"--fit needs the labels in INPUTS.npz under {LABELS!r}")
    out = Path(args.out)
    save = Path(args.save) if args.save else out.with_name(out.stem + ".refit.keras")
    summary = fit_check(keras, model, xs, arrays[LABELS], save)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
