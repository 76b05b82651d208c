"""Recurrent layers: LSTM, GRU (reset-after) and SimpleRNN, with masking by lengths."""

from __future__ import annotations
