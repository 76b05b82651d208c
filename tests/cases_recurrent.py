"""Cases for LSTM, GRU, SimpleRNN (joined into ``cases.CASES``)."""

from __future__ import annotations

CASES: list = []
