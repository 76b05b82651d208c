"""The check of an exported artifact (``rosetta export``, docs/design.md section 9): its own framework
runs it, in a fresh Python process in which ``import rosetta`` fails, and its outputs are compared
with the spec's NumPy float64 reference forward (eval mode) from the checkpoint's parameters.

The bound is normwise: max|a - b| / max|b| over the outputs, 1e-5 for a float32 artifact (the
float32 tier's bound) and 1e-10 for float64 (the exact tier's). A ``keras`` artifact is run under
every Keras backend (``KERAS_BACKEND`` = tensorflow, jax, torch), each its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from rosetta import checkpoint
from rosetta import export as export_mod
from rosetta.conformance.compare import Worst, compare_arrays
from rosetta.errors import DataError

TOLERANCE = {"float32": 1e-5, "float64": 1e-10}
# run a script with ``import rosetta`` made impossible (a None entry in sys.modules)
WITHOUT_ROSETTA = ("import runpy, sys; sys.modules['rosetta'] = None; sys.argv = sys.argv[1:]; "
                   "runpy.run_path(sys.argv[0], run_name='__main__')")


def run_loader(export_dir, inputs: dict, env: dict | None = None, timeout: int = 600):
    """Outputs of ``EXPORT_DIR/load.py`` on ``inputs``, run without rosetta."""
    export_dir = Path(export_dir)
    with tempfile.TemporaryDirectory() as tmp:
        x, y = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(x, **inputs)
        r = subprocess.run([sys.executable, "-c", WITHOUT_ROSETTA,
                            str(export_dir / export_mod.LOADER), str(export_dir), str(x), str(y)],
                           capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})})
        if r.returncode != 0:
            tail = " | ".join(r.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"{export_dir / export_mod.LOADER} failed (exit {r.returncode}): "
                               f"{tail}")
        with np.load(y) as z:
            return np.array(z["y"])


def reference(export_dir, inputs: dict) -> np.ndarray:
    """The spec's NumPy float64 eval-mode forward from the exported checkpoint's parameters."""
    meta = read_meta(export_dir)
    ckpt = checkpoint.load(meta["checkpoint"])
    state = {k: np.array(v, np.float64) for k, v in ckpt.state.items()}
    return ckpt.spec.model.reference_forward(
        {k: np.asarray(v, np.float64) for k, v in ckpt.params.items()}, inputs, state=state,
        training=False)


def read_meta(export_dir) -> dict:
    f = Path(export_dir) / export_mod.EXPORT_JSON
    if not f.is_file():
        raise DataError(f"{export_dir}: not an export folder ({export_mod.EXPORT_JSON} missing)")
    return json.loads(f.read_text())


def check(export_dir, inputs: dict | None = None) -> list[Worst]:
    """Run the artifact without rosetta, once in each environment its format names
    (``ExportFormat.check_envs``: every Keras backend for ``keras``), and compare it with the
    reference; one ``Worst`` per run, held to ``TOLERANCE`` of its dtype."""
    meta = read_meta(export_dir)
    if inputs is None:
        ckpt = checkpoint.load(meta["checkpoint"])
        inputs = export_mod.example_inputs(ckpt.spec)
        if inputs is None:
            from rosetta.data import sample_inputs

            inputs = sample_inputs(ckpt.spec.model, 8)
        inputs = export_mod.cast_example(ckpt.spec, inputs, meta["dtype"])
    ref = reference(export_dir, inputs)
    out = []
    for env in export_mod.export_format(meta["format"]).check_envs:
        got = run_loader(export_dir, inputs, env)
        where = f"{meta['format']} {meta['model']} ({meta['dtype']}" + "".join(
            f", {k}={v}" for k, v in env.items()) + ")"
        w = compare_arrays(got, ref, where, TOLERANCE[meta["dtype"]], floor_fraction=1.0)
        out.append(w)
    return out


def environment_python(backend: str):
    """The Python of the environment ``backend`` lives in where this one cannot import it
    (MXNet: ``.venv-mxnet`` at the repository root, docs/guide/mxnet.md), else None."""
    import importlib.util

    from rosetta.backend_registry import backend_classes

    cls = backend_classes().get(backend)
    needs = getattr(cls, "requires", None) or (backend,)
    if all(importlib.util.find_spec(m) is not None for m in needs):
        return None
    root = Path(__file__).resolve().parent.parent
    py = root / f".venv-{backend}" / "bin" / "python"
    return py if py.exists() else None


def export_in(python, ckpt, fmt: str, out) -> tuple[int, list[str], str]:
    """``rosetta export ckpt --format fmt --out out`` run by ``python`` (the format's own
    environment, ``environment_python``), which also checks the artifact without rosetta:
    (exit status, its PASS/FAIL check lines, the last two lines of its output)."""
    r = subprocess.run([str(python), "-m", "rosetta", "export", str(ckpt), "--format", fmt,
                        "--out", str(out)], capture_output=True, text=True, timeout=900)
    checks = [ln for ln in r.stdout.splitlines() if ln.startswith(("PASS", "FAIL"))]
    tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-2:])
    return r.returncode, checks, tail
