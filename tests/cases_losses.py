"""Cases for the sequence cross-entropy, Huber and KL losses; BatchNorm on sequences (joined into ``cases.CASES``)."""

from __future__ import annotations

CASES: list = []
