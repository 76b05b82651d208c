"""Backend discovery: the ``rosetta.backends`` entry-point group, loaded lazily.

Nothing here imports a framework; ``get_backend`` imports the one asked for.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points

from rosetta.errors import BackendUnavailable

# name -> (framework modules it needs, pip extra)
KNOWN = {
    "torch": (("torch",), "torch"),
    "tensorflow": (("tensorflow",), "tensorflow"),
    "jax": (("jax", "flax", "optax"), "jax"),
    "mxnet": (("mxnet",), "mxnet"),
}

# backends that cannot share an environment with the others: how to get one
OWN_ENVIRONMENT = {
    "mxnet": ("MXNet 1.9.1 needs numpy<1.24 (TensorFlow and JAX refuse it), so it lives in its "
              "own environment: python3.11 -m venv .venv-mxnet && .venv-mxnet/bin/pip install "
              "-e '.[mxnet]' (README: MXNet in its own environment)"),
}

_LOADED: dict = {}


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group="rosetta.backends")}


def install_hint(name: str) -> str:
    if name in OWN_ENVIRONMENT:
        return OWN_ENVIRONMENT[name]
    extra = KNOWN.get(name, ((), name))[1]
    return f"pip install 'rosetta-ml[{extra}]'"


def missing_modules(name: str) -> list[str]:
    mods = KNOWN.get(name, ((),))[0]
    return [m for m in mods if importlib.util.find_spec(m) is None]


def backend_names() -> list[str]:
    """Every backend known by name or entry point, installed or not."""
    names = list(KNOWN)
    names += [n for n in _entry_points() if n not in names]
    return names


def available_backends() -> list[str]:
    """Backends whose frameworks are installed (checked without importing them)."""
    eps = _entry_points()
    return [n for n in backend_names() if n in eps and not missing_modules(n)]


def get_backend(name: str):
    """The backend object for ``name``; a clear ``BackendUnavailable`` if it cannot load."""
    if name in _LOADED:
        return _LOADED[name]
    eps = _entry_points()
    if name not in eps and name not in KNOWN:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of "
                                 f"{', '.join(backend_names())}")
    missing = missing_modules(name)
    if missing:
        raise BackendUnavailable(f"backend {name!r} needs {', '.join(missing)}, which is not "
                                 f"installed: {install_hint(name)}")
    if name not in eps:
        raise BackendUnavailable(f"backend {name!r} is not registered: reinstall rosetta-ml "
                                 f"(pip install -e .) so its entry points are written")
    try:
        cls = eps[name].load()
    except (ImportError, AttributeError) as e:
        raise BackendUnavailable(f"backend {name!r} failed to load ({type(e).__name__}: {e}); "
                                 f"check the installation: {install_hint(name)}") from e
    _LOADED[name] = cls()
    return _LOADED[name]
