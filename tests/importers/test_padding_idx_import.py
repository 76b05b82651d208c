"""Embedding(padding_idx) through from_torch: the forward reads the padding row, its gradient is
exactly 0, and AdamW's decoupled weight decay still shrinks it (as torch does). Tiny: 9 x 4
table, float64, 3 AdamW steps on torch, TensorFlow and JAX."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402
from rosetta import checkpoint  # noqa: E402


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(9, 4, padding_idx=1)
        self.fc = nn.Linear(20, 2)

    def forward(self, ids):
        return self.fc(self.emb(ids).flatten(1))


def _ids():
    return torch.tensor([[1, 3, 1, 8, 0], [2, 1, 1, 5, 4], [7, 6, 1, 1, 1]])


def test_padding_row_gets_no_gradient_but_decays_under_adamw(tmp_path):
    torch.manual_seed(0)
    m = Tokens().double()
    with torch.no_grad():
        m.emb.weight[1] = 0.5          # a padding row that weight decay visibly moves
    imp = rosetta.from_torch(m, (_ids(),), optimizer=torch.optim.AdamW(
        m.parameters(), lr=0.05, weight_decay=0.1))
    node = next(n for n in imp.spec.model.nodes if n.op == "Embedding")
    assert node.attrs["padding_idx"] == 1
    cert = imp.certify(("torch", "tensorflow", "jax"), steps=3)
    assert cert.passed, str(cert)
    prog = rosetta.get_backend("jax").compile(imp.spec, dtype="float64")
    prog.load(imp.params, imp.spec.model.init_state())
    for _ in range(3):
        prog.train_step(_ids().numpy(), np.array([0, 1, 1]))
    row = prog.export_params()[f"{node.name}/embedding"][1]
    # AdamW: m = v = 0 on the row, so only the decay p <- p (1 - lr wd) moves it, 3 times
    np.testing.assert_allclose(row, 0.5 * (1 - 0.05 * 0.1) ** 3, rtol=1e-14)
    path = imp.save(tmp_path / "run")
    back = rosetta.load(path)
    node_back = next(n for n in back.spec.model.nodes if n.op == "Embedding")
    assert node_back.attrs["padding_idx"] == 1
    assert checkpoint.load(path).spec == imp.spec


class Positions(nn.Module):
    """RoBERTa's embeddings written small: position ids computed from the input ids
    (``ne(pad)``, ``cumsum``, ``type_as``, int ``*`` and ``+``), token types gathered from a
    zero buffer at those positions, three tables, two with a padding row."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(9, 4, padding_idx=1)
        self.pos = nn.Embedding(8, 4, padding_idx=1)
        self.types = nn.Embedding(2, 4)
        self.register_buffer("type_ids", torch.zeros(1, 8, dtype=torch.long), persistent=False)
        self.fc = nn.Linear(20, 2)

    def forward(self, ids):
        mask = ids.ne(1).int()
        pos = (torch.cumsum(mask, dim=1).type_as(mask) + 0) * mask
        pos = pos.long() + 1
        types = torch.gather(self.type_ids.expand(ids.shape[0], -1), 1, pos)
        h = self.tok(ids) + self.types(types) + self.pos(pos)
        return self.fc(h.flatten(1))


def test_position_ids_computed_from_the_input_map_to_int_ops_and_certify():
    torch.manual_seed(0)
    m = Positions().double()
    imp = rosetta.from_torch(m, (_ids(),), optimizer=torch.optim.Adam(m.parameters(), lr=0.05))
    ops = [n.op for n in imp.spec.model.nodes]
    assert {"Equal", "Subtract", "Cumsum", "Multiply"} <= set(ops)
    assert sum(n.attrs.get("padding_idx") == 1 for n in imp.spec.model.nodes
               if n.op == "Embedding") == 2
    cert = imp.certify(("torch", "tensorflow", "jax"), steps=2)
    assert cert.passed, str(cert)


class ShiftedEos(nn.Module):
    """BART's pieces written small: decoder ids made by ``shift_tokens_right`` (new_zeros
    written in place), one table with a padding row read by both id sequences (a shared
    Parameter, two padded Gathers), the head reading each example's last eos (``h[eos_mask]
    .view(N, -1, D)[:, -1, :]``) after torch's eos-count check."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Embedding(9, 4, padding_idx=1)
        self.mix = nn.Linear(4, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, ids):
        shifted = ids.new_zeros(ids.shape)
        shifted[:, 1:] = ids[:, :-1].clone()
        shifted[:, 0] = 2
        shifted.masked_fill_(shifted == -100, 1)
        h = torch.tanh(self.mix(self.shared(ids))) + self.shared(shifted)
        eos = ids.eq(2)
        torch._check(torch.unique_consecutive(eos.sum(1)).numel() == 1,
                     lambda: "All examples must have the same number of <eos> tokens.")
        return self.fc(h[eos, :].view(h.size(0), -1, h.size(-1))[:, -1, :])


def test_shifted_ids_shared_padded_table_and_last_eos_certify():
    torch.manual_seed(0)
    m = ShiftedEos().double()
    ids = torch.tensor([[0, 2, 5, 2, 1], [3, 2, 2, 7, 1], [2, 6, 4, 2, 8]])
    imp = rosetta.from_torch(m, (ids,), optimizer=torch.optim.Adam(m.parameters(), lr=0.05))
    ops = {n.op for n in imp.spec.model.nodes}
    assert {"Pad", "Cumsum", "Parameter"} <= ops and "Embedding" not in ops
    assert {n.attrs["padding_idx"] for n in imp.spec.model.nodes if n.op == "Gather"} == {1}
    cert = imp.certify(("torch", "tensorflow", "jax"), steps=2)
    assert cert.passed, str(cert)
