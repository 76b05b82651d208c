"""The certificate can fail: random single-attribute changes to an imported spec, each certified
against the unchanged source (not run by CI; tests/importers/test_import_fuzz.py runs four).

    .venv/bin/python -m rosetta.conformance.import_fuzz [--fuzz 20] [--seed 0]
        [--source file.py:NAME | --model cnn|lstm] [--backends torch] [--steps 2]

The source is a small float64 CNN built here (conv with stride and padding, BatchNorm, GroupNorm,
relu, a grouped conv, max pool, a channels-first flatten, dropout, Linear; SGD with nesterov
momentum and weight decay; cross-entropy with label smoothing), ``--model lstm`` (an nn.LSTM
with its two biases and a Linear on the last step), or ``--source`` (what ``rosetta import``
reads). ``summed_recurrent_biases`` plants the porting difference of a two-bias LSTM folded
into one bias (tests/importers/test_recurrent_import.py). Every candidate change is one attribute of one thing the source
fixes: a node attribute that the computation reads (an epsilon, a momentum, a stride, a padding
moved from one side to the other, an activation, a bias flag, a dropout rate, a negative slope;
initializers are excluded: the weights are loaded, so they are rightly invisible), an optimizer
hyperparameter (learning rate, momentum, nesterov, weight decay, betas, epsilon) or the loss's
label smoothing. ``--fuzz N`` changes are drawn (seeded) among those that still make a valid
spec; each is certified on ``--backends`` for ``--steps`` steps. A row says whether the
certificate failed and whether its blame names the changed node (for a node change) or a source
parameter (for an optimizer or loss change). Exit status 0 when every change fails the
certificate and is blamed right, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass

import numpy as np

from rosetta.errors import RosettaError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "silu", "gelu")


@dataclass
class Change:
    """One attribute of one node (``node`` set) or of the optimizer / loss (``node`` None)."""

    where: str          # "node", "optimizer" or "loss"
    node: str | None
    attr: str
    old: object
    new: object

    def __str__(self):
        who = f"{self.node}.{self.attr}" if self.node else f"{self.where}.{self.attr}"
        return f"{who}: {self.old!r} -> {self.new!r}"


def _node_changes(node, opdef) -> list:
    """Candidate changes of ``node`` (its JSON), by the kind of each attribute the op reads."""
    out = []
    a = node["attrs"]
    for name, attr in opdef.attrs.items():
        if name not in a or attr.kind == "init":
            continue
        v = a[name]
        if name == "approximate" and a.get("fn") != "gelu" or \
                name == "axis" and a.get("fn") != "softmax":
            continue           # read only by another fn: a change there is rightly invisible
        if attr.kind == "float":
            if name == "momentum":
                new = round(0.5 * v + 0.25, 6) if v != 0.5 else 0.7
            elif name == "rate":
                new = round(v / 2 + 0.05, 6)
            else:
                new = v * 10 if v else 1e-3
            out.append(Change("node", node["name"], name, v, new))
        elif attr.kind == "optional_float" and v is not None:
            out.append(Change("node", node["name"], name, v, v * 2 + 0.01))
        elif attr.kind == "bool":
            out.append(Change("node", node["name"], name, v, not v))
        elif attr.kind == "str" and attr.choices:
            if name in ("fn", "activation"):
                pool = [c for c in ACTIVATIONS if c != v and c in attr.choices]
                if name == "activation" and v == "identity":
                    pool = ["relu", "tanh"]
            else:
                pool = [c for c in attr.choices if c != v]
            if pool:
                out.append(Change("node", node["name"], name, v, pool[0]))
        elif attr.kind == "ints" and name in ("strides", "dilation") and isinstance(v, list):
            out.append(Change("node", node["name"], name, v, [v[0] + 1, *v[1:]]))
        elif attr.kind == "padding" and isinstance(v, list):
            pads = [list(p) for p in v]
            if pads and pads[0][1] > 0:       # one row moved from after to before: same shape
                new = copy.deepcopy(pads)
                new[0] = [pads[0][0] + 1, pads[0][1] - 1]
                out.append(Change("node", node["name"], name, v, new))
    return out


def _optimizer_changes(opt: dict) -> list:
    out = []
    lr = opt["learning_rate"]
    if isinstance(lr, dict) and lr.get("schedule") == "constant":
        out.append(Change("optimizer", None, "learning_rate", lr["value"], lr["value"] * 1.5))
    for k, v in opt.items():
        if k in ("momentum", "beta1", "beta2") and isinstance(v, float) and v:
            out.append(Change("optimizer", None, k, v, round(1 - (1 - v) * 2, 6)))
        elif k in ("weight_decay", "epsilon") and isinstance(v, float):
            out.append(Change("optimizer", None, k, v, v * 10 if v else 1e-3))
        elif k == "nesterov":
            out.append(Change("optimizer", None, k, v, not v))
    return out


def candidates(spec) -> list:
    """Every candidate change of ``spec`` (a TrainSpec), in graph order."""
    from rosetta.ops import get_op

    d = spec.to_json()
    out = []
    for node in d["model"]["nodes"]:
        out += _node_changes(node, get_op(node["op"]))
    out += _optimizer_changes(d["optimizer"])
    ls = d["loss"].get("label_smoothing")
    if isinstance(ls, float):
        out.append(Change("loss", None, "label_smoothing", ls, round(ls * 2 + 0.05, 6)))
    return out


def apply(spec, change: Change):
    """``spec`` with ``change`` made (a new TrainSpec, the same data); raises RosettaError when
    the changed spec is not valid."""
    from rosetta.spec import TrainSpec

    d = spec.to_json()
    if change.where == "node":
        node = next(n for n in d["model"]["nodes"] if n["name"] == change.node)
        node["attrs"][change.attr] = change.new
    elif change.where == "optimizer":
        if change.attr == "learning_rate":
            d["optimizer"]["learning_rate"] = {"schedule": "constant", "value": change.new}
        else:
            d["optimizer"][change.attr] = change.new
    else:
        d["loss"][change.attr] = change.new
    new = TrainSpec.from_json(d)
    new.data = spec.data
    return new


def blamed_right(imp, change: Change, blame: str) -> bool:
    """A node change is blamed on that node (by name); an optimizer or loss change on a source
    parameter (the blame names one of the source's own names)."""
    if change.where == "node":
        return f"{change.node} " in blame or f"{change.node}/" in blame \
            or f"{change.node})" in blame
    return any(f"source {n})" in blame or f"of {n})" in blame for n in imp.names) \
        or "loss" in blame


def certify_change(imp, change: Change, backends=("torch",), steps=2) -> dict:
    """Certify ``imp`` with ``change`` made against its unchanged source: a row."""
    bad = copy.copy(imp)
    bad.spec = apply(imp.spec, change)
    cert = bad.certify(tuple(backends), steps=steps)
    blame = "; ".join(r["blame"] for r in cert.results if not r["passed"])
    return {"change": str(change), "failed": not cert.passed,
            "blamed_right": (not cert.passed) and blamed_right(imp, change, blame),
            "blame": blame}


def fuzz(imp, n=20, seed=0, backends=("torch",), steps=2, log=print) -> list:
    """``n`` random valid single-attribute changes of ``imp``, each certified: the rows."""
    rng = np.random.default_rng(seed)
    pool = candidates(imp.spec)
    order = rng.permutation(len(pool))
    rows = []
    for i in order:
        if len(rows) == n:
            break
        change = pool[i]
        try:
            apply(imp.spec, change)
        except RosettaError:
            continue          # not a valid spec: the spec's own validation refuses it
        row = certify_change(imp, change, backends, steps)
        rows.append(row)
        log(f"{len(rows):2d}. {row['change']:<55} "
            f"{'FAIL' if row['failed'] else 'PASS (unseen!)'}  "
            f"{'blamed right' if row['blamed_right'] else 'BLAME WRONG'}: {row['blame'][:150]}",
            flush=True)
    if len(rows) < n:
        log(f"only {len(rows)} valid changes of this model (asked {n})")
    return rows


def fuzz_model():
    """The built-in source: (module, example inputs, optimizer, loss), float64."""
    import torch
    from torch import nn

    class FuzzNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
            self.bn = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
            self.gn = nn.GroupNorm(2, 8)
            self.act = nn.LeakyReLU(0.1)
            self.pool = nn.MaxPool2d(2)
            self.drop = nn.Dropout(0.25)
            self.fc = nn.Linear(8 * 2 * 2, 5)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv(x)))
            y = self.act(self.gn(self.conv2(y))) + y
            y = torch.flatten(self.pool(y), 1)
            return self.fc(self.drop(y))

    torch.manual_seed(0)
    m = FuzzNet().double()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          weight_decay=1e-3)
    return m, (torch.randn(2, 3, 8, 8, dtype=torch.float64),), opt, \
        nn.CrossEntropyLoss(label_smoothing=0.1)


def recurrent_model():
    """A second built-in source, ``--model lstm``: (module, example inputs, optimizer, loss),
    float64, an ``nn.LSTM`` (hidden 4, two biases) read at its last step by a Linear; SGD with
    momentum, mean squared error."""
    import torch
    from torch import nn

    class LSTMNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(3, 4, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])

    torch.manual_seed(0)
    m = LSTMNet().double()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    return m, (torch.randn(2, 3, 3, dtype=torch.float64),), opt, nn.MSELoss()


def summed_recurrent_biases(imp, node: str):
    """The planted porting difference of torch's two-bias LSTM / RNN: ``node``'s two biases
    summed into one (``recurrent_bias=False``, ``bias`` = bias_ih + bias_hh), as a port that
    folds them would write it (a copy of ``imp``). The forward pass is the same; training is
    not: torch moves b_ih + b_hh by both gradients, the port moves its one bias by one. The
    source's bias_hh has no canonical path left, which the certificate names."""
    from rosetta.spec import TrainSpec

    bad = copy.copy(imp)
    d = imp.spec.to_json()
    n = next(x for x in d["model"]["nodes"] if x["name"] == node)
    n["attrs"]["recurrent_bias"] = False
    bad.spec = TrainSpec.from_json(d)
    bad.spec.data = imp.spec.data
    folded = {k for k, v in imp.names.items() if v.startswith(f"{node}/")
              and v.rsplit("/", 1)[1] in ("recurrent_bias", "backward_recurrent_bias")}
    bad.names = {k: v for k, v in imp.names.items() if k not in folded}
    return bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fuzz", type=int, default=20, help="number of changes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", default=None, help="file.py:NAME or a .pt2 (see rosetta import)")
    p.add_argument("--model", default="cnn", choices=("cnn", "lstm"),
                   help="the built-in source (without --source)")
    p.add_argument("--backends", default="torch")
    p.add_argument("--steps", type=int, default=2)
    a = p.parse_args(argv)
    from rosetta.importers.imported import from_torch

    if a.source:
        from rosetta.importers.command import load_source

        d = load_source(a.source)
        imp = from_torch(d["model"], d["example_inputs"], optimizer=d.get("optimizer"),
                         loss=d.get("loss"), scheduler=d.get("scheduler"))
    else:
        m, x, opt, loss = fuzz_model() if a.model == "cnn" else recurrent_model()
        imp = from_torch(m, x, optimizer=opt, loss=loss, name=f"fuzz{a.model}")
    base = imp.certify(tuple(a.backends.split(",")), steps=a.steps)
    print(f"unchanged import: {'PASS' if base.passed else 'FAIL'}")
    if not base.passed:
        print(base.table())
        return 1
    rows = fuzz(imp, a.fuzz, a.seed, a.backends.split(","), a.steps)
    failed = sum(r["failed"] for r in rows)
    right = sum(r["blamed_right"] for r in rows)
    print(f"{failed}/{len(rows)} changes fail the certificate, {right}/{len(rows)} blamed on the "
          f"changed node or a source parameter")
    return 0 if rows and right == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
