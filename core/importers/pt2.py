"""A ``.pt2`` file (``torch.export.save``) or an ``ExportedProgram`` as an importable module.

torch 2.13 cannot switch a loaded program's module between training and eval mode
(``ep.module().train()`` raises), and the importer captures both. The graph says which mode it
was exported in only through the flags of its mode-dependent calls, so ``Pt2Module`` holds two
copies of the program's graph sharing one set of parameters and buffers: one with every such
flag set for training, one for eval, and runs the one its ``training`` flag names:

* ``aten.batch_norm(..., training, momentum, eps, cudnn)``: ``training`` set; in the eval copy
  the ``num_batches_tracked`` increment (an ``add_`` on a buffer) is removed, as torch's eval
  BatchNorm does not count;
* ``aten.dropout`` / ``feature_dropout`` / ``alpha_dropout`` ``(x, p, train)``: ``train`` set.

A program of another form (decomposed to the core ATen set, ``_native_batch_norm_legit``...) is
refused in one line: its mode cannot be switched by a flag. The program keeps no module objects
(no ``nn.Dropout`` to give a mask to): certify one with dropout with ``dropout="off"``.
"""

from __future__ import annotations

import copy
from pathlib import Path

from rosetta.errors import RosettaError

DROPOUTS = ("aten.dropout.default", "aten.feature_dropout.default", "aten.alpha_dropout.default")
FIXED_MODE = ("_native_batch_norm_legit", "native_batch_norm", "native_dropout",
              "cudnn_batch_norm")


def _with_mode(gm, training: bool):
    """A copy of GraphModule ``gm`` with every mode flag set to ``training``."""
    gm = copy.deepcopy(gm)
    for n in list(gm.graph.nodes):
        if n.op != "call_function":
            continue
        t = str(n.target)
        if t == "aten.batch_norm.default":
            n.args = (*n.args[:5], training, *n.args[6:])
        elif t in DROPOUTS:
            n.args = (*n.args[:2], training, *n.args[3:])
        elif not training and t == "aten.add_.Tensor" and not n.users \
                and getattr(n.args[0], "name", "").endswith("num_batches_tracked"):
            gm.graph.erase_node(n)
    gm.recompile()
    return gm


def _fixed_mode_calls(gm) -> list:
    return sorted({str(n.target) for n in gm.graph.nodes if n.op == "call_function"
                   and any(f in str(n.target) for f in FIXED_MODE)})


def pt2_module(ep, label: str = "ExportedProgram"):
    """``Pt2Module`` of an ``ExportedProgram`` ``ep``."""
    import torch

    class Pt2Module(torch.nn.Module):
        """The program of a ``.pt2`` as an ``nn.Module`` with ``train()``/``eval()`` (see the
        module doc): parameters and buffers under the program's own names."""

        def __init__(self, gm):
            super().__init__()
            fixed = _fixed_mode_calls(gm)
            if fixed:
                from rosetta.importers.errors import ImportRefused
                raise ImportRefused([f"<root> ({label}): calls of a fixed mode ({', '.join(fixed)}"
                                     f"): export the model with torch.export.export (training "
                                     f"IR), not decomposed"])
            train, ev = _with_mode(gm, True), _with_mode(gm, False)
            for name, child in train.named_children():
                self.add_module(name, child)
                ev._modules[name] = child            # one set of parameters and buffers
            for k, p in train._parameters.items():
                self.register_parameter(k, p)
                ev._parameters[k] = p
            for k, b in train._buffers.items():
                self.register_buffer(k, b)
                ev._buffers[k] = b
            object.__setattr__(self, "_graphs", {True: train, False: ev})

        def forward(self, *args):
            return self._graphs[self.training](*args)

        def without_dropout(self):
            """Every dropout call's p set to 0, in both graphs (a certificate with dropout
            off)."""
            for gm in self._graphs.values():
                for n in gm.graph.nodes:
                    if n.op == "call_function" and str(n.target) in DROPOUTS:
                        n.args = (n.args[0], 0.0, *n.args[2:])
                gm.recompile()

    return Pt2Module(ep.module())


def load_pt2(path) -> tuple:
    """(``Pt2Module``, example inputs or None) of the ``.pt2`` file at ``path``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise RosettaError(f"{path}: no such file")
    try:
        ep = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001  (a file that is not a program: one line)
        raise RosettaError(f"{path}: not a torch.export ExportedProgram ({e})") from None
    args = ep.example_inputs[0] if ep.example_inputs else None
    return pt2_module(ep, path.name), args
