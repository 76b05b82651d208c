"""from_onnx(torch_module=...): each initializer paired with the torch parameter it holds, by
value (as stored, transposed, gathered, concatenated), on a tiny model with a Linear, a
LayerNorm and an output layer tied to the embedding table, and on a tiny attention model whose
exporters fold a permuted bias table and cat(q_bias, zeros, v_bias) into constants, exported
by both torch exporters; gradients and steps certified against the module; ambiguous and
missing pairings named in one line."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import rosetta  # noqa: E402
from rosetta.importers.onnx_pairing import pair_initializers  # noqa: E402


class Tied(torch.nn.Module):
    """ids -> Embedding -> Linear -> tanh -> LayerNorm -> x @ E^T (the table, tied) -> mean."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 8)
        self.fc = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.norm(torch.tanh(self.fc(self.emb(ids))))).mean(1)


def _model():
    torch.manual_seed(0)
    m = Tied()
    with torch.no_grad():   # distinct values: the LayerNorm's ones and zeros would be equal
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_transposed_and_tied_weights_pair_with_the_torch_parameters(tmp_path, dynamo):
    m, ids = _model(), torch.tensor([[1, 4, 7, 2], [3, 3, 10, 0]])
    path = tmp_path / "tied.onnx"
    kw = ({"dynamic_shapes": ({0: torch.export.Dim("N")},)} if dynamo
          else {"dynamic_axes": {"x": {0: "N"}}})
    torch.onnx.export(m, (ids,), str(path), input_names=["x"], dynamo=dynamo, **kw)
    inits = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    params = dict(m.named_parameters())
    tensors = {k: p.detach().numpy() for k, p in params.items()}
    pairing = pair_initializers(onnx.load(str(path)), tensors)
    assert not pairing.unpaired, pairing.unpaired
    # the exporter stores the Linear's weight and the tied head transposed under a new name
    assert any(how == "transpose" and x not in params
               for x, (_, how, _) in pairing.pairs.items()), sorted(inits)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    imp = rosetta.from_onnx(path, torch_module=m, example_inputs=(ids,), optimizer=opt,
                            loss=torch.nn.CrossEntropyLoss())
    assert set(imp.names) == set(params)   # torch names; the tied table is one parameter
    assert len(imp.spec.model.param_defs()) == len(params)
    assert imp.names["fc.weight"].endswith("/kernel")
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed, cert.table()
    src = [r for r in cert.results if r["against"].startswith("torch source")]
    assert src and src[0]["worst"]["grads"] < 1e-10


def test_equal_parameters_and_missing_ones_are_named_not_guessed(tmp_path):
    m, ids = _model(), torch.tensor([[1, 4, 7, 2], [3, 3, 10, 0]])
    path = tmp_path / "tied.onnx"
    torch.onnx.export(m, (ids,), str(path), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "N"}})
    model = onnx.load(str(path))
    tensors = {k: p.detach().numpy() for k, p in m.named_parameters()}
    # a second tensor with the fc weight's values: neither can be told from the other
    twin = pair_initializers(model, {**tensors, "twin": tensors["fc.weight"].copy()})
    assert set(twin.unpaired) == {"fc.weight", "twin"}
    assert "equal to twin" in twin.unpaired["fc.weight"]
    # a torch model whose Linear changed after the export: the exporter stored its weight
    # transposed under a new name, and no initializer holds its values now
    with torch.no_grad():
        m.fc.weight.add_(1.0)
    imp = rosetta.from_onnx(path, torch_module=m, example_inputs=(ids,),
                            loss=torch.nn.CrossEntropyLoss())
    line = imp.source.unpaired
    assert "fc.weight (no initializer holds its values)" in line and "\n" not in line
    assert line in imp.notes
    cert = imp.certify(("torch",))
    rows = [r for r in cert.results if r["against"].startswith("torch source")]
    assert rows and not cert.passed and all(r["blame"] == line for r in rows)
    np.testing.assert_equal(len(rows), 1)


class Folded(torch.nn.Module):
    """Two heads of attention over embedded ids whose exporters fold parameters into computed
    constants: a bias table (K, H) read at constant (T, T) positions and permuted to (H, T, T)
    (T5's relative_attention_bias, BEiT's relative_position_bias_table), and the qkv bias
    cat(q_bias, zeros_like(k_bias), v_bias) (timm's BEiT and EVA-02)."""

    def __init__(self, t=4, d=8, heads=2, k=7):
        super().__init__()
        self.t, self.h = t, heads
        self.emb = torch.nn.Embedding(11, d)
        self.table = torch.nn.Parameter(torch.zeros(k, heads))
        pos = torch.arange(t)
        self.register_buffer("index", (pos[None] - pos[:, None]).clamp(-3, 3) + 3,
                             persistent=False)
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.q_bias = torch.nn.Parameter(torch.zeros(d))
        self.v_bias = torch.nn.Parameter(torch.zeros(d))
        self.register_buffer("k_bias", torch.zeros(d), persistent=False)
        self.head = torch.nn.Linear(d, 5)

    def forward(self, ids):
        x = self.emb(ids)
        n, t, d = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.k_bias), self.v_bias))
        q, k, v = torch.nn.functional.linear(x, self.qkv.weight, bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        rel = self.table[self.index].permute(2, 0, 1).unsqueeze(0)   # (1, H, T, T)
        a = (q @ k.transpose(-1, -2) + rel).softmax(-1)
        return self.head((a @ v).transpose(1, 2).reshape(n, t, d).mean(1))


def _folded(equal_rows=False):
    torch.manual_seed(1)
    m = Folded().double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
        if equal_rows:   # rows 2 and 4 of the table alike: positions 2 and 4 cannot be told
            m.table[4] = m.table[2]
    return m.float().eval()


def _export(m, x, path, dynamo):
    kw = ({"dynamic_shapes": ({0: torch.export.Dim("N")},)} if dynamo
          else {"dynamic_axes": {"x": {0: "N"}}})
    torch.onnx.export(m, (x,), str(path), input_names=["x"], dynamo=dynamo, **kw)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_gathered_and_concatenated_parameters_pair_and_certify(tmp_path, dynamo):
    m, ids = _folded(), torch.tensor([[1, 4, 7, 2], [3, 3, 10, 0]])
    path = tmp_path / "folded.onnx"
    _export(m, ids, path, dynamo)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    imp = rosetta.from_onnx(path, torch_module=m, example_inputs=(ids,), optimizer=opt,
                            loss=torch.nn.CrossEntropyLoss())
    assert not imp.source.unpaired, imp.source.unpaired
    assert set(imp.names) == {k for k, _ in m.named_parameters()}
    ops = [n.op for n in imp.spec.model.nodes]
    assert "Gather" in ops and "Concatenate" in ops, ops   # read as computed, not constants
    cert = imp.certify(("torch",), steps=3)
    assert cert.passed, cert.table()
    src = [r for r in cert.results if r["against"].startswith("torch source")]
    assert src and src[0]["worst"]["grads"] < 1e-10 and src[0]["worst"]["step"] < 1e-10


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_a_gathered_table_with_equal_rows_is_named_not_guessed(tmp_path, dynamo):
    # TorchScript keeps the Gather (the import folds it), dynamo folds the gathered values
    m, ids = _folded(equal_rows=True), torch.tensor([[1, 4, 7, 2], [3, 3, 10, 0]])
    path = tmp_path / "folded.onnx"
    _export(m, ids, path, dynamo)
    imp = rosetta.from_onnx(path, torch_module=m, example_inputs=(ids,),
                            loss=torch.nn.CrossEntropyLoss())
    line = imp.source.unpaired
    assert line.startswith("torch parameters no initializer") and "\n" not in line
    assert "table (" in line and "equal" in line and "q_bias" not in line, line
    cert = imp.certify(("torch",))
    rows = [r for r in cert.results if r["against"].startswith("torch source")]
    assert rows and not cert.passed and all(r["blame"] == line for r in rows)


def test_derive_is_bitwise_and_unique():
    from rosetta.importers.onnx_pairing import derive

    rng = np.random.default_rng(0)
    p, q = rng.standard_normal((5, 3)), rng.standard_normal(4)
    idx = np.array([[0, 4], [2, 2]])
    d = derive(p[idx].transpose(2, 0, 1), {"p": p, "q": q})
    assert d.kind == "gathered" and d.params == ("p",)
    np.testing.assert_array_equal(d.compute({"p": p}, p.dtype), p[idx].transpose(2, 0, 1))
    x = np.concatenate([q, np.zeros(4), q[::-1] + 1])
    d = derive(x, {"p": p, "q": q, "r": q[::-1] + 1})
    assert (d.kind, d.parts) == ("concatenated", ("q", None, "r"))
    assert derive(np.nextafter(p[idx], np.inf), {"p": p}) is None   # never by closeness
    twin = p.copy()
    twin[3] = twin[1]
    assert derive(twin[[1, 2]], {"p": twin}).params == ()   # row 1 is row 3 too
