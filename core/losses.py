"""Losses, all from logits, with a NumPy float64 reference, and the metrics that go with them."""

from __future__ import annotations

import numpy as np

from rosetta.errors import SpecError


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Loss:
    kind = ""
    label_kind = "float"   # int labels (class ids) or float targets

    def reference(self, logits: np.ndarray, labels: np.ndarray) -> float:
        raise NotImplementedError  # every subclass defines it

    def to_json(self) -> dict:
        return {"name": self.kind, **self.__dict__}

    def __eq__(self, other):
        return type(self) is type(other) and self.to_json() == other.to_json()

    def __repr__(self):
        return f"{type(self).__name__}({self.__dict__})"

    def metrics(self, outputs: np.ndarray, labels: np.ndarray) -> dict:
        """Held-out metrics beyond the loss itself."""
        return {}

    def check_output(self, out_shape: tuple, where: str):
        pass


class SoftmaxCrossEntropy(Loss):
    """L = mean over examples (and positions) of -sum_c q_c log softmax(z)_c with
    q = (1 - eps) onehot(y) + eps / C. Integer labels, logits in, no clipping."""

    kind = "softmax_cross_entropy"
    label_kind = "int"

    def __init__(self, label_smoothing: float = 0.0, where="loss"):
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= label_smoothing < 1.0:
            raise SpecError(f"label_smoothing must be in [0, 1), found {label_smoothing!r}",
                            where=where)
        self.label_smoothing = float(label_smoothing)

    def reference(self, logits, labels):
        z = np.asarray(logits, np.float64)
        c = z.shape[-1]
        q = np.eye(c)[np.asarray(labels)] * (1 - self.label_smoothing) + self.label_smoothing / c
        return float(np.mean(-(q * log_softmax(z)).sum(axis=-1)))

    def metrics(self, outputs, labels):
        return {"accuracy": float(np.mean(np.argmax(outputs, axis=-1) == labels))}

    def check_output(self, out_shape, where):
        if len(out_shape) < 1 or out_shape[-1] < 2:
            raise SpecError(f"softmax cross-entropy needs logits with a class axis of size >= 2, "
                            f"model output is {out_shape}", where=where)


class MeanSquaredError(Loss):
    """L = mean over every element of (prediction - target)^2."""

    kind = "mse"

    def __init__(self, where="loss"):
        pass

    def reference(self, logits, labels):
        d = np.asarray(logits, np.float64) - np.asarray(labels, np.float64)
        return float(np.mean(d * d))


class BinaryCrossEntropy(Loss):
    """L = mean over every element of max(z, 0) - z * y + log(1 + exp(-|z|)), i.e.
    -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] from logits, in its stable form."""

    kind = "binary_cross_entropy"

    def __init__(self, where="loss"):
        pass

    def reference(self, logits, labels):
        z = np.asarray(logits, np.float64)
        y = np.asarray(labels, np.float64)
        return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))

    def metrics(self, outputs, labels):
        return {"accuracy": float(np.mean((outputs > 0) == (labels > 0.5)))}


KINDS = {c.kind: c for c in (SoftmaxCrossEntropy, MeanSquaredError, BinaryCrossEntropy)}


def from_json(d, where="$.loss") -> Loss:
    if isinstance(d, Loss):
        return d
    if isinstance(d, str):
        d = {"name": d}
    if not isinstance(d, dict) or d.get("name") not in KINDS:
        found = d.get("name") if isinstance(d, dict) else d
        raise SpecError(f"unknown loss {found!r}; known: {sorted(KINDS)}", where=where)
    args = {k: v for k, v in d.items() if k != "name"}
    try:
        return KINDS[d["name"]](**args, where=where)
    except TypeError as e:
        raise SpecError(f"loss {d['name']!r}: {e}", where=where) from None
