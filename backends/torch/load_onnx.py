"""Run an export of format ``onnx`` without rosetta (or torch): ``python load_onnx.py EXPORT_DIR
INPUTS.npz OUT.npz``.

``EXPORT_DIR/model.onnx`` is one self-contained ONNX file (weights inside), written by
``torch.onnx.export(dynamo=True)``, float32, the batch axis symbolic; its inputs are named as the
model's inputs and its output ``y``. ``INPUTS.npz`` holds one array per input named in
``EXPORT_DIR/export.json`` ("inputs": name, shape without the batch axis, dtype), batch first,
images channels-last (N, H, W, C); ``OUT.npz`` gets the output as ``y`` (``y1``, ``y2``, ...
after it for a model with several outputs). It runs on ONNX Runtime's CPU provider.

In your own code::

    session = onnxruntime.InferenceSession("model.onnx")
    (y,) = session.run(["y"], {"x": x.astype(np.float32)})
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort


def run(export_dir, inputs: dict) -> list[np.ndarray]:
    export_dir = pathlib.Path(export_dir)
    meta = json.loads((export_dir / "export.json").read_text())
    session = ort.InferenceSession(str(export_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    # the exporter drops an input no output depends on; feed the ones the graph declares
    wanted = {i.name for i in session.get_inputs()}
    feed = {i["name"]: np.ascontiguousarray(np.asarray(inputs[i["name"]], i["dtype"]))
            for i in meta["inputs"] if i["name"] in wanted}
    return session.run(None, feed)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python load_onnx.py EXPORT_DIR INPUTS.npz OUT.npz", file=sys.stderr)
        return 2
    export_dir, inputs_path, out_path = argv
    with np.load(inputs_path) as f:
        inputs = {k: f[k] for k in f.files}
    outs = run(export_dir, inputs)
    np.savez(out_path, **{("y" if i == 0 else f"y{i}"): np.asarray(o)
                          for i, o in enumerate(outs)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
