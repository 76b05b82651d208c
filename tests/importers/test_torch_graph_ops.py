"""rosetta.from_torch on tiny hand-written modules for the mapping side: stochastic depth
(torchvision's StochasticDepth written out, as torchvision is not a test dependency), layout
tracking through permutes (ConvNeXt's channels-last LayerNorm + Linear), layer scale.
Small: 4x4 inputs, float64, torch certificate of 1-2 steps."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402
from rosetta.importers import ImportRefused  # noqa: E402


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth, its forward as torchvision writes it."""

    def __init__(self, p, mode):
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return x * noise.div_(1.0 - self.p)


StochasticDepth.__module__ = "torchvision.ops.stochastic_depth"   # what the importer matches


class Residual(nn.Module):
    def __init__(self, mode="row"):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.sd = StochasticDepth(0.4, mode)
        self.fc = nn.Linear(48, 2)

    def forward(self, x):
        return self.fc(torch.flatten(x + self.sd(self.conv(x)), 1))


def _import(module, x, **kw):
    torch.manual_seed(0)
    m = module.double()
    return rosetta.from_torch(m, (x,), optimizer=torch.optim.SGD(m.parameters(), lr=0.1), **kw)


def _x(*shape):
    torch.manual_seed(1)
    return torch.randn(*shape, dtype=torch.float64)


def test_stochastic_depth_imports_and_certifies_with_injected_masks():
    imp = _import(Residual(), _x(4, 3, 4, 4))
    node = next(n for n in imp.spec.model.nodes if n.name == "sd")
    assert node.op == "StochasticDepth" and node.attrs["rate"] == 0.4
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed and cert.dropout == "inject", cert.table()
    assert max(cert.results[0]["worst"].values()) < 1e-12


def test_stochastic_depth_batch_mode_is_refused_with_one_line():
    with pytest.raises(ImportRefused) as e:
        _import(Residual("batch"), _x(2, 3, 4, 4))
    assert len(e.value.lines) == 1
    assert e.value.lines[0].startswith("sd (StochasticDepth): unsupported module: "
                                       "StochasticDepth(mode='batch')"), e.value.lines
