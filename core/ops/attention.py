"""Attention: MultiHeadAttention and learned position embeddings."""

from __future__ import annotations
