"""The example notebook (tests/notebooks/quickstart.ipynb) runs top to bottom in a fresh kernel, and
rosetta objects show themselves as rich HTML: the spec's layer table, the run record's loss curve,
the checkpoint's update count and the conformance scoreboard's PASS rows.

The kernel is this interpreter (a kernelspec written to a temporary JUPYTER_PATH whose argv is
``sys.executable``), so the notebook sees the same installation as the tests. The notebook's
``parameters`` cell is followed by an injected one that picks the backends under test."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

from selection import BACKENDS

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
KERNEL = "rosetta-test-python3"


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernelspec that runs this interpreter, found first on JUPYTER_PATH."""
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / KERNEL,
                      overrides={"display_name": "rosetta tests"})
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def _tagged(nb, tag):
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _html(cell) -> str:
    shown = [o["data"]["text/html"] for o in cell.outputs
             if o.get("output_type") in ("execute_result", "display_data")
             and "text/html" in o.get("data", {})]
    assert shown, f"no text/html output in cell:\n{cell.source}"
    return "".join(shown)


def _stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.get("name") == "stdout")


def test_quickstart_notebook_runs_and_shows_rich_html(kernel, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "store the notebook without outputs"
    params = nb.cells.index(_tagged(nb, "parameters"))
    injected = nbformat.v4.new_code_cell(f"BACKENDS = {list(BACKENDS[:2])!r}")
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(params + 1, injected)

    NotebookClient(nb, kernel_name=kernel, timeout=300,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    spec = _html(_tagged(nb, "spec"))
    assert "<table" in spec
    for name in ("hidden", "logits", "Dense", "warmup_cosine", "softmax_cross_entropy",
                 "digits"):
        assert name in spec, name
    assert f"{(64 * 32 + 32) + (32 * 10 + 10):,}" in spec   # the parameter total: 2,410

    record = _html(_tagged(nb, "record"))
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', record)
    assert png, "the run record shows its loss curve as an inline PNG"
    assert base64.b64decode(png.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert BACKENDS[0] in record and "float64" in record

    ck = _html(_tagged(nb, "checkpoint"))
    assert re.search(r">updates</td><td[^>]*>20</td>", ck), "the checkpoint's update count"
    assert "params.safetensors" in ck and "data:image/png;base64," in ck

    board = _html(_tagged(nb, "scoreboard"))
    assert board.count(">PASS<") == 2 and ">FAIL<" not in board   # float64 and float32 tiers
    assert "exact" in board and "float32" in board

    out = _stdout(nb)
    worst = re.search(r"forward vs NumPy reference: (\S+)", out)
    assert worst and float(worst.group(1)) < 1e-10, out
