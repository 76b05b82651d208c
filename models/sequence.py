"""Sequence models: LSTM and GRU classifiers and a transformer encoder on the ``majority`` task
(variable-length sequences, padded and masked by their lengths), and a small GPT, a decoder-only
character language model with causal attention, on Python's own standard library sources."""

from __future__ import annotations

import rosetta as rs


def majority() -> rs.DataSpec:
    """A new DataSpec for each spec: one shared object would carry one spec's change (a
    batch size a test sets) into every other spec built after it."""
    return rs.DataSpec("majority", 32)


SYMBOLS, LENGTH = 3, 16


def _inputs():
    return (rs.Input((LENGTH,), name="tokens", kind="int"),
            rs.Input((), name="lengths", kind="int"))


def _recurrent(kind: str) -> rs.TrainSpec:
    tokens, lengths = _inputs()
    h = rs.Embedding(SYMBOLS + 1, 16, name="embed")(tokens)
    layer = rs.LSTM if kind == "lstm" else rs.GRU
    h = layer(32, name=kind)([h, lengths])                      # final state after length steps
    out = rs.Dense(SYMBOLS, name="logits")(h)
    return rs.TrainSpec(model=rs.Model([tokens, lengths], out, name=kind),
                        loss=rs.losses.SoftmaxCrossEntropy(), optimizer=rs.optim.Adam(1e-2),
                        data=majority(), steps=500)


def lstm() -> rs.TrainSpec:
    """Embedding -> LSTM(32) masked by sequence lengths -> dense: which of 3 symbols is the most
    frequent in a sequence of 4 to 16 tokens (padded to 16)."""
    spec = _recurrent("lstm")
    spec.description = lstm.__doc__
    return spec


def gru() -> rs.TrainSpec:
    """Embedding -> GRU(32) (reset-after) masked by sequence lengths -> dense, on the same
    majority task as ``lstm``."""
    spec = _recurrent("gru")
    spec.description = gru.__doc__
    return spec


def transformer() -> rs.TrainSpec:
    """A transformer encoder classifier: embedding + learned positions, 2 pre-norm blocks
    (2 heads x 16, feed-forward 64) with key padding masks from the lengths, mean over the real
    tokens, dense; the majority task."""
    tokens, lengths = _inputs()
    h = rs.Embedding(SYMBOLS + 1, 32, name="embed")(tokens)
    h = rs.PositionEmbedding(LENGTH, name="pos")(h)
    for i in range(2):
        h = rs.TransformerBlock(h, heads=2, head_dim=16, ff_dim=64, lengths=lengths,
                                norm_first=True, name=f"block{i + 1}")
    h = rs.LayerNorm(name="ln_f")(h)
    h = rs.SequencePool("mean", name="pool")([h, lengths])
    out = rs.Dense(SYMBOLS, name="logits")(h)
    return rs.TrainSpec(model=rs.Model([tokens, lengths], out, name="transformer"),
                        loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.AdamW(rs.schedules.WarmupCosine(3e-3, 30, 400),
                                                 weight_decay=0.01),
                        data=majority(), steps=400, description=transformer.__doc__)


def gpt(width: int = 64, blocks: int = 2, length: int = 64, batch: int = 32) -> rs.TrainSpec:
    """A small GPT: character embedding + learned positions, 2 pre-norm causal transformer blocks
    (4 heads x 16, feed-forward 256), final LayerNorm, next-character logits over 96 characters;
    AdamW with warm-up and cosine decay, on windows of 64 characters of Python's standard library
    sources. ``rosetta train gpt`` prints a sampled string after training."""
    # the arguments scale it (heads of 16, feed-forward 4 x width) for the memory measurements
    # (rosetta.conformance.shard_memory); the defaults are the zoo's gpt
    from rosetta.text import VOCAB

    tokens = rs.Input((length,), name="tokens", kind="int")
    h = rs.Embedding(len(VOCAB), width, name="embed")(tokens)
    h = rs.PositionEmbedding(length, name="pos")(h)
    for i in range(blocks):
        h = rs.TransformerBlock(h, heads=width // 16, head_dim=16, ff_dim=4 * width,
                                causal=True, norm_first=True, name=f"block{i + 1}")
    h = rs.LayerNorm(name="ln_f")(h)
    out = rs.Dense(len(VOCAB), name="logits")(h)
    return rs.TrainSpec(model=rs.Model(tokens, out, name="gpt"),
                        loss=rs.losses.SequenceCrossEntropy(),
                        optimizer=rs.optim.AdamW(rs.schedules.WarmupCosine(3e-3, 50, 600),
                                                 weight_decay=0.01),
                        data=rs.DataSpec("text", batch, {"length": length}), steps=600,
                        description=gpt.__doc__)
