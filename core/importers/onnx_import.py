"""``from_onnx``: an ONNX model (a file or an ``onnx.ModelProto``) as an ``Imported`` (the spec,
canonical weights, the map from initializer names to canonical paths) whose ``certify`` runs
``rosetta.importers.onnx_certificate``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rosetta.importers import patterns
from rosetta.importers.errors import ImportRefused
from rosetta.importers.imported import Imported


@dataclass
class OnnxSource:
    """What the ONNX certificate needs: the model, where its tensors are, and how they are
    held (``onnx_graph.OnnxCaptured``)."""

    model: object             # onnx.ModelProto
    captured: object          # OnnxCaptured
    description: str = ""
    framework: str = "onnx"
    torch: object = None      # certificate._Source of the torch model the graph came from
    example: object = None    # the user's example batch (ONNX layout): the certificate's batch
    unpaired: str = ""        # which torch parameters no spec parameter stands for ('' if none)
    derivations: dict = None  # initializer -> onnx_pairing.Derived: computed from parameters
    graph_model: object = None   # the spec model with the graph's own attributes, where the
    #                              spec takes the torch model's (LayerNorm's epsilon)

    @property
    def layouts(self):
        return self.captured.layouts

    def forward_certificate(self, imp, backends, dtype=None, **kw):
        """The forward certificate against ONNX's own evaluators (``onnx_certificate``)."""
        from rosetta.importers.onnx_certificate import certify_onnx
        return certify_onnx(imp, backends, torch_dtype=dtype, **kw)


def from_onnx(source, *, name=None, torch_module=None, example_inputs=None, optimizer=None,
              loss=None) -> Imported:
    """Import an ONNX model: ``source`` a path to a ``.onnx`` file or an ``onnx.ModelProto``
    (opset 13 and later). Returns ``Imported`` (``inference_only`` says why training is refused
    where the exporter folded BatchNorm away); raises ``ImportRefused`` listing every node the
    spec cannot reproduce exactly, one line each (its name and op type).

    ``torch_module`` (with ``example_inputs``, and its ``optimizer`` and ``loss`` if any): the
    ``torch.nn.Module`` the graph was exported from. Each initializer is paired with the
    module's parameter or buffer it holds, by value (``onnx_pairing``: as stored, transposed
    (a Linear's weight ``onnx::MatMul_*``, ``val_*``), gathered (a table read at constant
    positions and permuted, folded by the exporter; by rows: a position table) or concatenated
    (parameters and zero blocks, folded into one bias)), and the graph is read with each paired
    parameter under its torch name and layout (so a tied weight is one parameter; a gathered or
    concatenated initializer as computed from its parameters); the optimizer and loss are mapped as
    ``from_torch`` maps them, BatchNorm's running variance takes torch's unbiased rule, and
    ``certify`` also certifies gradients and optimizer steps against the module
    (``rosetta.importers.certificate``). A parameter no initializer pairs with is named in one
    line (``Imported`` notes; the certificate's torch rows fail with it).

    ``example_inputs`` (also without ``torch_module``): an example batch of the graph's input,
    which the certificate runs instead of a random one (a model whose function needs valid
    inputs: BART's classification head reads each example's last eos token, and a batch whose
    examples hold different numbers of them is an error in the graph itself)."""
    from rosetta import losses as L
    from rosetta import optim as O
    from rosetta.importers.onnx_graph import capture_onnx, load_model
    from rosetta.spec import DataSpec, TrainSpec

    model = load_model(source)
    pairing = None
    if torch_module is not None:
        model, pairing = _paired(model, torch_module)
    if name is None:
        name = (Path(source).stem if isinstance(source, (str, Path))
                else (model.graph.name or "onnx_model"))
    # with the torch model, its BatchNorm's running variance rule: unbiased (n / (n - 1))
    exact = _torch_attributes(torch_module)
    kw = dict(model_name=name, running_var="biased" if torch_module is None else "unbiased",
              trainable=None if torch_module is None else
              [k for k, _ in torch_module.named_parameters()],
              derived=None if pairing is None else pairing.derived())
    cap = capture_onnx(model, exact=exact, **kw)
    # the graph's own (float32) epsilons, for the rows against ONNX's evaluators, where the
    # spec takes the torch model's
    graph_model = capture_onnx(model, exact={}, **kw).graph if exact else None
    spec_loss, spec_opt = L.SoftmaxCrossEntropy(), O.SGD(learning_rate=0.01)
    torch_src, slots, count = None, {}, 0
    if torch_module is not None:
        torch_src, spec_loss, spec_opt, slots, count = _torch_source(
            cap, torch_module, example_inputs, optimizer, loss)
    shape = cap.input_shape
    x = np.zeros((shape[0], *shape[2:], shape[1]) if cap.input_layout == "nchw" else shape,
                 np.int64 if cap.input_kind == "int" else np.float64)
    out_shape = cap.graph.output_type.shape
    n = shape[0]
    y = np.zeros((n, *out_shape[:-1]), np.int64) if out_shape else np.zeros(n)
    data = DataSpec.from_arrays(x, y, x, y, batch_size=n)
    try:
        spec = TrainSpec(cap.graph, spec_loss, spec_opt, data, steps=1,
                         description=f"imported from ONNX {name} (opset {cap.opset})")
    except Exception as e:
        raise ImportRefused([f"<graph>: {e}"]) from None
    where = str(source) if isinstance(source, (str, Path)) else f"ModelProto {model.graph.name}"
    src = OnnxSource(model, cap, f"onnx {where} (opset {cap.opset}, "
                                 f"{model.producer_name or 'unknown producer'})")
    src.torch = torch_src
    src.derivations = {} if pairing is None else pairing.derivations()
    if example_inputs is not None:
        src.example = _example_batch(cap, example_inputs)
    src.graph_model = graph_model
    notes = [] if torch_src is not None else [
        "ONNX holds no loss or optimizer: softmax cross-entropy and SGD(lr=0.01) (replace "
        "them on the spec before training)"]
    trained = _trained_outside_weights(cap) if torch_src is None else []
    if trained:
        notes.append("ONNX does not say which tensors train: these initializers, read outside "
                     "a weight position, are trainable Parameters (torch_module= takes the "
                     "source's own parameters instead): " + ", ".join(trained))
    if torch_module is not None:
        src.unpaired = _unpaired(cap, torch_module, pairing)
        if src.unpaired:
            notes.append(src.unpaired)
    if fused_note := patterns.note(cap.fused):
        notes.append(fused_note)
    if cap.inference_only:
        notes.append(f"inference only: {cap.inference_only}")
    return Imported(spec, cap.params, cap.state, dict(slots), count, cap.names, cap.dtype,
                    cap.node_source, src, notes, inference_only=cap.inference_only)


def _trained_outside_weights(cap) -> list:
    """The initializers the import made ``Parameter`` nodes (read outside a weight position:
    a position table, a class token, a finite mask added to scores), in graph order."""
    nodes = {n.name for n in cap.graph.nodes if n.op == "Parameter"}
    return [name for name, path in cap.names.items() if path.split("/", 1)[0] in nodes]


def _example_batch(cap, example_inputs) -> np.ndarray:
    """The one input array of ``example_inputs`` (an array, a torch tensor, or a one-element
    tuple of one), checked against the graph's input: its per-example shape and kind."""
    x = example_inputs[0] if isinstance(example_inputs, (tuple, list)) else example_inputs
    x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    want = tuple(cap.input_shape[1:])
    kind = "int" if x.dtype.kind in "iu" else "float"
    if x.ndim != len(cap.input_shape) or tuple(x.shape[1:]) != want or kind != cap.input_kind:
        raise ImportRefused([f"example_inputs: a {kind} array of shape {x.shape} (the graph's "
                             f"input {cap.input_name} takes {cap.input_kind} (N, "
                             f"{', '.join(map(str, want))})"])
    return x


def _paired(model, module):
    """(the graph with each initializer that holds a parameter or buffer of ``module`` under
    its torch name and layout, the ``onnx_pairing.Pairing``)."""
    from rosetta.importers.onnx_pairing import pair_initializers, torch_form

    tensors = {n: t.detach().cpu().numpy() for n, t in
               list(module.named_parameters()) + list(module.named_buffers())
               if t.is_floating_point()}
    pairing = pair_initializers(model, tensors, {n for n, _ in module.named_parameters()})
    return torch_form(model, pairing, tensors), pairing


def _unpaired(cap, module, pairing) -> str:
    """One line naming the torch parameters no spec parameter stands for, and the spec's
    parameters that are no torch parameter ('' if neither)."""
    params = dict(module.named_parameters())
    why = {}
    for n in params:
        if n not in cap.names:
            why[n] = (pairing.unpaired.get(n) or (cap.unpaired or {}).get(n)
                      or "the graph reads it as a constant")
        elif n in (cap.unpaired or {}):   # a parameter, read as a constant somewhere too
            why[n] = cap.unpaired[n]
    tensors = set(params) | {n for n, _ in module.named_buffers()}
    extra = sorted(k for k in cap.names if k not in tensors)
    if not why and not extra:
        return ""
    parts = []
    if why:
        items = sorted(why.items())
        parts.append("torch parameters no initializer of the graph pairs with (by value: as "
                     "stored, transposed, gathered or concatenated): " + "; ".join(
                         f"{k} ({v})" for k, v in items[:6])
                     + (f" and {len(items) - 6} more" if len(items) > 6 else ""))
    if extra:
        parts.append(f"initializers read as parameters that hold no torch parameter: "
                     f"{', '.join(extra[:6])}{' and more' if len(extra) > 6 else ''}")
    return "; ".join(parts) + " (gradients and steps against the torch source not certified)"


def _torch_attributes(module) -> dict:
    """{initializer name: {attribute: value}} of a torch model's BatchNorm (momentum as the
    spec's 1 - torch's, epsilon) and LayerNorm (epsilon) modules, whose float32 rounding the
    graph holds."""
    if module is None:
        return {}
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm

    out = {}
    for path, m in module.named_modules():
        pre = f"{path}." if path else ""
        if isinstance(m, _BatchNorm) and m.momentum is not None:
            out[f"{pre}running_mean"] = {"momentum": 1.0 - m.momentum, "epsilon": m.eps}
        elif isinstance(m, nn.LayerNorm):
            out[f"{pre}weight"] = {"epsilon": m.eps}
    return out


def _torch_source(cap, module, example_inputs, optimizer, loss):
    """(certificate._Source, loss, optimizer, slots, update count) of the torch model the graph
    came from; ``ImportRefused`` where its parameters are not the graph's initializers."""
    import torch

    from rosetta.importers.imported import _Source as Source
    from rosetta.importers.torch_optim import map_loss, map_optimizer

    if not isinstance(module, torch.nn.Module):
        raise ImportRefused([f"torch_module ({type(module).__name__}): not a torch.nn.Module"])
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not example_inputs:
        raise ImportRefused(["torch_module: give its example_inputs too"])
    problems = []
    if cap.inference_only:
        problems.append(f"torch_module: the graph is inference only, its training cannot be "
                        f"certified: {cap.inference_only}")
    # a float buffer the spec holds no state for is a constant of the graph: the certificate
    # keeps its value on the torch side (``certificate.randomize``'s ``keep``)
    kept = tuple(n for n, t in module.named_buffers()
                 if t.is_floating_point() and n not in cap.names)
    spec_loss = map_loss(loss, problems.append)
    spec_opt, slots, count, slot_keys = map_optimizer(optimizer, module, cap.names, cap.layouts,
                                                      problems.append)
    if problems:
        raise ImportRefused(problems)
    src = Source(module, tuple(example_inputs), optimizer, loss, cap.layouts, slot_keys, {},
                 cap.input_layout, f"torch {type(module).__module__}.{type(module).__name__} "
                                   f"(through ONNX)", constant_buffers=kept)
    return src, spec_loss, spec_opt, slots, count
