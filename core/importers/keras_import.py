"""``from_keras``: a Keras 3 Sequential or functional model (with its compiled optimizer, state
included, and loss) -> ``Imported``, the object ``from_torch`` returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rosetta import optim as O
from rosetta.importers.errors import ImportRefused
from rosetta.errors import RosettaError


@dataclass
class KerasSourceInfo:
    """What the certificate needs of a Keras source (see ``keras_source.source_program``)."""

    module: object            # the keras.Model
    optimizer: object
    loss: object
    input_shape: tuple        # per example
    input_kind: str
    example_inputs: tuple     # one NumPy batch (its shape and dtype; batch_size examples)
    description: str = ""
    keras_nodes: dict = None  # spec node -> Keras layer/operation name
    layouts: dict = None      # Keras source name -> Layout (absent: identity)
    framework: str = "keras"
    input_layout: str = "plain"
    # certified by default as a float64 clone (exact where keras_source.check_layers and
    # check_optimizer find Keras computing in float64); dtype="float32": teacher-forced against
    # the Keras model run in float32 (certificate32)
    float32_certificate = True
    certify_dtype = "float64"
    reference_dtype32 = "float32"
    noise_order = "examples reordered"   # certificate_noise.how: no memory format to change

    def program(self, imp, spec, seed, dtype, inject=False):
        from rosetta.importers.keras_source import source_program
        return source_program(imp, spec, seed, dtype, inject)


def _dtype_of(model) -> str:
    dts = {str(v.dtype) for v in model.trainable_variables}
    if dts <= {"float32"}:
        return "float32"
    if dts == {"float64"}:
        return "float64"
    raise ImportRefused([f"{model.name} ({type(model).__name__}): variables in {sorted(dts)} "
                         f"(float32 or float64 only)"])


def from_keras(model, *, optimizer=None, loss=None, name=None, batch_size=2,
               example_inputs=None):
    """Import the Keras 3 ``model`` (Sequential or functional, on any ``KERAS_BACKEND``) with
    its optimizer and loss (default: the compiled ones; uncompiled, SGD(0.01) and softmax
    cross-entropy from logits). Returns ``Imported``; raises ``ImportRefused`` listing every
    layer, operation or setting the spec cannot reproduce exactly. ``batch_size``: the
    examples of each batch the certificate runs (a torch import takes it from its example
    inputs): a BatchNorm over more examples is better conditioned in float64.
    ``example_inputs``: one batch of the model's input (its batch size is then the
    certificate's): the certificate draws its inputs at this batch's mean and standard
    deviation (pixel values for a model that rescales them itself), else standard normal."""
    import keras

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RosettaError(f"from_keras: batch_size must be an integer >= 1, found "
                           f"{batch_size!r}")

    from rosetta.importers.builder import spec_name
    from rosetta.importers.imported import Imported
    from rosetta.importers.keras_graph import capture, local_names
    from rosetta.importers.keras_optim import map_loss, map_optimizer
    from rosetta.importers.keras_parts import whole
    from rosetta.spec import DataSpec, TrainSpec

    if not isinstance(model, keras.Model):
        raise ImportRefused([f"<source> ({type(model).__name__}): not a keras.Model"])
    if optimizer is None:
        optimizer = getattr(model, "optimizer", None)
    if loss is None:
        loss = getattr(model, "loss", None)
    notes = []
    if loss is None:
        notes.append("no loss given: softmax cross-entropy from logits")
    if optimizer is None:   # Keras's own, so that both sides hold its float32 learning rate
        notes.append("no optimizer given: keras.optimizers.SGD(learning_rate=0.01)")
        optimizer = keras.optimizers.SGD(learning_rate=0.01)
    name = spec_name(name or local_names([model])[id(model)])
    problems = []   # every layer, loss and optimizer setting that cannot be mapped, at once
    try:
        cap = capture(model, model_name=name)
    except ImportRefused as e:
        cap = None
        problems += e.lines
    try:
        dtype = _dtype_of(model)
    except ImportRefused as e:
        problems += e.lines
    spec_loss = map_loss(loss, problems.append)
    try:
        spec_opt, slots, count, _ = map_optimizer(optimizer, model, cap.names if cap else {},
                                                  problems.append, cap.layouts if cap else {})
    except Exception as e:  # a spec check the optimizer's settings fail (SpecError)
        problems.append(f"optimizer ({type(optimizer).__name__}): {e}")
    if problems:
        raise ImportRefused(problems)
    # trainable=False (a layer's, or a whole sub-model's): its weights are frozen in the spec
    trainable = {v.path for v in model.trainable_variables}
    frozen = [O.literal(p) for v, p in cap.names.items() if p in cap.params
              and whole(v) not in trainable]
    if frozen:
        spec_opt = spec_opt.with_frozen(frozen)
    n = batch_size
    x = (np.zeros((n, *cap.input_shape)) if cap.input_kind == "float"
         else np.zeros((n, *cap.input_shape), np.int64))
    if example_inputs is not None:
        given = np.asarray(example_inputs)
        if given.ndim != len(cap.input_shape) + 1 or given.shape[1:] != tuple(cap.input_shape):
            raise ImportRefused([f"{model.name}: example_inputs of shape {given.shape}, the "
                                 f"model takes (batch, {', '.join(map(str, cap.input_shape))})"])
        x = given.astype(x.dtype)
        n = len(x)
    out_shape = cap.graph.output_type.shape
    y = (np.zeros(n, np.int64) if spec_loss.label_kind == "int"
         else np.zeros((n, *out_shape)))
    data = DataSpec.from_arrays(x, y, x, y, batch_size=n)
    try:
        spec = TrainSpec(cap.graph, spec_loss, spec_opt, data, steps=1,
                         description=f"imported from keras {model.name}")
    except Exception as e:
        raise ImportRefused([f"{model.name} ({type(model).__name__}): {e}"]) from None
    src = KerasSourceInfo(model, optimizer, loss, cap.input_shape, cap.input_kind, (x,),
                          f"keras {keras.__version__} ({keras.backend.backend()}) "
                          f"{type(model).__name__} {model.name}", cap.keras_nodes,
                          layouts=cap.layouts)
    return Imported(spec, cap.params, cap.state, dict(slots), count, cap.names, dtype,
                    cap.node_source, src, notes)
