"""Export a lowered JAX program: ``jax`` (serialized StableHLO + flax variables).

The artifact is two files:

* ``model.stablehlo``: ``jax.export.export(jax.jit(apply))(variable specs, input specs)
  .serialize()``, the bytes of a ``jax.export.Exported`` (StableHLO, versioned and stable across
  jax/jaxlib releases within jax's compatibility window), where ``apply`` is the eval-mode forward
  of the program's flax module::

      apply(variables, inputs) = model.apply(variables, inputs, train=False)

  ``variables`` is ``{"params": ..., "batch_stats": ...}`` (flax's collections, node-named, the
  canonical layouts; ``batch_stats`` is ``{}`` for a model without BatchNorm) and ``inputs``
  ``{input name: batch array}``. The variables are arguments, not constants folded into the
  StableHLO: the module stays small and the weights can be replaced without re-exporting. The
  batch axis is symbolic: every input is declared with the shape ``jax.export.symbolic_shape(
  "b, ...")`` (one symbol ``b`` shared by all inputs), so one artifact serves any batch size
  >= 1. Float inputs and variables are in the program's dtype (float32 or float64); integer
  inputs (token ids, sequence lengths) are int32, the JAX backend's index dtype (the loader casts
  the int64 arrays it is given). Lowered for the platforms ``PLATFORMS``, CPU and CUDA (a
  CPU-only jaxlib lowers for CUDA too): ``Exported.call`` runs on the default device of the
  loading process, which must be one of them. Matmuls and convolutions are lowered at
  ``Precision.HIGHEST`` (no TF32 / bf16 passes on GPU), as the program's are.
* ``variables.msgpack``: ``flax.serialization.msgpack_serialize(variables)`` (flax's own
  serializer: nested dicts of NumPy arrays, dtypes and shapes kept exactly, float64 included),
  read back with ``flax.serialization.msgpack_restore``.

Loading (``load_jax.py``, beside this file, as a script)::

    jax.config.update("jax_enable_x64", True)      # float64 exports only, before any jax use
    exported = jax.export.deserialize(open("model.stablehlo", "rb").read())
    variables = flax.serialization.msgpack_restore(open("variables.msgpack", "rb").read())
    y = exported.call(variables, inputs)

A float64 artifact needs ``jax_enable_x64`` on in the loading process: without it jax turns
float64 arrays into float32 ones and ``call`` refuses them (its argument types are float64).

An op whose lowering cannot take a symbolic batch size (it needs the batch as a Python int) is a
``BackendUnavailable`` naming the node and the op, found before anything is written by tracing
the graph's first 1, 2, ... nodes until one fails. No zoo model and no registered op fails (each
was exported and checked against the reference).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rosetta.errors import BackendUnavailable

FORMATS = ("jax",)

MODEL_FILE = "model.stablehlo"
VARIABLES_FILE = "variables.msgpack"
BATCH = "b"
# lowered for both (a CPU-only jaxlib lowers for CUDA too); the loading process's default
# platform must be one of them
PLATFORMS = ("cpu", "cuda")


def export(program, fmt: str, out, *, example) -> list[str]:
    """Write ``fmt`` for ``program`` into the empty folder ``out``; the names written."""
    if fmt != "jax":
        raise BackendUnavailable(f"the jax backend exports {' and '.join(FORMATS)}, not {fmt!r}")
    return export_jax(program, out, example=example)


def variables_of(program) -> dict:
    """The program's flax variables as NumPy arrays: {"params": ..., "batch_stats": ...}."""
    import jax

    return jax.device_get({"params": program.params, "batch_stats": program.batch_stats})


def input_specs(program, batch) -> dict:
    """{input name: jax.ShapeDtypeStruct((batch, *shape), dtype)}: floats in the program's dtype,
    ids int32 (the JAX backend's index dtype)."""
    import jax

    return {i.name: jax.ShapeDtypeStruct((batch, *i.shape),
                                         np.int32 if i.kind == "int" else np.dtype(program.dtype))
            for i in program.graph.inputs}


def eval_apply(model):
    """apply(variables, inputs) -> model output, eval mode (running BatchNorm statistics, no
    dropout)."""

    def apply(variables, inputs):
        return model.apply(variables, inputs, train=False)

    return apply


def check_exportable(program, specs: dict, inputs: dict) -> None:
    """``BackendUnavailable`` before anything is written: a graph with more than one output
    (``y`` is one array), or a node whose lowering cannot be traced with a symbolic batch size
    (the node and its op named, with jax's reason). ``specs``: the variables' shapes and dtypes;
    ``inputs``: the input specs, batch axis symbolic."""
    import jax

    graph = program.graph
    if len(graph.outputs) != 1:
        raise BackendUnavailable(f"{graph.name}: jax export serves one output 'y'; this graph "
                                 f"has {len(graph.outputs)} ({', '.join(graph.outputs)})")
    try:
        jax.eval_shape(eval_apply(program.model), specs, inputs)
        return
    except Exception as whole:  # find the node: trace the graph one node more at a time
        failure = whole
    for count, node in enumerate(graph.nodes, 1):
        sub = _prefix_model(program, count)
        try:
            jax.eval_shape(eval_apply(sub), specs, inputs)
        except Exception as e:  # noqa: BLE001 - any tracing error names this node
            raise BackendUnavailable(
                f"{graph.name}/{node.name} ({node.op}): jax.export cannot lower this op with a "
                f"symbolic batch size: {type(e).__name__}: {_first_line(e)}") from e
    raise BackendUnavailable(f"{graph.name}: jax.export cannot trace the model with a symbolic "
                             f"batch size: {type(failure).__name__}: {_first_line(failure)}"
                             ) from failure


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def _prefix_model(program, count: int):
    """The program's flax module computing the graph's first ``count`` nodes, the last one's
    value its output; the later nodes' variables are passed but unused."""
    import copy

    prefix = copy.copy(program.graph)
    prefix.nodes = list(program.graph.nodes[:count])
    prefix.outputs = [prefix.nodes[-1].name]
    return program.model.clone(graph=prefix)


def export_jax(program, out, *, example=None) -> list[str]:
    """``jax.export`` of the eval-mode forward and flax's msgpack of the variables into ``out``
    (module docstring). ``example`` (inputs, or None) is run through the exported function once
    before anything is written (ids cast to int32), which proves it runs at a concrete batch
    size."""
    import flax.serialization
    import jax

    variables = variables_of(program)
    (b,) = jax.export.symbolic_shape(BATCH)
    specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
    inputs = input_specs(program, b)
    check_exportable(program, specs, inputs)
    try:
        exported = jax.export.export(jax.jit(eval_apply(program.model)),
                                     platforms=PLATFORMS)(specs, inputs)
    except Exception as e:  # traced fine (check_exportable), so lowering for a platform failed
        raise BackendUnavailable(f"{program.graph.name}: jax.export cannot lower the model for "
                                 f"{' and '.join(PLATFORMS)}: {type(e).__name__}: "
                                 f"{_first_line(e)}") from e
    if example is not None:
        x = {name: np.asarray(example[name], spec.dtype) for name, spec in inputs.items()}
        with jax.default_device(jax.devices("cpu")[0]):
            jax.block_until_ready(exported.call(variables, x))
    blob = exported.serialize()
    packed = flax.serialization.msgpack_serialize(variables)
    out = Path(out)
    (out / MODEL_FILE).write_bytes(bytes(blob))
    (out / VARIABLES_FILE).write_bytes(packed)
    return [MODEL_FILE, VARIABLES_FILE]
