"""HuggingFace ``transformers`` models through ``from_torch``: the two pieces a task head needs.

* ``Logits(model)``: a module whose forward returns the model's first output (the logits of a
  task head, ``last_hidden_state`` of a bare encoder) as one tensor: ``from_torch`` trains a
  model with one tensor output, and a HuggingFace model returns a ``ModelOutput``.
* ``TokenCrossEntropy()``: torch's ``CrossEntropyLoss`` over every position of (N, T, C)
  logits and (N, T) labels, the mean over N*T tokens (what a language-model head is trained
  with, HuggingFace's ``loss_fct(logits.view(-1, C), labels.view(-1))``); it maps to the spec's
  ``SoftmaxCrossEntropy``, which takes the mean over examples and positions.

    model = transformers.GPT2LMHeadModel(config).double()
    imp = rosetta.from_torch(rosetta.importers.hf.Logits(model), input_ids,
                             loss=rosetta.importers.hf.TokenCrossEntropy())
"""

from __future__ import annotations

from functools import cache


@cache
def _classes() -> dict:
    """The two torch classes, made on first use: importing this module (as the core's import
    checks do) imports no framework; ``from rosetta.importers.hf import Logits`` does."""
    import torch

    class Logits(torch.nn.Module):
        """``model(x)[0]``: the first output of a HuggingFace model called on token ids or
        pixels (``use_cache=False`` where the model takes it)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)[0]

    class TokenCrossEntropy(torch.nn.CrossEntropyLoss):
        """``CrossEntropyLoss`` of (N, ..., C) logits against (N, ...) integer labels, classes
        on the last axis: the mean over every position (torch's own takes classes on axis 1)."""

        def forward(self, logits, labels):
            return super().forward(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    for cls in (Logits, TokenCrossEntropy):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return {"Logits": Logits, "TokenCrossEntropy": TokenCrossEntropy}


def __getattr__(name):
    if name in __all__:
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Logits", "TokenCrossEntropy"]
