"""Cases for DepthwiseConv2D, SeparableConv2D, Conv2DTranspose (joined into ``cases.CASES``)."""

from __future__ import annotations

CASES: list = []
