"""Hand-written native baselines: what an experienced user of each framework writes by hand for
the zoo's models, to time rosetta's lowered step against (``rosetta bench``'s ``native_step_ms``
and ``overhead_ratio``).

The modules ``torch_native``, ``tensorflow_native`` and ``jax_native`` import their own
framework and nothing of rosetta: no spec, no lowering, no helper (only ``from_pairs`` below,
plain Python). They receive plain values only, the same in all three:

``build(arch, weights, loss, optimizer, *, input_shape, dtype="float32", device="cpu", mode=...)``

* ``arch``: a plain dict describing the architecture; ``arch["model"]`` names the family, one
  builder per family in each framework file (adding a family means one builder per framework):

  - ``"sequential"`` (``linear``, ``mlp``, ``mlp100``, ``mlp784``, ``cnn``, ``lenet``,
    ``tutorial_cnn``): ``layers``, a list of ``{"op": "conv", "name", "kernel": k, "padding":
    "same"|"valid", "relu": bool}`` (stride 1, with bias), ``{"op": "maxpool", "size": s}``
    (stride s, valid), ``{"op": "flatten"}`` and ``{"op": "dense", "name", "relu": bool}``;
  - ``"resnet"`` (``resnet``, ``resnet_digits``): ``stem`` ``{"conv", "bn"}`` (node names),
    ``blocks`` ``[{"conv1", "bn1", "conv2", "bn2", "proj_conv", "proj_bn" (None: identity
    shortcut), "stride"}]``, ``head`` (the Dense), ``momentum`` (the old running value's weight)
    and ``epsilon`` of every BatchNorm. conv - BN - ReLU; convs without bias, padding 'same' with
    TensorFlow's rule (at stride 2 the extra row and column go bottom / right);
    y = relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)); global mean pool; Dense;
  - ``"recurrent"`` (``lstm``, ``gru``): ``cell`` "lstm" (gates i, f, g, o, one bias) or "gru"
    (reset-after, gates r, z, n, input and recurrent biases), ``embed``, ``rnn``, ``head``
    (node names), ``units``: embedding, the cell over the tokens, the state after each
    example's ``length`` steps, Dense;
  - ``"transformer"`` (``transformer``, ``gpt``): ``embed``, ``pos`` (learned positions),
    ``blocks`` ``[{"ln1", "attn", "ln2", "ff1", "ff2"}]`` (pre-norm:
    h = x + Att(LN1 x); y = h + FF2(gelu_exact(FF1(LN2 h)))), ``heads``, ``head_dim``
    (heads x head_dim = width), ``causal``, ``epsilon`` (every LayerNorm), ``final_norm``,
    ``pool`` ("mean" over the real tokens, or None: per-token outputs), ``head``,
    ``lengths`` (bool: a key-padding mask from the lengths).

* ``weights``: ``{canonical path: NumPy array}``, rosetta's own parameter paths and layouts
  (``"hidden1/kernel"``: Dense kernel (in, out), Conv kernel (kH, kW, in, out), flatten in H, W, C
  order, LSTM ``kernel`` (C, 4H) gate blocks side by side, attention ``query_kernel``
  (E, heads, head_dim)...). Each baseline converts them once to its framework's own layout, as a
  user porting weights does. The first form of this contract (``arch`` "mlp" or "cnn" and a list
  of ``(kernel, bias)`` pairs) is still taken: ``from_pairs`` turns it into this one.
* ``input_shape``: the per-example shape of the first input, channels last (``(64,)``,
  ``(8, 8, 1)``, ``(16,)`` tokens).
* ``loss``: ``"softmax_cross_entropy"`` (integer labels, from logits, mean), ``"mse"`` or
  ``"sequence_cross_entropy"`` (per-token integer labels, the mean over the tokens whose label is
  not -1).
* ``optimizer``: ``{"name": "adam", "lr", "beta1", "beta2", "eps", "weight_decay"}`` (canonical
  Adam, eps added after the bias correction; ``weight_decay`` > 0: AdamW's decoupled decay
  p <- p - lr (step + wd p) on every parameter) or ``{"name": "sgd", "lr", "momentum",
  "nesterov", "weight_decay"}`` (coupled L2 g <- g + wd p on every parameter, lr not folded into
  the momentum). ``lr`` is a number or rosetta's JSON of a warm-up cosine schedule,
  ``{"schedule": "warmup_cosine", "peak", "warmup_steps", "decay_steps", "init", "final"}``,
  lr(t) at the update t = 0, 1, ... (see ``rosetta.schedules.WarmupCosine``).
* ``mode``: torch ``"eager"`` / ``"compile"`` (``torch.compile(model)``), TensorFlow ``"xla"`` /
  ``"function"`` (``tf.function`` with / without ``jit_compile``), JAX ``"jit"``.

It returns a trainer with ``put(x, y)`` (a batch converted and placed on the device once: ``x``
the input array channels last as rosetta's canonical data, or the tuple ``(tokens, lengths)``
when ``arch["lengths"]``; labels int class ids or float targets) and ``step(batch) -> float``
(one update; the loss before it, synchronised with ``.item()``, ``float(tensor)`` or
``float(jax array)``, the same sync as rosetta's ``train_step``).

``keras_native`` (the optional ``--keras`` column) is a script run by path in its own process,
one per Keras backend; it takes the same plain values from a ``.npz`` payload.
"""

FAMILIES = ("sequential", "resnet", "recurrent", "transformer")


def from_pairs(arch, weights, input_shape):
    """The first contract's ``("mlp" | "cnn", [(kernel, bias), ...])`` as ``(arch dict, weights
    dict)``: mlp = [flatten] dense(relu)* dense; cnn = conv3x3 same + relu, maxpool 2,
    conv3x3 same + relu, flatten, dense. A dict ``arch`` is returned as it is."""
    if isinstance(arch, dict):
        return arch, weights
    names = [f"layer{i}" for i in range(len(weights))]
    flat = {}
    for n, (k, b) in zip(names, weights):
        flat[f"{n}/kernel"], flat[f"{n}/bias"] = k, b
    if arch == "cnn":
        layers = [{"op": "conv", "name": names[0], "kernel": 3, "padding": "same", "relu": True},
                  {"op": "maxpool", "size": 2},
                  {"op": "conv", "name": names[1], "kernel": 3, "padding": "same", "relu": True},
                  {"op": "flatten"}, {"op": "dense", "name": names[2], "relu": False}]
    elif arch == "mlp":
        layers = [{"op": "flatten"}] if len(input_shape) > 1 else []
        layers += [{"op": "dense", "name": n, "relu": i < len(names) - 1}
                   for i, n in enumerate(names)]
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    return {"model": "sequential", "layers": layers}, flat
