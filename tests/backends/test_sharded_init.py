"""Building a model that is sharded before its values exist (``--shard-params``): the initial
values drawn one array at a time, and torch's meta-device build keeping what is not a
canonical parameter (constant buffers, the LSTM's zero second bias)."""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs


def _spec():
    x = rs.Input((5, 3), name="x")
    h = rs.LSTM(4, return_sequences=True, name="lstm")(x)           # nn.LSTM: bias_hh held at 0
    c = rs.Constant(np.linspace(-1.0, 1.0, 4), name="c")()             # a buffer, not a parameter
    h = rs.Add(name="shift")([h, c])
    y = rs.Dense(2, name="head")(rs.Flatten(name="flat")(h))
    return rs.TrainSpec(model=rs.Model(x, y, name="meta"), loss=rs.losses.MeanSquaredError(),
                        optimizer=rs.optim.Adam(0.01), data=rs.DataSpec("images"), seed=3)


def test_initial_params_are_init_params_drawn_one_at_a_time():
    graph = _spec().model
    lazy, whole = graph.initial_params(3), graph.init_params(3)
    assert list(lazy) == list(whole) and len(lazy) == len(whole)
    for path, a in whole.items():
        np.testing.assert_array_equal(lazy[path], a)
    assert lazy["lstm/kernel"] is not lazy["lstm/kernel"]   # drawn on each read, never kept


def test_a_torch_model_built_on_the_meta_device_computes_the_same():
    torch = pytest.importorskip("torch")
    from rosetta.backends.torch import params
    from rosetta.backends.torch.model import build_model, materialize
    from rosetta.backends.torch.program import Program

    spec = _spec()
    ref = Program(spec, dtype="float64")
    model = build_model(ref.graph, torch.device("cpu"), torch.float64, empty_params=True)
    assert all(p.device.type == "meta" for p in model.parameters())
    materialize(model, torch.device("cpu"))
    slots, state = params.slots(ref.graph, model)
    params.load(slots, spec.model.initial_params(spec.seed), "parameters")
    # the second LSTM bias is a constant of the lowering (no checkpoint holds it): zero again
    hh = [p for n, p in model.named_parameters() if "bias_hh" in n]
    assert hh and all(not p.requires_grad and not p.abs().max() for p in hh)
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    model.eval()
    got = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_array_equal(got, ref.forward({"x": x}))
