"""Your own ``torch.nn.Module`` + ``torch.optim`` optimizer as a ``Program`` (see ``native.py``).

    TorchNative(model, optimizer, loss, names, slots=None, data_layout="NHWC")

* ``names``: ``model.named_parameters()`` / ``named_buffers()`` names -> canonical path or
  ``(path, layout)``; a torch Linear weight is ``"linear"``, a Conv2d weight ``"conv2d"``;
  buffers that the spec has no state for (``num_batches_tracked``) stay unmapped;
* ``loss(output, labels)``: your loss, e.g. ``nn.CrossEntropyLoss()`` (labels arrive as int64
  class ids, or float targets in the model's dtype);
* ``slots``: canonical slot -> ``optimizer.state[p]`` key (``{"m": "exp_avg", "v":
  "exp_avg_sq"}``, ``{"velocity": "momentum_buffer"}``) to compare the optimizer state too;
* ``data_layout="NCHW"`` when the model takes channels-first images (inputs are permuted).

The step is the textbook one: ``zero_grad``, forward in ``train()`` mode, loss, ``backward``,
``optimizer.step()``. ``gradients`` and ``forward`` put the buffers (running statistics) back.
"""

from __future__ import annotations

import numpy as np
import torch

from rosetta.conformance.native import NativeError, NativeProgram

DTYPES = {torch.float32: "float32", torch.float64: "float64"}


class TorchNative(NativeProgram):
    framework = "torch"

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss, names,
                 *, slots=None, data_layout="NHWC"):
        super().__init__(names, slots=slots, data_layout=data_layout)
        self.model, self.optimizer, self.loss = model, optimizer, loss
        # a parameter with requires_grad False is a parameter of the comparison where the name
        # map names it (a frozen parameter: ``gradients`` reports its gradient, the optimizer
        # never sees one), else a constant of the model (not compared)
        self._p = {n: p for n, p in model.named_parameters() if p.requires_grad or n in names}
        self._frozen = [p for p in self._p.values() if not p.requires_grad]
        self._b = dict(model.named_buffers())
        dtypes = {p.dtype for p in self._p.values()}
        if len(dtypes) != 1 or next(iter(dtypes)) not in DTYPES:
            raise NativeError(f"torch model parameters in {sorted(map(str, dtypes))}: build "
                              f"them all in float32 or float64")
        self.tdtype = next(iter(dtypes))
        self.dtype = DTYPES[self.tdtype]
        self.tdevice = next(iter(self._p.values())).device
        for n, m in model.named_modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
                raise NativeError(f"module {n!r} drops with p={m.p}: native code draws its own "
                                  f"masks, so build it with p=0 for the comparison")

    def version(self):
        return f"torch {torch.__version__} (native)"

    def _trainable(self):
        return {n: tuple(p.shape) for n, p in self._p.items()}

    def _buffers(self):
        return {n: tuple(b.shape) for n, b in self._b.items() if b.is_floating_point()}

    def _tensor(self, name):
        return self._p[name] if name in self._p else self._b[name]

    def _get(self, name):
        return self._tensor(name).detach().cpu().numpy().copy()

    def _set(self, name, array):
        t = self._tensor(name)
        with torch.no_grad():
            t.copy_(torch.as_tensor(np.ascontiguousarray(array), dtype=t.dtype))

    def _reset_optimizer(self):
        self.optimizer.state.clear()
        self.optimizer.zero_grad(set_to_none=True)

    def _slot(self, name, key):
        st = self.optimizer.state.get(self._p[name])
        if not st:
            return None
        if key not in st:
            raise NativeError(f"slots: optimizer {type(self.optimizer).__name__} keeps "
                              f"{sorted(st)} per parameter, not {key!r}")
        return st[key].detach().cpu().numpy().copy()

    def _to_native_batch(self, x, y):
        x = torch.as_tensor(x, dtype=self.tdtype, device=self.tdevice)
        if y is None:
            return x, None
        y = np.asarray(y)
        yt = torch.as_tensor(y, dtype=torch.int64 if y.dtype.kind in "iu" else self.tdtype)
        return x, yt.to(self.tdevice)

    def _saved_buffers(self):
        return {n: b.detach().clone() for n, b in self._b.items()}

    def _restore(self, saved):
        with torch.no_grad():
            for n, b in saved.items():
                self._b[n].copy_(b)

    def _loss(self, x, y):
        self.model.train()
        return self.loss(self.model(x), y)

    def _gradients(self, x, y):
        saved = self._saved_buffers()
        self.optimizer.zero_grad(set_to_none=True)
        try:
            for p in self._frozen:
                p.requires_grad_(True)
            loss = self._loss(x, y)
            loss.backward()
        finally:
            for p in self._frozen:
                p.requires_grad_(False)
        g = {n: (p.grad.detach().cpu().numpy().copy() if p.grad is not None
                 else np.zeros(tuple(p.shape))) for n, p in self._p.items()}
        self.optimizer.zero_grad(set_to_none=True)
        for p in self._frozen:
            p.grad = None
        self._restore(saved)
        return loss.item(), g

    def _train_step(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(x, y)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def _forward(self, x, training):
        saved = self._saved_buffers()
        self.model.train(training)
        with torch.no_grad():
            out = self.model(x).detach().cpu().numpy()
        self.model.train()
        self._restore(saved)
        return out
