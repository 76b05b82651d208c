"""The torch backend's export formats (core/export.py, docs/design.md section 9): ``torch`` and ``onnx``.

Both trace the lowered model (``program.model``, a ``GraphModule`` taking one canonical tensor
per graph input, in ``graph.inputs`` order: channels-last images, float inputs in the program's
dtype, int inputs int64) with ``torch.export``, on a CPU deep copy in eval mode (BatchNorm reads
its running statistics, Dropout is the identity; the program itself is not touched), on the
``example`` batch (a batch of 1 is doubled: torch.export specializes a dimension traced at 0 or
1), the batch axis one symbol shared by every input (``torch.export.Dim("batch", min=1)``).

* ``torch``: ``torch.export.save(ep, "model.pt2")``, the ExportedProgram (ATen graph + weights)
  in the program's dtype, float32 or float64; plus ``torch.save(state_dict, "state_dict.pt")``,
  the program's own ``model.state_dict()`` (GraphModule names, torch layouts: Linear (out, in),
  Conv2d (out, in, kh, kw); on the CPU), read with ``torch.load(path, weights_only=True)``.
  Run it: ``torch.export.load("model.pt2").module()(*inputs)`` (load_torch.py).
* ``onnx``: ``torch.onnx.export(model, dynamo=True)`` (the torch.export-based exporter,
  translated by onnxscript's torchlib; torch 2.13's default opset, 20), inputs named as the
  spec's inputs, the output ``y`` (``y``, ``y1``, ... for several), the batch axis the symbol
  ``batch``, the weights inside the one file ``model.onnx`` (``external_data=False``); checked
  with ``onnx.checker.check_model(full_check=True)``. Run it with
  ``onnxruntime.InferenceSession`` (load_onnx.py). float32 only: ONNX Runtime's CPU kernels have
  no float64 ``Conv`` or ``Erf`` (GELU) (onnxruntime 1.32: "Could not find an implementation for
  Conv(11)"; Gemm, LSTM, GRU do run in float64), so a float64 file of most of the zoo would not
  load; float64 is format ``torch``'s.

Before anything is written, the traced program (or the ONNX Runtime session) is run on the
example and compared with the eager copy (``_SANITY``): a mistranslated op fails the export
instead of writing a wrong file. An export that fails (an exporter error, a checker error, a
missing ONNX Runtime kernel, a mismatch) is a ``BackendUnavailable`` naming the node and the op:
each node's module is exported and checked alone, on the arguments it received in an eager
forward of the example, and the first that fails is named (the model, if none fails alone).

Recurrent layers with sequence lengths: the training lowering packs a bidirectional one
(``pack_padded_sequence``; one direction already runs unpacked, ``recurrent.py``), whose batch
sizes are data-dependent, which ``torch.export`` cannot
trace (``zeros(): argument 'size' ... got FakeTensor``). The export copy runs them unpacked, the
same ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` with the same parameters (``_unpacked_forward``):

* forward direction: the output at step t depends on steps <= t only, so running over the padded
  sequence gives the packed outputs at every real step t < length; the final state is the output
  at step length - 1 (a gather), and ``return_sequences`` zeroes the padded steps (packed writes
  0 there);
* backward direction: it must start at the last real step. A second run of the same module on the
  sequence right-aligned (padding moved to the front: step j holds x[j - (T - length)]) meets
  the real steps first in its reverse order; its backward outputs at j = T - length + t are the
  packed backward outputs at t, and the final backward state is the one at j = T - length.

Both are plain ATen ``lstm`` / ``gru`` / ``rnn_tanh`` calls (ONNX ``LSTM`` / ``GRU`` nodes), the
same math as the packed run (the check measures it against the NumPy reference).

Average pooling that excludes padding torch cannot exclude itself (``ExcludePadAvgPool2d``, a
sum-pool ``avg_pool2d(divisor_override=1)`` / count): torch.onnx (onnxscript's torchlib, 0.7.2)
translates ``avg_pool2d`` to an ONNX ``AveragePool``, which has no divisor override, and drops
it without a word: the file computes the window mean where torch computes the sum (normwise
error 0.75-0.89 on the op cases). Format ``onnx``'s copy computes the same value as
mean * (kh kw / count) (``_mean_pool_forward``). Format ``torch`` keeps it (torch.export keeps
the override).

DotProductAttention (``F.scaled_dot_product_attention``): torch.onnx translates SDPA only for
some masks (4-D inputs; a mask of another rank or a batch-broadcast one fails with a size
mismatch or a ConversionError), so format ``onnx``'s copy runs the same math written out
(``DotProductAttention.written``: matmul, masks, softmax, matmul). Format ``torch`` keeps SDPA.

These rewrites touch only the export copy (``export_model``): training numerics are unchanged.
"""

from __future__ import annotations

import copy
import inspect
import logging
import pathlib
import types
import warnings
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from rosetta.errors import BackendUnavailable
from rosetta.backends.torch.attention import DotProductAttention
from rosetta.backends.torch.pooling import ExcludePadAvgPool2d
from rosetta.backends.torch.recurrent import NativeRecurrent

FORMATS = ("torch", "onnx")

# sanity check of the written program against the eager model on the example (normwise relative
# error): far above rounding, far below a mistranslated op; the real check is core/export.py's
_SANITY = {"float32": 1e-4, "float64": 1e-9}


def export(program, fmt: str, out: pathlib.Path, *, example: dict) -> list[str]:
    """Write the artifact of ``fmt`` for ``program`` into the empty folder ``out``; return the
    names written (``["model.pt2", "state_dict.pt"]`` or ``["model.onnx"]``).

    ``BackendUnavailable`` (nothing written): an unknown format, ``onnx`` in float64, a model
    the format cannot express (naming the node and the op where one node is the cause)."""
    if fmt not in FORMATS:
        raise BackendUnavailable(f"torch backend: unknown export format {fmt!r}; it writes "
                                 f"{', '.join(FORMATS)}")
    if fmt == "onnx" and program.dtype != "float32":
        raise BackendUnavailable(
            f"format 'onnx' is float32 only (found {program.dtype}): ONNX Runtime's CPU kernels "
            f"lack float64 for several ops (Conv, Erf in GELU: 'Could not find an "
            f"implementation'); export float32, or use format 'torch' for float64")
    out = pathlib.Path(out)
    model = export_model(program, fmt)
    xs = _example_tensors(program, example)
    artifact = _FORMATS[fmt](program, model, xs)
    if fmt == "torch":
        state = {k: v.detach().cpu().clone() for k, v in program.model.state_dict().items()}
        torch.export.save(artifact, out / "model.pt2")
        torch.save(state, out / "state_dict.pt")
        return ["model.pt2", "state_dict.pt"]
    artifact.save(out / "model.onnx", external_data=False)
    return ["model.onnx"]


def export_model(program, fmt: str = "torch") -> torch.nn.Module:
    """A CPU deep copy of ``program.model`` in eval mode with the export rewrites of ``fmt``
    (``_REWRITES``; see the module docstring), ready for ``torch.export``."""
    model = copy.deepcopy(program.model).cpu().eval()
    for m in model.modules():
        for cls, forward in _REWRITES[fmt]:
            if isinstance(m, cls):
                m.forward = types.MethodType(forward, m)
    return model


def _unpacked_forward(self: NativeRecurrent, x, lengths=None):
    """``NativeRecurrent.forward`` without packing: the same outputs (see
    ``NativeRecurrent._unpacked``)."""
    if lengths is None:
        return NativeRecurrent.forward(self, x)
    return self._unpacked(x, lengths)


def _mean_pool_forward(self: ExcludePadAvgPool2d, x):
    """``ExcludePadAvgPool2d.forward`` without ``divisor_override``: window_mean(zero_pad(x)) *
    (kh kw / count), the same window sum / count (to rounding). torch.onnx's ``avg_pool2d``
    translation drops ``divisor_override`` (an ONNX ``AveragePool`` has none) and silently
    writes the mean where torch computes the sum."""
    kh, kw = self.kernel_size
    mean = F.avg_pool2d(F.pad(x, self.pad), self.kernel_size, self.stride)
    return mean * ((kh * kw) / self.count)


# format -> [(module class, the forward its export copy runs)]
_REWRITES = {
    "torch": [(NativeRecurrent, _unpacked_forward)],
    "onnx": [(NativeRecurrent, _unpacked_forward), (ExcludePadAvgPool2d, _mean_pool_forward),
             (DotProductAttention, DotProductAttention.written)],
}


def _example_tensors(program, example: dict) -> tuple:
    """The example batch as CPU tensors in graph input order (floats in the program's dtype,
    ints int64), a batch of 1 doubled (see the module docstring)."""
    arrays = program.graph.as_input_dict(example)
    out = []
    for i in program.graph.inputs:
        a = np.asarray(arrays[i.name])
        if a.ndim == 0 or a.shape[0] == 0:
            raise BackendUnavailable(f"export: example input {i.name!r} holds no batch "
                                     f"(shape {a.shape}); give at least one example")
        if a.shape[0] == 1:
            a = np.concatenate([a, a])
        dtype = program.torch_dtype if i.kind == "float" else torch.int64
        out.append(torch.as_tensor(np.array(a), dtype=dtype))
    return tuple(out)


def _output_names(graph) -> list[str]:
    return ["y"] + [f"y{i}" for i in range(1, len(graph.outputs))]


def _dynamic_shapes(module, args) -> tuple:
    """Axis 0 of every tensor argument is the batch, one symbol. The structure follows
    ``module.forward``'s signature: ``GraphModule.forward(*inputs)`` takes one tuple for
    ``inputs``, a node's module one entry per argument."""
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() else None
                   for a in args)
    params = list(inspect.signature(module.forward).parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return (shapes,)
    return shapes


# --- the formats: trace, translate, check on the example; nothing written here -----------------

def _export_torch(program, model, xs):
    """The ExportedProgram of ``model``, checked (``_check_torch``)."""
    try:
        return _check_torch(model, xs, program.dtype)
    except Exception as e:
        raise _unavailable("torch", program, model, xs, e) from e


def _export_onnx(program, model, xs):
    """``torch.onnx.export`` of ``model`` (it runs ``torch.export`` itself, the batch symbol
    named ``batch`` in the file), checked (``_check_onnx``)."""
    names = ([i.name for i in program.graph.inputs], _output_names(program.graph))
    try:
        return _check_onnx(model, xs, program.dtype, names)
    except Exception as e:
        raise _unavailable("onnx", program, model, xs, e) from e


_FORMATS = {"torch": _export_torch, "onnx": _export_onnx}


class _Mismatch(Exception):
    """The exported program runs but computes something else than the eager module."""


@contextmanager
def _quiet_export():
    """torch.export's warnings about itself: it swaps every parameter for a traced one, which
    makes ``nn.RNNBase`` refresh its ``_flat_weights`` list, and then warns that tensor
    attributes "were assigned during export" (harmless: the list is rebuilt from the registered
    parameters); and torch 2.13's tracer calls its own deprecated ``_check_is_size``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The tensor attributes .*_flat_weights")
        warnings.filterwarnings("ignore", message=r"_check_is_size will be removed")
        yield


def _check_torch(module, args, dtype):
    with _quiet_export(), torch.no_grad():
        ep = torch.export.export(module, args, dynamic_shapes=_dynamic_shapes(module, args))
        _compare(ep.module()(*args), module(*args), dtype)
    return ep


@contextmanager
def _quiet_onnx():
    """torch.onnx's exporter logs a warning per missing torchvision op, onnxscript's optimizer
    one per multi-output op it does not fold, and torch.onnx warns that the batch axis name of
    a second input "will not be used" (it is: every input's axis 0 is ``batch`` in the file)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
            # torch 2.13's exporter calls its own deprecated pytree API
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check_onnx(module, args, dtype, names=(None, None)):
    """Export, ``onnx.checker`` (full), load in ONNX Runtime (every kernel found) and run on
    ``args`` against the eager module."""
    import onnx
    import onnxruntime as ort

    input_names, output_names = names
    with _quiet_onnx(), _quiet_export(), torch.no_grad():
        program = torch.onnx.export(module, args, dynamo=True, verbose=False,
                                    input_names=input_names, output_names=output_names,
                                    dynamic_shapes=_dynamic_shapes(module, args))
        onnx.checker.check_model(program.model_proto, full_check=True)
        session = ort.InferenceSession(program.model_proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        declared = [i.name for i in session.get_inputs()]
        feed = dict(zip(input_names or declared, (a.numpy() for a in args)))
        got = session.run(None, {k: v for k, v in feed.items() if k in declared})
        _compare(got, module(*args), dtype)
    return program


def _compare(got, want, dtype):
    got = got if isinstance(got, (list, tuple)) else [got]
    want = want if isinstance(want, (list, tuple)) else [want]
    for g, w in zip(got, want):
        g = g.detach().numpy() if isinstance(g, torch.Tensor) else np.asarray(g)
        w = w.detach().numpy()
        if g.shape != w.shape:
            raise _Mismatch(f"on the example it returns shape {g.shape}, torch {w.shape}")
        err = np.max(np.abs(g - w), initial=0.0) / max(np.max(np.abs(w), initial=0.0),
                                                         np.finfo(np.float64).tiny)
        if not err <= _SANITY[dtype]:
            raise _Mismatch(f"on the example it computes something else than torch (normwise "
                            f"relative error {err:.2e} > {_SANITY[dtype]:.0e})")


_CHECKS = {"torch": _check_torch, "onnx": _check_onnx}


def _unavailable(fmt: str, program, model, xs, error: Exception) -> BackendUnavailable:
    """The error of a failed export: the first node whose module alone fails the same export
    and check (on the arguments it received in an eager forward of the example) is named with
    its op; else the model."""
    captured = {}
    hooks = []
    for node in program.graph.nodes:
        def hook(mod, args, name=node.name):
            captured.setdefault(name, tuple(a.detach() if isinstance(a, torch.Tensor) else a
                                            for a in args))
        hooks.append(model.node_module(node.name).register_forward_pre_hook(hook))
    chain, model._chain = model._chain, None  # the graph walk calls every node's module
    try:
        with torch.no_grad():
            model(*xs)
    except Exception:
        captured = {}
    finally:
        model._chain = chain
        for h in hooks:
            h.remove()
    for node in program.graph.nodes:
        if node.name not in captured:
            continue
        try:
            _CHECKS[fmt](model.node_module(node.name), captured[node.name], program.dtype)
        except Exception as e:
            return BackendUnavailable(f"format {fmt!r} cannot express {node.op} (node "
                                      f"{node.name!r}): {_summary(e)}")
    return BackendUnavailable(f"format {fmt!r} cannot export model {program.graph.name!r}: "
                              f"{_summary(error)}")


def _summary(e: BaseException) -> str:
    """One line of an exporter's error (torch.onnx's wraps the cause in a long report)."""
    if isinstance(e, _Mismatch):
        return str(e)
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    cause = [ln for ln in lines if ln.startswith("<class")]  # torch.onnx's "Exception summary"
    text = cause[-1] if cause else (lines[0] if lines else "")
    return f"{type(e).__name__}: {text[:300]}"


__all__ = ["FORMATS", "export", "export_model"]
