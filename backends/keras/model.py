"""Export format ``keras``: a ``keras.Model`` built from Keras 3's own layers, carrying the
program's trained parameters and state, saved with ``model.save("model.keras")``.

The artifact is a plain Keras 3 functional model: ``keras.saving.load_model("model.keras")`` gives
a model that ``predict``\\ s, ``fit``\\ s and ``save``\\ s under any ``KERAS_BACKEND``
(tensorflow, jax, torch) with nothing of rosetta installed (no custom layer, no ``Lambda``: every
node is a built-in layer or a ``keras.ops`` operation, both of which Keras serializes by name).

What is built (``build_model``): one ``keras.Input`` per graph input, in graph order, named as the
graph input (``shape`` per example; float inputs ``float32``, int inputs ``int32``: token ids and
sequence lengths; ``int64`` arrays are cast on the way in), then one Keras layer per graph node,
named as the node, called in the graph's order on the node's inputs, weights set from the
canonical parameters with ``layer.set_weights`` (shapes checked first). The model's output is the
graph's one output (a graph with several outputs is refused: the loaders write one ``y``).

float32 only: Keras 3 does not compute float64 on every backend (jax without x64, some torch and
TF kernels), so a float64 program is a ``BackendUnavailable`` (nothing is cast behind the user's
back; export the checkpoint with ``dtype="float32"``).

The ops (canonical math in ``rosetta.ops``; every fact below was checked against the NumPy
float64 reference on all three Keras backends). Weights are listed in ``set_weights`` order;
"same" means the canonical layout is Keras's:

* Dense: ``Dense(units, activation, use_bias)`` (rank > 1: the last axis, as canonical);
  kernel (in, out), bias: same.
* Conv2D, Conv1D: ``Conv2D``/``Conv1D(filters, kernel_size, strides, padding, dilation_rate,
  groups)``; kernel (kH, kW, C/groups, F), bias: same.
* DepthwiseConv2D: ``DepthwiseConv2D(kernel_size, strides, padding, depth_multiplier,
  dilation_rate)``; kernel (kH, kW, C, M): same, output channel c·M + m as canonical.
* SeparableConv2D: ``SeparableConv2D(filters, ...)``; depthwise (kH, kW, C, M), pointwise
  (1, 1, C·M, F), bias: same.
* Conv2DTranspose: ``Conv2DTranspose(filters, kernel_size, strides, padding, dilation_rate)``
  (Keras's output rule is the canonical ``transpose_plan``); kernel (kH, kW, in, out) ->
  Keras (kH, kW, out, in).
* MaxPool2D/1D, AvgPool2D/1D: ``MaxPooling2D``/``AveragePooling2D`` (1D alike) ``(pool_size,
  strides, padding)``; GlobalAvgPool2D, GlobalMaxPool2D: ``GlobalAveragePooling2D``,
  ``GlobalMaxPooling2D``.
* BatchNorm: ``BatchNormalization(axis=-1, momentum=m, epsilon=eps)`` (Keras's rule is the
  canonical one: moving = m·moving + (1 - m)·batch, biased batch variance); [scale, bias, mean,
  var] (state from ``export_state``). ``running_var="unbiased"`` (torch's rule, imported
  models) is refused: Keras's layer always stores the biased variance, so the artifact would
  ``predict`` exactly but ``fit`` other running statistics, and no built-in layer stores n/(n-1)
  times it.
* LayerNorm: ``LayerNormalization(axis=-1, epsilon)``; RMSNorm: ``RMSNormalization(axis=-1,
  epsilon)``, x·rsqrt(mean(x²) + eps)·scale; GroupNorm: ``GroupNormalization(groups, axis=-1,
  epsilon)`` (contiguous channel groups, biased variance); [scale(, bias)]. epsilon is always
  passed (Keras's defaults, 1e-3 and 1e-6, never apply).
* Dropout: ``Dropout(rate)`` (identity in ``predict``, inverted scaling in ``fit``);
  StochasticDepth: ``Dropout(rate, noise_shape=(None, 1, ..., 1))``.
* Activation: ``Activation("relu" | "relu6" | "tanh" | "sigmoid" | "hard_sigmoid" | "silu" |
  "gelu" | "linear")`` (Keras's "gelu" is the exact erf form, its "hard_sigmoid" Keras 3's
  relu6(x + 3) / 6), ``LeakyReLU(negative_slope=slope)`` (Keras's default 0.3 never
  applies), ``Softmax(axis)`` (a per-example axis a >= 0 is batch axis a + 1). gelu with
  approximate="tanh" has no Keras activation identifier: ``keras.ops.gelu(x, approximate=True)``
  (also after a layer whose fused activation is gelu_tanh, the layer itself linear).
* HardSwish: ``Activation("hard_silu")`` (Keras's x * relu6(x + 3) / 6; "hard_swish" is its
  alias).
* Embedding: ``Embedding(vocab_size, dim)`` on int32 ids; [embedding] (vocab, dim): same.
  ``padding_idx`` p (Embedding, Gather): ``where(ids == p, stop_gradient(y), y)``, the
  backends' own rule (Keras's ``mask_zero`` is something else: it masks later layers and still
  trains row 0).
* Softmax (the op): ``Softmax(axis)``, as Activation's. The other tensor-math ops are
  ``keras.ops`` operations of the functional graph (no layer computes them): Subtract, Divide,
  Power, Maximum, Minimum, Equal/Less/Greater (cast to int32, the export's int), and Add/Multiply
  with a scalar ``constant`` (a Python float argument; reverse c op x); Where
  (``where(cond != 0, x, y)``, a scalar side such as -inf a Python float); Unary (the
  ``keras.ops`` function of that name: negative, absolute, sqrt, rsqrt, exp, log, erf,
  reciprocal, square, tanh, sigmoid, sin, cos); Reduce (sum/mean/max/min over batch axes a + 1;
  var written out as sum((x - mean)^2) / (n - correction)); LogSoftmax; MatMul (a 1-D operand
  made a row / column and squeezed after).
* Tensors shared by the batch (``batch_broadcast``: full shape (1, *shape)) are Keras tensors whose
  batch axis has size 1, so every op downstream broadcasts them with NumPy's rules over the full
  shape, as the spec does. Their size-1 batch is read off the first graph input (``ops.take`` of
  its first example: a Keras graph holds no free tensor, and a NumPy array would be folded into
  a constant at build time). Parameter: an ``Embedding(1, size)`` layer (named as the node) looked
  up at id 0 and reshaped to (1, *shape); [embedding] = the canonical value flattened to
  (1, size). A Parameter read twice (GPT-2's tied embedding and output projection) is one layer
  read twice, so ``fit`` sums both gradients into it, as the spec does. Constant: ones of the
  shared batch times the value (a NumPy array in the model config; x * 1 is exact, -inf
  included). Expand: ``multiply`` by ones of the target shape (and of the run's batch, read off
  the first input, for a shared x), after a reshape that adds x's new leading axes; the adjoint
  of the broadcast sums the gradient, as the spec's.
* Flatten, Reshape, Add, Concatenate, ZeroPadding2D, UpSampling2D: the Keras layer of that name
  (Flatten is channels-last row-major, the canonical order; ``UpSampling2D(size,
  interpolation="nearest")``; Concatenate's per-example axis a >= 0 is batch axis a + 1).
* Multiply: ``Multiply()`` (it broadcasts size-1 axes as the canonical op does).
* LSTM: ``LSTM(units, return_sequences)``, Keras's gates [i, f, c, o] are the canonical
  [i, f, g, o] and it has one bias; [kernel (C, 4H), recurrent_kernel (H, 4H), bias (4H)]: same.
* GRU: ``GRU(units, reset_after=...)`` as the node's. Keras orders the gates [z, r, h],
  canonical [r, z, n]: the first two H-column blocks of every weight are swapped; reset-after,
  Keras's bias is (2, 3H) = [input bias; recurrent bias]: [K[z r n], R[z r n],
  stack(b[z r n], rb[z r n])]; ``reset_after=False``, one bias (3H): [K[z r n], R[z r n],
  b[z r n]]. Keras's reset-after GRU always has two biases and its reset-before GRU one, so a
  reset-after GRU with ``recurrent_bias=False`` and a reset-before one with
  ``recurrent_bias=True`` are refused.
* SimpleRNN: ``SimpleRNN(units, activation)``; [kernel, recurrent_kernel, bias]: same.
* bidirectional: ``Bidirectional(layer, merge_mode="concat")`` = [forward, backward]; the forward
  weights, then the ``backward_*`` ones.
* MultiHeadAttention: ``MultiHeadAttention(num_heads=h, key_dim=d, value_dim=d,
  output_shape=out, use_bias, dropout)`` called ``(query, value, attention_mask=...,
  use_causal_mask=causal)`` (scores / sqrt(key_dim); keys computed from the value); [query
  kernel (E, h, d), bias (h, d), key kernel, bias, value kernel, bias, output kernel (h, d, out),
  bias (out)]: same.
* DotProductAttention: ``keras.ops`` written out as the spec: ``matmul(q, swapaxes(k))`` times
  the scale, the int mask as ``where(keep, s, -inf)``, the float mask added, ``softmax``, weights
  0 in a row that keeps no key, ``matmul(w, v)``. Not ``keras.ops.dot_product_attention``: it
  takes (B, T, heads, D) only and masks with a large finite negative (a row that keeps no key
  would get uniform weights, not the spec's 0). The mask broadcasts to the scores (a Constant
  mask is a shared tensor, above).
* PositionEmbedding: an ``Embedding(max_length, E)`` layer (named ``<node>_table``) looked up at
  the positions 0..T-1 (``keras.ops.cumsum`` of ones over x's time axis: rows >= T are never
  read, as canonical), then ``Add`` (named as the node); [embedding]: same.
* SequencePool: mean: ``GlobalAveragePooling1D`` (with lengths called with ``mask=``: the sum
  over real steps / their count); max: ``GlobalMaxPooling1D`` (with lengths, padded steps are
  first replaced by the float32 lowest value with ``keras.ops.where``; at least one step is
  real).

Padding. Keras's ``padding="same"`` is the canonical rule for convolutions (out = ceil(in / s),
the extra cell after) and is used for ``same`` and for explicit pads that equal it. Other explicit
pads: convolutions get a ``ZeroPadding1D``/``ZeroPadding2D`` layer and ``padding="valid"``; max
pooling pads with the float32 lowest value (``keras.ops.pad``; pads are smaller than the window,
so a padded cell is never a window's maximum) and pools ``valid``; average pooling divides the
``valid`` average of the zero-padded input by that of zero-padded ones (sum / real cells, the
canonical exclusion). Trap: Keras 3's torch backend pads an *asymmetric* 'same' pooling window
with replicated edge values (``mode="replicate"``) and counts them in averages (harmless for max:
the edge cell is in that window anyway), so an average pool whose 'same' pads are asymmetric
takes the explicit form above; symmetric 'same' is left to Keras (torch's
``count_include_pad=False``).
Keras refuses ``strides > 1`` together with ``dilation_rate > 1``: such a convolution runs at
stride 1 on the explicitly padded input (``ZeroPadding`` + ``padding="valid"``) and keeps every
s-th output with ``MaxPooling2D(pool_size=1, strides=s)`` (a one-cell max is the cell itself).

Masking by lengths. A graph input read as sequence lengths (int, shape () per example) becomes
the boolean step mask ``keras.ops.less(arange(T), lengths[:, None])`` (N, T), passed explicitly:
``mask=`` to the recurrent layer (``zero_output_for_mask=return_sequences``: padded steps keep
the state and output 0, the final state is after step length - 1; the backward direction of
``Bidirectional`` reverses the mask with the sequence, so it runs over the real steps only) and to
``GlobalAveragePooling1D``; ``attention_mask`` (N, Tq, Tk) = the key mask repeated over queries to
``MultiHeadAttention``. Keras propagates a layer's output mask to the layers downstream (an LSTM
downstream would then skip steps the canonical graph runs over): a masked recurrent layer's output
is therefore passed through ``keras.ops.copy``, an operation, which carries no mask.

What Keras cannot express is a ``BackendUnavailable`` naming the node and op, raised before
anything is built or written: an op declared with ``refuses`` (InstanceNorm2D, with the
reason), a BatchNorm with ``running_var="unbiased"``, a Conv2DTranspose with both
``strides > 1`` and ``dilation > 1`` (Keras' ``Conv2DTranspose`` refuses the pair, and a strided
scatter has no stride-1 rewrite in Keras layers; a dilated one at stride 1 is exported and runs
on all three backends), a graph with several outputs, a float64 program, an LSTM or SimpleRNN
with ``recurrent_bias=True`` (Keras's have one bias), a GRU whose bias count is not Keras's for
its form (two reset-after, one reset-before).

Before writing, the built model's ``predict`` on ``example`` is compared with the program's own
float32 forward (normwise 1e-4): a mismatch is a bug here, raised rather than saved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rosetta.ops.registry import LoweringTable
from rosetta.errors import BackendUnavailable

MODEL_FILE = "model.keras"
F32_LOWEST = float(np.finfo(np.float32).min)

# canonical fused activation -> Keras activation identifier (None: not a string in Keras)
_FUSED = {"identity": "linear", "relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid",
          "silu": "silu", "relu6": "relu6", "hard_sigmoid": "hard_sigmoid", "gelu_exact": "gelu", "gelu_tanh": None, "softmax": "softmax"}

LOWERINGS = LoweringTable("the keras export")


def keras_dtype(kind: str) -> str:
    """The export's dtype of a tensor kind: float32 for float, int32 for int."""
    return "float32" if kind == "float" else "int32"
# op -> why no model of Keras built-in layers can hold it (refused by check_exportable)
REFUSED: dict[str, str] = {}


def refuses(op: str, reason: str) -> None:
    """Declare an op the Keras export cannot express, with the reason ``check_exportable`` gives
    (an approximation is never exported instead)."""
    if op in LOWERINGS or op in REFUSED:
        raise ValueError(f"the keras export already declares op {op!r}")
    REFUSED[op] = reason


def lowers(*ops: str):
    """Decorator: register ``lower(builder, node, xs) -> KerasTensor`` as the Keras lowering of
    ``ops`` (a ``_Builder`` method, or a function taking the builder first: a user's op registers
    the same way). An op without one is refused by ``check_exportable``, naming it::

        @lowers("HardSwish")
        def hard_swish(b, node, xs):
            return b.k.layers.Activation("hard_swish", name=node.name)(xs[0])
    """
    return LOWERINGS.register(ops)


refuses("InstanceNorm2D", "Keras has no built-in layer that normalises each example in training "
        "and with running statistics in inference (GroupNormalization keeps none, "
        "BatchNormalization trains on batch statistics)")


def check_exportable(program) -> None:
    """``BackendUnavailable`` for what a Keras model of Keras layers cannot hold (see the module
    docstring), naming the node and op; nothing is imported or written."""
    graph = program.graph
    if program.dtype != "float32":
        raise BackendUnavailable(
            f"{graph.name}: the keras export is float32 only (Keras 3 does not compute "
            f"{program.dtype} on every backend); export with dtype='float32'")
    if len(graph.outputs) != 1:
        raise BackendUnavailable(f"{graph.name}: the keras export serves one output 'y'; this "
                                 f"graph has {len(graph.outputs)} ({', '.join(graph.outputs)})")
    for n in graph.nodes:
        where = f"{graph.name}/{n.name} ({n.op})"
        if n.op in REFUSED:
            raise BackendUnavailable(f"{where}: the keras export refuses op {n.op}: "
                                     f"{REFUSED[n.op]}")
        if n.op not in LOWERINGS:
            raise BackendUnavailable(f"{where}: no Keras layer expresses op {n.op}")
        if n.op == "BatchNorm" and n.attrs["running_var"] == "unbiased":
            raise BackendUnavailable(
                f"{where}: Keras's BatchNormalization stores the biased batch variance in "
                f"training, not running_var='unbiased' (a fit of the export would drift from "
                f"the spec); export another format (torch, onnx, savedmodel, jax)")
        if (n.op == "Conv2DTranspose" and max(n.attrs["strides"]) > 1
                and max(n.attrs["dilation"]) > 1):
            raise BackendUnavailable(
                f"{where}: Keras' Conv2DTranspose refuses strides > 1 with dilation_rate > 1 "
                f"(strides {n.attrs['strides']}, dilation {n.attrs['dilation']}), and no other "
                f"Keras layer scatters with both")
        if n.op == "GRU" and n.attrs["recurrent_bias"] != n.attrs["reset_after"]:
            raise BackendUnavailable(
                f"{where}: Keras's GRU(reset_after={n.attrs['reset_after']}) has "
                f"{'two biases' if n.attrs['reset_after'] else 'one bias'}, not "
                f"recurrent_bias={n.attrs['recurrent_bias']}; export another format (torch, "
                f"onnx, savedmodel, jax)")
        if n.op in ("LSTM", "SimpleRNN") and n.attrs.get("recurrent_bias"):
            raise BackendUnavailable(
                f"{where}: Keras's {n.op} has one bias, not recurrent_bias=True's second "
                f"trainable one (summed into one, a fit would move it half as far); export "
                f"another format (torch, onnx, savedmodel, jax)")


def export_keras(program, out, *, example) -> list[str]:
    """Write ``out/model.keras`` for the float32 ``program``; returns ``["model.keras"]``.

    ``example``: {input name: array} (batch first; float32, int64), used to check the built
    model against ``program.forward`` before anything is written."""
    check_exportable(program)
    import keras  # lazily: KERAS_BACKEND may be tensorflow (default), jax or torch

    params = {k: np.asarray(v, np.float32) for k, v in program.export_params().items()}
    state = {k: np.asarray(v, np.float32) for k, v in program.export_state().items()}
    model = build_model(keras, program.graph, params, state)
    if example is not None:
        _self_check(model, program, example)
    path = Path(out) / MODEL_FILE
    model.save(path)
    return [MODEL_FILE]


def _self_check(model, program, example) -> None:
    inputs = model_inputs(model, example)
    got = np.asarray(model.predict(inputs, verbose=0), np.float64)
    want = np.asarray(program.forward(example, training=False), np.float64)
    err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)
    if got.shape != want.shape or not err <= 1e-4:
        raise RuntimeError(f"{program.graph.name}: the Keras model disagrees with the program "
                           f"(shape {got.shape} vs {want.shape}, normwise error {err:.2e}); "
                           f"nothing was written (a bug in rosetta.backends.keras)")


def model_inputs(model, arrays: dict) -> list:
    """``arrays`` by name as the list ``model`` takes (its input order), each cast to the
    Keras input's dtype (int64 ids -> int32)."""
    return [np.asarray(arrays[t.name], dtype=t.dtype) for t in model.inputs]


# ----------------------------------------------------------------------------------------------
class _Builder:
    """Builds the functional graph node by node (``build_model``)."""

    def __init__(self, keras, graph, params, state):
        self.k = keras
        self.ops = keras.ops
        self.graph = graph
        self.params = params
        self.state = state
        self.names = {i.name for i in graph.inputs} | {n.name for n in graph.nodes}
        self.masks = {}
        self.first = None      # the first graph input's Keras tensor (set by build_model)
        self.columns = {}

    # -- helpers -------------------------------------------------------------------------------
    def name(self, base: str) -> str:
        """A layer name not used by any graph node or input (helpers are named after their
        node)."""
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def op(self, base: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, a ``keras.ops`` function of KerasTensors, with its operation
        renamed ``base`` (made unique): Keras auto-names operations after the function
        ("expand_dims", "copy"), which could clash with a graph node's layer of that name
        ("All operation names should be unique")."""
        y = fn(*args, **kwargs)
        y._keras_history.operation.name = self.name(base)
        return y

    def set(self, layer, node, weights: list) -> None:
        got = [tuple(w.shape) for w in layer.weights]
        want = [tuple(w.shape) for w in weights]
        if got != want:
            raise RuntimeError(f"{node.name} ({node.op}): Keras layer {layer.name} holds "
                               f"weights {got}, the canonical parameters give {want}")
        layer.set_weights(weights)

    def p(self, node, key):
        return self.params[f"{node.name}/{key}"]

    def step_mask(self, lengths_name, lengths, t: int):
        """The (N, T) boolean mask t < lengths of a lengths input (one per input and T)."""
        key = (lengths_name, t)
        if key not in self.masks:
            ops = self.ops
            column = self.op(f"{lengths_name}_column", ops.expand_dims, lengths, -1)
            self.masks[key] = self.op(f"{lengths_name}_mask{t}", ops.less,
                                      ops.arange(t, dtype="int32"), column)
        return self.masks[key]

    def padding_row(self, node, y, ids, trailing: int):
        """``padding_idx`` p: the outputs read at ids == p pass ``ops.stop_gradient`` (a
        ``where``: the forward is the lookup itself), so row p gets no gradient from them, as the
        spec's (Keras's ``mask_zero`` masks later layers instead and still trains row 0)."""
        ops = self.ops
        at = self.op(f"{node.name}_at_pad", ops.equal, ids, node.attrs["padding_idx"])
        at = self.op(f"{node.name}_at_pad_axes", ops.reshape, at,
                     (-1, *node.in_types[-1].shape, *(1,) * trailing))
        return self.op(f"{node.name}_padding_row", ops.where, at,
                       self.op(f"{node.name}_frozen", ops.stop_gradient, y), y)

    def column(self, shared: bool):
        """The first graph input's first element per example, (N, 1), or of its first example,
        (1, 1) (``shared``): a tensor of the functional graph with the run's batch or the shared
        batch of 1, for ``ones_like``/``zeros_like`` (its values are never read)."""
        if shared not in self.columns:
            ops, spec = self.ops, self.graph.inputs[0]
            if False not in self.columns:
                flat = self.op("batch_flat", ops.reshape, self.first,
                               (-1, int(np.prod(spec.shape))))
                self.columns[False] = self.op("batch_column", ops.take, flat,
                                              np.zeros(1, "int32"), axis=1)
            if shared:
                self.columns[True] = self.op("shared_row", ops.take, self.columns[False],
                                             np.zeros(1, "int32"), axis=0)
        return self.columns[shared]

    def ones(self, node, kind: str, rank: int, shared: bool):
        """Ones of shape (1 or N, 1, ..., 1) (``rank`` per-example axes), float32 or int32."""
        ops = self.ops
        one = self.op(f"{node.name}_one", ops.ones_like, self.column(shared),
                      dtype=keras_dtype(kind))
        return self.op(f"{node.name}_ones", ops.reshape, one, (-1, *(1,) * rank))

    def activation(self, x, fused: str, node_name: str):
        """The fused activation Keras has no identifier for, after a linear layer: gelu_tanh."""
        assert fused == "gelu_tanh", fused
        return self.op(f"{node_name}_gelu", self.ops.gelu, x, approximate=True)

    def fused(self, node):
        """(Keras activation identifier for the layer, post-activation or None)."""
        act = node.attrs["activation"]
        ident = _FUSED[act]
        return ("linear", act) if ident is None else (ident, None)

    def padded(self, x, node, pads, rank: int):
        """x zero-padded by ``pads`` (one (lo, hi) per spatial axis) with a ZeroPadding layer."""
        if all(lo == 0 and hi == 0 for lo, hi in pads):
            return x
        layer = (self.k.layers.ZeroPadding1D(pads[0], name=self.name(f"{node.name}_pad"))
                 if rank == 1 else
                 self.k.layers.ZeroPadding2D(tuple(pads), name=self.name(f"{node.name}_pad")))
        return layer(x)

    def window_padding(self, node, sizes, kernel, strides, dilation, rank):
        """('same' | 'valid', explicit pads or None): the Keras padding of a window op."""
        from rosetta.ops.windows import resolve_padding

        pad = node.attrs["padding"]
        if pad in ("same", "valid"):
            return pad, None
        pads = tuple(tuple(p) for p in pad)
        same = tuple(resolve_padding(sizes[ax], kernel[ax], strides[ax], dilation[ax], "same",
                                     ax)[1] for ax in range(rank))
        if pads == same:
            return "same", None
        if all(p == (0, 0) for p in pads):
            return "valid", None
        return "valid", pads

    # -- ops -----------------------------------------------------------------------------------
    @lowers("Dense")
    def Dense(self, node, xs):
        a = node.attrs
        ident, post = self.fused(node)
        layer = self.k.layers.Dense(a["units"], activation=ident, use_bias=a["use_bias"],
                                    name=node.name)
        y = layer(xs[0])
        self.set(layer, node, [self.p(node, "kernel")]
                 + ([self.p(node, "bias")] if a["use_bias"] else []))
        return self.activation(y, post, node.name) if post else y

    def _conv(self, node, xs, rank: int, kind: str):
        a = node.attrs
        k = self.k
        x = xs[0]
        sizes = node.in_types[0].shape[:rank]
        strides, dilation = tuple(a["strides"]), tuple(a["dilation"])
        kernel_size = tuple(a["kernel_size"])
        padding, pads = self.window_padding(node, sizes, kernel_size, strides, dilation, rank)
        subsample = None
        if max(strides) > 1 and max(dilation) > 1:
            # Keras refuses strides with dilation: stride 1 on the explicit canonical pads, then
            # every s-th output (a 1-cell max pool with strides s).
            from rosetta.ops.windows import resolve_padding

            if pads is None:
                pads = tuple(resolve_padding(sizes[ax], kernel_size[ax], strides[ax],
                                             dilation[ax], padding, ax)[1]
                             for ax in range(rank))
            padding, subsample, strides = "valid", strides, (1,) * rank
        x = self.padded(x, node, pads, rank) if pads is not None else x
        ident, post = self.fused(node)
        common = dict(kernel_size=kernel_size, strides=strides, padding=padding,
                      dilation_rate=dilation, activation=ident, use_bias=a["use_bias"],
                      name=node.name)
        if kind == "conv":
            cls = k.layers.Conv1D if rank == 1 else k.layers.Conv2D
            layer = cls(a["filters"], groups=a["groups"], **common)
            weights = [self.p(node, "kernel")]
        elif kind == "depthwise":
            layer = k.layers.DepthwiseConv2D(depth_multiplier=a["depth_multiplier"], **common)
            weights = [self.p(node, "kernel")]
        else:  # separable
            layer = k.layers.SeparableConv2D(a["filters"], depth_multiplier=a["depth_multiplier"],
                                             **common)
            weights = [self.p(node, "depthwise_kernel"), self.p(node, "pointwise_kernel")]
        if a["use_bias"]:
            weights.append(self.p(node, "bias"))
        y = layer(x)
        self.set(layer, node, weights)
        if subsample is not None:
            pool = (k.layers.MaxPooling1D(1, strides=subsample[0], name=self.name(
                        f"{node.name}_stride")) if rank == 1 else
                    k.layers.MaxPooling2D((1, 1), strides=subsample,
                                          name=self.name(f"{node.name}_stride")))
            y = pool(y)
        return self.activation(y, post, node.name) if post else y

    @lowers("Conv2D")
    def Conv2D(self, node, xs):
        return self._conv(node, xs, 2, "conv")

    @lowers("Conv1D")
    def Conv1D(self, node, xs):
        return self._conv(node, xs, 1, "conv")

    @lowers("DepthwiseConv2D")
    def DepthwiseConv2D(self, node, xs):
        return self._conv(node, xs, 2, "depthwise")

    @lowers("SeparableConv2D")
    def SeparableConv2D(self, node, xs):
        return self._conv(node, xs, 2, "separable")

    @lowers("Conv2DTranspose")
    def Conv2DTranspose(self, node, xs):
        a = node.attrs
        ident, post = self.fused(node)
        layer = self.k.layers.Conv2DTranspose(
            a["filters"], tuple(a["kernel_size"]), strides=tuple(a["strides"]),
            padding=a["padding"], dilation_rate=tuple(a["dilation"]), activation=ident,
            use_bias=a["use_bias"], name=node.name)
        y = layer(xs[0])
        # canonical (kH, kW, in, out) -> Keras (kH, kW, out, in)
        weights = [np.ascontiguousarray(np.swapaxes(self.p(node, "kernel"), 2, 3))]
        if a["use_bias"]:
            weights.append(self.p(node, "bias"))
        self.set(layer, node, weights)
        return self.activation(y, post, node.name) if post else y

    def _pool(self, node, xs, rank: int, mode: str):
        a = node.attrs
        k, ops = self.k, self.ops
        x = xs[0]
        sizes = node.in_types[0].shape[:rank]
        pool_size, strides = tuple(a["kernel_size"]), tuple(a["strides"])
        padding, pads = self.window_padding(node, sizes, pool_size, strides, (1,) * rank, rank)
        if mode == "avg" and padding == "same":
            # Keras' torch backend pads an asymmetric 'same' average pool with replicated edge
            # values and counts them: only symmetric 'same' pads are left to Keras
            from rosetta.ops.windows import resolve_padding

            same = [resolve_padding(sizes[ax], pool_size[ax], strides[ax], 1, "same", ax)[1]
                    for ax in range(rank)]
            if any(lo != hi for lo, hi in same):
                padding, pads = "valid", tuple(same)
        if rank == 1:
            cls = k.layers.MaxPooling1D if mode == "max" else k.layers.AveragePooling1D
            pool_size, strides = pool_size[0], strides[0]
        else:
            cls = k.layers.MaxPooling2D if mode == "max" else k.layers.AveragePooling2D
        if pads is None:
            return cls(pool_size, strides=strides, padding=padding, name=node.name)(x)
        full = ((0, 0), *pads, (0, 0))
        if mode == "max":
            # padded cells hold the float32 lowest value: never the maximum of a window that
            # holds a real cell (pads < window)
            xp = self.op(f"{node.name}_pad", ops.pad, x, full, constant_values=F32_LOWEST)
            return cls(pool_size, strides=strides, padding="valid", name=node.name)(xp)
        # average over real cells only: avg(zero-padded x) / avg(zero-padded ones)
        total = cls(pool_size, strides=strides, padding="valid", name=node.name)(
            self.padded(x, node, pads, rank))
        ones = self.padded(self.op(f"{node.name}_ones", ops.ones_like, x), node, pads, rank)
        count = cls(pool_size, strides=strides, padding="valid",
                    name=self.name(f"{node.name}_count"))(ones)
        return self.op(f"{node.name}_real", ops.divide, total, count)

    @lowers("MaxPool2D")
    def MaxPool2D(self, node, xs):
        return self._pool(node, xs, 2, "max")

    @lowers("AvgPool2D")
    def AvgPool2D(self, node, xs):
        return self._pool(node, xs, 2, "avg")

    @lowers("MaxPool1D")
    def MaxPool1D(self, node, xs):
        return self._pool(node, xs, 1, "max")

    @lowers("AvgPool1D")
    def AvgPool1D(self, node, xs):
        return self._pool(node, xs, 1, "avg")

    @lowers("GlobalAvgPool2D")
    def GlobalAvgPool2D(self, node, xs):
        return self.k.layers.GlobalAveragePooling2D(name=node.name)(xs[0])

    @lowers("GlobalMaxPool2D")
    def GlobalMaxPool2D(self, node, xs):
        return self.k.layers.GlobalMaxPooling2D(name=node.name)(xs[0])

    @lowers("BatchNorm")
    def BatchNorm(self, node, xs):
        a = node.attrs
        layer = self.k.layers.BatchNormalization(axis=-1, momentum=a["momentum"],
                                                 epsilon=a["epsilon"], name=node.name)
        y = layer(xs[0])
        s = lambda key: self.state[f"{node.name}/{key}"]  # noqa: E731
        self.set(layer, node, [self.p(node, "scale"), self.p(node, "bias"), s("mean"), s("var")])
        return y

    @lowers("LayerNorm")
    def LayerNorm(self, node, xs):
        layer = self.k.layers.LayerNormalization(axis=-1, epsilon=node.attrs["epsilon"],
                                                 name=node.name)
        y = layer(xs[0])
        self.set(layer, node, [self.p(node, "scale"), self.p(node, "bias")])
        return y

    @lowers("RMSNorm")
    def RMSNorm(self, node, xs):
        layer = self.k.layers.RMSNormalization(axis=-1, epsilon=node.attrs["epsilon"],
                                               name=node.name)
        y = layer(xs[0])
        self.set(layer, node, [self.p(node, "scale")])
        return y

    @lowers("GroupNorm")
    def GroupNorm(self, node, xs):
        a = node.attrs
        layer = self.k.layers.GroupNormalization(groups=a["groups"], axis=-1,
                                                 epsilon=a["epsilon"], name=node.name)
        y = layer(xs[0])
        self.set(layer, node, [self.p(node, "scale"), self.p(node, "bias")])
        return y

    @lowers("Dropout")
    def Dropout(self, node, xs):
        return self.k.layers.Dropout(node.attrs["rate"], name=node.name)(xs[0])

    @lowers("StochasticDepth")
    def StochasticDepth(self, node, xs):
        """Keras's Dropout with its mask broadcast over every axis but the batch (``noise_shape``
        (None, 1, ..., 1)): one keep draw per example, inverted scaling."""
        rank = len(node.out_type.shape)
        return self.k.layers.Dropout(node.attrs["rate"], noise_shape=(None,) + (1,) * rank,
                                     name=node.name)(xs[0])

    @lowers("Activation")
    def Activation(self, node, xs):
        a = node.attrs
        k = self.k
        fn = a["fn"]
        if fn == "leaky_relu":
            return k.layers.LeakyReLU(negative_slope=a["slope"], name=node.name)(xs[0])
        if fn == "softmax":
            axis = a["axis"] + 1 if a["axis"] >= 0 else a["axis"]
            return k.layers.Softmax(axis=axis, name=node.name)(xs[0])
        if fn == "gelu" and a["approximate"] == "tanh":
            return self.op(node.name, self.ops.gelu, xs[0], approximate=True)
        ident = {"identity": "linear", "gelu": "gelu"}.get(fn, fn)
        return k.layers.Activation(ident, name=node.name)(xs[0])

    @lowers("Softmax")
    def Softmax(self, node, xs):
        """The Softmax op: the same Keras layer as Activation('softmax', axis)."""
        ax = node.attrs["axis"]
        return self.k.layers.Softmax(axis=ax + 1 if ax >= 0 else ax, name=node.name)(xs[0])

    @lowers("HardSwish")
    def HardSwish(self, node, xs):
        return self.k.layers.Activation("hard_silu", name=node.name)(xs[0])

    @lowers("Embedding")
    def Embedding(self, node, xs):
        a = node.attrs
        layer = self.k.layers.Embedding(a["vocab_size"], a["dim"], name=node.name)
        y = layer(xs[0])
        self.set(layer, node, [self.p(node, "embedding")])
        if a["padding_idx"] is not None:
            y = self.padding_row(node, y, xs[0], 1)
        return y

    @lowers("Flatten")
    def Flatten(self, node, xs):
        return self.k.layers.Flatten(name=node.name)(xs[0])

    @lowers("Reshape")
    def Reshape(self, node, xs):
        return self.k.layers.Reshape(tuple(node.attrs["shape"]), name=node.name)(xs[0])

    @lowers("Add")
    def Add(self, node, xs):
        if node.attrs["constant"] is not None:
            return _binary_op(self, node, xs)
        return self.k.layers.Add(name=node.name)(list(xs))

    @lowers("Multiply")
    def Multiply(self, node, xs):
        if node.attrs["constant"] is not None:
            return _binary_op(self, node, xs)
        return self.k.layers.Multiply(name=node.name)(list(xs))

    @lowers("Concatenate")
    def Concatenate(self, node, xs):
        ax = node.attrs["axis"]
        return self.k.layers.Concatenate(axis=ax + 1 if ax >= 0 else ax,
                                         name=node.name)(list(xs))

    @lowers("ZeroPadding2D")
    def ZeroPadding2D(self, node, xs):
        pads = tuple(tuple(p) for p in node.attrs["padding"])
        return self.k.layers.ZeroPadding2D(pads, name=node.name)(xs[0])

    @lowers("UpSampling2D")
    def UpSampling2D(self, node, xs):
        return self.k.layers.UpSampling2D(tuple(node.attrs["size"]), interpolation="nearest",
                                          name=node.name)(xs[0])

    # -- tensor-level shape and indexing ops ----------------------------------------------------
    @lowers("Transpose")
    def Transpose(self, node, xs):
        from rosetta.ops.shape import positive_axis
        rank = len(node.in_types[0].shape)
        dims = tuple(positive_axis(p, rank) + 1 for p in node.attrs["perm"])
        return self.k.layers.Permute(dims, name=node.name)(xs[0])

    @lowers("Squeeze", "Unsqueeze")
    def SqueezeUnsqueeze(self, node, xs):
        """Only size-1 axes dropped or inserted: a Reshape layer to the inferred shape."""
        return self.k.layers.Reshape(tuple(node.out_type.shape), name=node.name)(xs[0])

    @lowers("Pad")
    def Pad(self, node, xs):
        x, value = xs[0], node.attrs["value"]
        value = value if node.in_types[0].kind == "float" else int(value)
        pads = [[0, 0], *([lo, hi] for lo, hi in node.attrs["pads"])]
        return self.op(node.name, self.ops.pad, x, pads, constant_values=value)

    @lowers("Cast")
    def Cast(self, node, xs):
        """keras.ops.cast: to int32 (every Keras backend's cast truncates toward zero) or to
        float32 (the export's dtype)."""
        if node.attrs["to"] == node.in_types[0].kind:
            return xs[0]
        dtype = keras_dtype(node.attrs["to"])
        return self.op(node.name, self.ops.cast, xs[0], dtype)

    @lowers("Slice")
    def Slice(self, node, xs):
        """keras.ops.take of the (static) positions range(start, stop, step), axis by axis."""
        from rosetta.ops import REGISTRY
        from rosetta.ops.indexing import slice_bounds
        shape = node.in_types[0].shape
        x = xs[0]
        for ax, b in slice_bounds(REGISTRY["Slice"], node.attrs, shape, node.name).items():
            if b == (0, shape[ax], 1):
                continue
            x = self.op(node.name, self.ops.take, x, np.arange(*b, dtype="int32"), axis=ax + 1)
        return x

    # -- tensors shared by the batch (module docstring) -----------------------------------------
    @lowers("Parameter")
    def Parameter(self, node, xs):
        shape = tuple(node.attrs["shape"])
        size = int(np.prod(shape))
        ids = self.op(f"{node.name}_id", self.ops.zeros_like, self.column(True), dtype="int32")
        layer = self.k.layers.Embedding(1, size, name=node.name)
        y = layer(ids)
        self.set(layer, node, [self.p(node, "value").reshape(1, size)])
        return self.op(f"{node.name}_shape", self.ops.reshape, y, (1, *shape))

    @lowers("Constant")
    def Constant(self, node, xs):
        value = np.asarray(node.attrs["value"])
        kind = node.out_type.kind
        with np.errstate(over="ignore"):   # beyond float32's range: +-inf, as the program's cast
            value = value.astype(keras_dtype(kind))
        ones = self.ones(node, kind, value.ndim, shared=True)
        return self.op(node.name, self.ops.multiply, ones, value[None])

    @lowers("Expand")
    def Expand(self, node, xs):
        src, target = node.in_types[0], tuple(node.out_type.shape)
        x, ops = xs[0], self.ops
        lead = len(target) - len(src.shape)
        if lead:
            x = self.op(f"{node.name}_axes", ops.reshape, x, (-1, *(1,) * lead, *src.shape))
        full = np.ones((1, *target), keras_dtype(src.kind))
        if src.batch_broadcast:     # ones of the run's batch and the target shape
            full = self.op(f"{node.name}_target", ops.multiply,
                           self.ones(node, src.kind, len(target), shared=False), full)
        elif tuple(src.shape) == target:
            return x
        return self.op(node.name, ops.multiply, x, full)

    @lowers("Gather")
    def Gather(self, node, xs):
        """Constant indices: keras.ops.take on the axis. Indices as input: negative ones wrapped,
        then y[n, a, m, b] = sum_k onehot(idx[n, m])[k] * x[n, a, k, b] (keras.ops.einsum: one
        non-zero term per sum, so exact for finite x; an index out of range, which only a
        computed index can be, gives zeros). A side shared by the batch (a Parameter or Constant
        table, Constant indices) drops its batch axis from the einsum: x[a, k, b], idx[m]."""
        from rosetta.ops import REGISTRY
        from rosetta.ops.indexing import constant_indices
        from rosetta.ops.shape import positive_axis
        a, shape = node.attrs, node.in_types[0].shape
        axis = positive_axis(a["axis"], len(shape))
        size, ops = shape[axis], self.ops
        out = tuple(node.out_type.shape)
        if a["indices"] is not None:
            idx = constant_indices(REGISTRY["Gather"], a, size, node.name).astype("int32")
            return self.op(node.name, ops.take, xs[0], idx, axis=axis + 1)
        pa, pb = int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1:]))
        m = int(np.prod(node.in_types[1].shape))
        idx = self.op(f"{node.name}_flat", ops.reshape, xs[1], (-1, m))
        negative = self.op(f"{node.name}_negative", ops.less, idx, 0)
        wrapped = self.op(f"{node.name}_plus_size", ops.add, idx, size)
        idx = self.op(f"{node.name}_wrap", ops.where, negative, wrapped, idx)
        hot = self.op(f"{node.name}_onehot", ops.one_hot, idx, size, dtype="float32")
        # a side shared by the batch (size-1 batch axis) loses it: einsum does not broadcast
        shared_x, shared_i = (t.batch_broadcast for t in node.in_types[:2])
        if shared_x and not shared_i:
            x, xe = self.op(f"{node.name}_view", ops.reshape, xs[0], (pa, size, pb)), "akb"
        else:
            x, xe = self.op(f"{node.name}_view", ops.reshape, xs[0], (-1, pa, size, pb)), "nakb"
        if shared_i and not shared_x:
            hot, he = self.op(f"{node.name}_hot", ops.reshape, hot, (m, size)), "mk"
        else:
            he = "nmk"
        y = self.op(f"{node.name}_take", ops.einsum, f"{xe},{he}->namb", x, hot)
        y = self.op(node.name, ops.reshape, y, (-1, *out))
        if a["padding_idx"] is not None:   # axis 0: the table's other axes trail the ids'
            y = self.padding_row(node, y, idx, len(shape) - 1)
        return y

    def _recurrent(self, node, xs):
        a = node.attrs
        k = self.k
        h = a["units"]
        seq = a["return_sequences"]
        mask = None
        if len(xs) > 1:
            mask = self.step_mask(node.inputs[1], xs[1], node.in_types[0].shape[0])

        def cell(name=None):
            common = dict(return_sequences=seq, zero_output_for_mask=seq, name=name)
            if node.op == "LSTM":
                return k.layers.LSTM(h, activation="tanh", recurrent_activation="sigmoid",
                                     **common)
            if node.op == "GRU":
                return k.layers.GRU(h, activation="tanh", recurrent_activation="sigmoid",
                                    reset_after=a["reset_after"], **common)
            return k.layers.SimpleRNN(h, activation=a["activation"], **common)

        def weights(prefix: str):
            p = lambda key: self.p(node, prefix + key)  # noqa: E731
            if node.op != "GRU":
                return [p("kernel"), p("recurrent_kernel"), p("bias")]
            # canonical gate blocks [r, z, n] -> Keras [z, r, h]
            perm = lambda w: np.concatenate(  # noqa: E731
                [w[..., h:2 * h], w[..., :h], w[..., 2 * h:]], axis=-1)
            if not a["reset_after"]:   # one bias (3H)
                return [perm(p("kernel")), perm(p("recurrent_kernel")), perm(p("bias"))]
            return [perm(p("kernel")), perm(p("recurrent_kernel")),
                    np.stack([perm(p("bias")), perm(p("recurrent_bias"))])]

        if a["bidirectional"]:
            layer = k.layers.Bidirectional(cell(), merge_mode="concat", name=node.name)
            w = weights("") + weights("backward_")
        else:
            layer = cell(node.name)
            w = weights("")
        y = layer(xs[0], mask=mask) if mask is not None else layer(xs[0])
        self.set(layer, node, w)
        if mask is not None and seq:
            # drop the Keras mask: downstream nodes see plain tensors
            y = self.op(f"{node.name}_unmasked", self.ops.copy, y)
        return y

    lowers("LSTM", "GRU", "SimpleRNN")(_recurrent)

    @lowers("MultiHeadAttention")
    def MultiHeadAttention(self, node, xs):
        a = node.attrs
        out_dim = node.out_type.shape[-1]
        layer = self.k.layers.MultiHeadAttention(
            num_heads=a["heads"], key_dim=a["head_dim"], value_dim=a["head_dim"],
            dropout=a["dropout"], use_bias=a["use_bias"], output_shape=out_dim, name=node.name)
        kwargs = {}
        if len(xs) > 2:
            tq, tk = node.in_types[0].shape[0], node.in_types[1].shape[0]
            key_mask = self.step_mask(node.inputs[2], xs[2], tk)          # (N, Tk)
            rows = self.op(f"{node.name}_key_mask", self.ops.expand_dims, key_mask, 1)
            kwargs["attention_mask"] = self.op(f"{node.name}_mask", self.ops.repeat, rows, tq,
                                               axis=1)                    # (N, Tq, Tk)
        if a["causal"]:
            kwargs["use_causal_mask"] = True
        y = layer(xs[0], xs[1], **kwargs)
        names = ["query", "key", "value", "output"]
        w = []
        for n in names:
            w.append(self.p(node, f"{n}_kernel"))
            if a["use_bias"]:
                w.append(self.p(node, f"{n}_bias"))
        self.set(layer, node, w)
        return y

    @lowers("PositionEmbedding")
    def PositionEmbedding(self, node, xs):
        ops = self.ops
        x = xs[0]
        # positions 0..T-1 per example, from x itself (batch axis symbolic)
        n = node.name
        steps = self.op(f"{n}_steps", lambda: x[:, :, 0])
        ones = self.op(f"{n}_ones", ops.ones_like, steps, dtype="int32")
        positions = self.op(f"{n}_positions", ops.subtract,
                            self.op(f"{n}_count", ops.cumsum, ones, axis=1), 1)
        layer = self.k.layers.Embedding(node.attrs["max_length"], node.in_types[0].shape[-1],
                                        name=self.name(f"{node.name}_table"))
        table = layer(positions)
        self.set(layer, node, [self.p(node, "embedding")])
        return self.k.layers.Add(name=node.name)([x, table])

    @lowers("SequencePool")
    def SequencePool(self, node, xs):
        k, ops = self.k, self.ops
        x = xs[0]
        mask = None
        if len(xs) > 1:
            mask = self.step_mask(node.inputs[1], xs[1], node.in_types[0].shape[0])
        if node.attrs["mode"] == "mean":
            layer = k.layers.GlobalAveragePooling1D(name=node.name)
            return layer(x, mask=mask) if mask is not None else layer(x)
        if mask is not None:
            column = self.op(f"{node.name}_mask", ops.expand_dims, mask, -1)
            x = self.op(f"{node.name}_real", ops.where, column, x, F32_LOWEST)
        return k.layers.GlobalMaxPooling1D(name=node.name)(x)



# --- the tensor-math ops as keras.ops operations (float32; int kind int32) ---------------------
_BINARY = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Divide": "divide",
           "Power": "power", "Maximum": "maximum", "Minimum": "minimum", "Equal": "equal",
           "Less": "less", "Greater": "greater"}
_UNARY = {"neg": "negative", "abs": "absolute", "sqrt": "sqrt", "rsqrt": "rsqrt", "exp": "exp",
          "log": "log", "erf": "erf", "reciprocal": "reciprocal", "square": "square",
          "tanh": "tanh", "sigmoid": "sigmoid", "sin": "sin", "cos": "cos"}


def _batch_axes(axes, rank):
    return tuple((a % rank) + 1 for a in axes)


@lowers("Subtract", "Divide", "Power", "Maximum", "Minimum", "Equal", "Less", "Greater")
def _binary_op(b, node, xs):
    """keras.ops.<op> folded left to right (NumPy broadcasting of one-rank batched inputs), or
    with the scalar constant (reverse: c op x); comparisons cast to int32, the export's int."""
    ops, a = b.ops, node.attrs
    fn = getattr(ops, _BINARY[node.op])
    if a["constant"] is not None:
        c = int(a["constant"]) if node.in_types[0].kind == "int" else a["constant"]
        y = b.op(f"{node.name}_op", lambda: fn(c, xs[0]) if a["reverse"] else fn(xs[0], c))
    else:
        y = xs[0]
        for i, x in enumerate(xs[1:]):
            y = b.op(f"{node.name}_op{i}", fn, y, x)
    if node.op in ("Equal", "Less", "Greater"):
        y = b.op(f"{node.name}_int", ops.cast, y, "int32")
    return y


@lowers("Where")
def _where(b, node, xs):
    """keras.ops.where(cond != 0, x, y); a scalar side (-inf included) is a Python float."""
    ops, a = b.ops, node.attrs
    cond = b.op(f"{node.name}_cond", ops.not_equal, xs[0], 0)
    if a["x"] is not None:
        return b.op(node.name, ops.where, cond, a["x"], xs[1])
    if a["y"] is not None:
        return b.op(node.name, ops.where, cond, xs[1], a["y"])
    return b.op(node.name, ops.where, cond, xs[1], xs[2])


@lowers("Unary")
def _unary(b, node, xs):
    return b.op(node.name, getattr(b.ops, _UNARY[node.attrs["fn"]]), xs[0])


@lowers("Reduce")
def _reduce(b, node, xs):
    """keras.ops sum / mean / max / min over the axes (+1); var written out as
    sum((x - mean)^2) / (n - correction) (keras.ops.var has no correction)."""
    ops, a, x = b.ops, node.attrs, xs[0]
    shape = node.in_types[0].shape
    axes = _batch_axes(a["axes"], len(shape))
    if a["fn"] == "var":
        n = int(np.prod([shape[i - 1] for i in axes]))
        mean = b.op(f"{node.name}_mean", ops.mean, x, axis=axes, keepdims=True)
        d = b.op(f"{node.name}_sq", ops.square, b.op(f"{node.name}_d", ops.subtract, x, mean))
        total = b.op(f"{node.name}_sum", ops.sum, d, axis=axes, keepdims=a["keepdims"])
        return b.op(node.name, ops.divide, total, float(n - a["correction"]))
    return b.op(node.name, getattr(ops, a["fn"]), x, axis=axes, keepdims=a["keepdims"])


@lowers("Cumsum")
def _cumsum(b, node, xs):
    axis = _batch_axes((node.attrs["axis"],), len(node.in_types[0].shape))[0]
    return b.op(node.name, b.ops.cumsum, xs[0], axis=axis)


@lowers("LogSoftmax")
def _log_softmax(b, node, xs):
    axis = _batch_axes((node.attrs["axis"],), len(node.in_types[0].shape))[0]
    return b.op(node.name, b.ops.log_softmax, xs[0], axis=axis)


@lowers("MatMul")
def _matmul(b, node, xs):
    """keras.ops.matmul on batched operands of one rank; a 1-D operand is made a row / column
    (expand_dims) and that axis squeezed after."""
    ops = b.ops
    a, w = xs
    a1, b1 = len(node.in_types[0].shape) == 1, len(node.in_types[1].shape) == 1
    if a1:
        a = b.op(f"{node.name}_row", ops.expand_dims, a, -2)
    if b1:
        w = b.op(f"{node.name}_col", ops.expand_dims, w, -1)
    y = b.op(f"{node.name}_mm", ops.matmul, a, w)
    if b1:
        y = b.op(f"{node.name}_sqc", ops.squeeze, y, -1)
    if a1:
        y = b.op(f"{node.name}_sqr", ops.squeeze, y, -1 if b1 else -2)
    return y

@lowers("DotProductAttention")
def _dot_product_attention(b, node, xs):
    """The spec's math in keras.ops (see the module docstring)."""
    from rosetta.ops.attention import DotProductAttention as Op

    ops, n = b.ops, node.name
    q, k, v = xs[:3]
    qs, ks = node.in_types[0].shape, node.in_types[1].shape
    s = b.op(f"{n}_scores", ops.matmul, q, b.op(f"{n}_kt", ops.swapaxes, k, -1, -2))
    s = b.op(f"{n}_scale", ops.multiply, s, Op.scale(node.attrs, qs[-1]))
    keep = np.tril(np.ones((qs[-2], ks[-2]), bool)) if node.attrs["causal"] else None
    bias = None
    if len(xs) > 3:
        if node.in_types[3].kind == "int":
            m = b.op(f"{n}_keep", ops.not_equal, xs[3], 0)
            keep = m if keep is None else b.op(f"{n}_keep_causal", ops.logical_and, m, keep)
        else:
            bias = xs[3]
    if bias is None and not hasattr(keep, "_keras_history"):   # causal alone, or no mask:
        if keep is not None:                                     # every row keeps key 0
            s = b.op(f"{n}_masked", ops.where, keep, s, float("-inf"))
        w = b.op(f"{n}_softmax", ops.softmax, s, axis=-1)
        return b.op(n, ops.matmul, w, v)
    if keep is None:
        alive = b.op(f"{n}_alive", ops.not_equal, bias, float("-inf"))
    elif bias is None:
        alive = keep
    else:
        alive = b.op(f"{n}_alive", ops.logical_and, keep,
                     b.op(f"{n}_finite", ops.not_equal, bias, float("-inf")))
    dead = b.op(f"{n}_dead", ops.logical_not,
                b.op(f"{n}_any", ops.any, alive, axis=-1, keepdims=True))
    if bias is not None:
        s = b.op(f"{n}_bias", ops.add, s, b.op(f"{n}_bias0", ops.where, dead, 0.0, bias))
    if keep is not None:
        s = b.op(f"{n}_masked", ops.where, b.op(f"{n}_kept", ops.logical_or, keep, dead), s,
                 float("-inf"))
    w = b.op(f"{n}_softmax", ops.softmax, s, axis=-1)
    w = b.op(f"{n}_weights", ops.where, dead, 0.0, w)
    return b.op(n, ops.matmul, w, v)


def build_model(keras, graph, params: dict, state: dict):
    """The functional ``keras.Model`` of ``graph`` (see the module docstring) with the canonical
    float32 ``params`` and ``state`` set."""
    b = _Builder(keras, graph, params, state)
    values = {}
    inputs = []
    for i in graph.inputs:
        t = keras.Input(shape=tuple(i.shape), dtype=keras_dtype(i.kind), name=i.name)
        values[i.name] = t
        inputs.append(t)
    b.first = inputs[0]
    for n in graph.nodes:
        values[n.name] = LOWERINGS[n.op](b, n, [values[s] for s in n.inputs])
    return keras.Model(inputs, values[graph.outputs[0]], name=graph.name)


def refusals_markdown() -> str:
    """The ops the keras export refuses, with each reason (docs/hooks/capabilities.py): those
    declared with ``refuses`` and any registered op with no Keras lowering at all."""
    from rosetta.ops.registry import REGISTRY

    rows = ["| op | why the keras export refuses it |", "|---|---|"]
    rows += [f"| {op} | {why.replace('|', '/')} |" for op, why in sorted(REFUSED.items())]
    rows += [f"| {op} | no Keras lowering is registered |" for op in sorted(REGISTRY)
             if op not in LOWERINGS and op not in REFUSED]
    return "\n".join(rows)
