"""Data larger than memory streams by batch from memory-mapped ``.npy`` files, never loaded whole.

A child process runs under ``RLIMIT_DATA`` (private and anonymous memory: the heap, NumPy's
arrays; a read-only file mapping does not count, as it would under ``RLIMIT_AS``) set below the
size of ``x.npy``. It loads the folder through ``DataSpec``, runs the whole data check (NaN scan
included) and sums every batch of one epoch, read with ``batches`` + ``take`` + ``cast_inputs``
to float32, exactly as the training loop reads them. It must finish, with the right sum, and a
control ``np.load`` of the whole file under the same limit must raise MemoryError (the limit
bites). Core only: no framework.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

LIMIT = 400 << 20            # bytes of private memory the child may use
ROWS, COLS = 150_000, 1024   # float32: 614 MB, half as much again as the limit
BATCH = 1000

CHILD = r"""
import json, resource, sys, time
limit, folder, batch = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

import numpy as np
import rosetta as rs
from rosetta.data import batches, cast_inputs, take
from rosetta.datacheck import check_data

peak = {"VmData": 0, "RssAnon": 0}

def sample():
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in peak:
                peak[k] = max(peak[k], int(v.split()[0]) * 1024)

t0 = time.perf_counter()
cols = int(sys.argv[4])
model = rs.Sequential([rs.Dense(10)], input_shape=(cols,), name="wide")
spec = rs.TrainSpec(model, rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.1),
                    rs.DataSpec.from_path(folder, batch_size=batch))
ds = spec.data.load(spec.model)
check_data(spec, ds, batch)
sample()
t_check = time.perf_counter() - t0
x = cast_inputs({"x": ds.x_train}, "float32")
total, expect, seen = 0.0, 0.0, 0
steps = ds.n_train // batch
for _, idx in batches(ds.n_train, batch, 0, steps):
    b = take(x, idx)["x"]
    assert type(b) is np.ndarray and b.dtype == np.float32 and b.shape == (batch, cols)
    total += float(b.sum(dtype=np.float64))
    rows = ds.x_train.file_rows(idx)
    expect += float(((rows % 13) * 0.5).sum()) * cols
    seen += len(idx)
    sample()
t_stream = time.perf_counter() - t0 - t_check
with open("/proc/self/status") as f:
    hwm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM")][0]
try:
    np.load(folder + "/x.npy")
    control = "loaded"
except MemoryError:
    control = "MemoryError"
print(json.dumps({"total": total, "expect": expect, "seen": seen, "n_train": ds.n_train,
                  "peak_vmdata": peak["VmData"], "peak_rss_anon": peak["RssAnon"],
                  "peak_rss_with_file_pages": hwm, "check_s": t_check, "stream_s": t_stream,
                  "control": control}))
"""


def _write_big(folder):
    folder.mkdir()
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(ROWS, COLS))
    step = 8192                                    # 32 MB at a time: the test stays small
    for s in range(0, ROWS, step):
        r = np.arange(s, min(s + step, ROWS))
        x[s:s + len(r)] = ((r % 13) * 0.5).astype(np.float32)[:, None]
    x.flush()
    del x
    np.save(folder / "y.npy", (np.arange(ROWS) % 10).astype(np.int64))
    return os.path.getsize(folder / "x.npy")


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="RLIMIT_DATA and /proc/self/status are Linux's")
def test_npy_folder_larger_than_the_memory_limit_streams_by_batch(tmp_path):
    folder = tmp_path / "big"
    try:
        size = _write_big(folder)
        assert size > LIMIT * 1.4
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        r = subprocess.run([sys.executable, "-c", CHILD, str(LIMIT), str(folder), str(BATCH),
                            str(COLS)], capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"x.npy {size / 2**20:.0f} MiB, RLIMIT_DATA {LIMIT / 2**20:.0f} MiB; child peak "
              f"VmData {out['peak_vmdata'] / 2**20:.0f} MiB, RssAnon "
              f"{out['peak_rss_anon'] / 2**20:.0f} MiB, RSS with file pages "
              f"{out['peak_rss_with_file_pages'] / 2**20:.0f} MiB; check {out['check_s']:.1f} s, "
              f"stream {out['stream_s']:.1f} s; control np.load: {out['control']}")
        assert out["control"] == "MemoryError"          # the limit bites on a whole load
        assert out["seen"] == (out["n_train"] // BATCH) * BATCH
        assert out["n_train"] == ROWS - round(ROWS * 0.2)
        assert out["total"] == pytest.approx(out["expect"], rel=1e-12)
        assert out["peak_vmdata"] < LIMIT
    finally:
        for p in folder.glob("*.npy"):
            p.unlink()
