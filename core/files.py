"""Writing files so that nothing is lost: one rule for every file rosetta writes.

``atomic_file(path)`` opens a temporary file beside ``path`` and, once the body has written and
fsynced it, renames it over ``path``: a process killed at any point leaves the old file whole (or
none), never half a file. ``writable_folder`` checks an output folder before any work starts, so
that a wrong ``--save``, ``--log`` or ``--out`` is a clear error up front, not after the run.

Temporaries carry the id of the process that made them (``.NAME.<pid>-*.tmp``,
``.tmp-NAME-<pid>-*``): the next write into the same folder removes those whose process is gone
(``clean_temporaries``), so an interrupted run leaves nothing behind once rosetta runs again.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from rosetta.errors import DataError


def umask() -> int:
    """The process's umask, read without changing it where the system says it
    (``/proc/self/status``), else by setting it and back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(fd_or_path, folder: bool = False) -> None:
    """Give a temporary file (or folder) the mode an ordinary ``open`` (``mkdir``) would have:
    0o666 (0o777) less the umask. ``tempfile`` makes them private (0o600, 0o700), and an
    atomic write renames the temporary into place, so without this every file rosetta writes
    would be private whatever the umask."""
    mode = (0o777 if folder else 0o666) & ~umask()
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


@contextmanager
def atomic_file(path):
    """``with atomic_file(path) as f: f.write(...)``: binary file ``f`` replaces ``path`` when
    the block ends without an exception (flushed and fsynced first); else it is removed. The
    file gets the umask's mode (``public_mode``), as ``open`` would give it."""
    path = Path(path)
    clean_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-",
                               suffix=".tmp")
    try:
        public_mode(fd)
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
    """A new hidden folder beside ``dest`` to build it in (``install_folder`` puts it in place),
    with the umask's mode (``public_mode``), as ``mkdir`` would make it."""
    dest = Path(dest)
    clean_temporaries(dest.parent)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{dest.name}-{os.getpid()}-"))
    public_mode(tmp, folder=True)
    return tmp


_TEMPORARY = re.compile(r"^\.(?:.+\.(\d+)-[^.]+\.tmp|tmp-.+-(\d+)-[^-]+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def clean_temporaries(folder) -> list[Path]:
    """Remove the temporaries (``atomic_file``'s files, ``temp_folder``'s folders) in
    ``folder`` whose process has ended: what a killed run left. Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMPORARY.match(p.name)
        if not m or _alive(int(m.group(1) or m.group(2))):
            continue
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (``atomic_file``)."""
    path = Path(path)
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))
    return path


def save_figure(fig, path, **kwargs) -> Path:
    """Save a matplotlib figure atomically, in the format of ``path``'s suffix."""
    path = Path(path)
    with atomic_file(path) as f:
        fig.savefig(f, format=path.suffix.lstrip(".").lower() or "png", **kwargs)
    return path


def finite_or_none(value):
    """``value`` with every non-finite float (NaN, +-Inf) replaced by None, recursively: what
    rosetta's JSON holds, since NaN and Infinity are not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
        return finite_or_none(value.item())   # a NumPy scalar
    return value


def dumps_json(value, **kwargs) -> str:
    """Strict JSON (``allow_nan=False``) of ``value`` with non-finite numbers written as
    ``null`` (``finite_or_none``): every JSON rosetta prints or writes parses anywhere."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)


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
