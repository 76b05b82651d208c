"""The character corpus and alphabet of the ``text`` dataset, and text sampling from a model.

The corpus is Python's own standard library: the sources of a fixed list of pure-Python modules
that every CPython ships, read from the running interpreter's ``Lib`` directory (nothing is
downloaded). Characters outside the alphabet (printable ASCII and newline) become ``?``.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np

from rosetta.errors import DataError

VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
UNKNOWN = VOCAB.index("?")
_INDEX = {ch: i for i, ch in enumerate(VOCAB)}

# modules of the standard library written in Python, present in every CPython 3
MODULES = ("textwrap.py", "string.py", "shlex.py", "fnmatch.py", "glob.py", "bisect.py",
           "heapq.py", "colorsys.py", "calendar.py", "difflib.py")


def corpus() -> str:
    """The concatenated sources of ``MODULES`` (tabs as four spaces)."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in MODULES:
        path = lib / name
        if path.exists():
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    if not parts:
        raise DataError(f"no standard library sources found under {lib}; the text dataset reads "
                        f"{', '.join(MODULES)} from there")
    return "\n".join(parts).replace("\t", "    ")


def encode(s: str) -> np.ndarray:
    """Character ids (int64); characters outside ``VOCAB`` map to '?'."""
    return np.array([_INDEX.get(ch, UNKNOWN) for ch in s], np.int64)


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


def sample(program, graph, prompt: np.ndarray, count: int, temperature: float = 0.8,
           seed: int = 0) -> str:
    """Continue ``prompt`` (ids, at least the model's window long) by ``count`` characters.

    Each step feeds the last window of ids to ``program.forward`` (eval mode) and draws the next
    character from softmax(logits at the last position / temperature) with a NumPy RNG on
    ``seed`` (greedy when temperature is 0), so every backend samples the same way."""
    (name, window), = [(i.name, i.shape[0]) for i in graph.inputs]
    ids = [int(i) for i in prompt]
    if len(ids) < window:
        raise DataError(f"the prompt has {len(ids)} characters; the model reads windows of "
                        f"{window}")
    rng = np.random.default_rng(seed)
    for _ in range(count):
        x = np.array(ids[-window:], np.int64)[None]
        logits = np.asarray(program.forward({name: x}), np.float64)[0, -1]
        if temperature <= 0:
            ids.append(int(np.argmax(logits)))
            continue
        z = logits / temperature
        p = np.exp(z - z.max())
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return decode(ids[len(prompt):])
