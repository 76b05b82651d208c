"""MXNet, in its own environment, against torch, TensorFlow and JAX through saved trajectories.

MXNet 1.9.1 needs NumPy < 1.24, which TensorFlow and JAX refuse, so it cannot be imported here.
The MXNet environment (``.venv-mxnet``, built by ``.ci/mxnet``; or ``ROSETTA_MXNET_PYTHON``, the
python of any environment with rosetta and mxnet) records float64 trajectories of zoo models
with ``rosetta conformance --save``; this process records the same models on its own backends
and compares every pair in the exact tier (1e-10), the workflow docs/guide/mxnet.md documents.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rosetta import models
from rosetta.cli import main as rosetta_main
from rosetta.conformance.runner import record
from rosetta.conformance.suite import compare_trajectories
from rosetta.conformance.tiers import tier_for
from rosetta.conformance.trajectory import Trajectory

from selection import BACKENDS

ROOT = Path(__file__).resolve().parents[2]
# Dense + Adam; LSTM with lengths; attention + LayerNorm + gelu + AdamW with a warmup-cosine
# schedule. The rest of the zoo agrees too (docs/guide/mxnet.md, the same
# commands by hand); each model costs CI 20-80 s of recording on the three other backends
# (cnn and gru about 45 s of the 2-core budget together, resnet 1-2 minutes), and the ops they add
# are held to the NumPy references in the MXNet environment by tests/backends/test_ops.py.
MODELS = ("mlp", "lstm", "transformer")
STEPS = 3


def mxnet_python() -> Path | None:
    given = os.environ.get("ROSETTA_MXNET_PYTHON")
    if given:
        return Path(given)
    local = ROOT / ".venv-mxnet" / "bin" / "python"
    return local if local.exists() else None


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    python = mxnet_python()
    if python is None:
        pytest.skip("the MXNet environment is not built: `bash .ci/mxnet` builds .venv-mxnet "
                    "and runs this test in it (or set ROSETTA_MXNET_PYTHON)")
    out = tmp_path_factory.mktemp("mxnet-trajectories")
    cmd = [str(python), "-c", "import sys; from rosetta.cli import main; sys.exit(main())",
           "conformance", *MODELS, "--backends", "mxnet", "--no-oracle", "--dtype", "float64",
           "--steps", str(STEPS), "--save", str(out), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def _mxnet(saved: Path, model: str) -> Trajectory:
    return Trajectory.load(saved / f"{model}-mxnet-cpu-float64.npz")


def test_saved_in_another_environment(saved):
    """The files come from MXNet under NumPy < 1.24: an environment this one cannot be."""
    meta = _mxnet(saved, "mlp").meta
    assert meta["backend"] == "mxnet" and meta["steps"] == STEPS
    assert "mxnet 1.9.1" in str(meta) and "numpy 1.23" in str(meta), meta
    assert np.lib.NumpyVersion(np.__version__) >= "1.24.0"


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "mxnet"])
@pytest.mark.parametrize("model", MODELS)
def test_mxnet_agrees_exactly(saved, model, backend):
    spec = models.get(model)
    ours = record(spec, backend, dtype="float64", steps=STEPS)
    r = compare_trajectories(_mxnet(saved, model), ours, tier_for("float64"))
    assert r.tolerance == 1e-10
    assert r.passed, r.where
    print(f"{model} mxnet vs {backend}: worst rel {r.worst_rel:.2e} abs {r.worst_abs:.2e} "
          f"({r.where})")


def test_compare_command_passes_and_fails(saved, tmp_path, capsys):
    """``rosetta conformance --compare`` on the files: exit 0 for the saved pair, exit 1 once a
    parameter of one step is off by 1e-8 relative (what a semantic mismatch looks like)."""
    mx_file = saved / "mlp-mxnet-cpu-float64.npz"
    other = record(models.get("mlp"), BACKENDS[0], dtype="float64", steps=STEPS)
    other_file = other.save(tmp_path / "mlp-other.npz")
    assert rosetta_main(["conformance", "--compare", str(mx_file), str(other_file)]) == 0
    bad = _mxnet(saved, "mlp")
    bad.params["hidden1/kernel"][2] *= 1 + 1e-8
    bad_file = bad.save(tmp_path / "mlp-mxnet-planted.npz")
    assert rosetta_main(["conformance", "--compare", str(bad_file), str(other_file)]) == 1
    assert "FAIL" in capsys.readouterr().out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
