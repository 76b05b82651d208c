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
