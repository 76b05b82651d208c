"""TensorFlow's LSTM in float32 without XLA is the fused ``BlockLSTM`` op (backends/tensorflow/
recurrent.py): it is really the op that runs there (and only there: float64 and XLA keep
``tf.scan``), it computes the canonical LSTM's outputs and gradients (gate order, no forget bias,
no clip; the backward direction and the lengths), and padded steps change nothing."""

from __future__ import annotations

import numpy as np
import pytest

from cases import BUILD
from helpers import random_inputs, random_targets
from selection import BACKENDS

pytestmark = pytest.mark.skipif("tensorflow" not in BACKENDS,
                                reason="tensorflow backend not selected")

T = 5
LENGTHS = np.array([1, 2, 3, 5, 4, 1])  # every length from 1 to T, two examples of length 1
# float32 against float64, every output and gradient: both forms measured at most 9.2e-8
# (tf.scan under XLA) on these cases; a wrong gate order or a forget bias of 1 is off by 1e-1
F32_ATOL = 1e-6


def _compile(case, dtype, mode):
    from rosetta.backend_registry import get_backend
    return get_backend("tensorflow").compile(BUILD[case](), dtype=dtype, device="cpu", mode=mode)


def _traced_ops(prog, jit_compile):
    """The op types of the training-mode forward traced as the program's steps are."""
    import tensorflow as tf

    from rosetta.backends.tensorflow.export import graph_ops
    fn = tf.function(lambda inputs: prog.model(inputs, training=True), autograph=False,
                     jit_compile=jit_compile)
    return graph_ops(fn.get_concrete_function(prog.input_signature))


@pytest.mark.parametrize("dtype,jit_compile,fused", [
    ("float32", False, True), ("float32", True, False), ("float64", False, False)])
def test_block_lstm_runs_exactly_where_it_has_kernels(dtype, jit_compile, fused):
    ops = _traced_ops(_compile("lstm_bidirectional_lengths", dtype, "function"), jit_compile)
    assert ("BlockLSTM" in ops) is fused
    assert ("While" in ops or "StatelessWhile" in ops) is not fused  # tf.scan's loop


# between them every branch: no lengths (stacked: sequences, then the last state), lengths with the
# last state and with sequences, both directions
@pytest.mark.parametrize("case", ["lstm_stacked", "lstm_bidirectional_lengths",
                                  "lstm_bidirectional_sequences_lengths"])
def test_block_lstm_outputs_and_gradients_are_the_canonical_lstm(case):
    spec = BUILD[case]()
    x = random_inputs(spec.model, len(LENGTHS), seed=3)
    if "lengths" in x:
        x["lengths"] = LENGTHS
    y = random_targets(spec, len(LENGTHS))
    fused, ref = _compile(case, "float32", "function"), _compile(case, "float64", "function")
    ref.load(fused.export_params(), fused.export_state())  # float32's values, exactly
    np.testing.assert_allclose(fused.forward(x), ref.forward(x), rtol=0, atol=F32_ATOL)
    g32, g64 = fused.gradients(x, y)[-1], ref.gradients(x, y)[-1]
    assert g32.keys() == g64.keys()
    for name in g64:
        np.testing.assert_allclose(g32[name], g64[name], rtol=0, atol=F32_ATOL, err_msg=name)


def test_block_lstm_padded_steps_change_nothing():
    case = "lstm_bidirectional_sequences_lengths"
    prog = _compile(case, "float32", "function")
    x = random_inputs(BUILD[case]().model, len(LENGTHS), seed=3)
    x["lengths"] = LENGTHS
    noisy = {k: v.copy() for k, v in x.items()}
    pad = np.arange(T)[None, :] >= LENGTHS[:, None]
    noisy["x"][pad] = np.random.default_rng(9).standard_normal((int(pad.sum()), 3)) * 10
    np.testing.assert_array_equal(prog.forward(x), prog.forward(noisy))


def test_savedmodel_traces_the_lstm_as_tf_scan():
    """The export's serving function (float32, no XLA) keeps tf.scan: the TFLite converter
    refuses BlockLSTM even with SELECT_TF_OPS, and converts the tf.scan form."""
    from rosetta.backends.tensorflow.export import graph_ops, serving_function
    prog = _compile("lstm_bidirectional_lengths", "float32", "function")
    ops = graph_ops(serving_function(prog))
    assert "BlockLSTM" not in ops and ("While" in ops or "StatelessWhile" in ops)
    assert "BlockLSTM" in _traced_ops(prog, jit_compile=False)  # outside the export: fused
