"""The contract every backend implements (``rosetta.backends.<name>``).

A backend lowers a ``TrainSpec`` (graph + loss + optimizer) to native objects and wraps them in a
``Program``. The core's training loop, the CLI and the conformance suite speak only this API; the
native objects stay reachable (``program.model``, ``program.optimizer``) for use without rosetta.

The ``Program`` contract (its conventions: canonical paths and layouts, update numbering,
injected dropout masks, prepared batches) and ``BackendProgram``, the host-side base every
backend's program extends, are in ``rosetta.program`` and re-exported here.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from typing import NamedTuple

from rosetta.errors import BackendUnavailable

from rosetta.errors import SpecError
# the Program contract and its host-side base live in rosetta.program; re-exported here
from rosetta.program import (  # noqa: E402,F401
    DTYPES, Batch, BackendProgram, Program, normalize_device,
)


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
    * ``shard_params``: the engine's own machinery that shards parameters and optimizer state
      over the data-parallel devices (``--shard-params``), in a few words; None where it is
      refused, and then ``shard_params_refusal`` says why (one line, before any framework runs);
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
    # the precision policies (rosetta.precision) it lowers; any other is refused in one line
    # by ``compile``, before the framework is imported
    precisions: tuple[str, ...] = DTYPES
    formats: dict[str, ExportFormat] = {}
    engine = None  # rosetta.distributed.Engine, or None: one device only
    shard_params: str | None = None  # --shard-params: the engine's machinery, or None (refused)
    shard_params_refusal: str = "it has no engine that shards parameters"
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
        self.check_precision(dtype)
        return self.module("program").Program(spec, dtype=dtype, device=device, mode=mode)

    @classmethod
    def check_precision(cls, precision: str) -> None:
        """``BackendUnavailable`` (one line) for a precision policy this backend does not
        lower (``precisions``), or one that does not exist."""
        from rosetta.precision import PRECISIONS

        if precision not in PRECISIONS:
            raise BackendUnavailable(f"{cls.name} backend: dtype {precision!r} is not "
                                     f"supported; choose one of {', '.join(PRECISIONS)}")
        if precision not in cls.precisions:
            raise BackendUnavailable(f"{cls.name} backend: precision {precision!r} is not "
                                     f"lowered here; it runs {', '.join(cls.precisions)}")

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

