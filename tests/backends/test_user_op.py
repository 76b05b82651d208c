"""A user's own op, declared outside the package: its declaration (attributes, shape inference,
a parameter, the NumPy float64 reference) with ``rosetta.ops.register`` and one lowering per
backend with that backend's ``lowering.lowers``; it then builds, checks and trains like a
built-in op. Registered for the module only (the registry and tables are restored after)."""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs
from rosetta.conformance import compare_trees
from rosetta.conformance.oracle import check_forward, check_gradients
from rosetta.graph import Layer
from rosetta.initializers import Initializer
from rosetta.ops import REGISTRY, Attr, OpDef, ParamDef, register

from helpers import compile_spec, random_inputs, random_targets, spec_for
from selection import BACKENDS

USER_BACKENDS = [b for b in ("torch", "jax") if b in BACKENDS]
pytestmark = pytest.mark.skipif(len(USER_BACKENDS) < 2, reason="needs torch and jax under test")


def declare():
    @register
    class ScaledSoftsign(OpDef):
        """y = gain * x / (1 + |x| / width), per channel (last axis); gain (C,) starts at ones."""

        attrs = {"width": Attr("float", 1.0, check=lambda v: None if v > 0 else "must be > 0")}

        def infer(self, a, inputs, where):
            return inputs[0]

        def params(self, a, inputs):
            return {"gain": ParamDef((inputs[0].shape[-1],), Initializer("uniform", low=0.5,
                                                                          high=1.5))}

        def reference(self, a, p, xs, ctx):
            x = xs[0]
            return p["gain"] * x / (1.0 + np.abs(x) / a["width"])

    return ScaledSoftsign


def lower_torch():
    import torch
    from torch import nn

    from rosetta.backends.torch.lowering import EITHER, lowers, native_axis, native_params, same

    class ScaledSoftsign(nn.Module):
        def __init__(self, channels, width, dim):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(channels))
            self.width, self.dim = width, dim

        def forward(self, x):
            shape = [1] * x.dim()
            shape[self.dim] = -1
            return self.gain.view(shape) * x / (1.0 + x.abs() / self.width)

    @lowers("ScaledSoftsign", accepts=EITHER)
    def scaled_softsign(node, layout):
        shape = node.in_types[0].shape
        return ScaledSoftsign(shape[-1], node.attrs["width"],
                              native_axis(-1, len(shape), layout))

    native_params({"ScaledSoftsign": {"gain": (ScaledSoftsign, "gain", same, same)}})


def lower_jax():
    import flax.linen as nn
    import jax.numpy as jnp

    from rosetta.backends.jax.lowering import lowers

    class ScaledSoftsign(nn.Module):
        width: float
        dtype: object

        @nn.compact
        def __call__(self, x):
            gain = self.param("gain", nn.initializers.ones, (x.shape[-1],), self.dtype)
            return gain * x / (1.0 + jnp.abs(x) / self.width)

    @lowers("ScaledSoftsign")
    def scaled_softsign(node, xs, ctx):
        return ScaledSoftsign(node.attrs["width"], ctx.dtype, name=node.name)(xs[0])


@pytest.fixture(scope="module")
def user_op():
    from rosetta.backends.jax import layers as jax_layers
    from rosetta.backends.torch import layers as torch_layers

    declare()
    lower_torch()
    lower_jax()
    yield "ScaledSoftsign"
    del REGISTRY["ScaledSoftsign"]
    del torch_layers.LOWERINGS["ScaledSoftsign"], torch_layers.NATIVE["ScaledSoftsign"]
    del jax_layers.LOWERINGS["ScaledSoftsign"]


def _spec(steps=3):
    x = rs.Input((5,), name="x")
    h = rs.Dense(4, activation="tanh", name="d")(x)
    y = Layer("ScaledSoftsign", width=0.7, name="s")(h)
    return spec_for(rs.Model(x, y, name="user_op"), optimizer=rs.optim.SGD(0.1),
                    dataset="regression", steps=steps)


def test_the_registry_refuses_a_clash_and_a_bad_declaration(user_op):
    with pytest.raises(ValueError, match="already registered"):
        declare()

    class NotAnOp:
        pass

    with pytest.raises(TypeError, match="OpDef subclass"):
        register(NotAnOp)


@pytest.mark.parametrize("backend", USER_BACKENDS)
def test_forward_and_gradients_match_the_reference(user_op, backend):
    spec = _spec()
    assert check_forward(spec, backend).passed
    w = check_gradients(spec, backend)
    assert w.passed, str(w)


def test_trains_to_the_same_numbers_on_torch_and_jax(user_op):
    """Three SGD steps: the parameters (the user op's gain included) agree at 1e-10, and the
    first step's update equals -lr times the reference gradient."""
    spec = _spec()
    params = spec.model.init_params(spec.seed)
    x = random_inputs(spec.model, 4)
    y = random_targets(spec, 4)
    out = {}
    for backend in USER_BACKENDS:
        prog = compile_spec(spec, backend)
        prog.load(params, {})
        _, grads = prog.gradients(x, y)
        for _ in range(3):
            prog.train_step(x, y)
        out[backend] = (grads, prog.export_params())
    (g0, p0), (g1, p1) = out["torch"], out["jax"]
    assert "s/gain" in p0 and not np.allclose(p0["s/gain"], params["s/gain"])
    assert compare_trees(g0, g1, "gradients", 1e-10).passed
    w = compare_trees(p0, p1, "parameters after 3 steps", 1e-10)
    assert w.passed, str(w)
