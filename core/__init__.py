"""rosetta: one neutral model + optimizer spec, lowered to native PyTorch, TensorFlow or JAX.

``import rosetta`` imports NumPy only; a framework is imported when its backend is first used.
"""

from rosetta.errors import BackendUnavailable, CheckpointError, DataError, RosettaError, SpecError
from rosetta.graph import Graph, Input, Model, Node, Sequential, Tensor
from rosetta.layers import (
    Activation, Add, AvgPool1D, AvgPool2D, BatchNorm, Concatenate, Conv1D, Conv2D, Dense,
    Dropout, Embedding, Flatten, GELU, GlobalAvgPool2D, GlobalMaxPool2D, GroupNorm, LayerNorm,
    LeakyReLU, MaxPool1D, MaxPool2D, RMSNorm, ReLU, Reshape, SiLU, Sigmoid, Softmax, Tanh,
    UpSampling2D, ZeroPadding2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, LSTM, GRU,
    SimpleRNN, MultiHeadAttention, PositionEmbedding, SequencePool,
)
from rosetta.blocks import TransformerBlock
from rosetta.initializers import Initializer
from rosetta import losses, optim, schedules
from rosetta.spec import DataSpec, TrainSpec
from rosetta.backend_registry import available_backends, get_backend
from rosetta.trained import TrainedModel, load, train

__version__ = "0.1.0"

__all__ = [
    "RosettaError", "SpecError", "BackendUnavailable", "DataError", "CheckpointError",
    "Graph", "Input", "Model", "Node", "Sequential", "Tensor",
    "Activation", "Add", "AvgPool1D", "AvgPool2D", "BatchNorm", "Concatenate", "Conv1D",
    "Conv2D", "Dense", "Dropout", "Embedding", "Flatten", "GELU", "GlobalAvgPool2D",
    "GlobalMaxPool2D", "GroupNorm", "LayerNorm", "LeakyReLU", "MaxPool1D", "MaxPool2D",
    "RMSNorm", "ReLU", "Reshape", "SiLU", "Sigmoid", "Softmax", "Tanh", "UpSampling2D",
    "ZeroPadding2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "LSTM", "GRU",
    "SimpleRNN", "MultiHeadAttention", "PositionEmbedding", "SequencePool",
    "Initializer", "losses", "optim", "schedules", "DataSpec", "TrainSpec",
    "available_backends", "get_backend", "train", "load", "TrainedModel",
]
