"""Writing files so that nothing is lost: one rule for every file rosetta writes.

``atomic_file(path)`` opens a temporary file beside ``path`` and, once the body has written and
fsynced it, renames it over ``path``: a process killed at any point leaves the old file whole (or
none), never half a file. ``writable_folder`` checks an output folder before any work starts, so
that a wrong ``--save``, ``--log`` or ``--out`` is a clear error up front, not after the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
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


def writable_parent(path, flag: str) -> Path:
    """``path``, after checking the folder it would be written in exists and is writable (a
    ``DataError`` naming ``flag`` otherwise): an output checked before any work starts."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise DataError(f"{flag} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{flag} {path}: folder {parent} is not writable")
    return path


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


def fsync_dir(path) -> None:
    """Make a folder's entries (a rename into it) durable, where the system allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_folder(dest) -> Path:
    """A new hidden folder beside ``dest`` to build it in (``install_folder`` puts it in place)."""
    dest = Path(dest)
    return Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{dest.name}-"))


def install_folder(tmp, dest) -> None:
    """Put the finished folder ``tmp`` (from ``temp_folder``) at ``dest`` by renames: an existing
    ``dest`` is first renamed aside to ``.old-<name>-*`` and removed after, so ``dest`` is at
    every moment either the old folder whole or the new one whole (``recover_folders`` puts the
    old one back if a process dies between the two renames)."""
    tmp, dest = Path(tmp), Path(dest)
    fsync_dir(tmp)
    old = None
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{uuid.uuid4().hex[:8]}"
        os.rename(dest, old)
    os.rename(tmp, dest)
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_folders(parent) -> None:
    """Finish what an ``install_folder`` killed between its two renames left: the replaced
    folder (``.old-NAME-*``) goes back to ``NAME`` when nothing took its place."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        if p.name.startswith(".old-") and p.is_dir():
            name = p.name[len(".old-"):].rsplit("-", 1)[0]
            if name and not (parent / name).exists():
                try:
                    os.rename(p, parent / name)
                except OSError:
                    pass
