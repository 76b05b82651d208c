"""Ctrl-C ends ``rosetta train`` on every backend: exit 130 within 2 s, one line, the
checkpoints whole (``interrupt_run``; its ``__main__`` is the longer loop, 10 runs at each
point). CI interrupts each backend once, at the point where it used to go wrong: jax while it
compiles (a KeyboardInterrupt swallowed by JAX's gc callback, or SIGSEGV at exit), tensorflow
while it traces (a SystemError from inside TF), torch during a checkpoint save
(Ctrl-C pressed twice)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from selection import BACKENDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from interrupt_run import interrupt  # noqa: E402

POINT = {"jax": "compile", "tensorflow": "compile", "torch": "save"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_ends_the_run_cleanly(backend, tmp_path):
    res = interrupt(backend, POINT.get(backend, "steady"), seed=0, workdir=tmp_path,
                    twice=backend == "torch")   # Ctrl-C pressed twice: still one line
    assert res.ok, res.problem
