"""The host-side Program base (rosetta.program.BackendProgram): one strict check of inputs and
labels, the same DataError text on every backend (torch checked only Embedding ids, TensorFlow
shapes but not the integer dtype), before any framework sees the arrays."""

from __future__ import annotations

import numpy as np
import pytest

from rosetta import models
from rosetta.backend import BackendProgram, Batch
from rosetta.backend_registry import get_backend
from rosetta.errors import BackendUnavailable, DataError, SpecError

from selection import BACKENDS

MLP = models.get("mlp")         # input x (64,), 10 classes
LSTM = models.get("lstm")       # int token ids


def _bad_cases():
    """(spec, inputs, labels, the one message) for each malformed batch."""
    x = np.zeros((4, 64), np.float32)
    y = np.zeros(4, np.int64)
    ids = next(i for i in LSTM.model.inputs if i.kind == "int")
    t = ids.shape[0]
    lstm_x = {i.name: np.ones((2, *i.shape), np.int64) for i in LSTM.model.inputs}
    return {
        "input shape": (MLP, np.zeros((4, 63), np.float32), y,
                        "input 'x': expected a batch of shape (N, 64), found (4, 63)"),
        "input without batch axis": (MLP, np.zeros(64, np.float32), y[:1],
                                     "input 'x': expected a batch of shape (N, 64), found (64,)"),
        "input not numbers": (MLP, np.full((4, 64), "a"), y,
                              "input 'x': expected numbers, found <U1"),
        "float ids": (LSTM, {**lstm_x, ids.name: np.ones((2, t), np.float32)},
                      np.zeros(2, np.int64),
                      f"input '{ids.name}': expected integer indices, found float32"),
        "float class ids": (MLP, x, y.astype(np.float32),
                            "labels: expected integer class ids of shape (N,), found float32 "
                            "(4,)"),
        "class ids shape": (MLP, x, np.zeros((4, 1), np.int64),
                            "labels: expected integer class ids of shape (N,), found int64 "
                            "(4, 1)"),
        "class id range": (MLP, x, np.full(4, 10),
                           "labels: class ids must be in [0, 10), found 10..10"),
        "rows": (MLP, x, y[:3], "inputs and labels must have one row per example, found x 4 "
                                "and labels 3 rows"),
    }


CASES = _bad_cases()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_backend_refuses_a_bad_batch_with_one_message(backend, case):
    spec, x, y, message = CASES[case]
    prog = get_backend(backend).compile(spec, dtype="float32")
    for call in (lambda: prog.train_step(x, y), lambda: prog.gradients(x, y),
                 lambda: prog.prepare_batch(x, y)):
        with pytest.raises(DataError) as e:
            call()
        assert str(e.value) == message
    assert prog.step == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_program_base_holds_the_host_side(backend):
    """Every backend's Program extends the base; its checks, forward on a list or a single
    array, and a Batch of another program are the base's."""
    be = get_backend(backend)
    prog = be.compile(MLP, dtype="float64")
    assert isinstance(prog, BackendProgram) and prog.np_dtype == np.float64
    x = np.random.default_rng(0).normal(size=(5, 64))
    out = prog.forward(x)
    assert out.shape == (5, 10) and out.dtype == np.float64
    np.testing.assert_array_equal(prog.forward({"x": x}), out)
    with pytest.raises(DataError, match="input 'x': expected a batch of shape"):
        prog.forward(x[:, :3])
    batch = prog.prepare_batch(x, np.arange(5) % 10)
    assert isinstance(batch, Batch) and batch.size == 5
    other = be.compile(MLP, dtype="float64")
    with pytest.raises(DataError, match="another Program"):
        other.train_step(batch)
    assert np.isfinite(prog.train_step(batch)) and prog.step == 1
    assert repr(prog).startswith(f"Program({backend}, mlp, dtype=float64")
    with pytest.raises(SpecError, match="compile takes a rosetta TrainSpec, found dict"):
        be.compile({"model": 1})
    with pytest.raises(BackendUnavailable, match=f"{backend} backend: dtype 'float16'"):
        be.compile(MLP, dtype="float16")
