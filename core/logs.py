"""Training logs (``rosetta train --log DIR``): scalars by update number, in two forms.

* ``DIR/scalars.jsonl``: always; one JSON object a line, ``{"step": t, "<tag>": value, ...}``,
  flushed as it is written (a crashed run keeps every line it logged). A resumed run appends.
* TensorBoard event files in ``DIR`` (``tensorboard --logdir DIR``), written with tensorboardX,
  a light writer that needs no TensorFlow (the ``log`` extra: ``pip install 'rosetta-ml[log]'``);
  without it, the JSON lines only and one note on standard error.

Tags: ``train/loss`` (the loss of update t's batch, before the update), ``train/lr`` (lr(t) of
the schedule, float64), ``train/grad_norm`` (the global L2 norm of the gradients of update t,
before clipping; computed by one extra gradient pass, so only every ``log_every`` updates), and
``eval/<metric>`` (held-out loss, accuracy, ...) at each evaluation.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from rosetta.files import writable_folder

SCALARS = "scalars.jsonl"


def check_fresh_log(path) -> None:
    """A new (not resumed) run refuses a log folder that already holds a run's scalars: its
    update numbers would repeat the earlier run's (``--resume`` continues a run and appends)."""
    from rosetta.errors import DataError

    if (Path(path) / SCALARS).is_file():
        raise DataError(f"--log {path}: already holds a run's {SCALARS}; give a new folder, or "
                        f"--resume that run's checkpoint to continue its log")


def check_log_dir(path) -> Path:
    """The log folder, created; a clear error before training if it cannot be written."""
    return writable_folder(path, "--log")


class RunLog:
    """Scalars to ``scalars.jsonl`` and, where tensorboardX is installed, TensorBoard events."""

    def __init__(self, directory, quiet: bool = False):
        self.dir = check_log_dir(directory)
        self._lines = open(self.dir / SCALARS, "a", encoding="utf-8")
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            self._tb = None
            if not quiet:
                print(f"rosetta: tensorboardX is not installed, logging {self.dir / SCALARS} "
                      f"only (pip install 'rosetta-ml[log]' for TensorBoard files)",
                      file=sys.stderr)
        else:
            self._tb = SummaryWriter(logdir=str(self.dir))

    def scalars(self, step: int, values: dict) -> None:
        values = {k: float(v) for k, v in values.items()}
        row = {"step": int(step), **{k: (v if math.isfinite(v) else str(v))
                                     for k, v in values.items()}}
        self._lines.write(json.dumps(row) + "\n")
        self._lines.flush()
        if self._tb is not None:
            for tag, v in values.items():
                self._tb.add_scalar(tag, v, int(step))

    def close(self) -> None:
        self._lines.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
