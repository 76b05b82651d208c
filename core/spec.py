"""A training spec: model graph + loss + optimizer + data + defaults, with lossless JSON.

``TrainSpec.from_json`` only looks names up in registries; loading JSON never executes code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rosetta import data as data_mod
from rosetta import losses as losses_mod
from rosetta import optim as optim_mod
from rosetta.errors import SpecError
from rosetta.graph import FORMAT, Graph, _expect, _expect_keys


@dataclass
class DataSpec:
    """A built-in dataset by name, its arguments, and the batch size."""

    dataset: str
    batch_size: int = 32
    args: dict = field(default_factory=dict)

    def validate(self, where="$.data"):
        if self.dataset not in data_mod.DATASETS:
            raise SpecError(f"unknown dataset {self.dataset!r}; built-in: "
                            f"{', '.join(data_mod.DATASETS)}", where=f"{where}.dataset")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise SpecError(f"batch_size must be a positive integer, found {self.batch_size!r}",
                            where=f"{where}.batch_size")
        for k, v in self.args.items():
            if not isinstance(v, (int, float, str, bool)):
                raise SpecError(f"dataset argument {k!r} must be a number, string or bool, "
                                f"found {v!r}", where=f"{where}.args")

    def load(self):
        return data_mod.load(self.dataset, **self.args)

    def to_json(self):
        return {"dataset": self.dataset, "batch_size": self.batch_size, "args": dict(self.args)}


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
            self.data = DataSpec(**self.data)
        self.data.validate()
        if len(self.model.outputs) != 1:
            raise SpecError("a trained model has exactly one output (the logits)",
                            where="$.model.outputs")
        self.loss.check_output(self.model.output_type.shape, "$.loss")
        for k in ("steps", "seed"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if k == "steps" else 0):
                raise SpecError(f"{k} must be a {'positive' if k == 'steps' else 'non-negative'} "
                                f"integer, found {v!r}", where=f"$.{k}")

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
    def from_json(cls, d) -> "TrainSpec":
        _expect(d, dict, "$", "a JSON object")
        if d.get("format") != FORMAT:
            raise SpecError(f"expected \"format\": \"{FORMAT}\", found {d.get('format')!r}",
                            where="$.format")
        _expect_keys(d, {"format", "kind", "model", "loss", "optimizer", "data", "steps", "seed",
                         "description"}, "$")
        for k in ("model", "loss", "optimizer", "data"):
            if k not in d:
                raise SpecError(f"missing key {k!r}", where="$")
        data = _expect(d["data"], dict, "$.data", "an object")
        _expect_keys(data, {"dataset", "batch_size", "args"}, "$.data")
        return cls(model=Graph.from_json(d["model"]),
                   loss=losses_mod.from_json(d["loss"]),
                   optimizer=optim_mod.from_json(d["optimizer"]),
                   data=DataSpec(data.get("dataset"), data.get("batch_size", 32),
                                 dict(_expect(data.get("args", {}), dict, "$.data.args",
                                              "an object"))),
                   steps=d.get("steps", 100), seed=d.get("seed", 0),
                   description=d.get("description", ""))

    @classmethod
    def load_json(cls, path) -> "TrainSpec":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise SpecError("no such file", where=str(path)) from None
        except json.JSONDecodeError as e:
            raise SpecError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                            where=str(path)) from None
        return cls.from_json(d)

    def __eq__(self, other):
        return isinstance(other, TrainSpec) and self.to_json() == other.to_json()
