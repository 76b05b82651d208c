"""The contract every backend implements (``rosetta.backends.<name>``).

A backend lowers a ``TrainSpec`` (graph + loss + optimizer) to native objects and wraps them in a
``Program``. The core's training loop, the CLI and the conformance suite speak only this API; the
native objects stay reachable (``program.model``, ``program.optimizer``) for use without rosetta.

The ``Program`` contract (its conventions: canonical paths and layouts, update numbering,
injected dropout masks, prepared batches) and ``BackendProgram``, the host-side base every
backend's program extends, are in ``rosetta.program`` and re-exported here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from rosetta.errors import BackendUnavailable

# the Program contract and its host-side base live in rosetta.program; re-exported here
from rosetta.program import (  # noqa: E402,F401
    DTYPES, Batch, BackendProgram, Program, normalize_device,
)


class Backend(ABC):
    """A framework adapter, found through the ``rosetta.backends`` entry-point group."""

    name: str
    modes: tuple[str, ...] = ()  # how a step can be compiled; the first is the default

    @abstractmethod
    def version(self) -> str:
        """Versions of the framework packages it uses, e.g. ``torch 2.13.0``."""

    @abstractmethod
    def devices(self) -> list[str]:
        """Usable devices among ``cpu`` and ``gpu``."""

    @abstractmethod
    def compile(self, spec, *, dtype: str = "float32", device: str = "cpu",
                mode: str | None = None) -> Program:
        """Lower ``spec`` (a ``TrainSpec``) to a ``Program`` with native model and optimizer,
        its step compiled in ``mode`` (one of ``modes``; None: the first).

        Raises ``BackendUnavailable`` for a device, dtype or mode this backend cannot run.
        """

    def resolve_mode(self, mode: str | None) -> str:
        """``mode``, or the default; ``BackendUnavailable`` naming the valid ones."""
        if mode is None:
            return self.modes[0]
        if mode not in self.modes:
            raise BackendUnavailable(f"backend {self.name!r} has no mode {mode!r}; its modes: "
                                     f"{', '.join(self.modes)}")
        return mode

