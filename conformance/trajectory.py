"""A neutral recording of N training steps, comparable across processes, machines and versions.

Arrays (NumPy, canonical layout and paths):

* ``loss``              (N,)        loss of each step, before its update
* ``grads/<path>``      (N, ...)    gradient of each step, at the parameters before its update
* ``params/<path>``     (N + 1, ...) parameters: index 0 the start, index t + 1 after update t
* ``state/<path>``      (N + 1, ...) model state (BatchNorm running statistics), likewise
* ``opt/<slot>/<path>`` (N, ...)    optimizer state after each update (where the backend exports it)
* ``eval/output``       (B, ...)    the eval-mode output (running statistics, dropout off) after
  the last update, on the inputs of the first batch (``eval/output<i>`` for several outputs)

plus metadata: model, backend, framework versions, device, dtype, steps, seed, spec hash, dropout
mode. Saved as one ``.npz`` whose ``__meta__`` entry holds the metadata as JSON.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rosetta.errors import CheckpointError
from rosetta.files import atomic_file

CATEGORIES = ("loss", "grads", "params", "state", "opt")   # per step
SAVED = ("grads", "params", "state", "opt", "eval")


def eval_outputs(out) -> dict:
    """A forward's output(s) as the ``eval`` entries of a trajectory."""
    if isinstance(out, (list, tuple)):
        return {f"output{i}": np.asarray(o) for i, o in enumerate(out)}
    return {"output": np.asarray(out)}


def spec_hash(spec) -> str:
    return hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Trajectory:
    meta: dict
    loss: np.ndarray
    grads: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    opt: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        m = self.meta
        return f"{m['backend']}/{m['device']}/{m['dtype']}"

    def save(self, path) -> Path:
        """Write atomically: a failed write never leaves a half file under ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"loss": self.loss, "__meta__": np.array(json.dumps(self.meta))}
        for cat in SAVED:
            for k, v in getattr(self, cat).items():
                arrays[f"{cat}/{k}"] = v
        with atomic_file(path) as f:
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path) -> "Trajectory":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                t = cls(meta=meta, loss=z["loss"])
                for key in z.files:
                    cat, _, rest = key.partition("/")
                    if cat in SAVED:
                        getattr(t, cat)[rest] = z[key]
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such trajectory file") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"{path}: not a rosetta trajectory ({e})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: trajectory metadata is not a JSON object")
        for key in ("backend", "dtype", "device", "spec_hash", "steps"):
            if key not in meta:
                raise CheckpointError(f"{path}: trajectory metadata lacks {key!r}")
        return t
