"""``rosetta bench --imported``: the hand-written flax and TensorFlow GPT-2 / BERT baselines
train the HuggingFace model itself, proved in float64 at a tiny size (the bench's own sizes are a
command: ``imported.compare_losses``, numbers in docs/bench/imported.md). No test times anything."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from rosetta.conformance.bench import imported  # noqa: E402

from selection import BACKENDS  # noqa: E402

TINY = {"vocab": 32, "hidden": 16, "layers": 1, "heads": 2, "intermediate": 32,
        "positions": 8, "seq": 8, "batch": 2, "labels": 2}


@pytest.mark.parametrize("name", imported.NAMES)
def test_baselines_train_the_huggingface_model_in_float64(name, monkeypatch):
    """The flax and TensorFlow baselines' losses over 2 AdamW steps against the HuggingFace
    torch model's (rosetta's own agreement is the import certificate's)."""
    monkeypatch.setattr(imported, "SIZES", TINY)
    backends = [b for b in imported.BACKENDS if b in BACKENDS and b != "torch"]
    r = imported.compare_losses(name, backends, steps=2, rosetta=False)
    for column, worst in r["worst"].items():
        # jax.nn.dot_product_attention computes its softmax in float32 even on float64 inputs
        bound = 1e-6 if column == "baseline/jax" else 1e-12
        assert worst < bound, (column, r["losses"])
    assert {f"baseline/{b}" for b in backends} == set(r["worst"]), r["worst"]
