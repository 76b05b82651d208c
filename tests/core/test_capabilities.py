"""The capability table (docs/reference/backends.md, ``rosetta backends --capabilities``) is read
from the Backend classes: it follows a declaration when it changes, and imports no framework."""

from __future__ import annotations

import subprocess
import sys

from rosetta import capabilities
from rosetta.backend_registry import backend_class, backend_names


def test_the_table_follows_what_a_backend_declares(monkeypatch):
    name = backend_names()[0]
    cls = backend_class(name)
    monkeypatch.setattr(cls, "precisions", ("float64",))
    monkeypatch.setattr(cls, "engine", None)
    rows = capabilities.table()[name]
    assert rows["precision policies"] == "`float64`"
    assert rows["several devices"].startswith("no: one device only")
    assert rows["several hosts"] == "no"
    md = capabilities.markdown_table()
    assert md.splitlines()[0] == "| | " + " | ".join(backend_names()) + " |"
    assert len(md.splitlines()) == 2 + len(capabilities.ROWS)


def test_the_command_imports_no_framework():
    code = ("import sys\nfrom rosetta.cli import main\nmain(['backends', '--capabilities'])\n"
            "loaded = [m for m in ('torch', 'tensorflow', 'jax', 'mxnet', 'keras') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "precision policies:" in out.stdout and "export formats:" in out.stdout


def test_precision_on_several_devices_is_the_engines_declaration():
    """The row and the refusal read ``Engine.precisions``: TensorFlow's data-parallel step
    refuses the low policies in one line (before any framework), torch's and JAX's run them."""
    import pytest

    from rosetta import distributed
    from rosetta.errors import BackendUnavailable

    rows = capabilities.table()
    title = "precision policies on several devices"
    if "tensorflow" in rows:
        assert rows["tensorflow"][title].startswith("`float32`, `float64`; the others refused")
        with pytest.raises(BackendUnavailable, match="tensorflow data parallel: precision "
                                                     "'mixed_float16' is not lowered"):
            distributed.check_precision("tensorflow", "mixed_float16")
    for name in ("torch", "jax"):
        if name in rows:
            assert rows[name][title] == "every policy of one device"
            distributed.check_precision(name, "mixed_float16")
