"""Cases for MultiHeadAttention, PositionEmbedding, TransformerBlock (joined into ``cases.CASES``)."""

from __future__ import annotations

CASES: list = []
