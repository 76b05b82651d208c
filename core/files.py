"""Writing files so that nothing is lost: one rule for every file rosetta writes.

``atomic_file(path)`` opens a temporary file beside ``path`` and, once the body has written and
fsynced it, renames it over ``path``: a process killed at any point leaves the old file whole (or
none), never half a file. ``writable_folder`` checks an output folder before any work starts, so
that a wrong ``--save``, ``--log`` or ``--out`` is a clear error up front, not after the run.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from rosetta.errors import DataError


@contextmanager
def atomic_file(path):
    """``with atomic_file(path) as f: f.write(...)``: binary file ``f`` replaces ``path`` when
    the block ends without an exception (flushed and fsynced first); else it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable_folder(path, flag: str, error=DataError) -> Path:
    """The folder ``path``, created if missing; ``error`` naming ``flag`` if it is a file or
    cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{flag} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise error(f"{flag} {path}: cannot write there ({e.strerror})") from None
    return path
