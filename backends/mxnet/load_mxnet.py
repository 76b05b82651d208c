"""Run an exported MXNet model without rosetta (copied into the export as ``load.py``).

    python load.py EXPORT_DIR INPUTS.npz OUTPUTS.npz

Reads ``EXPORT_DIR/export.json`` (dtype; the inputs in order: name, per-example shape, dtype),
loads ``model-symbol.json`` and ``model-0000.params`` with ``gluon.SymbolBlock.imports`` (the
graph's inputs are ``data`` for one input, ``data0``, ``data1``, ... for several, in the order of
export.json), casts every input to the export dtype (integer ids and lengths included: the graph
takes them as floats), runs it and writes the output to OUTPUTS.npz as ``y``. Needs only NumPy
and mxnet.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np


def run(export_dir, inputs: dict) -> np.ndarray:
    """The exported model's output on ``inputs`` ({name: batch array})."""
    export_dir = Path(export_dir)
    meta = json.loads((export_dir / "export.json").read_text())
    import mxnet as mx

    names = [i["name"] for i in meta["inputs"]]
    data = ["data"] if len(names) == 1 else [f"data{k}" for k in range(len(names))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = mx.gluon.SymbolBlock.imports(str(export_dir / "model-symbol.json"), data,
                                           str(export_dir / "model-0000.params"))
    xs = [mx.nd.array(np.asarray(inputs[n]), dtype=meta["dtype"]) for n in names]
    return net(*xs).asnumpy()


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
