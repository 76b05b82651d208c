"""The sharded JAX step's per-node gather (``rosetta.backends.jax.data_parallel.sharded_node``,
``--shard-params``): its ordering select changes no bit of anything, a node run through it has
the node's own value and gradients, and every zoo node that runs alone (``model.runs_alone``)
is the same pure function through ``node_function`` as inside the graph module. One device, so
each is small; that the sharded step equals one device on 2 devices is the parallel tier's
(tests/cross/test_shard_params.py), and its memory is ``rosetta.conformance.shard_memory``'s.
"""

from __future__ import annotations

import numpy as np
import pytest

from selection import BACKENDS

if "jax" not in BACKENDS:
    pytest.skip("the jax backend is not selected (ROSETTA_TEST_BACKENDS)",
                allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from rosetta import models  # noqa: E402
from rosetta.backends.jax import data_parallel as dp  # noqa: E402


def test_the_ordering_select_changes_no_bit():
    x = jnp.asarray([np.nan, -0.0, 0.0, np.inf, -np.inf, 1.5, -2.25], jnp.float32)
    after = (jnp.asarray([[np.nan, 1.0]], jnp.float32), [jnp.asarray([np.inf])])
    out = dp._after(x, *after)
    assert np.asarray(out).tobytes() == np.asarray(x).tobytes()
    ints = jnp.arange(3)
    assert dp._after(ints, *after) is ints   # only floats are ordered


def test_a_sharded_node_has_the_nodes_value_and_gradients():
    """float64 (the backend enables x64), at the exact tier's 1e-10: the custom VJP recomputes
    the node's forward, so only rounding may differ."""
    mesh = dp.mesh_of(1, "cpu")
    whole = NamedSharding(mesh, P())
    rng = np.random.default_rng(0)
    params = {"kernel": jnp.asarray(rng.normal(size=(4, 6)), jnp.float64),
              "bias": jnp.asarray(rng.normal(size=(6,)), jnp.float64)}
    parts = {k: NamedSharding(mesh, dp.state_spec(v.shape, 1)) for k, v in params.items()}
    x = jnp.asarray(rng.normal(size=(3, 4)), jnp.float64)
    tokens = jnp.asarray([0, 2, 1])

    def f(p, xs):
        h, t = xs
        return jnp.tanh(h @ p["kernel"] + p["bias"]) * (t[:, None] + 1.0)

    def loss(p, h, node):
        return jnp.sum(node(p, [h, tokens]) ** 2)

    direct = jax.jit(jax.value_and_grad(lambda p, h: loss(p, h, f), argnums=(0, 1)))
    sharded = jax.jit(jax.value_and_grad(lambda p, h: loss(
        p, h, lambda p, xs: dp.sharded_node(f, p, xs, parts, whole)), argnums=(0, 1)))
    (v1, (gp1, gx1)), (v2, (gp2, gx2)) = direct(params, x), sharded(params, x)
    assert v2.dtype == jnp.float64
    np.testing.assert_allclose(v2, v1, rtol=1e-10, atol=0)
    np.testing.assert_allclose(gx2, gx1, rtol=1e-10, atol=0)
    for k in params:
        np.testing.assert_allclose(gp2[k], gp1[k], rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", ["gpt", "transformer_dropout"])
def test_every_node_runs_alone_as_inside_the_graph(name):
    """The graph module with ``run_node`` = plain call equals the graph module, bit for bit, in
    eval and in training with injected keep-masks (attention's own dropout draw, without a
    mask, stays inside the graph module: ``runs_alone``)."""
    from rosetta.backend_registry import get_backend

    spec = models.get(name)
    spec.data.batch_size = 2
    prog = get_backend("jax").compile(spec, dtype="float32")
    calls = []

    def plain(f, p, xs):
        calls.append(1)
        return f(p, xs)

    alone = prog.model.clone(run_node=plain)
    rng = np.random.default_rng(0)
    inputs = {i.name: (rng.integers(0, 8, size=(2, *i.shape)) if i.kind == "int"
                       else rng.normal(size=(2, *i.shape)).astype(np.float32))
              for i in prog.graph.inputs}
    variables = {"params": prog.params, "batch_stats": prog.batch_stats}
    for kw in ({"train": False}, {"train": True, "masks": _masks(prog, 2)}):
        want = prog.model.apply(variables, inputs, mutable=["batch_stats"], **kw)[0]
        got = alone.apply(variables, inputs, mutable=["batch_stats"], **kw)[0]
        for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            assert np.asarray(w).tobytes() == np.asarray(g).tobytes()
    assert calls


def _masks(prog, batch):
    from rosetta.dropout import mask_draws

    rng = np.random.default_rng(1)
    return {d.node: (rng.random((batch, *d.shape)) > d.rate).astype(np.float32)
            for d in mask_draws(prog.graph)} or None
