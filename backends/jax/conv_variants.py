"""Lowerings of DepthwiseConv2D, SeparableConv2D and Conv2DTranspose (merged into ``layers.LOWERINGS``)."""

from __future__ import annotations

LOWERINGS: dict = {}
