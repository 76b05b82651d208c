"""Hand-written native baselines: what an experienced user of each framework writes by hand for
the zoo's models, to time rosetta's lowered step against (``rosetta bench``'s ``native_step_ms``
and ``overhead_ratio``).

The modules ``torch_native``, ``tensorflow_native`` and ``jax_native`` import their own
framework and nothing of rosetta: no spec, no lowering, no helper. They receive plain values only,
the same in all three:

``build(arch, weights, loss, optimizer, *, input_shape, dtype="float32", device="cpu", mode=...)``

* ``arch``: ``"mlp"`` (flatten the input, then Dense layers with ReLU between them, none after the
  last: the zoo's ``linear``, ``mlp`` and the benchmark's ``mlp784``) or ``"cnn"`` (the zoo's
  ``cnn``: conv3x3 'same' + ReLU, 2x2 max pool, conv3x3 'same' + ReLU, flatten, Dense);
* ``weights``: the initial ``(kernel, bias)`` NumPy pairs, layer by layer, in rosetta's canonical
  layout (Dense kernel (in, out), Conv kernel (kH, kW, in, out), flatten in H, W, C order); each
  baseline converts them once to its framework's own layout, as a user porting weights does;
* ``input_shape``: the per-example input shape, channels last (``(64,)``, ``(8, 8, 1)``);
* ``loss``: ``"softmax_cross_entropy"`` (integer labels, from logits, mean) or ``"mse"``;
* ``optimizer``: ``{"name": "adam", "lr", "beta1", "beta2", "eps"}`` or
  ``{"name": "sgd", "lr", "momentum", "nesterov"}`` (constant learning rate);
* ``mode``: torch ``"eager"`` / ``"compile"`` (``torch.compile(model)``), TensorFlow ``"xla"`` /
  ``"function"`` (``tf.function`` with / without ``jit_compile``), JAX ``"jit"``.

It returns a trainer with ``put(x, y)`` (a batch converted and placed on the device once: inputs
channels-last as rosetta's canonical data, labels int64 class ids or float targets) and
``step(batch) -> float`` (one update; the loss before it, synchronised with ``.item()``,
``float(tensor)`` or ``float(jax array)``, the same sync as rosetta's ``train_step``).

``keras_native`` (the optional ``--keras`` column) is a script run by path in its own process,
one per Keras backend; it takes the same plain values from a ``.npz`` payload.
"""

ARCHS = ("mlp", "cnn")
