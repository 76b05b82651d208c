"""Export a lowered TensorFlow program: ``savedmodel`` (here) and ``keras``
(``rosetta.backends.keras``).

``savedmodel``: ``tf.saved_model.save`` of the program's ``GraphModule`` (a ``tf.Module``) with one
``serving_default`` signature, the model in eval mode::

    serving_default(**{input name: tensor (batch, *shape)}) -> {"y": output}

* The signature is the concrete function of ``tf.function(lambda **inputs: {"y": model(inputs,
  training=False)})`` traced once for ``tf.TensorSpec((None, *shape), dtype, name=input name)``:
  the batch axis is open, float inputs are in the program's dtype (float32 or float64), integer
  inputs (token ids, sequence lengths) are int64, the TensorFlow backend's id dtype. The output is
  in the program's dtype, canonical layout (batch first, channels last), named ``y``.
* It is traced without ``jit_compile``: TensorFlow's graph runtime, the form every SavedModel
  consumer runs (TF Serving, ``tf.saved_model.load``, the TFLite converter), with no XLA needed
  at load time. Grouped convolutions take the per-group form there (``layers.Conv2D``); the
  numbers are the same sum as the XLA steps of the program, in float64 to the last bits.
* What is saved: a fresh ``tf.Module`` root whose one attribute ``model`` is the program's
  ``GraphModule``, so every variable the function reads (each node module's parameters and
  BatchNorm running statistics) is tracked and written to ``saved_model/variables``; the dropout
  ``tf.random.Generator`` is tracked too but never read (eval mode draws nothing). The function
  body is stored as a TensorFlow graph: loading needs TensorFlow alone, never rosetta (the
  GraphModule's Python classes are not needed: ``tf.saved_model.load`` restores the object tree as
  generic trackables). Loading::

      fn = tf.saved_model.load("saved_model").signatures["serving_default"]
      y = fn(**{name: tf.constant(array)})["y"]

  (``load_savedmodel.py`` beside this file is exactly that, as a script.)
* Every op the TensorFlow backend lowers is a TensorFlow graph op, which a SavedModel stores, so
  no zoo model and no registered op is refused (each was exported and checked). What a SavedModel
  cannot store is a Python callable (``tf.py_function`` / ``tf.numpy_function``: the graph keeps
  only a token for it): such an op in the traced function is a ``BackendUnavailable`` naming
  the node and the op, found before anything is written, as is a graph with several outputs
  (``y`` is one array). An op without a TensorFlow lowering fails earlier, at compile.

``keras``: ``rosetta.backends.keras.model.export_keras`` (a Keras 3 model of Keras
layers, ``model.save``), imported only when asked for.
"""

from __future__ import annotations

from pathlib import Path

from rosetta.errors import BackendUnavailable

FORMATS = ("savedmodel", "keras")

SAVED_MODEL_DIR = "saved_model"
SIGNATURE = "serving_default"
OUTPUT = "y"


def export(program, fmt: str, out, *, example) -> list[str]:
    """Write ``fmt`` for ``program`` into the empty folder ``out``; the names written."""
    if fmt == "keras":
        from rosetta.backends.keras.model import export_keras

        return export_keras(program, out, example=example)
    if fmt != "savedmodel":
        raise BackendUnavailable(f"the tensorflow backend exports {' and '.join(FORMATS)}, "
                                 f"not {fmt!r}")
    return export_savedmodel(program, out, example=example)


# TensorFlow ops that run a Python callable (tf.py_function, tf.numpy_function): a SavedModel
# stores only a token for the callable, which does not exist in the loading process
UNSAVEABLE_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


def check_exportable(program) -> None:
    """``BackendUnavailable`` naming the graph's problem for a SavedModel ``serving_default``:
    more than one output (``y`` is one array)."""
    graph = program.graph
    if len(graph.outputs) != 1:
        raise BackendUnavailable(f"{graph.name}: savedmodel export serves one output 'y'; this "
                                 f"graph has {len(graph.outputs)} ({', '.join(graph.outputs)})")


def graph_ops(function) -> set[str]:
    """The op types of a concrete function's graph and of every function it calls (loop
    bodies, conditionals)."""
    graph_def = function.graph.as_graph_def()
    return ({n.op for n in graph_def.node}
            | {n.op for f in graph_def.library.function for n in f.node_def})


def check_saveable(program, function) -> None:
    """``BackendUnavailable`` naming the node and its op when the traced ``function`` contains
    an op a SavedModel cannot carry (``UNSAVEABLE_OPS``): each node module is traced alone on
    its own input types to find it."""
    import tensorflow as tf

    bad = graph_ops(function) & UNSAVEABLE_OPS
    if not bad:
        return
    graph = program.graph
    for node in graph.nodes:
        specs = [tf.TensorSpec((None, *t.shape), program.tf_dtype if t.kind == "float"
                               else tf.int64) for t in node.in_types]
        layer = program.model.layers[node.name]
        traced = tf.function(lambda *xs, layer=layer: layer(list(xs), training=False),
                             autograph=False).get_concrete_function(*specs)
        found = graph_ops(traced) & UNSAVEABLE_OPS
        if found:
            raise BackendUnavailable(
                f"{graph.name}/{node.name} ({node.op}): the tensorflow lowering runs Python "
                f"({', '.join(sorted(found))}), which a SavedModel cannot store")
    raise BackendUnavailable(f"{graph.name}: the serving function runs Python "
                             f"({', '.join(sorted(bad))}), which a SavedModel cannot store")


def serving_function(program):
    """The eval-mode ``serving_default`` concrete function of ``program.model``: keyword tensors
    by input name (``program.input_signature``: batch axis open), returning {"y": output}."""
    import tensorflow as tf

    from rosetta.backends.tensorflow.recurrent import portable_graph

    model = program.model

    def serve(**inputs):
        return {OUTPUT: model(inputs, training=False)}

    serve.__name__ = SIGNATURE
    # autograph off: the model has no data-dependent Python control flow (as the program's steps);
    # LSTMs as tf.scan, which the TFLite converter takes (recurrent.portable_graph)
    with portable_graph():
        return tf.function(serve, autograph=False).get_concrete_function(
            **program.input_signature)


def export_savedmodel(program, out, *, example=None) -> list[str]:
    """``tf.saved_model.save`` of ``program.model`` into ``out/saved_model`` (module docstring).
    ``example`` (inputs in the export dtype, or None) is run through the traced function once
    before anything is written, which proves the graph runs on concrete tensors."""
    import tensorflow as tf

    check_exportable(program)
    function = serving_function(program)
    check_saveable(program, function)
    if example is not None:
        function(**{name: tf.constant(example[name], spec.dtype)
                    for name, spec in program.input_signature.items()})
    root = tf.Module()
    root.model = program.model
    tf.saved_model.save(root, str(Path(out) / SAVED_MODEL_DIR), signatures={SIGNATURE: function})
    return [SAVED_MODEL_DIR]
