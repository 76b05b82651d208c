"""rosetta: one neutral model + optimizer spec, lowered to native PyTorch, TensorFlow or JAX.

``import rosetta`` imports NumPy only; a framework is imported when its backend is first used.
"""

from rosetta.errors import BackendUnavailable, CheckpointError, DataError, RosettaError, SpecError
from rosetta.graph import Graph, Input, Model, Node, Sequential, Tensor
from rosetta import layers
from rosetta.layers import *  # noqa: F401,F403  (one constructor per registered op, and ReLU...)
from rosetta.blocks import TransformerBlock
from rosetta.initializers import Initializer
from rosetta import losses, optim, schedules
from rosetta.spec import DataSpec, TrainSpec
from rosetta.backend_registry import available_backends, get_backend
from rosetta.importers import from_keras, from_onnx, from_torch
from rosetta.trained import TrainedModel, load, train

__version__ = "0.1.0"

__all__ = [
    "RosettaError", "SpecError", "BackendUnavailable", "DataError", "CheckpointError",
    "Graph", "Input", "Model", "Node", "Sequential", "Tensor",
    *layers.__all__,
    "Initializer", "losses", "optim", "schedules", "DataSpec", "TrainSpec",
    "available_backends", "get_backend", "train", "load", "TrainedModel", "from_torch",
    "from_keras", "from_onnx",
]
