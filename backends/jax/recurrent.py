"""Lowerings of LSTM, GRU and SimpleRNN (merged into ``layers.LOWERINGS``)."""

from __future__ import annotations

LOWERINGS: dict = {}
