"""Models from elsewhere (docs/design.md section 12): ``from_torch`` reads a ``torch.nn.Module`` (with its
optimizer and loss) and ``from_keras`` a Keras 3 model into a spec with canonical weights, and certifies it against the source.

Nothing here imports torch until a function is called.
"""

from rosetta.importers.errors import ImportRefused
from rosetta.importers.torch_graph import maps

__all__ = ["ImportRefused", "maps", "from_torch", "from_keras", "Imported"]


def from_torch(module, example_inputs=None, **kwargs):
    """See ``rosetta.importers.imported.from_torch``."""
    from rosetta.importers.imported import from_torch as _from_torch
    return _from_torch(module, example_inputs, **kwargs)


def from_keras(model, *, optimizer=None, loss=None, name=None):
    """See ``rosetta.importers.keras_import.from_keras``."""
    from rosetta.importers.keras_import import from_keras as _from_keras
    return _from_keras(model, optimizer=optimizer, loss=loss, name=name)


def __getattr__(name):
    if name == "Imported":
        from rosetta.importers.imported import Imported
        return Imported
    raise AttributeError(name)
