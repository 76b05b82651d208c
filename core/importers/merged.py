"""Source tensors whose batch axis a view merged with other rows, for every importer: Swin's
window partition (B, H, W, C) -> (B*nW, ws, ws, C), MobileViT's unfold into patches (B*P, N, C),
HuggingFace's Conv1D input (B*T, C), an exporter's (B, H, T, D) -> (B*H, T, D) attention.

The spec keeps the batch axis first and dynamic, so a (B*k, ...) axis is no spec shape. Such a
tensor is held unmerged, (B, k, ...): a ``Merged`` wraps the ``Value`` of the source tensor
with that axis split in two (``inner``, an ordinary Value of rank r + 1, held in any axis order
with the batch first). A view keeps the flat row-major order, so a view whose first axis is a
multiple of the batch B keeps each example's elements together: example n owns rows
[n*k, (n+1)*k). Held unmerged, every call that treats the merged axis row by row is the same
call on the inner tensor with its axis arguments moved past the split (``inner_axis``):

* ``SAME``: elementwise and broadcasting calls (a batch-broadcast operand gets one more size-1
  axis: ``lift``), activations, dropout, Linear / LayerNorm on the last axis, MatMul (the merged
  axis is one of its batch axes), attention;
* ``DIM``: calls with axis arguments other than the merged axis: softmax, reductions, slices,
  select / unbind / split, cat;
* ``PERMUTE``: a permute / transpose (``permute_dims``) may move the merged axis off axis 0
  (``at``): then only a select / unbind / split / squeeze of an axis before it may read it;
* ``VIEW``: a view to (B*k', ...) stays merged (k' = its first axis / B), to (B, ...) is an
  ordinary view of the inner tensor (Swin's window reverse, ``attn.view(B_ // nW, nW, nH, N,
  N)``): ``view_target``.

Any other reader (a reduction or slice over the merged axis, a view whose first axis is not a
multiple of the batch, an op that would mix rows of different examples) is refused in one line
naming the call. ``torch_merged`` applies these rules to ATen calls (``from_torch``),
``onnx_merged`` to ONNX nodes (``from_onnx``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rosetta.importers.builder import Unsupported, Value

# the rules by which a call reads a merged tensor (see the module doc)
SAME = "same"          # per row: no axis arguments, the result merged as its input
DIM = "dim"            # axis arguments other than the merged axis
PERMUTE = "permute"    # permute / transpose
VIEW = "view"          # view / reshape / flatten / unsqueeze / squeeze


@dataclass
class Merged:
    """A source tensor whose axis ``at`` is the batch merged with ``k`` rows each, held as
    ``inner``: the source tensor with that axis split into (B, k) (see the module doc)."""
    inner: Value
    k: int
    at: int = 0

    @property
    def shape(self) -> tuple:
        """The source tensor's (merged) shape."""
        s, a = tuple(self.inner.shape), self.at
        return s[:a] + (s[a] * s[a + 1],) + s[a + 2:]


def merge(inner: Value, k: int, at: int = 0):
    """``inner`` read as a merged tensor of ``k`` rows per example (itself where k is 1)."""
    return inner if k == 1 else Merged(inner, k, at)


def unmerged_shape(shape: tuple, batch: int, k: int, at: int = 0) -> tuple:
    """The source shape ``shape`` with its axis ``at`` (batch * k) split into (batch, k)."""
    shape = tuple(shape)
    if len(shape) <= at or shape[at] != batch * k:
        raise Unsupported(f"a merged-batch result of shape {shape} whose axis {at} is not the "
                          f"batch ({batch}) times {k}")
    return shape[:at] + (batch, k) + shape[at + 1:]


def inner_axis(a: int, rank: int, at: int, target: str) -> int:
    """Source axis ``a`` of a merged tensor of ``rank`` axes -> the axis of the inner tensor;
    refused for the merged axis itself."""
    a = int(a) % rank
    if a == at:
        raise Unsupported(f"{target} over the batch axis merged with other rows (it would mix "
                          f"examples)")
    return a + (a > at)


def permute_dims(dims, rank: int, at: int) -> tuple[list, int]:
    """A source permutation ``dims`` (output axis j = input axis dims[j]) of a merged tensor ->
    (the permutation of the inner tensor, the merged pair kept together; where the merged axis
    goes)."""
    dims = [int(d) % rank for d in dims]
    new = []
    for d in dims:
        new.extend([at, at + 1] if d == at else [d + (d > at)])
    return new, dims.index(at)


def same_merging(ins, target: str):
    """The (k, at, rank) of the merged operands of one call; refused where they differ."""
    first = ins[0]
    k, at, rank = first.k, first.at, len(first.shape)
    if any(m.k != k or m.at != at or len(m.shape) != rank for m in ins):
        raise Unsupported(f"{target} of merged-batch tensors of shapes "
                          f"{[m.shape for m in ins]} merged differently")
    return k, at, rank


def no_rule(target: str, m: Merged, what: str = "a view") -> str:
    """The refusal line of a call with no rule for a merged tensor."""
    return (f"{target} of a tensor whose batch axis {what} merged with other rows ({m.shape}, "
            f"{m.k} rows per example; only calls that treat each row alone may read it)")


def moved(target: str, at: int) -> str:
    """The refusal line of a call other than select / unbind / split of an earlier axis on a
    tensor whose merged batch axis a permute moved to axis ``at``."""
    return (f"{target} of a tensor whose merged batch axis a permute moved to axis {at} (only "
            f"unbind, select or split of an axis before it may read it)")


def view_target(shape: tuple, batch: int, target: str, src_shape: tuple) -> tuple[tuple, int]:
    """A view to the source ``shape`` (its first axis B*k) of a tensor whose batch is first
    (merged or not): (the view of the held tensor, (B, k, ...) where k > 1 else ``shape``, k);
    refused where the first axis is not a multiple of the batch (it would mix examples)."""
    shape = tuple(shape)
    if not shape or shape[0] % batch:
        raise Unsupported(f"{target}: a view that mixes the batch axis ({tuple(src_shape)} -> "
                          f"{shape}) (its first axis is not a multiple of the batch, {batch}: "
                          f"it would mix examples)")
    k = shape[0] // batch
    return ((batch, k) + shape[1:] if k > 1 else shape), k


def lifted_shape(shape: tuple, rank: int, target: str) -> tuple:
    """The shape of a batch-broadcast operand (``shape``, its batch axis of size 1, or without
    a batch axis) of a broadcasting call with merged tensors of ``rank`` source axes, as an
    operand of the inner rank (rank + 1): the shapes right-aligned, as torch and ONNX
    broadcast, its source axes meet the merged tensor's last ones; refused where its axis that
    meets the merged one is not of size 1 (the rows would not line up)."""
    shape = tuple(shape)
    if len(shape) > rank or (len(shape) == rank and shape[0] != 1):
        raise Unsupported(f"{target} of a merged-batch tensor and a tensor of shape {shape} "
                          f"(their rows do not line up)")
    return (1,) * (rank + 1 - len(shape)) + shape


__all__ = ["Merged", "merge", "unmerged_shape", "inner_axis", "permute_dims", "same_merging",
           "view_target", "lifted_shape", "no_rule", "moved", "SAME", "DIM", "PERMUTE", "VIEW"]
