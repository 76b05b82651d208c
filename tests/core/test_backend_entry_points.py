"""A backend registered only through an entry point (a throwaway distribution on ``sys.path``,
found by ``importlib.metadata``) is found by ``rosetta backends`` and by the test selection, with
no list edited; one whose framework is missing says how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest

import selection
from rosetta.backend_registry import backend_class, backend_names, get_backend
from rosetta.errors import BackendUnavailable

STUB = '''
from rosetta import backend


class Backend(backend.Backend):
    name = "{name}"
    requires = ({requires!r},)
    extra = "{name}-extra"
    modes = ("eager",)

    def version(self):
        return "{name} 0.0"

    def devices(self):
        return ["cpu"]
'''


def install_stub(root, name: str, requires: str) -> None:
    """``<name>_pkg`` with a ``Backend``, and the dist-info that registers it."""
    pkg = root / f"{name}_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(STUB.format(name=name, requires=requires))
    info = root / f"{name}_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[rosetta.backends]\n{name} = {name}_pkg:Backend\n")


@pytest.fixture
def stubs(tmp_path, monkeypatch):
    install_stub(tmp_path, "stub", "json")  # its "framework" is installed everywhere
    install_stub(tmp_path, "ghost", "no_such_framework_for_rosetta")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_an_entry_point_backend_is_found_everywhere(stubs, monkeypatch):
    assert {"stub", "ghost"} <= set(backend_names())
    assert get_backend("stub").version() == "stub 0.0"
    with pytest.raises(BackendUnavailable, match="pip install 'rosetta-ml\\[ghost-extra\\]'"):
        get_backend("ghost")
    # the test selection: found by default, asked for by name, refused when not installed
    monkeypatch.delenv("ROSETTA_TEST_BACKENDS", raising=False)
    assert "stub" in selection.default_backends()
    monkeypatch.setenv("ROSETTA_TEST_BACKENDS", "stub")
    assert selection.selected_backends() == ["stub"]
    monkeypatch.setenv("ROSETTA_TEST_BACKENDS", "ghost")
    with pytest.raises(pytest.UsageError, match="not installed: pip install"):
        selection.selected_backends()
    # ``rosetta backends``, in a process of its own that sees the distribution; the other
    # backends' frameworks are made unimportable there, which keeps it quick (they are listed
    # as not installed)
    heavy = sorted({m for n in backend_names() if n not in ("stub", "ghost")
                    for m in backend_class(n).requires})
    code = (f"import sys\nfor m in {heavy!r}:\n    sys.modules[m] = None\n"
            "from rosetta.cli import main\nsys.exit(main(['backends']))\n")
    monkeypatch.setenv("PYTHONPATH", str(stubs))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert "stub 0.0" in lines["stub"] and "devices: cpu" in lines["stub"]
    assert "not installed (no_such_framework_for_rosetta missing)" in lines["ghost"]
    assert "pip install 'rosetta-ml[ghost-extra]'" in lines["ghost"]
