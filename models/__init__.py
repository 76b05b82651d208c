"""The model zoo, written in the neutral spec. Each entry builds a ``TrainSpec`` with its default
dataset, optimizer and number of steps."""

from __future__ import annotations

from rosetta.errors import SpecError
from rosetta.models import classic, dropout, sequence, vision

ZOO = {
    "linear": classic.linear,
    "mlp": classic.mlp,
    "cnn": classic.cnn,
    "mlp100": classic.mlp100,
    "tutorial_cnn": vision.tutorial_cnn,
    "lenet": vision.lenet,
    "resnet": vision.resnet,
    "resnet_digits": vision.resnet_digits,
    "lstm": sequence.lstm,
    "gru": sequence.gru,
    "transformer": sequence.transformer,
    "gpt": sequence.gpt,
    "mlp_dropout": dropout.mlp_dropout,
    "cnn_dropout": dropout.cnn_dropout,
    "transformer_dropout": dropout.transformer_dropout,
}


def get(name: str):
    if name not in ZOO:
        raise SpecError(f"unknown model {name!r}; the zoo has {', '.join(ZOO)} "
                        f"(or pass a .py or .json spec file)")
    return ZOO[name]()


def describe() -> list[dict]:
    rows = []
    for name, build in ZOO.items():
        spec = build()
        g = spec.model
        rows.append({"name": name, "params": g.param_count(), "flops": g.flops_per_example(),
                     "dataset": spec.data.dataset, "optimizer": spec.optimizer.kind,
                     "loss": spec.loss.kind, "steps": spec.steps,
                     "description": spec.description})
    return rows
