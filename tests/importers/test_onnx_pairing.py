"""from_onnx(torch_module=...): each initializer paired with the torch parameter it holds, by
value (as stored, transposed, by rows), on a tiny model with a Linear, a LayerNorm and an
output layer tied to the embedding table, exported by both torch exporters; its gradients and
steps certified against the module; ambiguous and missing pairings named in one line."""

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
