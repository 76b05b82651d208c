"""Your own flax module + optax transformation as a ``Program`` (see ``native.py``).

    FlaxNative(module, variables, tx, loss, names, slots=None, data_layout="NHWC",
               train_kwargs=None, eval_kwargs=None)

* ``module``: a ``flax.linen.Module`` (anything with ``apply(variables, x, **kwargs)``);
  ``variables`` what ``module.init`` returned (its dtype is the program's; float64 needs
  ``jax_enable_x64``);
* ``names``: parameter paths inside ``variables["params"]`` joined by ``/`` (``Dense_0/kernel``);
  other collections keep their name in front (``batch_stats/BatchNorm_0/mean``); flax's layouts
  are rosetta's (Dense (in, out), Conv HWIO, channels last), so layouts are identity;
* ``tx``: an ``optax.GradientTransformation``; ``loss(output, labels)`` in ``jax.numpy``;
* ``slots``: canonical slot -> the field of optax's state that holds it per parameter
  (``{"m": "mu", "v": "nu"}`` for ``optax.adam``, ``{"velocity": "trace"}`` for momentum SGD);
* ``train_kwargs`` / ``eval_kwargs``: keyword arguments of ``apply`` in training / eval mode
  (``{"train": True}``); dropout must be off (``deterministic=True``): no RNG is passed.

The step is ``jax.jit`` of ``value_and_grad`` + ``tx.update`` + ``optax.apply_updates``; other
collections than ``params`` are ``mutable`` in training and written back after a step only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rosetta.conformance.native import NativeError, NativeProgram


def _key(k) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def _flat(tree, prefix=""):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = [prefix + "/".join(_key(k) for k in path) for path, _ in leaves]
    return names, [leaf for _, leaf in leaves], treedef


class FlaxNative(NativeProgram):
    framework = "jax"

    def __init__(self, module, variables, tx, loss, names, *, slots=None, data_layout="NHWC",
                 train_kwargs=None, eval_kwargs=None):
        super().__init__(names, slots=slots, data_layout=data_layout)
        if "params" not in variables:
            raise NativeError("variables must be what module.init returned, with 'params'")
        self.model, self.optimizer, self.loss = module, tx, loss
        self.train_kwargs, self.eval_kwargs = dict(train_kwargs or {}), dict(eval_kwargs or {})
        self.params = variables["params"]
        self.other = {k: v for k, v in variables.items() if k != "params"}
        pnames, pleaves, _ = _flat(self.params)
        self._pnames = pnames
        self._shapes = {n: tuple(np.shape(a)) for n, a in zip(pnames, pleaves)}
        self._bshapes = {}
        for col, tree in self.other.items():
            bn, bl, _ = _flat(tree, f"{col}/")
            self._bshapes.update({n: tuple(np.shape(a)) for n, a in zip(bn, bl)})
        dtypes = {jnp.dtype(a.dtype) for a in pleaves}
        if len(dtypes) != 1 or next(iter(dtypes)).name not in ("float32", "float64"):
            raise NativeError(f"flax params in {sorted(d.name for d in dtypes)}: build them all "
                              f"in float32 or float64 (float64 needs jax_enable_x64)")
        self.dtype = next(iter(dtypes)).name
        for col, tree in self.other.items():
            for n, a in zip(*_flat(tree, f"{col}/")[:2]):
                if jnp.issubdtype(a.dtype, jnp.floating) and jnp.dtype(a.dtype) != self.dtype:
                    raise NativeError(f"{n} is {jnp.dtype(a.dtype).name} in a {self.dtype} "
                                      f"model (flax creates running statistics in float32): "
                                      f"cast the variables, jax.tree.map(lambda a: "
                                      f"a.astype('{self.dtype}'), variables)")
        self.opt_state = tx.init(self.params)
        self._compile()

    def version(self):
        import flax
        return f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__} " \
               f"(native)"

    def _compile(self):
        module, tx, loss_fn, mutable = self.model, self.optimizer, self.loss, list(self.other)

        def loss_of(params, other, x, y):
            variables = {"params": params, **other}
            if mutable:
                out, new = module.apply(variables, x, mutable=mutable, **self.train_kwargs)
            else:
                out, new = module.apply(variables, x, **self.train_kwargs), {}
            return loss_fn(out, y), dict(new)

        def grads(params, other, x, y):
            (loss, _), g = jax.value_and_grad(loss_of, has_aux=True)(params, other, x, y)
            return loss, g

        def step(params, other, opt_state, x, y):
            (loss, new), g = jax.value_and_grad(loss_of, has_aux=True)(params, other, x, y)
            updates, opt_state = tx.update(g, opt_state, params)
            return loss, optax.apply_updates(params, updates), {**other, **new}, opt_state

        def forward(params, other, x, training):
            kwargs = self.train_kwargs if training else self.eval_kwargs
            variables = {"params": params, **other}
            if training and mutable:
                return module.apply(variables, x, mutable=mutable, **kwargs)[0]
            return module.apply(variables, x, **kwargs)

        self._grads, self._step = jax.jit(grads), jax.jit(step)
        self._fwd = jax.jit(forward, static_argnums=3)

    def _trainable(self):
        return dict(self._shapes)

    def _buffers(self):
        return dict(self._bshapes)

    def _tree_for(self, name):
        if name in self._shapes:
            return "params", self.params, ""
        col = name.split("/", 1)[0]
        return col, self.other[col], f"{col}/"

    def _get(self, name):
        _, tree, prefix = self._tree_for(name)
        names, leaves, _ = _flat(tree, prefix)
        return np.array(leaves[names.index(name)])

    def _set(self, name, array):
        col, tree, prefix = self._tree_for(name)
        names, leaves, treedef = _flat(tree, prefix)
        i = names.index(name)
        leaves[i] = jnp.asarray(array, leaves[i].dtype)
        new = jax.tree_util.tree_unflatten(treedef, leaves)
        if col == "params":
            self.params = new
        else:
            self.other[col] = new

    def _reset_optimizer(self):
        self.opt_state = self.optimizer.init(self.params)

    def _slot(self, name, key):
        found = []

        def visit(node):
            if hasattr(node, "_fields"):
                if key in node._fields:
                    found.append(getattr(node, key))
                    return
                for child in node:
                    visit(child)
            elif isinstance(node, (tuple, list)):
                for child in node:
                    visit(child)

        visit(self.opt_state)
        if len(found) != 1:
            raise NativeError(f"slots: optax state has {len(found)} fields named {key!r} "
                              f"(optax.adam: 'mu', 'nu'; momentum SGD: 'trace')")
        if self.step == 0:
            return None
        names, leaves, _ = _flat(found[0])
        return np.array(leaves[names.index(name)])

    def _to_native_batch(self, x, y):
        x = jnp.asarray(x, self.dtype)
        if y is None:
            return x, None
        y = np.asarray(y)
        return x, jnp.asarray(y, jnp.int32 if y.dtype.kind in "iu" else self.dtype)

    def _gradients(self, x, y):
        loss, g = self._grads(self.params, self.other, x, y)
        names, leaves, _ = _flat(g)
        return float(loss), {n: np.array(a) for n, a in zip(names, leaves)}

    def _train_step(self, x, y):
        loss, self.params, self.other, self.opt_state = self._step(
            self.params, self.other, self.opt_state, x, y)
        return float(loss)

    def _forward(self, x, training):
        return np.array(self._fwd(self.params, self.other, x, bool(training)))
