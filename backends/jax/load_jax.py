"""Run an exported JAX model without rosetta (copied into the export as ``load.py``).

    python load.py EXPORT_DIR INPUTS.npz OUTPUTS.npz

Reads ``EXPORT_DIR/export.json`` (dtype; the inputs in order: name, per-example shape, dtype),
turns on ``jax_enable_x64`` for a float64 export (before jax makes any array: without it jax
would turn the float64 variables into float32 and ``call`` would refuse them), deserializes
``model.stablehlo`` with ``jax.export.deserialize``, restores ``variables.msgpack`` with
``flax.serialization.msgpack_restore``, casts each input to the dtype the exported function
declares (float inputs already in the export dtype; int64 ids and lengths to int32, the index
dtype it was exported with), calls ``exported.call(variables, inputs)`` and writes the output to
OUTPUTS.npz as ``y``. Needs only NumPy, jax and flax.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def run(export_dir, inputs: dict) -> np.ndarray:
    """The exported model's output on ``inputs`` ({name: batch array})."""
    export_dir = Path(export_dir)
    meta = json.loads((export_dir / "export.json").read_text())
    import jax

    if meta["dtype"] == "float64":
        jax.config.update("jax_enable_x64", True)
    from flax.serialization import msgpack_restore

    exported = jax.export.deserialize(bytearray((export_dir / "model.stablehlo").read_bytes()))
    variables = msgpack_restore((export_dir / "variables.msgpack").read_bytes())
    args = (variables, {i["name"]: np.asarray(inputs[i["name"]]) for i in meta["inputs"]})
    # each leaf in the dtype the exported function declares (its in_avals, in flattening order)
    leaves, tree = jax.tree_util.tree_flatten((args, {}))
    if tree != exported.in_tree:
        raise ValueError(f"{export_dir}: the variables and inputs have the structure {tree}, "
                         f"the exported function takes {exported.in_tree}")
    leaves = [np.asarray(a, aval.dtype) for a, aval in zip(leaves, exported.in_avals)]
    (variables, x), _ = jax.tree_util.tree_unflatten(tree, leaves)
    return np.asarray(jax.device_get(exported.call(variables, x)))


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
