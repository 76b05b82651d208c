"""Convolution variants: DepthwiseConv2D, SeparableConv2D, Conv2DTranspose."""

from __future__ import annotations
