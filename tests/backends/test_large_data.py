"""A float32 training run on a data file larger than the memory the process may allocate
finishes: the ``.npy`` folder is memory-mapped and read batch by batch, never whole (docs/design.md
section 8).

The child process runs ``rosetta.training.train`` under ``RLIMIT_DATA`` (the private, anonymous
memory a process may allocate: heap, NumPy arrays, framework buffers; a read-only file mapping
does not count toward it) set below the size of ``x.npy``: one and a half passes over the file,
the data check (NaN scan) and the held-out evaluation included. A control ``np.load`` of the whole
file under the same limit raises MemoryError, so the limit bites.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from selection import BACKENDS

LIMIT = 1000 << 20           # private memory the child may allocate (a framework needs ~450 MiB)
ROWS, COLS = 300_000, 1024   # float32 x.npy: 1.23 GB, a sixth more than the limit
BATCH = 1000

CHILD = r"""
import json, resource, sys
limit, folder, backend, cols, batch = (int(sys.argv[1]), sys.argv[2], sys.argv[3],
                                       int(sys.argv[4]), int(sys.argv[5]))
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
from rosetta.threads import pin_threads
pin_threads(1)
import numpy as np
import rosetta as rs
from rosetta.training import train

model = rs.Sequential([rs.Dense(10)], input_shape=(cols,), name="wide")
spec = rs.TrainSpec(model, rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.01),
                    rs.DataSpec.from_path(folder, batch_size=batch))
rec = train(spec, backend, dtype="float32", epochs=1, progress=False)
steps = rec["steps"]
rec2 = train(spec, backend, dtype="float32", steps=steps // 2, progress=False)
with open("/proc/self/status") as f:
    status = {l.split(":")[0]: int(l.split()[1]) * 1024 for l in f
              if l.startswith(("VmData", "VmHWM"))}
try:
    np.load(folder + "/x.npy")
    control = "loaded"
except MemoryError:
    control = "MemoryError"
print(json.dumps({"steps": steps + rec2["steps"], "loss": rec["final_loss"],
                  "accuracy": rec["metrics"]["accuracy"], "control": control, **status}))
"""


def write_big(folder):
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(ROWS, COLS))
    y = (np.arange(ROWS) % 10).astype(np.int64)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10, COLS)).astype(np.float32)
    step = 20_000
    for s in range(0, ROWS, step):
        x[s:s + step] = centres[y[s:s + step]] + rng.standard_normal(
            (min(step, ROWS - s), COLS), dtype=np.float32)
    x.flush()
    del x
    np.save(folder / "y.npy", y)


def test_float32_run_on_a_file_larger_than_allowed_memory(tmp_path):
    """One 1.2 GB file (written once), every backend in its own limited process."""
    write_big(tmp_path)
    assert (tmp_path / "x.npy").stat().st_size > LIMIT * 1.15
    try:
        for backend in BACKENDS:
            r = subprocess.run([sys.executable, "-c", CHILD, str(LIMIT), str(tmp_path),
                                backend, str(COLS), str(BATCH)], capture_output=True, text=True,
                               timeout=900)
            assert r.returncode == 0, (backend, r.stderr[-3000:])
            out = json.loads(r.stdout.strip().splitlines()[-1])
            print(backend, out)
            assert out["control"] == "MemoryError"          # the limit bites
            assert out["steps"] >= 1.5 * (0.8 * ROWS // BATCH) - 1
            assert out["VmData"] < LIMIT
            assert np.isfinite(out["loss"]) and out["accuracy"] > 0.9
    finally:
        (tmp_path / "x.npy").unlink()
