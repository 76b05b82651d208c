"""Dropout on attention weights with injected keep-masks (conformance mode), on every backend:
forward, loss, gradients and a training step against the NumPy reference fed the same masks.
And the torch lowering against torch's own ``nn.MultiheadAttention`` with packed in_proj."""

from __future__ import annotations

import numpy as np
import pytest

import rosetta as rs
from rosetta.conformance import compare_arrays
from rosetta.conformance.oracle import FD_STEP
from rosetta.conformance.runner import dropout_masks
from rosetta.conformance.tiers import EXACT, ORACLE_FORWARD

from helpers import compile_spec, random_inputs, random_targets, spec_for
from selection import BACKENDS


def _attention_model():
    x = rs.Input((4, 4), name="x")
    n = rs.Input((), kind="int", name="lengths")
    y = rs.MultiHeadAttention(2, 2, causal=True, dropout=0.3, name="attn")(x, x, n)
    return rs.Model([x, n], rs.Dense(2, name="head")(y), name="attn_dropout")


def _block_model():
    x = rs.Input((3, 4), name="x")
    n = rs.Input((), kind="int", name="lengths")
    y = rs.TransformerBlock(x, heads=2, head_dim=3, ff_dim=5, lengths=n, dropout=0.25,
                            name="blk")
    return rs.Model([x, n], y, name="block_dropout")


@pytest.mark.parametrize("build", [_attention_model, _block_model])
@pytest.mark.parametrize("backend", BACKENDS)
def test_injected_attention_masks_match_reference(backend, build):
    model = build()
    spec = spec_for(model)
    masks = dropout_masks(model, seed=0, step=0, batch=3)
    assert set(masks) >= {n.name for n in model.nodes if n.op == "MultiHeadAttention"}
    prog = compile_spec(spec, backend)
    x, y = random_inputs(model, 3), random_targets(spec, 3)
    params = model.init_params(0)
    ref = model.reference_forward(params, x, training=True, dropout_masks=masks)
    w = compare_arrays(prog.forward(x, training=True, masks=masks), ref, "output", ORACLE_FORWARD)
    assert w.passed, str(w)
    # eval mode ignores dropout
    w = compare_arrays(prog.forward(x), model.reference_forward(params, x), "eval", ORACLE_FORWARD)
    assert w.passed, str(w)
    loss, grads = prog.gradients(x, y, masks=masks)
    ref_loss = spec.loss.reference(ref, y)
    assert compare_arrays(loss, ref_loss, "loss", ORACLE_FORWARD).passed, (loss, ref_loss)
    # one gradient entry against a central difference of the masked reference loss
    path = next(p for p in params if p.endswith("value_kernel"))
    up, dn = dict(params), dict(params)
    up[path], dn[path] = params[path].copy(), params[path].copy()
    up[path][0, 0, 0] += FD_STEP
    dn[path][0, 0, 0] -= FD_STEP

    def masked_loss(p):
        out = model.reference_forward(p, x, training=True, dropout_masks=masks)
        return spec.loss.reference(out, y)
    fd = (masked_loss(up) - masked_loss(dn)) / (2 * FD_STEP)
    assert abs(grads[path][0, 0, 0] - fd) <= 1e-6 * max(1.0, abs(fd)), (grads[path][0, 0, 0], fd)
    assert compare_arrays(prog.train_step(x, y, masks=masks), loss, "train loss",
                          ORACLE_FORWARD).passed


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_dropout_draws_from_the_program_rng(backend):
    """Without masks, training draws fresh keep-masks (the output changes) and
    ``forward(training=True)`` twice gives the same masks (it does not advance the stream)."""
    model = _attention_model()
    prog = compile_spec(spec_for(model), backend)
    x = random_inputs(model, 4)
    a, b = prog.forward(x, training=True), prog.forward(x, training=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, prog.forward(x))


@pytest.mark.parametrize("e,ev,out", [(4, 4, 4), (4, 3, 5)])
def test_torch_lowering_matches_nn_multihead_attention(e, ev, out):
    """The canonical parameters loaded into torch's own ``nn.MultiheadAttention`` (in_proj rows
    [q; k; v], each kernel reshaped (E, h*d) and transposed; out_proj weight (out, h*d)) give the
    reference output: the layout conversion is the one torch users expect."""
    if "torch" not in BACKENDS:
        pytest.skip("compares with torch's own nn.MultiheadAttention: the torch backend is not "
                    "selected in this run (ROSETTA_TEST_BACKENDS)")
    import torch
    q, v = rs.Input((3, e), name="q"), rs.Input((4, ev), name="v")
    model = rs.Model([q, v], rs.MultiHeadAttention(2, 2, output_dim=out, name="a")(q, v))
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(d.shape) for k, d in model.param_defs().items()}
    x = random_inputs(model, 2)
    mha = torch.nn.MultiheadAttention(4, 2, kdim=ev, vdim=ev, batch_first=True,
                                      dtype=torch.float64)
    if out != e:
        mha.out_proj = torch.nn.Linear(4, out, dtype=torch.float64)
    t = {k: torch.from_numpy(a) for k, a in params.items()}
    with torch.no_grad():
        rows = {n: t[f"a/{n}_kernel"].reshape(-1, 4).T for n in ("query", "key", "value")}
        if e == ev:
            mha.in_proj_weight.copy_(torch.cat([rows["query"], rows["key"], rows["value"]]))
        else:
            mha.q_proj_weight.copy_(rows["query"])
            mha.k_proj_weight.copy_(rows["key"])
            mha.v_proj_weight.copy_(rows["value"])
        mha.in_proj_bias.copy_(torch.cat([t[f"a/{n}_bias"].reshape(-1)
                                          for n in ("query", "key", "value")]))
        mha.out_proj.weight.copy_(t["a/output_kernel"].reshape(4, out).T)
        mha.out_proj.bias.copy_(t["a/output_bias"])
        got, _ = mha(torch.from_numpy(x["q"]), torch.from_numpy(x["v"]),
                     torch.from_numpy(x["v"]), need_weights=False)
    ref = model.reference_forward(params, x)
    w = compare_arrays(got.numpy(), ref, "nn.MultiheadAttention", ORACLE_FORWARD)
    assert w.passed, str(w)
    prog = compile_spec(spec_for(model), "torch")
    prog.load(params, {})
    w = compare_arrays(prog.forward(x), ref, "lowered", EXACT.tolerance)
    assert w.passed, str(w)
