"""Models from elsewhere (docs/design.md section 12): ``from_torch`` reads a ``torch.nn.Module`` (with its
optimizer and loss) and ``from_keras`` a Keras 3 model into a spec with canonical weights, and
certifies it against the source; ``from_onnx`` reads an ONNX graph (opset 13 and later) and
certifies it against ONNX's own evaluators.

Nothing here imports torch until a function is called.
"""

from rosetta.importers.errors import ImportRefused
from rosetta.importers.torch_graph import maps

__all__ = ["ImportRefused", "maps", "from_torch", "from_keras", "from_onnx", "Imported"]


def from_torch(module, example_inputs=None, **kwargs):
    """See ``rosetta.importers.imported.from_torch``."""
    from rosetta.importers.imported import from_torch as _from_torch
    return _from_torch(module, example_inputs, **kwargs)


def from_keras(model, *, optimizer=None, loss=None, name=None, batch_size=2,
               example_inputs=None):
    """See ``rosetta.importers.keras_import.from_keras``."""
    from rosetta.importers.keras_import import from_keras as _from_keras
    return _from_keras(model, optimizer=optimizer, loss=loss, name=name, batch_size=batch_size,
                       example_inputs=example_inputs)


def from_onnx(source, *, name=None, torch_module=None, example_inputs=None, optimizer=None,
              loss=None):
    """See ``rosetta.importers.onnx_import.from_onnx``."""
    from rosetta.importers.onnx_import import from_onnx as _from_onnx
    return _from_onnx(source, name=name, torch_module=torch_module,
                      example_inputs=example_inputs, optimizer=optimizer, loss=loss)


def __getattr__(name):
    if name == "Imported":
        from rosetta.importers.imported import Imported
        return Imported
    raise AttributeError(name)
