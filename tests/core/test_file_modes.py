"""Files rosetta writes keep the umask's mode, as ``open`` and ``mkdir`` would make them: the
temporary of an atomic write (``tempfile``: 0o600, 0o700) must not leave every dataset,
prediction, report, plot, checkpoint and export private."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from rosetta import checkpoint, data, files
from rosetta.predict import write_outputs


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture(params=[0o022, 0o077, 0o002])
def mask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_umask_is_read_without_changing_it(mask):
    assert files.umask() == mask
    assert files.umask() == mask


def test_written_files_and_folders_get_the_umask_mode(mask, tmp_path):
    f, d = 0o666 & ~mask, 0o777 & ~mask
    files.write_text(tmp_path / "report.json", "{}")
    assert mode(tmp_path / "report.json") == f
    write_outputs(tmp_path / "y.npy", np.zeros((2, 3)))
    write_outputs(tmp_path / "y.csv", np.zeros((2, 3)))
    assert mode(tmp_path / "y.npy") == f and mode(tmp_path / "y.csv") == f
    ds = data.load("regression", n=20)
    data.save_npz(ds, tmp_path / "d.npz")
    data.save_npy_dir(ds, tmp_path / "npy")
    assert mode(tmp_path / "d.npz") == f
    assert mode(tmp_path / "npy") == d and mode(tmp_path / "npy" / "x.npy") == f


def test_a_checkpoint_folder_gets_the_umask_mode(mask, tmp_path):
    from rosetta import models

    spec = models.get("linear")
    params = {k: np.zeros(v.shape, np.float32) for k, v in spec.model.param_defs().items()}
    ck = checkpoint.save(tmp_path / "run" / "step-00000001", spec, params=params, state={},
                         optimizer={}, step=1, dtype="float32", backend="torch")
    assert mode(ck) == 0o777 & ~mask
    assert {mode(p) for p in ck.iterdir()} == {0o666 & ~mask}
    checkpoint.load(ck)
