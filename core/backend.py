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
  agrees across backends: y = x * mask / (1 - rate);
* ``prepare_batch`` checks, converts and places a batch on the device once; ``train_step`` takes
  the ``Batch`` it returns in place of ``(inputs, labels)`` (no checks, no copies: data already on
  the device, as the benchmark feeds it);
* a backend lowers in one of its ``modes`` (how the step is compiled); the first is the default.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np

from rosetta.errors import BackendUnavailable, DataError, SpecError

DTYPES = ("float32", "float64")


class Batch:
    """A batch made by ``Program.prepare_batch``: native arrays on the program's device.

    ``args`` is what the backend's compiled step takes (backend specific); ``size`` the number of
    examples. A Batch belongs to the program that made it.
    """

    __slots__ = ("owner", "args", "size")

    def __init__(self, owner, args, size: int):
        self.owner, self.args, self.size = owner, args, int(size)

    def check(self, program, masks=None):
        """The native arguments, after checking this Batch was made by ``program``."""
        if self.owner is not program:
            raise DataError("this Batch was prepared by another Program: call "
                            "program.prepare_batch(inputs, labels) on the program that runs it")
        if masks:
            raise DataError("masks cannot be given with a prepared Batch; pass host arrays "
                            "(inputs, labels, masks) instead")
        return self.args

    def __repr__(self):
        return f"Batch(size={self.size}, on {self.owner!r})"


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

    mode: str = ""      # how the step is compiled: one of the backend's ``modes``

    @abstractmethod
    def prepare_batch(self, inputs: dict[str, np.ndarray], labels: np.ndarray) -> Batch:
        """Check and convert ``(inputs, labels)`` once, the way ``train_step`` would, and place
        them on the program's device: a ``Batch`` that ``train_step(batch)`` runs on without
        further checks or host-to-device copies."""

    @abstractmethod
    def train_step(self, inputs: dict[str, np.ndarray] | Batch, labels: np.ndarray | None = None,
                   masks: dict | None = None) -> float:
        """One compiled optimizer update in training mode; returns the loss before the update.
        ``inputs`` may be a ``Batch`` from ``prepare_batch`` (then no ``labels`` or ``masks``)."""

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

    @property
    def _param_shapes(self) -> dict[str, tuple]:
        """{canonical path: canonical shape} of the spec's parameters (``self.graph``)."""
        return {path: tuple(d.shape) for path, d in self.graph.param_defs().items()}

    def load_optimizer_state(self, slots: dict[str, np.ndarray], step: int) -> None:
        """Set the optimizer state and the update count, after ``load``: ``slots`` has exactly
        the names ``export_optimizer_state`` gives after an update (``<slot>/<parameter path>``,
        canonical layout, every parameter; empty for an optimizer without state), and the next
        ``train_step`` applies update number ``step`` with lr(step) (its bias corrections,
        epsilon-hat factor and dropout masks those of update ``step``), so that a program
        resumed from exported state continues exactly as the one that exported it.

        Raises ``CheckpointError`` naming the first missing, unknown or misshapen slot."""
        raise BackendUnavailable(f"backend {self.backend!r} cannot load optimizer state")

    def export_rng_state(self) -> dict[str, np.ndarray]:
        """The position of this backend's own dropout stream, as arrays (empty when the program
        draws nothing at random, or derives its masks from the update count). Only the same
        backend can read it back (``load_rng_state``); masks never match across backends."""
        return {}

    def load_rng_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Put the dropout stream where ``export_rng_state`` of the same backend found it."""
        if arrays:
            raise BackendUnavailable(f"backend {self.backend!r} keeps no dropout stream to load")


class ExportFormat(NamedTuple):
    """An export format a backend writes (``rosetta export --format``; ``rosetta.export``)."""

    dtypes: tuple[str, ...]             # the dtypes the artifact keeps
    description: str                    # one line for ``--help`` and the docs
    check_envs: tuple[dict, ...] = ({},)  # environments its loader is checked under, one run each


class Backend(ABC):
    """A framework adapter, found through the ``rosetta.backends`` entry-point group.

    **Declaration.** The class lives in the backend package's ``__init__.py`` and importing it
    never imports the framework: the class attributes below are what the rest of rosetta knows
    about a framework (``rosetta backends``, the test selection, ``rosetta export``, the
    launcher, the benchmark read them; nothing outside ``backends/`` names a framework):

    * ``name``; ``order``: its place in listings (``rosetta backends``, the default backends of
      ``rosetta conformance`` and ``bench``, the test selection), lower first, then by name;
      ``requires``: the top-level modules it imports (checked with
      ``importlib.util.find_spec``, never imported); ``distributions``: the packages whose
      versions a report records; ``extra``: the pip extra that installs them
      (``rosetta-ml[extra]``); ``own_environment``: how to get it where it cannot share an
      environment with the others (None: it can);
    * ``modes``: how a step can be compiled, the first the default;
    * ``formats``: {format: ``ExportFormat``} of the artifacts its ``export`` module writes;
    * ``engine``: its data-parallel engine (a ``rosetta.distributed.Engine``, declared in its
      ``distributed`` module), or None where it trains on one device only;
    * ``quiet_env``, ``quiet_loggers``: environment defaults and loggers that silence its
      banners (``rosetta.cli.quiet_frameworks``).

    The framework is imported by ``module(name)`` (after ``load_framework``), ``version``,
    ``compile`` and the device hooks.

    **Module contract.** Every backend package has the same modules with the same functions, so
    that reading one backend teaches the others (``tests/backends/test_contract_modules.py``
    checks every backend folder against ``CONTRACT``):

    * ``device``: ``available()`` the usable device names among ``cpu`` and ``gpu``;
      ``resolve(device)`` the native device for a rosetta device name; ``dtype(name)`` the native
      dtype for ``float32``/``float64`` (``BackendUnavailable`` for what it cannot run); the
      benchmark's hooks ``gpu_peak_memory_mb()`` and ``reset_gpu_peak_memory()`` (None / no-op
      where the framework keeps no statistic), ``gpu_name()`` and ``gpu_matmul_peak(n,
      repeats)`` (None where it cannot tell), ``thread_settings()`` (a dict, or None) and
      ``pin_threads(n)``;
    * ``losses``: ``LOSSES`` {loss kind: its lowering} and ``lower(loss, ...)``, the native loss
      for a spec ``Loss`` (looked up by ``loss_lowering`` below: one rule, one message);
    * ``optimizers``: ``lower(optimizer, ...)``, the native optimizer for a spec ``Optimizer``;
    * ``params``: ``load(...)`` canonical arrays into native storage and ``export(...)`` native
      storage as canonical arrays;
    * ``program``: ``Program``, the lowered ``rosetta.backend.Program``;
    * ``export``: ``export(program, fmt, out, *, example)`` for each of ``formats``.

    The leading argument of each ``lower`` is the spec object; what follows is the native
    context the framework needs (parameters to optimize, a dtype, the class count).
    """

    name: str
    order: int = 100
    requires: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()
    extra: str | None = None
    own_environment: str | None = None
    modes: tuple[str, ...] = ()  # how a step can be compiled; the first is the default
    formats: dict[str, ExportFormat] = {}
    engine = None  # rosetta.distributed.Engine, or None: one device only
    quiet_env: dict[str, str] = {}
    quiet_loggers: tuple[str, ...] = ()

    # --- what can be known without the framework -------------------------------------------------
    @classmethod
    def missing(cls) -> list[str]:
        """The modules of ``requires`` that are not installed (none is imported)."""
        return [m for m in cls.requires if importlib.util.find_spec(m) is None]

    @classmethod
    def install_hint(cls) -> str:
        """How to install what the backend needs."""
        if cls.own_environment:
            return cls.own_environment
        return f"pip install 'rosetta-ml[{cls.extra or cls.name}]'"

    # --- the framework ---------------------------------------------------------------------------
    def load_framework(self) -> None:
        """Import the framework the way this backend needs it (before any of its modules)."""

    def module(self, name: str):
        """The backend's module ``name`` (``device``, ``program``, ``export``, ...): imports the
        framework."""
        self.load_framework()
        return importlib.import_module(f"{type(self).__module__}.{name}")

    @abstractmethod
    def version(self) -> str:
        """Versions of the framework packages it uses, e.g. ``torch 2.13.0``."""

    def devices(self) -> list[str]:
        """Usable devices among ``cpu`` and ``gpu``."""
        return self.module("device").available()

    def compile(self, spec, *, dtype: str = "float32", device: str = "cpu",
                mode: str | None = None) -> Program:
        """Lower ``spec`` (a ``TrainSpec``) to a ``Program`` with native model and optimizer,
        its step compiled in ``mode`` (one of ``modes``; None: the first).

        Raises ``BackendUnavailable`` for a device, dtype or mode this backend cannot run.
        """
        mode = self.resolve_mode(mode)
        return self.module("program").Program(spec, dtype=dtype, device=device, mode=mode)

    def resolve_mode(self, mode: str | None) -> str:
        """``mode``, or the default; ``BackendUnavailable`` naming the valid ones."""
        if mode is None:
            return self.modes[0]
        if mode not in self.modes:
            raise BackendUnavailable(f"backend {self.name!r} has no mode {mode!r}; its modes: "
                                     f"{', '.join(self.modes)}")
        return mode


# the contract's modules and the functions (or tables) each must define
CONTRACT = {
    "device": ("available", "resolve", "dtype", "gpu_peak_memory_mb", "reset_gpu_peak_memory",
               "gpu_name", "gpu_matmul_peak", "thread_settings", "pin_threads"),
    "losses": ("LOSSES", "lower"),
    "optimizers": ("lower",),
    "params": ("load", "export"),
    "program": ("Program",),
    "export": ("export",),
}


def loss_lowering(table: dict, loss, backend: str):
    """The one dispatch of a spec ``Loss`` into a backend's ``LOSSES`` table ({kind: its
    lowering}): ``table[loss.kind]``; a kind the table lacks is a ``SpecError`` naming the
    backend and the kinds it lowers."""
    found = table.get(loss.kind)
    if found is None:
        raise SpecError(f"the {backend} backend has no lowering for loss {loss.kind!r} (it "
                        f"lowers {', '.join(sorted(table))})", where="$.loss")
    return found


def normalize_device(device: str) -> str:
    """``cuda`` and ``gpu`` mean the same: the first GPU."""
    d = str(device).lower()
    return "gpu" if d in ("cuda", "gpu", "cuda:0", "gpu:0") else d
