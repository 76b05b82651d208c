"""``from_onnx``: an ONNX model (a file or an ``onnx.ModelProto``) as an ``Imported`` (the spec,
canonical weights, the map from initializer names to canonical paths) whose ``certify`` runs
``rosetta.importers.onnx_certificate``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rosetta.importers.errors import ImportRefused
from rosetta.importers.imported import Imported


@dataclass
class OnnxSource:
    """What the ONNX certificate needs: the model, where its tensors are, and how they are
    held (``onnx_graph.OnnxCaptured``)."""

    model: object             # onnx.ModelProto
    captured: object          # OnnxCaptured
    description: str = ""
    kind: str = "onnx"

    @property
    def layouts(self):
        return self.captured.layouts


def from_onnx(source, *, name=None) -> Imported:
    """Import an ONNX model: ``source`` a path to a ``.onnx`` file or an ``onnx.ModelProto``
    (opset 13 and later). Returns ``Imported`` (``inference_only`` says why training is refused
    where the exporter folded BatchNorm away); raises ``ImportRefused`` listing every node the
    spec cannot reproduce exactly, one line each (its name and op type)."""
    from rosetta import losses as L
    from rosetta import optim as O
    from rosetta.importers.onnx_graph import capture_onnx, load_model
    from rosetta.spec import DataSpec, TrainSpec

    model = load_model(source)
    if name is None:
        name = (Path(source).stem if isinstance(source, (str, Path))
                else (model.graph.name or "onnx_model"))
    cap = capture_onnx(model, model_name=name)
    spec_loss, spec_opt = L.SoftmaxCrossEntropy(), O.SGD(learning_rate=0.01)
    shape = cap.input_shape
    x = np.zeros((shape[0], *shape[2:], shape[1]) if cap.input_layout == "nchw" else shape,
                 np.int64 if cap.input_kind == "int" else np.float64)
    out_shape = cap.graph.output_type.shape
    n = shape[0]
    y = np.zeros((n, *out_shape[:-1]), np.int64) if out_shape else np.zeros(n)
    data = DataSpec.from_arrays(x, y, x, y, batch_size=n)
    try:
        spec = TrainSpec(cap.graph, spec_loss, spec_opt, data, steps=1,
                         description=f"imported from ONNX {name} (opset {cap.opset})")
    except Exception as e:
        raise ImportRefused([f"<graph>: {e}"]) from None
    where = str(source) if isinstance(source, (str, Path)) else f"ModelProto {model.graph.name}"
    src = OnnxSource(model, cap, f"onnx {where} (opset {cap.opset}, "
                                 f"{model.producer_name or 'unknown producer'})")
    notes = ["ONNX holds no loss or optimizer: softmax cross-entropy and SGD(lr=0.01) (replace "
             "them on the spec before training)"]
    if cap.inference_only:
        notes.append(f"inference only: {cap.inference_only}")
    return Imported(spec, cap.params, cap.state, {}, 0, cap.names, cap.dtype, cap.node_source,
                    src, notes, inference_only=cap.inference_only)
