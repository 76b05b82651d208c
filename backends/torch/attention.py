"""Lowerings of MultiHeadAttention and PositionEmbedding (merged into ``layers.LOWERINGS``)."""

from __future__ import annotations

LOWERINGS: dict = {}

NATIVE: dict = {}
