"""Run an export of format ``torch`` without rosetta: ``python load_torch.py EXPORT_DIR INPUTS.npz
OUT.npz``.

``EXPORT_DIR/model.pt2`` is a ``torch.export`` ExportedProgram (``torch.export.save``): an ATen
graph with its weights, traced in eval mode, the batch axis symbolic. ``INPUTS.npz`` holds one
array per input named in ``EXPORT_DIR/export.json`` ("inputs": name, shape without the batch
axis, dtype), batch first, images channels-last (N, H, W, C); ``OUT.npz`` gets the output as
``y`` (``y1``, ``y2``, ... after it for a model with several outputs).

In your own code::

    model = torch.export.load("model.pt2").module()
    y = model(torch.from_numpy(x))          # one tensor per input, in export.json's order

``state_dict.pt`` beside it is the same weights as the torch module's ``state_dict``
(``torch.load(path, weights_only=True)``), for fine-tuning a module of the same structure.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import torch


def run(export_dir, inputs: dict) -> list[np.ndarray]:
    export_dir = pathlib.Path(export_dir)
    meta = json.loads((export_dir / "export.json").read_text())
    model = torch.export.load(export_dir / "model.pt2").module()
    xs = [torch.from_numpy(np.ascontiguousarray(np.asarray(inputs[i["name"]], i["dtype"])))
          for i in meta["inputs"]]
    with torch.no_grad():
        out = model(*xs)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [o.detach().cpu().numpy() for o in outs]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python load_torch.py EXPORT_DIR INPUTS.npz OUT.npz", file=sys.stderr)
        return 2
    export_dir, inputs_path, out_path = argv
    with np.load(inputs_path) as f:
        inputs = {k: f[k] for k in f.files}
    outs = run(export_dir, inputs)
    np.savez(out_path, **{("y" if i == 0 else f"y{i}"): o for i, o in enumerate(outs)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
