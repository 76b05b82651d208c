"""The contract every backend implements (``rosetta.backends.<name>``).

A backend lowers a ``TrainSpec`` (graph + loss + optimizer) to native objects and wraps them in a
``Program``. The core's training loop, the CLI and the conformance suite speak only this API; the
native objects stay reachable (``program.model``, ``program.optimizer``) for use without rosetta.

Conventions every backend keeps:

* parameters and state cross this API as NumPy arrays under canonical paths and layouts
  (``dense/kernel`` is (in, out) everywhere; torch transposes inside its own ``params.py``);
* inputs arrive as ``{input name: array}`` in canonical layout (channels last); labels as an
  int64 array (class ids) or a float array of the output's shape;
* ``train_step`` applies update number ``program.step`` with ``lr(step)``, then increments it;
* ``gradients`` and ``forward`` leave parameters, state and optimizer state untouched;
* ``masks`` (conformance mode) maps each Dropout node to a keep-mask (1 keep, 0 drop) of the
  node's output shape with the batch axis; given, it replaces the framework's RNG, so dropout
  agrees across backends: y = x * mask / (1 - rate).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

DTYPES = ("float32", "float64")


class Program(ABC):
    """One lowered training setup on one device and dtype."""

    backend: str
    dtype: str
    device: str
    model: object       # torch.nn.Module / tf.Module / flax.linen.Module
    optimizer: object   # torch.optim.Optimizer / tf.Module optimizer / optax.GradientTransformation
    step: int = 0       # updates applied since load()

    @abstractmethod
    def load(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """Set parameters and model state from canonical arrays; reset the optimizer and step."""

    @abstractmethod
    def export_params(self) -> dict[str, np.ndarray]:
        """Trainable parameters as canonical NumPy arrays, by path."""

    @abstractmethod
    def export_state(self) -> dict[str, np.ndarray]:
        """Non-trainable model state (BatchNorm running statistics), by path."""

    @abstractmethod
    def train_step(self, inputs: dict[str, np.ndarray], labels: np.ndarray,
                   masks: dict | None = None) -> float:
        """One compiled optimizer update in training mode; returns the loss before the update."""

    @abstractmethod
    def gradients(self, inputs, labels, masks: dict | None = None
                  ) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and canonical-layout gradients in training mode, without applying anything."""

    @abstractmethod
    def forward(self, inputs, training: bool = False, masks: dict | None = None) -> np.ndarray:
        """The model output (canonical layout). ``training`` picks batch statistics and dropout;
        running statistics are not updated."""

    def export_optimizer_state(self) -> dict[str, np.ndarray]:
        """Optimizer state as canonical arrays named ``<slot>/<parameter path>``: SGD with
        momentum ``velocity/...`` (v of the canonical rule); Adam and AdamW ``m/...`` and
        ``v/...``. Plain SGD has none (an empty dict)."""
        return {}


class Backend(ABC):
    """A framework adapter, found through the ``rosetta.backends`` entry-point group."""

    name: str

    @abstractmethod
    def version(self) -> str:
        """Versions of the framework packages it uses, e.g. ``torch 2.13.0``."""

    @abstractmethod
    def devices(self) -> list[str]:
        """Usable devices among ``cpu`` and ``gpu``."""

    @abstractmethod
    def compile(self, spec, *, dtype: str = "float32", device: str = "cpu") -> Program:
        """Lower ``spec`` (a ``TrainSpec``) to a ``Program`` with native model and optimizer.

        Raises ``BackendUnavailable`` for a device or dtype this backend cannot run.
        """


def normalize_device(device: str) -> str:
    """``cuda`` and ``gpu`` mean the same: the first GPU."""
    d = str(device).lower()
    return "gpu" if d in ("cuda", "gpu", "cuda:0", "gpu:0") else d
