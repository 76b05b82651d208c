"""Backend discovery: the ``rosetta.backends`` entry-point group, loaded lazily.

Every list of backends is read here from the entry points, and what a backend needs (its
framework modules, its pip extra, its export formats, its engine) from its ``Backend`` class,
which its package declares without importing the framework (``rosetta.backend.Backend``). A
backend installed by another distribution is found the same way, with no list to edit.
``get_backend`` imports nothing either: the framework is imported when the backend first uses it.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

from rosetta.backend import Backend
from rosetta.errors import BackendUnavailable

GROUP = "rosetta.backends"

_LOADED: dict = {}


_SCANNED: dict[tuple, dict] = {}


def _entry_points() -> dict:
    """{name: entry point} of the group. Scanning every installed distribution's metadata costs
    tens of milliseconds and the command line asks many times per run, so the scan is kept per
    ``sys.path`` (a distribution put on the path later, as a test's stub backend is, is found)."""
    key = tuple(sys.path)
    if key not in _SCANNED:
        _SCANNED[key] = {ep.name: ep for ep in entry_points(group=GROUP)}
    return _SCANNED[key]


def backend_names() -> list[str]:
    """Every backend registered through the entry points, installed or not, in listing order
    (``Backend.order``, then name; installers sort entry points by name)."""
    def key(name):
        try:
            return backend_class(name).order, name
        except BackendUnavailable:
            return Backend.order, name
    return sorted(_entry_points(), key=key)


def backend_class(name: str) -> type:
    """The ``Backend`` class of ``name`` (its package imported, never its framework); a clear
    ``BackendUnavailable`` for an unknown name or an entry point that does not load."""
    eps = _entry_points()
    if name not in eps:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of "
                                 f"{', '.join(eps) or 'none (no backend is registered: pip install -e .)'}")
    try:
        return eps[name].load()
    except (ImportError, AttributeError) as e:
        raise BackendUnavailable(f"backend {name!r} failed to load ({type(e).__name__}: {e}); "
                                 f"check its installation") from e


def backend_classes() -> dict[str, type]:
    """{name: Backend class} of every registered backend whose package loads."""
    out = {}
    for name in backend_names():
        try:
            out[name] = backend_class(name)
        except BackendUnavailable:
            pass
    return out


def install_hint(name: str) -> str:
    return backend_class(name).install_hint()


def missing_modules(name: str) -> list[str]:
    """The framework modules ``name`` needs that are not installed (checked without importing)."""
    return backend_class(name).missing()


def available_backends() -> list[str]:
    """Backends whose frameworks are installed (checked without importing them)."""
    return [n for n, cls in backend_classes().items() if not cls.missing()]


def get_backend(name: str):
    """The backend object for ``name``; a clear ``BackendUnavailable`` if it cannot run here."""
    if name in _LOADED:
        return _LOADED[name]
    cls = backend_class(name)
    missing = cls.missing()
    if missing:
        raise BackendUnavailable(f"backend {name!r} needs {', '.join(missing)}, which is not "
                                 f"installed: {cls.install_hint()}")
    _LOADED[name] = cls()
    return _LOADED[name]
