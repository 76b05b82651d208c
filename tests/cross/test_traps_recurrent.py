"""The recurrent trap: torch's nn.LSTM has two biases (b_ih + b_hh) where the canonical LSTM has
one. Leaving the second trainable (and in the optimizer, as ``model.parameters()`` would) gives it
the same gradient as the first, so the effective bias moves twice per update. The canonical
gradients and the canonical parameters after the first update still agree (``bias`` is bias_ih);
the next forward does not, so the suite must fail and blame the loss of step 1. (No node is
named: ``diagnose`` bisects the graph for step-0 divergences only, and the culprit lives outside
the canonical parameters, so a program freshly loaded with them would not reproduce it.)

Planted like the traps of test_traps.py (which this reuses): patched in the test only, compared
with an unpatched backend in float64.
"""

from __future__ import annotations

import pytest

import rosetta as rs

from test_traps import _mod, _run, pytestmark  # noqa: F401  (skip without all three backends)


def trap_torch_lstm_second_bias_trainable(monkeypatch):
    """After ``Program.load`` (which builds the optimizer over the canonical parameters), make
    every ``bias_hh`` trainable and rebuild the optimizer over the canonical parameters plus
    them: the naive lowering that optimizes ``model.parameters()``."""
    program = _mod("torch.program")
    load = program.Program.load

    def load_with_second_bias(self, params_, state):
        load(self, params_, state)
        extra = {f"native/{n}": p for n, p in self.model.named_parameters()
                 if n.rsplit(".", 1)[-1].startswith("bias_hh")}
        if not extra:   # a graph cut before the LSTM (diagnose bisects sub-graphs)
            return
        for p in extra.values():
            p.requires_grad_(True)
        tensors = {path: s.tensor for path, s in self._params.items()}
        self.optimizer, self.scheduler = program.optimizers.lower(
            self.spec.optimizer, {**tensors, **extra})

    monkeypatch.setattr(program.Program, "load", load_with_second_bias)


def _lstm_spec(bidirectional=False):
    """Embedding -> LSTM masked by lengths -> Dense on the built-in ``majority`` sequences."""
    tokens = rs.Input((6,), name="tokens", kind="int")
    lengths = rs.Input((), name="lengths", kind="int")
    e = rs.Embedding(4, 3, name="embed")(tokens)
    h = rs.LSTM(3, bidirectional=bidirectional, name="lstm")(e, lengths)
    model = rs.Model([tokens, lengths], rs.Dense(3, name="head")(h), name="trap_lstm")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.SGD(0.1, momentum=0.9),
                        data=rs.DataSpec("majority", 8, {"n": 64, "length": 6, "min_length": 2}),
                        steps=3)


# against jax (XLA-compiled tf.scan makes a tensorflow run ~2x slower; the other traps pair
# torch with tensorflow)
@pytest.mark.parametrize("bidirectional,other", [(False, "jax"), (True, "jax")])
def test_trainable_second_lstm_bias_is_caught_and_blamed(bidirectional, other, monkeypatch):
    spec = _lstm_spec(bidirectional)
    clean = _run(spec, "torch", other)
    assert clean.passed, f"control run without the trap must pass: {clean.where}"
    trap_torch_lstm_second_bias_trainable(monkeypatch)
    r = _run(spec, "torch", other)
    assert not r.passed, f"the second LSTM bias went unnoticed: worst rel {r.worst_rel:.2e}"
    # step 0 agrees (loss, gradients, canonical parameters after the update): the first thing to
    # differ is the loss of step 1, computed with the hidden bias_hh that moved too
    assert r.blame.get("step") == 1, r.blame
    assert r.blame.get("category") == "loss", r.blame
