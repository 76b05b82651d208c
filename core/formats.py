"""Versioned file formats: a ``"format"`` field of the form ``<name>/<version>``.

rosetta writes its newest version of each format and reads every version from 1 up to it: the
spec JSON (``rosetta/1``, ``rosetta.spec``) and the neutral checkpoint (``rosetta-checkpoint/1``,
``rosetta.checkpoint``). A file of a newer version (written by a newer rosetta) is refused with
one line naming both versions; anything else in the field is not that kind of file.

A change a reader of the previous version would misread raises the version; the reader then
branches on the version ``read_version`` returns (older files keep loading; a test keeps one,
``tests/fixtures/checkpoint-v1-mlp-torch``). An added field that older readers ignore and newer
readers default does not.
"""

from __future__ import annotations

import re


def versioned(name: str, version: int) -> str:
    """The ``format`` value of ``name`` at ``version``: ``rosetta-checkpoint/1``."""
    return f"{name}/{int(version)}"


def read_version(found, name: str, current: int) -> int:
    """The version of a ``format`` value ``found`` of format ``name``, in 1..``current``.

    Raises ``ValueError`` with the one-line reason otherwise: a newer version (upgrade rosetta),
    or a value that is not ``name/<version>`` at all."""
    if isinstance(found, str):
        m = re.fullmatch(re.escape(name) + r"/(\d{1,9})", found)
        if m:
            version = int(m.group(1))
            if 1 <= version <= current:
                return version
            if version > current:
                from rosetta import __version__

                raise ValueError(f"\"format\": \"{found}\" is newer than this rosetta "
                                 f"({__version__}) reads ({versioned(name, current)} and "
                                 f"older): upgrade rosetta to read it")
    raise ValueError(f"expected \"format\": \"{versioned(name, current)}\", found {found!r}")
