"""The Keras model as the certificate's source participant (``rosetta.importers.certificate``).

``source_program`` clones the user's model (``keras.models.clone_model``, every layer rebuilt in
the certificate's dtype), sets every float variable to random non-default values (the rule of
``certificate.randomize``, in NumPy), rebuilds the compiled optimizer from its config with its
state (slots and iteration count of a run in progress), and wraps it in ``KerasSource``, a
``NativeProgram`` that runs Keras on whatever ``KERAS_BACKEND`` this process has:

* tensorflow: ``tf.GradientTape`` over ``model(x, training=True)``;
* jax: ``jax.value_and_grad`` of ``model.stateless_call`` (the updated non-trainable
  variables, BatchNorm's moving statistics, are assigned after a training step only);
* torch: ``loss.backward()`` on the variables' torch parameters.

The update is Keras's own ``optimizer.apply(grads, trainable_variables)``. Keras computes in
float64 only where its backend does: jax needs ``jax_enable_x64`` (switched on here, as the
rosetta jax backend does), and the clone's output dtype is checked before anything is
recorded. The float32 certificate (``certificate32``, ``dtype="float32"``) runs a float32 clone
as the reference instead, without the float64 checks: its steps are held within the measured
float32 noise.

Dropout: every ``Dropout`` layer of the clone has its ``call`` replaced by one that multiplies by
the injected keep-mask over (1 − rate) in training (the suite's neutral masks, the same the spec
gets) and is the identity otherwise, so the source never draws its own.
"""

from __future__ import annotations

import types

import numpy as np

from rosetta.conformance.native import NativeError, NativeProgram
from rosetta.errors import RosettaError
from rosetta.importers.keras_parts import read, renamed, whole, write


def keras_backend() -> str:
    import keras
    return keras.backend.backend()


def randomize_arrays(arrays: dict, seed: int) -> dict:
    """``certificate.randomize`` in NumPy: a float array with spread keeps its mean m and
    standard deviation s, a <- m + ((a - m) + 0.5 s N(0, 1)) / sqrt(1.25); a constant one gets
    a + (0.1 |m| + 0.05) N(0, 1); an array named like a variance stays positive (|a| + 0.1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a, np.float64)
        noise = rng.standard_normal(a.shape)
        m = float(a.mean()) if a.size else 0.0
        s = float(a.std(ddof=1)) if a.size > 1 else 0.0
        b = m + ((a - m) + 0.5 * s * noise) / 1.25 ** 0.5 if s > 0 else (
            a + noise * (0.1 * abs(m) + 0.05))
        if "var" in name.rsplit("/", 1)[-1]:
            b = np.abs(b) + 0.1
        out[name] = b
    return out


def held_constants(layer) -> dict:
    """The config entries of the fixed constants of a preprocessing layer, as the layer holds
    them (in its compute dtype: a float32 model's Rescaling multiplies by float32(1/127.5)), so
    that a clone in another dtype computes with the source's values, as it does with its weights:
    Rescaling's ``scale``/``offset``; a Normalization given ``mean``/``variance`` (an adapted one
    gets the source's variables in ``source_program``)."""
    import keras

    from rosetta.importers.keras_graph import held_value

    if isinstance(layer, keras.layers.Rescaling):
        cast = layer.backend.cast
        return {k: held_value(cast(getattr(layer, k), layer.compute_dtype)).tolist()
                for k in ("scale", "offset")}
    if isinstance(layer, keras.layers.Normalization) and layer.input_mean is not None:
        keep = tuple(layer._keep_axis)
        at = tuple(slice(None) if d in keep else 0 for d in range(len(layer._broadcast_shape)))
        return {"mean": held_value(layer.mean)[at].tolist(),
                "variance": held_value(layer.variance)[at].tolist()}
    return {}


def clone_in(model, dtype: str):
    """A copy of ``model`` with every layer (and operation) rebuilt in ``dtype``, the constants
    of its preprocessing layers as the source holds them (``held_constants``)."""
    import keras

    def set_dtype(cfg):   # nested layers too (Bidirectional's forward and backward layers)
        if "dtype" in cfg:
            cfg["dtype"] = dtype
        for key in ("layer", "backward_layer"):
            if isinstance(cfg.get(key), dict) and isinstance(cfg[key].get("config"), dict):
                set_dtype(cfg[key]["config"])
        return cfg

    def rebuild(layer):
        cfg = set_dtype(layer.get_config())
        cfg.update(held_constants(layer))
        return type(layer).from_config(cfg)

    kin = model.inputs[0]
    kind = dtype if "float" in str(kin.dtype) else str(kin.dtype)
    clone = keras.models.clone_model(
        model, clone_function=rebuild,
        input_tensors=keras.Input(batch_shape=tuple(kin.shape), dtype=kind))
    return clone


def loss_in(loss, dtype: str):
    """The Keras loss computing in ``dtype`` (a Keras ``Loss`` casts its inputs to its own
    dtype, float32 by default, which would round a float64 certificate's loss)."""
    import keras

    if loss is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
    if isinstance(loss, keras.losses.Loss):
        cfg = loss.get_config()
        cfg["dtype"] = dtype
        return type(loss).from_config(cfg)
    fn = keras.losses.get(loss) if isinstance(loss, str) else loss
    return keras.losses.LossFunctionWrapper(fn, dtype=dtype)


def check_optimizer(optimizer, spec_opt, dtype: str) -> None:
    """Verify that this Keras backend runs ``optimizer``'s rule in ``dtype`` as the spec's
    optimizer does: three updates of a fresh copy on a small ``dtype`` variable against the
    spec's NumPy float64 reference, relative error at most 1e-12. Keras 3.15 on tensorflow
    fails it for Adam and SGD with momentum: ``ops.cast(self.beta_1, float64)`` turns the Python
    float into a float32 tensor first, so the bias correction (Adam) or the momentum factor
    (SGD) is float32's 0.9 (relative error ~6e-6 per step); jax (x64) and torch pass."""
    import keras

    p0 = np.array([0.7, -1.3, 0.2, 2.5])
    var = keras.Variable(p0.astype(dtype), dtype=dtype, name="probe")
    opt = type(optimizer).from_config(optimizer.get_config())
    opt.build([var])
    params = {"probe": p0}
    state = spec_opt.init_state(params)
    rng = np.random.default_rng(1)
    for step in range(3):
        g = rng.standard_normal(p0.shape)
        opt.apply([keras.ops.convert_to_tensor(g.astype(dtype))], [var])
        params, state = spec_opt.update(params, {"probe": g}, state, step)
    got = np.asarray(keras.ops.convert_to_numpy(var.value), np.float64)
    err = float(np.max(np.abs(got - params["probe"]) / np.maximum(np.abs(params["probe"]),
                                                                   1e-300)))
    if err > 1e-12:
        raise RosettaError(f"Keras {keras.__version__} on {keras.backend.backend()} runs "
                           f"{type(optimizer).__name__} in {dtype} with a relative error of "
                           f"{err:.1e} against the spec's rule (it casts Python-float "
                           f"hyperparameters through float32): a {dtype} certificate needs "
                           f"the exact source; certify under KERAS_BACKEND=jax or torch")


# a layer whose output differs from the spec's by more than this (relative, normwise) is not
# computing the same function in float32 (float32's eps is 1.2e-7): a different function, which
# the certificate itself fails and blames on the node
NOT_ROUNDING = 1e-4


def check_layers(model, imp, spec, seed: int, dtype: str, tolerance: float,
                 names_of=None, layouts_of=None) -> str:
    """Run the (randomized) clone once in training mode and hold every mapped layer's output
    against the spec's NumPy float64 reference on the same values; the first layer that
    differs by more than ``tolerance`` (relative, normwise), up to the size of float32
    rounding (``NOT_ROUNDING``), is named. Keras 3.15 on jax and torch computes
    BatchNormalization in float32 for float64 inputs (its compute dtype is
    ``result_type(x.dtype, "float32")``, float32 there; tensorflow's is float64): such a
    source cannot stand in a float64 certificate. A larger difference is not rounding but a
    spec that computes another function (a wrong import, or a planted change): returned as the
    blame of the failing certificate (the first diverging node, by spec and source name; ""
    when every layer agrees)."""
    import keras

    from rosetta.ops import RefContext

    names = imp.source.keras_nodes or {}
    graph = getattr(model, "_functional", None) or model   # a Sequential's own graph
    ops = {op.name: op for op in graph.operations}
    nodes = [n for n in spec.model.nodes if names.get(n.name) in ops]
    if not nodes:
        return ""
    x = np.random.default_rng(seed).standard_normal((2, *imp.source.input_shape))
    if imp.source.input_kind != "float":
        return ""
    probe = keras.Model(graph.inputs, [ops[names[n.name]].output for n in nodes])
    saved = {v.path: keras.ops.convert_to_numpy(v.value).copy()
             for v in model.non_trainable_variables}
    outs = probe(keras.ops.convert_to_tensor(x.astype(dtype)), training=True)
    outs = [np.asarray(keras.ops.convert_to_numpy(o), np.float64) for o in outs]
    for v in model.non_trainable_variables:
        v.assign(saved[v.path])
    values = {v.path: np.asarray(keras.ops.convert_to_numpy(v.value), np.float64)
              for v in model.variables}
    layouts = (layouts_of if names_of else imp.source.layouts) or {}
    params = {p: _canonical(values[whole(n)], n, layouts.get(n))
              for n, p in (names_of or imp.names).items()}
    g = spec.model
    values = {g.inputs[0].name: x}
    got = dict(zip((n.name for n in nodes), outs))
    for n in g.nodes:
        p = {k: params[f"{n.name}/{k}"] for k in n.params}
        ctx = RefContext(training=True, state={k: params[f"{n.name}/{k}"] for k in n.state})
        values[n.name] = n.opdef.reference(n.attrs, p, [values[s] for s in n.inputs], ctx)
        if n.name not in got:
            continue
        ref, mine = values[n.name], got[n.name]
        err = float(np.linalg.norm(mine - ref) / max(np.linalg.norm(ref), 1e-300))
        if tolerance < err <= NOT_ROUNDING:
            raise RosettaError(
                f"Keras {keras.__version__} on {keras.backend.backend()} computes "
                f"{imp.node_source.get(n.name, n.name)} with a relative error of {err:.1e} "
                f"against the spec's float64 reference when asked for {dtype} (spec node "
                f"{n.name}, training mode, its inputs agreeing): a {dtype} certificate "
                f"needs the exact source"
                + ("; Keras computes BatchNormalization in float32 on jax and torch: certify "
                   "under KERAS_BACKEND=tensorflow" if n.op == "BatchNorm" else ""))
        if err > NOT_ROUNDING:
            return (f"first diverging node: {n.name} ({n.op}; source "
                    f"{imp.node_source.get(n.name, '?')}) at step 0, training-mode forward: "
                    f"relative error {err:.3e} (normwise) against the Keras layer's output")
        values[n.name] = mine   # the next layer starts from the source's own value
    return ""


def _canonical(array, name, lay):
    """The canonical array of source name ``name`` (a piece of ``array``, in layout ``lay``)."""
    a = read(array, name)
    return np.asarray(lay.to_canonical(a)) if lay is not None else a


def _is_float(v) -> bool:
    return "float" in str(v.dtype)


class KerasSource(NativeProgram):
    """A Keras model + optimizer + loss as a ``Program``; names are Keras variable paths or
    pieces of one (``keras_parts``: a GRU's (2, 3H) bias is two parameters)."""

    framework = "keras"

    def __init__(self, model, optimizer, loss, names, *, kind=None, lr=None, slots=None,
                 frozen=()):
        """``frozen``: paths of non-trainable variables that are parameters of the spec (a
        layer's ``trainable=False``): compared as parameters, with their gradients (taken
        for ``gradients`` only; the optimizer never sees them)."""
        import keras

        super().__init__(names, slots=slots)
        self.model, self.optimizer, self.loss = model, optimizer, loss
        self.kind, self.lr = kind, lr
        self.keras_backend = keras.backend.backend()
        self._vars = {v.path: v for v in model.variables}
        self._order = [v.path for v in model.trainable_variables]
        self._frozen = list(dict.fromkeys(whole(n) for n in frozen))
        self._nt = list(model.non_trainable_variables)
        self._b = {v.path: v for v in self._nt if _is_float(v) and v.path not in self._frozen}
        self._pieces = {}   # variable path -> the names of its pieces in the name map
        for n in self.names:
            if whole(n) != n:
                self._pieces.setdefault(whole(n), []).append(n)
        dts = {str(v.dtype) for v in model.trainable_variables}
        self.dtype = dts.pop() if len(dts) == 1 else "mixed"

    def version(self):
        import keras
        return f"keras {keras.__version__} on {self.keras_backend} (source)"

    def _expand(self, paths) -> dict:
        """{source name: shape} of variable ``paths``, each split into its mapped pieces."""
        out = {}
        for p in paths:
            shape = tuple(self._vars[p].shape)
            for n in self._pieces.get(p, [p]):
                out[n] = shape if n == p else shape[1:]
        return out

    def _trainable(self):
        return self._expand(self._order + self._frozen)

    def _buffers(self):
        return self._expand(self._b)

    def _whole(self, path):
        import keras
        return np.array(keras.ops.convert_to_numpy(self._vars[path].value))

    def _get(self, name):
        return np.array(read(self._whole(whole(name)), name))

    def _set(self, name, array):
        v = self._vars[whole(name)]
        full = write(self._whole(whole(name)), name, array) if whole(name) != name else array
        v.assign(np.asarray(full, dtype=str(v.dtype)))

    def _reset_optimizer(self):
        raise NativeError("the Keras source is not reloaded: build a fresh source program")

    def export_optimizer_state(self):
        import keras
        from rosetta.importers.keras_optim import SLOTS, slot_to_canonical

        out = {}
        if not self.kind or not self.step and not int(
                keras.ops.convert_to_numpy(self.optimizer.iterations)):
            return out
        for slot, attr in SLOTS[self.kind].items():
            lists = getattr(self.optimizer, attr, None) or []
            if not lists:
                continue
            for n, (path, lay) in self.names.items():
                if whole(n) in self._order:
                    v = self._vars[whole(n)]
                    a = read(keras.ops.convert_to_numpy(
                        lists[self.optimizer._get_variable_index(v)].value), n)
                    out[f"{slot}/{path}"] = np.asarray(lay.to_canonical(
                        slot_to_canonical(self.kind, slot, a, self.lr)))
        return out

    def _to_native_batch(self, x, y):
        import keras
        xt = keras.ops.convert_to_tensor(np.asarray(x, self.dtype) if np.asarray(x).dtype.kind
                                         == "f" else np.asarray(x))
        if y is None:
            return xt, None
        y = np.asarray(y)
        return xt, keras.ops.convert_to_tensor(y if y.dtype.kind in "iu"
                                               else y.astype(self.dtype))

    # the step, per backend -----------------------------------------------------------------
    def _grads(self, x, y, frozen: bool = False):
        """(loss, [gradient per trainable variable, then per frozen one if ``frozen``], new
        non-trainable values or None)."""
        import keras

        tv = [self._vars[n] for n in self._order]
        fv = [self._vars[n] for n in self._frozen] if frozen else []
        if self.keras_backend == "tensorflow":
            import tensorflow as tf
            with tf.GradientTape() as tape:
                for v in fv:   # not trainable: not watched unless asked
                    tape.watch(v.value)
                loss = self.loss(y, self.model(x, training=True))
            return loss, tape.gradient(loss, tv + [v.value for v in fv]), None
        if self.keras_backend == "jax":
            import jax

            def f(t, nt):
                out, nt2 = self.model.stateless_call(t, nt, x, training=True)
                return self.loss(y, out), nt2

            (loss, nt2), (g, gnt) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(
                [v.value for v in tv], [v.value for v in self._nt])
            at = {id(v): i for i, v in enumerate(self._nt)}
            return loss, list(g) + [gnt[at[id(v)]] for v in fv], nt2
        if self.keras_backend == "torch":
            for v in tv + fv:
                v.value.grad = None
            try:
                for v in fv:
                    v.value.requires_grad_(True)
                loss = self.loss(y, self.model(x, training=True))
                loss.backward()
            finally:
                for v in fv:
                    v.value.requires_grad_(False)
            grads = [v.value.grad.detach().clone() for v in tv + fv]
            for v in fv:
                v.value.grad = None
            return loss.detach(), grads, None
        raise RosettaError(f"Keras backend {self.keras_backend!r}: the certificate runs Keras "
                           f"on tensorflow, jax or torch")

    def _saved(self):
        import keras
        return {n: keras.ops.convert_to_numpy(v.value).copy() for n, v in self._b.items()}

    def _restore(self, saved):
        for n, a in saved.items():
            self._b[n].assign(a)

    def _gradients(self, x, y):
        import keras
        saved = self._saved()
        loss, grads, _ = self._grads(x, y, frozen=True)
        self._restore(saved)
        out = {}
        for p, g in zip(self._order + self._frozen, grads):
            g = np.array(keras.ops.convert_to_numpy(g))
            for n in self._pieces.get(p, [p]):
                out[n] = np.array(read(g, n))
        return float(keras.ops.convert_to_numpy(loss)), out

    def _train_step(self, x, y):
        import keras
        loss, grads, nt2 = self._grads(x, y)
        if nt2 is not None:
            for v, a in zip(self._nt, nt2):
                v.assign(a)
        self.optimizer.apply(grads, [self._vars[n] for n in self._order])
        return float(keras.ops.convert_to_numpy(loss))

    def _forward(self, x, training):
        import keras
        saved = self._saved()
        out = np.array(keras.ops.convert_to_numpy(self.model(x, training=training)))
        self._restore(saved)
        return out


def _patch_dropout(model, holder: dict, node_of: dict):
    """Every Dropout layer of ``model``: identity, or x·mask/(1 − rate) in training when the
    holder has a mask for its spec node."""
    import keras

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, keras.layers.Dropout):
            continue
        node = node_of.get(layer.name)

        def call(self, inputs, training=None, node=node):
            if not training or node not in holder:
                return inputs
            mask = keras.ops.convert_to_tensor(np.asarray(holder[node]),
                                               dtype=keras.backend.standardize_dtype(inputs.dtype))
            return inputs * mask / (1.0 - self.rate)

        layer.call = types.MethodType(call, layer)


def source_program(imp, spec, seed, dtype, inject=False):
    """(KerasSource on a randomized ``dtype`` clone, None, the mask holder or None)."""
    import keras

    from rosetta.conformance.runner import without_dropout
    from rosetta.importers.keras_optim import SLOTS

    src = imp.source
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
    model = clone_in(src.module, dtype)
    # the clone's variables, in the source's order, may carry other paths (a model loaded from a
    # .keras file has 'dense/kernel' where its clone has 'sequential/dense/kernel')
    pairs = list(zip(model.variables, src.module.variables))
    if len(model.variables) != len(src.module.variables) or any(
            tuple(c.shape) != tuple(o.shape) for c, o in pairs):
        raise RosettaError(f"{src.module.name}: its float64 clone does not hold the source's "
                           f"variables in the source's order")
    source_of = {c.path: o for c, o in pairs}
    clone_of = {o.path: c.path for c, o in pairs}
    # source name (a variable path or a piece of one) -> canonical path, on the clone's paths
    names_of = {renamed(n, clone_of[whole(n)]): p for n, p in imp.names.items()}
    layouts_of = {renamed(n, clone_of[whole(n)]): lay
                  for n, lay in (src.layouts or {}).items()}
    mapped = {whole(n) for n in names_of}
    probe = model(np.zeros((1, *src.input_shape), dtype if src.input_kind == "float"
                           else np.int64), training=False)
    got = str(keras.ops.convert_to_numpy(probe).dtype)
    if got != dtype:
        raise RosettaError(f"Keras on {backend} computes this model in {got} when asked for "
                           f"{dtype}: a {dtype} certificate cannot use it as the source")
    exact = dtype == "float64"   # float32: the certificate's measured noise bound judges
    if src.optimizer is not None and exact:
        check_optimizer(src.optimizer, spec.optimizer, dtype)
    # the variables the spec holds as parameters or state are randomized; the others are
    # constants written into the spec (an adapted Normalization's mean and variance): the clone
    # gets the source's values and recomputes what it derives from them
    for c, o in pairs:
        if c.path not in mapped:
            c.assign(np.asarray(keras.ops.convert_to_numpy(o.value)).astype(str(c.dtype)))
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()
    arrays = {v.path: keras.ops.convert_to_numpy(v.value) for v in model.variables
              if _is_float(v) and v.path in mapped}
    for path, a in randomize_arrays(arrays, seed).items():
        v = next(v for v in model.variables if v.path == path)
        v.assign(a.astype(dtype))
    kind = None
    if src.optimizer is not None:
        from rosetta.importers.keras_optim import kind_of
        kind = "sgd" if kind_of(src.optimizer) == "sgd" else "adam"
        opt = type(src.optimizer).from_config(src.optimizer.get_config())
        opt.build(model.trainable_variables)
        if src.optimizer.built and int(keras.ops.convert_to_numpy(src.optimizer.iterations)):
            orig = source_of
            for attr in SLOTS[kind].values():
                mine, theirs = getattr(opt, attr, []), getattr(src.optimizer, attr, [])
                for v in model.trainable_variables:
                    if mine and theirs:
                        a = keras.ops.convert_to_numpy(
                            theirs[src.optimizer._get_variable_index(orig[v.path])].value)
                        mine[opt._get_variable_index(v)].assign(a.astype(dtype))
            opt.iterations.assign(int(keras.ops.convert_to_numpy(src.optimizer.iterations)))
    else:
        opt = keras.optimizers.SGD(learning_rate=0.01)
        opt.build(model.trainable_variables)
    loss = loss_in(src.loss, dtype)
    holder = {}
    node_of = {k: n for n, k in (imp.source.keras_nodes or {}).items()}   # Keras -> spec
    _patch_dropout(model, holder, node_of)
    diverging = (check_layers(model, imp, without_dropout(spec), seed, dtype, 1e-10, names_of,
                              layouts_of) if exact else "")
    lr = float(src.optimizer.get_config()["learning_rate"]) if src.optimizer is not None else 0.01
    trainable = {v.path for v in model.trainable_variables}
    params = spec.model.param_defs()
    frozen = [n for n, p in names_of.items() if p in params and whole(n) not in trainable]
    prog = KerasSource(model, opt, loss,
                       {n: (p, layouts_of.get(n, "identity")) for n, p in names_of.items()},
                       kind=kind or "sgd", lr=lr,
                       slots={s: s for s in SLOTS[kind or "sgd"]}, frozen=frozen)
    prog.bind(without_dropout(spec))
    prog.first_diverging_node = diverging   # the certificate's blame of a forward divergence
    return prog, None, holder if inject else None
