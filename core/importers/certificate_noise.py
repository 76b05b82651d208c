"""The source's own float64 noise, for the certificate's teacher-forced steps (docs/design.md
sections 11 and 12).

The exact tier holds float64 to 1e-10 relative per element (measured down to a floor of 1e-3 of
the group's largest magnitude). A deep network's float64 result is not that exact on its own:
each layer's sums add rounding, and an element near the floor carries the whole tensor's error.
A torchvision RegNetX-400MF at batch 8, 64x64, differs from itself in channels_last memory
format by 5e-13 normwise in its last BatchNorm's output, and by 1e-10 in that output's small
elements (9.3e-11 in its gradients at the first step); every backend is within a small multiple
of that, and no import of such a model can be sure to hold 1e-10, however exact.

So, as the float32 tier does for float32 (section 11), the noise is measured, not assumed: the
source itself, summed in another order, takes every step teacher-forced from the source's state
before it, and its difference from the source's own step is the noise of that tensor at that
step. The other order (``how``):

* ``channels_last``: a torch source with a 4-D parameter, run by torch as written but with its
  4-D tensors and inputs in channels_last memory format (other kernels, another order inside
  each convolution and BatchNorm);
* ``examples reordered``: a Keras source (its own program; no memory format to change), each
  batch given with its examples in reverse order (another order in every sum over the batch:
  BatchNorm's statistics, each kernel's gradient, the loss's mean; the float32 tier's
  reordering), its outputs put back in order. A Keras optimizer's state is not reloaded: the
  twin's own moments, from its own teacher-forced steps, differ from the source's by noise.

A backend's teacher-forced step is then held, per tensor and step, to

    bound = min(SEMANTIC, max(tier, NOISE_MULTIPLE x noise))

the exact tier's 1e-10 where the source is quiet, 16x its measured noise where it is not (the
float32 tier's multiple), and never above ``SEMANTIC`` = 1e-8, the size at which section 5 says
a semantic mismatch shows: a difference that large fails whatever the noise. A torch source
without a 4-D parameter, a ``.pt2`` program or an ONNX graph is summed in one order only here:
no noise is measured and the bound is the tier.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rosetta.conformance.noise import NOISE_MULTIPLE

SEMANTIC = 1e-8      # docs/design.md section 5: a semantic mismatch shows as 1e-8 or worse
NOISE_FILE = "source_noise.json"


class Twin:
    """The source's program in channels_last, driven as ``noise.run_step`` drives a backend:
    ``load`` sets the values without resetting the copied optimizer (torch's Adagrad keeps
    state from its construction), ``load_optimizer_state`` sets its slots and update count,
    and keep-masks go to the dropout hooks' holder."""

    def __init__(self, prog, holder, reorder=False):
        self.prog, self.holder, self.reorder = prog, holder, reorder

    def __getattr__(self, name):
        return getattr(self.prog, name)

    def load(self, params, state):
        p = self.prog
        for values, cat in ((params, "params"), (state, "state")):
            for n, path, lay in p._mapped(cat):
                p._set(n, lay.to_native(np.asarray(values[path])))

    def load_optimizer_state(self, slots, step):
        if self.reorder:        # a Keras optimizer: its own moments (module docstring)
            return
        import torch

        p = self.prog
        for slot, key in p.slots.items():
            for n, path, lay in p._mapped("params"):
                if f"{slot}/{path}" not in slots:
                    continue
                t = p._p[n]
                st = p.optimizer.state[t]
                st[key] = torch.as_tensor(np.ascontiguousarray(
                    lay.to_native(np.asarray(slots[f"{slot}/{path}"]))), dtype=t.dtype).clone()
                if "step" in st:
                    st["step"] = (torch.tensor(float(step), dtype=st["step"].dtype)
                                  if torch.is_tensor(st["step"]) else float(step))

    def load_loss_scale(self, scale):
        pass

    def _flip(self, a):
        """The examples (axis 0) in reverse order, where the twin reorders them."""
        return a if a is None or not self.reorder else np.asarray(a)[::-1].copy()

    def _use(self, masks):
        if self.holder is not None:
            self.holder.clear()
            self.holder.update({k: self._flip(m) for k, m in (masks or {}).items()})

    def gradients(self, x, y, masks=None):
        self._use(masks)
        return self.prog.gradients(self._flip(x), self._flip(y))

    def train_step(self, x, y, masks=None):
        self._use(masks)
        return self.prog.train_step(self._flip(x), self._flip(y))

    def forward(self, x, training=False, masks=None):
        self._use(masks if training else None)
        return self._flip(self.prog.forward(self._flip(x), training=training))


def how(imp) -> str | None:
    """The other order the source's noise is measured in (module docstring), or None."""
    declared = getattr(imp.source, "noise_order", None)
    if declared is not None:
        return declared
    module = getattr(imp.source, "module", None)
    if getattr(imp.source, "program", None) is not None or module is None:
        return None
    if any(p.dim() == 4 and p.is_floating_point() for p in module.parameters()):
        return "channels_last"
    return None


def measure(imp, spec, seed, masks, forced) -> dict:
    """{(step, key): the twin's relative error against the source's step}: ``forced(prog)``
    the teacher-forced rows of a program along the source (``certificate._forced``)."""
    from rosetta.importers.certificate import _source_program

    if how(imp) == "channels_last":
        prog, _, holder = _source_program(imp, spec, seed, "float64", masks is not None,
                                          channels_last=True)
        twin = Twin(prog, holder)
    else:
        prog, _, holder = imp.source.program(imp, spec, seed, "float64", masks is not None)
        twin = Twin(prog, holder, reorder=True)
    rows = forced(twin)
    return {(t, k): float(w.rel_err) for t, k, w in rows}


def bound(noise: dict | None, t: int, key: str, tier: float) -> float:
    """The bound of ``key`` at step ``t`` (module docstring)."""
    n = (noise or {}).get((t, key), 0.0)
    return min(SEMANTIC, max(tier, NOISE_MULTIPLE * n))


def save(noise: dict, folder) -> None:
    from rosetta.files import atomic_file

    with atomic_file(Path(folder) / NOISE_FILE) as f:
        f.write(json.dumps([[t, k, v] for (t, k), v in noise.items()]).encode())


def load(folder) -> dict | None:
    path = Path(folder) / NOISE_FILE
    if not path.exists():
        return None
    return {(int(t), k): float(v) for t, k, v in json.loads(path.read_text())}
