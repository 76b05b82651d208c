"""Source names for a piece of a Keras variable, where one Keras variable holds several canonical
parameters: ``"gru/gru_cell/bias[1]"`` is row 1 of the variable ``gru/gru_cell/bias`` (Keras's
reset-after GRU keeps its input bias and its recurrent bias as the two rows of one (2, 3H)
variable; the spec's GRU has ``bias`` and ``recurrent_bias``). A plain variable path is the whole
variable. The capture (``keras_graph``), the optimizer map (``keras_optim``) and the Keras source
participant (``keras_source.KerasSource``) read and write pieces through these helpers, so that a
piece is a parameter like any other: its own canonical path, layout, gradient and slots."""

from __future__ import annotations

import re

import numpy as np

_PART = re.compile(r"^(.*)\[(\d+)\]$")


def part_name(path: str, index: int) -> str:
    return f"{path}[{index}]"


def split(name: str) -> tuple[str, int | None]:
    """(variable path, row index or None for the whole variable)."""
    m = _PART.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


def whole(name: str) -> str:
    return split(name)[0]


def read(array, name: str) -> np.ndarray:
    """The piece ``name`` of its variable's ``array``."""
    i = split(name)[1]
    a = np.asarray(array)
    return a if i is None else a[i]


def write(array, name: str, value) -> np.ndarray:
    """The variable's ``array`` with the piece ``name`` replaced by ``value``."""
    i = split(name)[1]
    if i is None:
        return np.asarray(value)
    out = np.array(array)
    out[i] = value
    return out


def renamed(name: str, path: str) -> str:
    """``name`` with its variable path replaced by ``path`` (the same piece of a clone's
    variable)."""
    i = split(name)[1]
    return path if i is None else part_name(path, i)
