"""The module contract (``rosetta.backend.CONTRACT``), on every backend: the same modules with the
same functions, read from the source of every backend folder (mxnet's too, whose framework is
not in this environment), and called on the backends under test."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest

from rosetta import losses as spec_losses
from rosetta.backend import CONTRACT, Backend
from rosetta.backend_registry import backend_class, backend_names, get_backend
from rosetta.distributed import Engine
from rosetta.errors import BackendUnavailable, SpecError

from selection import BACKENDS


def _folder(name: str) -> Path:
    """The folder of a registered backend's package (found without importing it)."""
    spec = importlib.util.find_spec(backend_class(name).__module__)
    return Path(spec.origin).parent


def _top_level(path: Path) -> dict[str, ast.AST]:
    """{name: node} of what a module defines at top level (functions, classes, assignments)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = node.value
    return out


# every backend of this repository (a third-party one may implement the contract elsewhere)
OURS = [n for n in backend_names()
        if backend_class(n).__module__.startswith("rosetta.backends.")]


@pytest.mark.parametrize("name", OURS)
def test_every_backend_folder_defines_the_contract(name):
    folder = _folder(name)
    for module, names in CONTRACT.items():
        path = folder / f"{module}.py"
        assert path.is_file(), f"{name}: {module}.py is missing"
        defined = _top_level(path)
        missing = [n for n in names if n not in defined]
        assert not missing, f"{name}/{module}.py lacks {missing}"


@pytest.mark.parametrize("name", OURS)
def test_every_backend_lowers_every_loss_and_exports_what_it_declares(name):
    defined = _top_level(_folder(name) / "losses.py")
    assert isinstance(defined["LOSSES"], ast.Dict)
    kinds = {k.value for k in defined["LOSSES"].keys}
    assert kinds == set(spec_losses.KINDS), name
    cls = backend_class(name)
    written = ast.literal_eval(_top_level(_folder(name) / "export.py")["FORMATS"])
    assert tuple(written) == tuple(cls.formats), name


@pytest.mark.parametrize("name", OURS)
def test_every_backend_declares_its_capabilities(name):
    cls = backend_class(name)
    assert issubclass(cls, Backend) and cls.name == name
    assert cls.requires and cls.modes and cls.extra
    for fmt in cls.formats.values():
        assert set(fmt.dtypes) <= {"float32", "float64"} and fmt.description and fmt.check_envs
    if cls.engine is not None:  # its framework part: setup, teardown, compile
        assert isinstance(cls.engine, Engine)
        part = cls.engine.module.rsplit(".", 1)[1]
        defined = _top_level(_folder(name) / f"{part}.py")
        assert {"setup", "teardown", "compile"} <= set(defined), name


class _NoSuchLoss:
    kind = "no_such_loss"


@pytest.mark.parametrize("name", BACKENDS)
def test_the_contract_runs(name):
    be = get_backend(name)
    device = be.module("device")
    assert device.available()[0] == "cpu" and be.devices() == device.available()
    device.resolve("cpu")
    device.dtype("float64")
    with pytest.raises(BackendUnavailable, match="bfloat16"):
        device.dtype("bfloat16")
    assert device.gpu_name() is None or "gpu" in device.available()
    settings = device.thread_settings()
    assert settings is None or isinstance(settings, dict)
    losses = be.module("losses")
    # the native context after the spec Loss (mxnet's loss block takes the class count)
    extra = (10,) * (len(inspect.signature(losses.lower).parameters) - 1)
    with pytest.raises(SpecError, match=f"the {name} backend has no lowering for loss "
                                        f"'no_such_loss' \\(it lowers "):
        losses.lower(_NoSuchLoss(), *extra)
