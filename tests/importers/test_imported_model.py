"""An import is the Python API's TrainedModel (rosetta.importers.imported.Imported): predict,
fit, evaluate, save / rosetta.load, and replace_head for fine-tuning. Tiny CNN, float64, torch
backend."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402
from rosetta.errors import DataError, RosettaError, SpecError  # noqa: E402


def make():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    return m.double(), torch.randn(2, 3, 8, 8, dtype=torch.float64)


def nhwc(x):
    return np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))


def test_an_import_predicts_and_fits_as_its_source_trains():
    """fit on (x, y) with the batch the whole set: two updates equal torch's two SGD steps."""
    m, x = make()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    imp = rosetta.from_torch(m, x, optimizer=opt, loss=nn.CrossEntropyLoss())
    assert isinstance(imp, rosetta.TrainedModel) and not imp.compiled
    np.testing.assert_allclose(imp.predict(nhwc(x)), m(x).detach().numpy(), rtol=1e-12)
    y = np.array([1, 3])
    with pytest.raises(DataError, match="no training data: give data="):
        imp.fit(1)
    imp.fit(2, data=(nhwc(x), y, nhwc(x), y), progress=False)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), torch.as_tensor(y)).backward()
        opt.step()
    assert imp.step == 2 and imp.backend == "torch"
    for name, p in m.named_parameters():
        want = imp.source.layouts[name].to_canonical(p.detach().numpy())
        np.testing.assert_allclose(imp.params[imp.names[name]], want, rtol=1e-10, atol=1e-13)
    assert set(imp.evaluate((nhwc(x), y))) == {"loss", "accuracy"}


def test_replace_head_then_fine_tune_save_and_load(tmp_path):
    m, x = make()
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    m(x).sum().backward()
    opt.step()
    imp = rosetta.from_torch(m, x, optimizer=opt, loss=nn.CrossEntropyLoss(), step=None)
    before = {k: v.copy() for k, v in imp.params.items()}
    head = imp.spec.model.outputs[0]
    assert imp.replace_head(3) is imp
    assert imp.spec.model.output_type.shape == (3,) and imp.step == 1
    assert imp.params[f"{head}/kernel"].shape == (4 * 6 * 6, 3)
    for k, v in before.items():
        if not k.startswith(f"{head}/"):
            np.testing.assert_array_equal(imp.params[k], v)
    assert not np.any(imp.optimizer_state[f"m/{head}/kernel"])       # the head's state reset
    assert np.any(imp.optimizer_state[f"m/{imp.names['0.weight']}"])   # the body's kept
    with pytest.raises(RosettaError, match="head was replaced"):
        imp.certify(("torch",))
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((8, 8, 8, 3)), np.arange(8) % 3
    imp.fit(2, data=(xs, ys, xs, ys), progress=False)
    assert imp.predict(xs).shape == (8, 3) and imp.step == 3
    imp.save(tmp_path / "ck")
    again = rosetta.load(tmp_path / "ck")
    np.testing.assert_allclose(again.predict(xs), imp.predict(xs), rtol=1e-12)
    assert again.step == 3


def test_replace_head_needs_a_dense_output():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).double()
    imp = rosetta.from_torch(m, torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(SpecError, match="not a Dense classifier"):
        imp.replace_head(2)
    with pytest.raises(SpecError, match="num_classes must be an integer >= 1"):
        imp.replace_head(0)
