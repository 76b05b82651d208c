"""A training spec: model graph + loss + optimizer + data + defaults, with lossless JSON.

``TrainSpec.from_json`` only looks names up in registries; loading JSON never executes code.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rosetta import data as data_mod
from rosetta import losses as losses_mod
from rosetta import optim as optim_mod
from rosetta import validate
from rosetta.errors import DataError, SpecError
from rosetta.formats import read_version
from rosetta.graph import FORMAT, Graph, _expect, _expect_keys

# the spec JSON's format (graph.FORMAT, rosetta/1): this version written, 1 up to it read
FORMAT_NAME, VERSION = FORMAT.split("/")[0], int(FORMAT.split("/")[1])


_DATASET_KEYS = {"source", "dataset", "batch_size", "args"}
_PATH_KEYS = {"source", "path", "label", "batch_size", "test_fraction", "seed"}
_ARRAYS_KEYS = {"source", "batch_size", "test_fraction", "seed"}
SOURCES = ("dataset", "path", "arrays")


@dataclass
class DataSpec:
    """Where the training data comes from, and the batch size. Three sources:

    - a built-in dataset: ``DataSpec("digits", 32, {"layout": "image"})``; JSON
      ``{"dataset": "digits", "batch_size": 32, "args": {"layout": "image"}}``.
    - a file or folder: ``DataSpec.from_path("data/digits.npz", batch_size=32)``; JSON
      ``{"path": "data/digits.npz", "label": "label", "batch_size": 32, "test_fraction": 0.2,
      "seed": 0}``. Kinds: ``.npz``, a folder of ``.npy`` files (memory-mapped, read by batch),
      ``.csv`` (``label`` names its label column), a folder of images in one sub-folder per
      class (see ``rosetta.datafiles``). A relative path is relative to the folder of the spec
      file it was read from, ``.json`` (``TrainSpec.load_json`` sets ``base_dir``) or ``.py``
      (the command line sets it), else to the current folder (``from_path`` records it).
    - in-memory arrays (Python API only): ``DataSpec.from_arrays(x, y)``; JSON
      ``{"source": "arrays", "batch_size": 32, "test_fraction": 0.2, "seed": 0}``: the arrays
      are not written, so a spec read back from that JSON says, on ``load()``, that its data
      lived in memory, and how to give it (``--data PATH`` or ``DataSpec.from_arrays``).

    Where the source has no held-out examples (``x_test``, ``y_test``), ``round(n *
    test_fraction)`` of them are held out by a permutation drawn from ``seed`` (built-in
    datasets take both in ``args``). ``base_dir`` and ``arrays`` are not part of the spec:
    they are neither compared nor written to JSON.
    """

    dataset: str | None = None
    batch_size: int = 32
    args: dict = field(default_factory=dict)
    path: str | None = None
    label: str = "label"
    test_fraction: float = 0.2
    seed: int = 0
    source: str = ""
    base_dir: str | None = field(default=None, compare=False, repr=False)
    arrays: tuple | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not self.source:
            self.source = ("path" if self.path is not None else
                           "arrays" if self.arrays is not None and self.dataset is None else
                           "dataset")

    @classmethod
    def from_arrays(cls, x, y, x_test=None, y_test=None, batch_size: int = 32, *,
                    test_fraction: float = 0.2, seed: int = 0) -> "DataSpec":
        """Data held in memory: ``x`` one array (N, ...) or {model input name: array}, ``y``
        the labels (class ids (N,) or float targets shaped like the model's output). Without
        ``x_test``/``y_test``, ``round(N * test_fraction)`` examples are held out (permutation
        from ``seed``). The arrays are checked against the model when training starts
        (``rosetta.datacheck.check_data``). ``to_json`` writes ``{"source": "arrays", ...}``
        without the arrays: such a spec, read back, must be given its data again."""
        from rosetta.data import from_arrays

        spec = cls(None, batch_size, {}, test_fraction=test_fraction, seed=seed,
                   source="arrays", arrays=(x, y, x_test, y_test))
        spec.validate()
        # fail early on what needs no model (one row per example, both held-out arrays or none)
        from_arrays(x, y, x_test, y_test, test_fraction=test_fraction, seed=seed,
                    check_only=True)
        return spec

    @classmethod
    def from_path(cls, path, batch_size: int = 32, label: str = "label",
                  test_fraction: float = 0.2, *, seed: int = 0) -> "DataSpec":
        """Data in a file or folder (``.npz``, a folder of ``.npy``, ``.csv``, a folder of
        images by class: ``rosetta.datafiles``); a relative path is relative to the current
        folder (recorded now, in ``base_dir``). Nothing is read until ``load``."""
        spec = cls(None, batch_size, {}, path=os.fspath(path), label=label,
                   test_fraction=test_fraction, seed=seed, source="path",
                   base_dir=os.getcwd())
        spec.validate()
        return spec

    def validate(self, where="$.data"):
        if self.source not in SOURCES:
            raise SpecError(f"source must be one of {', '.join(SOURCES)}, found {self.source!r}",
                            where=f"{where}.source")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise SpecError(f"batch_size must be a positive integer, found {self.batch_size!r}",
                            where=f"{where}.batch_size")
        if self.source == "dataset":
            if not isinstance(self.dataset, str) or self.dataset not in data_mod.DATASETS:
                raise SpecError(f"unknown dataset {self.dataset!r}; built-in: "
                                f"{', '.join(data_mod.DATASETS)}", where=f"{where}.dataset")
            if not isinstance(self.args, dict):
                raise SpecError(f"args must be an object, found {self.args!r}",
                                where=f"{where}.args")
            for k, v in self.args.items():
                if not isinstance(v, (int, float, str, bool)):
                    raise SpecError(f"dataset argument {k!r} must be a number, string or bool, "
                                    f"found {v!r}", where=f"{where}.args")
            validate.check_dataset_args(self.dataset, self.args, f"{where}.args")
            if (self.path, self.label, self.test_fraction, self.seed) != (None, "label", 0.2, 0):
                raise SpecError("path, label, test_fraction and seed belong to a file source; a "
                                "built-in dataset takes test_fraction and seed in args",
                                where=where)
            return
        if self.dataset is not None or self.args:
            raise SpecError(f"a {self.source} source takes no dataset name or args",
                            where=where)
        if isinstance(self.test_fraction, bool) \
                or not isinstance(self.test_fraction, (int, float)) \
                or not 0.0 < self.test_fraction < 1.0:
            raise SpecError(f"test_fraction must be a number in (0, 1), found "
                            f"{self.test_fraction!r}", where=f"{where}.test_fraction")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) \
                or not 0 <= self.seed < validate.INT64:
            raise SpecError(f"seed must be an integer in [0, 2**63), found {self.seed!r}",
                            where=f"{where}.seed")
        if self.source == "path":
            if not isinstance(self.path, str) or not self.path:
                raise SpecError(f"path must be a non-empty string, found {self.path!r}",
                                where=f"{where}.path")
            if not isinstance(self.label, str) or not self.label:
                raise SpecError(f"label must be a column name, found {self.label!r}",
                                where=f"{where}.label")
        elif self.path is not None or self.label != "label":
            raise SpecError("an arrays source takes no path or label", where=where)

    def resolved_path(self) -> Path:
        """The file or folder of a path source: a relative path joined to ``base_dir`` (the
        spec file's folder, or the current folder when the spec was made in Python)."""
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir or os.getcwd()) / p

    def resolved(self) -> "DataSpec":
        """This spec with an absolute path (a copy), to store where the spec file's folder is
        lost, e.g. in a checkpoint; other sources unchanged (self)."""
        if self.source != "path":
            return self
        return dataclasses.replace(self, path=str(self.resolved_path().resolve()))

    def load(self, model: Graph | None = None):
        """The ``rosetta.data.Dataset``. ``model`` (the spec's model) gives the input shapes a
        CSV file is reshaped to and images are resized to; built-in datasets ignore it."""
        if self.source == "dataset":
            return data_mod.load(self.dataset, **self.args)
        if self.source == "arrays":
            if self.arrays is None:
                raise DataError("this spec's data lived in memory (DataSpec.from_arrays) and "
                                "JSON does not hold arrays: give the data as a file with "
                                "--data PATH (.npz, .csv, a folder of .npy files or of images), "
                                "or in Python with DataSpec.from_arrays(x, y)")
            x, y, x_test, y_test = self.arrays
            return data_mod.from_arrays(x, y, x_test, y_test, test_fraction=self.test_fraction,
                                        seed=self.seed)
        from rosetta import datafiles

        return datafiles.load(self.resolved_path(), model, label=self.label,
                              test_fraction=self.test_fraction, seed=self.seed)

    def to_json(self):
        if self.source == "path":
            return {"path": self.path, "label": self.label, "batch_size": self.batch_size,
                    "test_fraction": self.test_fraction, "seed": self.seed}
        if self.source == "arrays":
            return {"source": "arrays", "batch_size": self.batch_size,
                    "test_fraction": self.test_fraction, "seed": self.seed}
        return {"dataset": self.dataset, "batch_size": self.batch_size, "args": dict(self.args)}

    @classmethod
    def from_json(cls, d, where: str = "$.data", base_dir=None) -> "DataSpec":
        """Read any of the three JSON forms (see the class docstring); ``base_dir`` is the
        folder a relative path is relative to (the spec file's)."""
        d = _expect(d, dict, where, "an object")
        source = d.get("source", "path" if "path" in d else "dataset")
        if source not in SOURCES:
            raise SpecError(f"source must be one of {', '.join(SOURCES)}, found {source!r}",
                            where=f"{where}.source")
        keys = {"dataset": _DATASET_KEYS, "path": _PATH_KEYS, "arrays": _ARRAYS_KEYS}[source]
        _expect_keys(d, keys, where)
        if source == "dataset":
            if "dataset" not in d:
                raise SpecError("give \"dataset\" (a built-in name), \"path\" (a data file or "
                                "folder) or \"source\": \"arrays\"", where=where)
            return cls(d["dataset"], d.get("batch_size", 32),
                       dict(_expect(d.get("args", {}), dict, f"{where}.args", "an object")))
        if source == "path" and "path" not in d:
            raise SpecError("missing key 'path'", where=where)
        return cls(None, d.get("batch_size", 32), {}, path=d.get("path"),
                   label=d.get("label", "label"), test_fraction=d.get("test_fraction", 0.2),
                   seed=d.get("seed", 0), source=source,
                   base_dir=None if base_dir is None else os.fspath(base_dir))


@dataclass
class TrainSpec:
    """Everything ``rosetta train`` needs. ``steps`` is the default number of updates."""

    model: Graph
    loss: losses_mod.Loss
    optimizer: optim_mod.Optimizer
    data: DataSpec
    steps: int = 100
    seed: int = 0
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.model, Graph):
            raise SpecError(f"model must be a rosetta Graph (Model or Sequential), found "
                            f"{type(self.model).__name__}", where="$.model")
        self.loss = losses_mod.from_json(self.loss)
        self.optimizer = optim_mod.from_json(self.optimizer)
        if isinstance(self.data, dict):
            self.data = DataSpec.from_json(self.data)
        self.data.validate()
        if len(self.model.outputs) != 1:
            raise SpecError("a trained model has exactly one output (the logits)",
                            where="$.model.outputs")
        self.loss.check_output(self.model.output_type.shape, "$.loss")
        self.optimizer.check_frozen(self.model.param_defs())
        for k, lo, hi in (("steps", 1, validate.MAX_STEPS), ("seed", 0, validate.INT64 - 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise SpecError(f"{k} must be an integer in [{lo}, {hi}], found {v!r}",
                                where=f"$.{k}")
        if not isinstance(self.description, str):
            raise SpecError(f"description must be a string, found {self.description!r}"[:160],
                            where="$.description")
        validate.check_spec(self)

    @property
    def name(self):
        return self.model.name

    def to_json(self) -> dict:
        return {"format": FORMAT, "kind": "train", "model": self.model.to_json(),
                "loss": self.loss.to_json(), "optimizer": self.optimizer.to_json(),
                "data": self.data.to_json(), "steps": self.steps, "seed": self.seed,
                "description": self.description}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)

    @classmethod
    def from_json(cls, d, base_dir=None) -> "TrainSpec":
        """``base_dir``: the folder a relative data path is relative to (``load_json``
        passes the spec file's)."""
        _expect(d, dict, "$", "a JSON object")
        validate.check_json(d)
        try:
            return cls._from_json(d, base_dir)
        except SpecError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError,
                OverflowError) as e:  # the last net: a malformed spec is never a traceback
            raise SpecError(f"malformed spec ({type(e).__name__}: {e})"[:300], where="$") \
                from None

    @classmethod
    def _from_json(cls, d, base_dir=None) -> "TrainSpec":
        try:
            read_version(d.get("format"), FORMAT_NAME, VERSION)
        except ValueError as e:
            raise SpecError(str(e), where="$.format") from None
        _expect_keys(d, {"format", "kind", "model", "loss", "optimizer", "data", "steps", "seed",
                         "description"}, "$")
        if d.get("kind", "train") != "train":   # the one kind of spec this reads
            raise SpecError(f"expected \"kind\": \"train\", found {d.get('kind')!r}"[:200],
                            where="$.kind")
        for k in ("model", "loss", "optimizer", "data"):
            if k not in d:
                raise SpecError(f"missing key {k!r}", where="$")
        return cls(model=Graph.from_json(d["model"]),
                   loss=losses_mod.from_json(d["loss"]),
                   optimizer=optim_mod.from_json(d["optimizer"]),
                   data=DataSpec.from_json(d["data"], "$.data", base_dir),
                   steps=d.get("steps", 100), seed=d.get("seed", 0),
                   description=d.get("description", ""))

    @classmethod
    def load_json(cls, path) -> "TrainSpec":
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
            d = json.loads(text)
        except FileNotFoundError:
            raise SpecError("no such file", where=str(path)) from None
        except IsADirectoryError:
            raise SpecError("is a folder, expected a .json file", where=str(path)) from None
        except OSError as e:
            raise SpecError(f"cannot read it ({e.strerror})", where=str(path)) from None
        except UnicodeDecodeError as e:
            raise SpecError(f"not UTF-8 text (byte {e.start})", where=str(path)) from None
        except json.JSONDecodeError as e:
            raise SpecError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                            where=str(path)) from None
        except RecursionError:
            raise SpecError(f"nested deeper than {validate.MAX_DEPTH} levels; a rosetta spec "
                            f"is a few levels deep", where=str(path)) from None
        return cls.from_json(d, base_dir=path.resolve().parent)

    def __eq__(self, other):
        return isinstance(other, TrainSpec) and self.to_json() == other.to_json()

    def _repr_html_(self) -> str:
        """Jupyter: the layer table, loss, optimizer and data (``rosetta.display``)."""
        from rosetta.display import spec_html

        return spec_html(self)
