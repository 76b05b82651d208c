"""Train on one framework, continue on another: the proof (docs/design.md section 9).

For every ordered pair (A, B): N updates on A with a checkpoint at N/2, then the checkpoint
resumed on B for the rest; B's per-step losses and final parameters, state and optimizer state
equal the uninterrupted run on A within the exact tier (float64, 1e-10). The specs cover
BatchNorm statistics, Adam / AdamW moments with a warm-up + cosine schedule (bias corrections and
lr(t) must continue from the update count), SGD Nesterov momentum with a step schedule, and a
recurrent and an attention model. And on the same backend in float32, with dropout drawn from
the backend's own stream, a resumed run is bitwise the uninterrupted one.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rosetta as rs
from rosetta import checkpoint
from rosetta.conformance import compare_trees
from rosetta.conformance.tiers import EXACT
from rosetta.training import train

from selection import BACKENDS

pytestmark = pytest.mark.cross
STEPS, HALF = 6, 3
S = rs.schedules


def conv_bn_adamw(dropout=0.0):
    # no bias before BatchNorm: its exact gradient is 0, and Adam amplifies the rounding noise
    layers = [rs.Conv2D(4, 3, padding="same", use_bias=False), rs.BatchNorm(), rs.ReLU(),
              rs.MaxPool2D(2), rs.Flatten(), rs.Dense(8), rs.ReLU()]
    if dropout:
        layers.append(rs.Dropout(dropout))
    model = rs.Sequential(layers + [rs.Dense(4)], input_shape=(8, 8, 3), name="conv_bn")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.AdamW(S.WarmupCosine(0.02, 2, 8, init=0.002),
                                                 weight_decay=0.05, decay="kernels"),
                        data=rs.DataSpec("images", batch_size=4,
                                         args={"n": 40, "height": 8, "width": 8}),
                        steps=STEPS)


def mlp_bn_nesterov():
    model = rs.Sequential([rs.Dense(8, use_bias=False), rs.BatchNorm(momentum=0.8), rs.Tanh(),
                           rs.Dense(3)], input_shape=(6,), name="mlp_bn")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.SGD(S.Step(0.1, 2, 0.5), momentum=0.9,
                                               nesterov=True, weight_decay=0.01),
                        data=rs.DataSpec("clusters", batch_size=4,
                                         args={"n": 40, "features": 6, "classes": 3}),
                        steps=STEPS)


def _sequence_inputs():
    return rs.Input((6,), name="tokens", kind="int"), rs.Input((), name="lengths", kind="int")


def lstm_adam():
    tokens, lengths = _sequence_inputs()
    h = rs.Embedding(4, 5, name="embed")(tokens)
    h = rs.LSTM(6, name="lstm")([h, lengths])
    out = rs.Dense(3, name="logits")(h)
    return rs.TrainSpec(model=rs.Model([tokens, lengths], out, name="lstm_small"),
                        loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.Adam(S.WarmupCosine(0.02, 2, 8)),
                        data=rs.DataSpec("majority", batch_size=4,
                                         args={"n": 40, "length": 6, "min_length": 2}),
                        steps=STEPS)


def attention_adamw():
    tokens, lengths = _sequence_inputs()
    h = rs.Embedding(4, 8, name="embed")(tokens)
    h = rs.PositionEmbedding(6, name="pos")(h)
    h = rs.TransformerBlock(h, heads=2, head_dim=4, ff_dim=8, lengths=lengths, norm_first=True,
                            name="block")
    h = rs.SequencePool("mean", name="pool")([h, lengths])
    out = rs.Dense(3, name="logits")(h)
    return rs.TrainSpec(model=rs.Model([tokens, lengths], out, name="attention_small"),
                        loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.AdamW(S.WarmupCosine(0.01, 2, 8), weight_decay=0.01),
                        data=rs.DataSpec("majority", batch_size=4,
                                         args={"n": 40, "length": 6, "min_length": 2}),
                        steps=STEPS)


SPECS = {"conv_bn_adamw": conv_bn_adamw, "mlp_bn_nesterov": mlp_bn_nesterov,
         "lstm_adam": lstm_adam, "attention_adamw": attention_adamw}
_runs: dict = {}


def uninterrupted(name, backend, root, dtype="float64", spec=None):
    """The run on ``backend`` (cached per test session), saved at N/2 and at N."""
    key = (name, backend, dtype)
    if key not in _runs:
        folder = root / f"{name}-{backend}-{dtype}"
        rec = train(spec or SPECS[name](), backend, dtype=dtype, steps=STEPS, save=folder,
                    save_every=HALF, progress=False)
        prog = rec.pop("program")
        _runs[key] = (rec, folder, prog.export_params(), prog.export_state(),
                      prog.export_optimizer_state())
    return _runs[key]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("resume")


@pytest.mark.parametrize("a,b", list(itertools.permutations(BACKENDS, 2)))
@pytest.mark.parametrize("name", sorted(SPECS))
def test_resume_on_another_backend_continues_the_run(root, name, a, b):
    rec_a, folder, params_a, state_a, opt_a = uninterrupted(name, a, root)
    half = checkpoint.step_dir(folder, HALF)
    rec_b = train(None, b, resume=half, progress=False)
    prog_b = rec_b.pop("program")
    assert rec_b["start_step"] == HALF and rec_b["steps"] == STEPS - HALF
    assert rec_b["dtype"] == "float64" and prog_b.step == STEPS
    where = f"{name}: {a} -> checkpoint at {HALF} -> {b}"
    w = compare_trees({"loss": np.array(rec_b["losses"])},
                      {"loss": np.array(rec_a["losses"][HALF:])}, f"{where} losses",
                      EXACT.tolerance)
    assert w.passed, str(w)
    for what, mine, theirs in (("params", prog_b.export_params(), params_a),
                               ("state", prog_b.export_state(), state_a),
                               ("optimizer", prog_b.export_optimizer_state(), opt_a)):
        if what == "optimizer" and not theirs:
            continue
        w = compare_trees(mine, theirs, f"{where} {what}", EXACT.tolerance)
        assert w.passed, str(w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_resume_on_the_same_backend_is_bitwise(root, backend):
    spec = conv_bn_adamw(dropout=0.25)
    rec, folder, params, state, opt = uninterrupted("conv_bn_dropout", backend, root,
                                                    "float32", spec)
    resumed = train(None, backend, resume=checkpoint.step_dir(folder, HALF), progress=False)
    prog = resumed.pop("program")
    assert resumed["dtype"] == "float32"
    np.testing.assert_array_equal(np.array(resumed["losses"], np.float32),
                                  np.array(rec["losses"][HALF:], np.float32))
    for mine, theirs in ((prog.export_params(), params), (prog.export_state(), state),
                         (prog.export_optimizer_state(), opt)):
        assert set(mine) == set(theirs)
        for k in mine:
            np.testing.assert_array_equal(mine[k], theirs[k], err_msg=k)
    # the resumed run's checkpoint equals the uninterrupted run's, tensor for tensor
    end_a = checkpoint.load(checkpoint.step_dir(folder, STEPS))
    assert end_a.record["losses"] == rec["losses"]
