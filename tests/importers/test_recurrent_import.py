"""torch's nn.LSTM / nn.GRU / nn.RNN through from_torch (core/importers/torch_recurrent.py): both
biases kept as two trainable parameters, gate orders, layers, directions, batch_first both ways,
``out[:, -1]`` and ``h_n[k]``; the refusals; the planted port that sums the two biases.

Tiny models (hidden 4, T 3, batch 2, float64, 1 step). Every variant's imported spec computes
the source's forward pass in NumPy (the reference, independent of any backend) and certifies on
torch; one GRU -> LSTM model certifies on JAX too (TensorFlow's compile costs ~25 s here: its
certificates run in the report's bigger runs)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402
from rosetta.conformance import import_fuzz as F  # noqa: E402
from rosetta.importers import ImportRefused  # noqa: E402


class Seq(nn.Module):
    """x (N, T, 3) -> ``rnn`` -> ``read`` ("last": out[:, -1], "h": h_n[-1]) -> Linear."""

    def __init__(self, rnn, read="last", out=4):
        super().__init__()
        self.rnn, self.read = rnn, read
        self.fc = nn.Linear(out, 2)

    def forward(self, x):
        if not self.rnn.batch_first:
            x = x.transpose(0, 1)
        out, h = self.rnn(x)
        if self.read == "h":
            h = h[0] if isinstance(h, tuple) else h
            return self.fc(h[-1])
        return self.fc(out[:, -1] if self.rnn.batch_first else out[-1])


class GruLstm(nn.Module):
    """A GRU's sequence read by an LSTM, its last step by a Linear."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)
        self.lstm = nn.LSTM(4, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y, _ = self.gru(x)
        y, _ = self.lstm(y)
        return self.fc(y[:, -1])


def _import(m, opt=True):
    torch.manual_seed(1)
    m = m.double()
    for n, p in m.named_parameters():   # biases that differ from each other and from 0
        if "bias" in n:
            nn.init.normal_(p)
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    imp = rosetta.from_torch(m, (x,), optimizer=torch.optim.SGD(m.parameters(), lr=0.1),
                             loss=nn.MSELoss())
    return m, x, imp


VARIANTS = {
    "lstm": lambda: Seq(nn.LSTM(3, 4, batch_first=True)),
    "lstm-time-first-2-layers-bidirectional-h_n": lambda: Seq(
        nn.LSTM(3, 4, num_layers=2, bidirectional=True), read="h"),
    "gru-time-first-2-layers-h_n": lambda: Seq(nn.GRU(3, 4, num_layers=2), read="h"),
    "rnn-relu-bidirectional": lambda: Seq(
        nn.RNN(3, 4, nonlinearity="relu", bidirectional=True, batch_first=True), out=8),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_spec_computes_the_source_and_certifies_on_torch(variant):
    m, x, imp = _import(VARIANTS[variant]())
    m.eval()
    ref = imp.spec.model.reference_forward(imp.params, x.numpy())
    np.testing.assert_allclose(ref, m(x).detach().numpy(), rtol=1e-12, atol=1e-13)
    # the two biases are two parameters, never summed
    for k in (0, 1) if "2-layers" in variant else (0,):
        for d in ("", "_reverse") if "bidirectional" in variant else ("",):
            ih, hh = imp.names[f"rnn.bias_ih_l{k}{d}"], imp.names[f"rnn.bias_hh_l{k}{d}"]
            assert hh == ih.replace("/bias", "/recurrent_bias").replace(
                "/backward_bias", "/backward_recurrent_bias"), (ih, hh)
            np.testing.assert_array_equal(imp.params[hh],
                                          m.state_dict()[f"rnn.bias_hh_l{k}{d}"].numpy())
    cert = imp.certify(("torch",), steps=1)
    assert cert.passed, cert.table()


def test_a_gru_read_by_an_lstm_certifies_on_jax():
    _, _, imp = _import(GruLstm())
    lstm = next(n for n in imp.spec.model.nodes if n.op == "LSTM")
    assert lstm.attrs["recurrent_bias"] is True and lstm.name == "lstm"
    cert = imp.certify(("jax",), steps=1)
    assert cert.passed, cert.table()
    assert max(cert.results[0]["worst"].values()) < 1e-10


def test_a_port_that_sums_the_two_biases_fails_naming_bias_hh():
    m, x, opt, loss = F.recurrent_model()
    imp = rosetta.from_torch(m, x, optimizer=opt, loss=loss)
    bad = F.summed_recurrent_biases(imp, "rnn")
    # the same forward pass: b_ih + b_hh in one bias
    p = dict(imp.params)
    p["rnn/bias"] = p["rnn/bias"] + p.pop("rnn/recurrent_bias")
    np.testing.assert_allclose(bad.spec.model.reference_forward(p, x[0].numpy()),
                               imp.spec.model.reference_forward(imp.params, x[0].numpy()),
                               rtol=1e-13)
    cert = bad.certify(("torch",), steps=1)
    assert not cert.passed
    assert "rnn.bias_hh_l0" in cert.results[0]["blame"], cert.results[0]["blame"]
    row = F.certify_change(imp, F.Change("node", "rnn", "recurrent_bias", True, False), steps=1)
    assert row["failed"] and row["blamed_right"] and "rnn.bias_hh_l0" in row["blame"], row


@pytest.mark.parametrize("make,says", [
    (lambda: Seq(nn.LSTM(3, 4, batch_first=True, proj_size=2), out=2),
     "rnn (LSTM): unsupported module: proj_size > 0"),
    (lambda: Seq(nn.LSTM(3, 4, num_layers=2, dropout=0.5, batch_first=True)),
     "rnn (LSTM): unsupported module: dropout=0.5 between layers"),
    (lambda: Seq(nn.GRU(3, 4, batch_first=True, bias=False)),
     "rnn (GRU): unsupported module: bias=False"),
], ids=["proj_size", "dropout", "no-bias"])
def test_what_the_spec_lacks_is_refused_in_one_line_naming_the_module(make, says):
    with pytest.raises(ImportRefused) as e:
        _import(make())
    assert says in str(e.value), str(e.value)


def test_the_cell_state_and_a_time_first_model_input_are_refused():
    class CellState(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[1][1][-1]

    class TimeFirstInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4)

        def forward(self, x):   # x is (T, N, C): the spec's input is batch first
            return self.rnn(x)[0][-1]

    with pytest.raises(ImportRefused, match="cell state c_n of rnn"):
        _import(CellState())
    with pytest.raises(ImportRefused, match=r"rnn \(GRU\): unsupported module: batch_first=False"):
        _import(TimeFirstInput())
