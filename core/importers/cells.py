"""Linear maps of an image's cells as one constant matrix (a spec Constant times the cells, a
MatMul): a bilinear resize (torch's ``F.interpolate(mode="bilinear")``, ONNX's linear
``Resize``) and an adaptive average pool. Shared by both importers; ``c`` is the source call or
node (its ``name``, ``label`` and output ``shape``)."""

from __future__ import annotations

import numpy as np

from rosetta.importers.builder import Builder, Value


def matrix_of_cells(b: Builder, c, x: Value, p: np.ndarray, out: tuple, what: str):
    """y[(i, j), c] = sum_(h, w) P[(i, j), (h, w)] x[(h, w), c] for an image held (N, H, W, C):
    viewed as (N, H·W, C), a Constant P (oh·ow, H·W) times it (MatMul; dL/dx = P^T dL/dy),
    viewed back as (N, oh, ow, C)."""
    (h, w), (oh, ow), ch = x.shape[2:], out, x.shape[1]
    flat = b.layer("Reshape", [x], name=f"{c.name}_cells", source=c.label, layout="plain",
                   out_shape=(x.shape[0], h * w, ch), shape=(h * w, ch))
    m = b.layer("Constant", [], name=f"{c.name}_windows", source=c.label, layout="plain",
                out_shape=(1, *p.shape), value=p)
    y = b.layer("MatMul", [m, flat], name=f"{c.name}_{what}", source=c.label, layout="plain",
                out_shape=(x.shape[0], oh * ow, ch))
    return b.layer("Reshape", [y], name=c.name, source=c.label, layout="nchw",
                   out_shape=c.shape, shape=(oh, ow, ch))


def bilinear_matrix(n: int, out: int, align_corners: bool, scale=None) -> np.ndarray:
    """torch's 1-D linear interpolation of ``n`` cells to ``out`` (upsample_bilinear2d) as an
    (out, n) matrix: output i reads src = i·(n-1)/(out-1) (align_corners) or
    max(0, (i + 0.5)·s - 0.5) with s = n/out (or 1/scale_factor where one is given), cells
    i0 = floor(src) and i1 = min(i0 + 1, n - 1) with weights 1 - l and l, l = src - i0."""
    m = np.zeros((out, n))
    for i in range(out):
        if align_corners:
            src = i * (n - 1) / (out - 1) if out > 1 else 0.0
        else:
            s = n / out if scale is None else 1.0 / scale
            src = max((i + 0.5) * s - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n - 1)
        i1 = i0 + (1 if i0 < n - 1 else 0)
        lam = src - i0
        m[i, i0] += 1.0 - lam
        m[i, i1] += lam
    return m
