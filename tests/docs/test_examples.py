"""The examples of the getting-started and user-guide pages run as written, so the docs cannot
rot: each page's blocks run in order in a fresh folder of its own (a later block reads what an
earlier one wrote); Python blocks share one namespace per page; a shell block whose first word
is ``rosetta`` runs with this environment's ``rosetta`` and must exit 0 (or the status its
``expect-exit`` directive names, with bad input's one line on stderr). See markdown_blocks.py for
the directives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from markdown_blocks import TESTED_PAGES, blocks

BIN = Path(sys.executable).parent


def _env(folder: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ROSETTA_CACHE_DIR"] = str(folder / ".cache")   # --backend auto's choice stays here
    env["MPLBACKEND"] = "Agg"
    return env


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _run_shell(block, folder: Path) -> None:
    bad = [c for c in block.commands() if c.split()[0] != "rosetta"]
    assert not bad, (f"{block.where}: a block that runs holds only rosetta commands; "
                     f"move {bad[0]!r} into a block of its own")
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=folder,
                          env=_env(folder), capture_output=True, text=True, timeout=600)
    want = int(block.directives.get("expect-exit", 0))
    assert proc.returncode == want, (
        f"{block.where}: exit {proc.returncode}, expected {want}\n{block.code}\n"
        f"--- stdout\n{_tail(proc.stdout)}\n--- stderr\n{_tail(proc.stderr)}")
    if want == 2:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rosetta: error:"), (
            f"{block.where}: bad input must give one line on stderr, got:\n{proc.stderr}")


@pytest.mark.parametrize("page", TESTED_PAGES)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROSETTA_CACHE_DIR", str(tmp_path / ".cache"))
    namespace = {"__name__": "__docs__"}
    for block in blocks(page):
        if "file" in block.directives:
            (tmp_path / block.directives["file"]).write_text(block.code)
        elif "norun" in block.directives or not block.runnable:
            continue
        elif block.lang == "python":
            try:
                exec(compile(block.code, block.where, "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"{block.where}: {type(e).__name__}: {e}\n{block.code}") from e
        else:
            _run_shell(block, tmp_path)
