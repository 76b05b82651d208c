"""The torch attention lowering (backends/torch/attention.py: projections + SDPA on batch-first
views, causal without lengths as SDPA's ``is_causal``) against torch's own
``nn.MultiheadAttention`` with the same masks, forward and backward, in float64; and its exports
(``onnx`` float32, ``torch`` float64) against the NumPy reference, for each mask path."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from selection import BACKENDS

if "torch" not in BACKENDS:
    pytest.skip("the torch backend is not selected (ROSETTA_TEST_BACKENDS)",
                allow_module_level=True)

import torch  # noqa: E402

import rosetta as rs  # noqa: E402
from rosetta.data import sample_inputs  # noqa: E402
from rosetta.backends.torch import export as tx  # noqa: E402

from cases import BUILD  # noqa: E402
from cases_attention import _self_attention as self_attention  # noqa: E402
from helpers import compile_spec  # noqa: E402

E, HEADS, T, N = 4, 2, 5, 3


def _mha(params: dict) -> torch.nn.MultiheadAttention:
    """torch's own module holding the same numbers (in_proj rows [q; k; v])."""
    mha = torch.nn.MultiheadAttention(E, HEADS, batch_first=True, dtype=torch.float64)
    t = {k: torch.from_numpy(a) for k, a in params.items()}
    names = ("query", "key", "value")
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([t[f"attn/{n}_kernel"].reshape(E, E).T for n in names]))
        mha.in_proj_bias.copy_(torch.cat([t[f"attn/{n}_bias"].reshape(-1) for n in names]))
        mha.out_proj.weight.copy_(t["attn/output_kernel"].reshape(E, E).T)
        mha.out_proj.bias.copy_(t["attn/output_bias"])
    return mha


@pytest.mark.parametrize("causal,lengths", [(False, True), (True, False), (True, True)])
def test_lowering_matches_nn_multihead_attention_forward_and_backward(causal, lengths):
    """Same output, input gradient and q / v / output parameter gradients as
    ``nn.MultiheadAttention`` given torch's masks (``key_padding_mask`` True at j >= length,
    ``attn_mask`` True at j > i); the key kernel's gradient too, and the key bias's is exactly 0
    (torch's own is rounding noise, below 1e-14)."""
    spec = self_attention(t=T, e=E, lengths=lengths, heads=HEADS, head_dim=E // HEADS,
                          causal=causal)()
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(d.shape) for k, d in spec.model.param_defs().items()}
    prog = compile_spec(spec, "torch")
    prog.load(params, {})
    ours = prog.model.node_module("attn")
    ours.zero_grad(set_to_none=True)
    mha = _mha(params)
    x = torch.from_numpy(rng.standard_normal((N, T, E)))
    n = torch.tensor([T, 2, 1])
    cot = torch.from_numpy(rng.standard_normal((N, T, E)))
    pad = torch.arange(T)[None, :] >= n[:, None] if lengths else None
    future = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None

    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = ours(xa, xa, n if lengths else None)
    want, _ = mha(xb, xb, xb, key_padding_mask=pad, attn_mask=future, need_weights=False)
    (got * cot).sum().backward()
    (want * cot).sum().backward()

    def close(a, b, what):
        err = float((a - b).abs().max() / b.abs().max())
        assert err <= 1e-12, f"{what}: normwise error {err:.2e}"

    close(got.detach(), want.detach(), "output")
    close(xa.grad, xb.grad, "input gradient")
    rows = mha.in_proj_weight.grad.split(E)
    biases = mha.in_proj_bias.grad.split(E)
    for i, c in enumerate("qkv"):
        close(getattr(ours, f"{c}_proj_weight").grad.reshape(E, E), rows[i], f"{c} kernel grad")
    close(ours.q_proj_bias.grad.reshape(-1), biases[0], "q bias grad")
    close(ours.v_proj_bias.grad.reshape(-1), biases[2], "v bias grad")
    close(ours.out_proj_weight.grad.reshape(E, E), mha.out_proj.weight.grad, "output kernel grad")
    assert torch.count_nonzero(ours.k_proj_bias.grad) == 0
    assert biases[1].abs().max() < 1e-14


@pytest.mark.parametrize("fmt,dtype", [("onnx", "float32"), ("torch", "float64")])
@pytest.mark.parametrize("case", ["transformer_prenorm_causal", "mha_causal",
                                  "mha_cross_key_lengths"])
def test_attention_exports_match_reference(fmt, dtype, case, tmp_path: pathlib.Path):
    """Each mask path exports and runs: lengths with causal (one boolean mask), causal alone
    (SDPA's ``is_causal``), key lengths with Tq != Tk; the artifact on a batch of another size
    against the NumPy float64 reference (normwise 1e-5 float32, 1e-10 float64)."""
    spec = BUILD[case]()
    program = rs.get_backend("torch").compile(spec, dtype=dtype)
    tx.export(program, fmt, tmp_path, example=sample_inputs(spec.model, 4, seed=0))
    x = {k: np.asarray(v, dtype if spec.model.types[k].kind == "float" else np.int64)
         for k, v in sample_inputs(spec.model, 6, seed=7).items()}
    if fmt == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(str(tmp_path / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        (y,) = session.run(None, {k: v for k, v in x.items() if k in wanted})
    else:
        module = torch.export.load(str(tmp_path / "model.pt2")).module()
        with torch.no_grad():
            y = module(*[torch.from_numpy(x[i.name]) for i in spec.model.inputs]).numpy()
    ref = spec.model.reference_forward(program.export_params(), x, state=program.export_state())
    err = float(np.max(np.abs(y.astype(np.float64) - ref)) / np.max(np.abs(ref)))
    assert err <= {"float32": 1e-5, "float64": 1e-10}[dtype], f"normwise error {err:.2e}"
