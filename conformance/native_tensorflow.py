"""Your own TensorFlow or Keras (on TensorFlow) model + optimizer as a ``Program`` (``native.py``).

    TensorFlowNative(model, optimizer, loss, names, variables=None, data_layout="NHWC")
    KerasNative(model, names, optimizer=None, loss=None, slots=None, data_layout="NHWC")

``TensorFlowNative`` takes hand-written TensorFlow: ``model`` a callable ``tf.Module`` whose
variables are named by their attribute path (``kernels/0``, ``dense/w``); ``optimizer`` a Keras
optimizer (``apply_gradients``) or an object with ``apply(grads, variables)`` (the order of
``variables``, default the module's ``trainable_variables``); ``loss(output, labels)``;
``slots`` maps a canonical slot to the optimizer's per-variable list in that order
(``{"m": "m", "v": "v"}``).

``KerasNative`` takes a Keras 3 model (KERAS_BACKEND=tensorflow), named by ``variable.path``
(``sequential/dense/kernel``); ``optimizer`` and ``loss`` default to the compiled ones; the loss is
called Keras's way, ``loss(labels, output)``; ``slots`` maps a canonical slot to the optimizer's
per-variable list (``{"m": "_momentums", "v": "_velocities"}`` for Adam). Keras's canonical
layouts are rosetta's (Dense (in, out), Conv2D HWIO, channels last), so its layouts are identity.

The step: ``tf.GradientTape`` over the model called with ``training=True``, then the optimizer's
update (eager). ``gradients`` and ``forward`` put non-trainable variables back.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rosetta.conformance.native import NativeError, NativeProgram


def _is_variable(v):
    return isinstance(v, tf.Variable)


class TensorFlowNative(NativeProgram):
    framework = "tensorflow"

    def __init__(self, model, optimizer, loss, names, *, variables=None, slots=None,
                 data_layout="NHWC"):
        super().__init__(names, slots=slots, data_layout=data_layout)
        self.model, self.optimizer, self.loss = model, optimizer, loss
        found = self._named_variables()
        by_id = {id(v): n for n, v in found.items()}
        order = list(variables) if variables is not None else self._trainable_list()
        for v in order:
            if id(v) not in by_id:
                raise NativeError(f"variables: {getattr(v, 'name', v)!r} is not a variable of "
                                  f"the model")
        self._order = [by_id[id(v)] for v in order]
        self._vars = found
        trainable = set(self._order)
        self._b = {n: v for n, v in found.items() if n not in trainable}
        dtypes = {tf.as_dtype(self._vars[n].dtype) for n in self._order}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (tf.float32, tf.float64):
            raise NativeError(f"model variables in {sorted(map(str, dtypes))}: build them all "
                              f"in float32 or float64")
        self.tdtype = next(iter(dtypes))
        self.dtype = self.tdtype.name

    def _named_variables(self) -> dict:
        out, seen = {}, set()
        for path, v in self.model._flatten(predicate=_is_variable, with_path=True):
            if id(v) not in seen:
                seen.add(id(v))
                out["/".join(map(str, path))] = v
        return out

    def _trainable_list(self):
        return list(self.model.trainable_variables)

    def version(self):
        return f"tensorflow {tf.__version__} (native)"

    def _trainable(self):
        return {n: tuple(self._vars[n].shape) for n in self._order}

    def _buffers(self):
        return {n: tuple(v.shape) for n, v in self._b.items() if tf.as_dtype(v.dtype).is_floating}

    def _get(self, name):
        return np.array(self._vars[name].numpy())

    def _set(self, name, array):
        v = self._vars[name]
        v.assign(np.asarray(array, tf.as_dtype(v.dtype).as_numpy_dtype))

    def _reset_optimizer(self):
        if self.step:
            raise NativeError("a hand-written TensorFlow optimizer cannot be reset: build a "
                              "fresh native program instead of loading this one again")

    def _slot(self, name, key):
        """``slots`` maps a canonical slot to the optimizer's per-variable list (in the order of
        ``variables``), e.g. ``{"m": "m", "v": "v"}`` for a hand-written Adam."""
        slots = getattr(self.optimizer, key, None)
        if not isinstance(slots, (list, tuple)):
            raise NativeError(f"slots: optimizer {type(self.optimizer).__name__} has no "
                              f"per-variable list {key!r}")
        if not slots or not self.step:
            return None
        get_index = getattr(self.optimizer, "_get_variable_index", None)
        i = get_index(self._vars[name]) if get_index else self._order.index(name)
        return np.array(slots[i].numpy())

    def _to_native_batch(self, x, y):
        x = tf.constant(x, dtype=self.tdtype)
        if y is None:
            return x, None
        y = np.asarray(y)
        return x, tf.constant(y, dtype=tf.int64 if y.dtype.kind in "iu" else self.tdtype)

    def _call_loss(self, out, y):
        return self.loss(out, y)

    def _apply(self, grads, variables):
        if hasattr(self.optimizer, "apply_gradients"):
            self.optimizer.apply_gradients(zip(grads, variables))
        elif hasattr(self.optimizer, "apply"):
            self.optimizer.apply(grads, variables)
        else:
            self.optimizer(grads, variables)

    def _tape(self, x, y):
        variables = [self._vars[n] for n in self._order]
        with tf.GradientTape() as tape:
            loss = self._call_loss(self._call(x, True), y)
        grads = tape.gradient(loss, variables)
        return loss, grads, variables

    def _call(self, x, training):
        try:
            return self.model(x, training=training)
        except TypeError:
            return self.model(x)

    def _gradients(self, x, y):
        saved = {n: v.numpy().copy() for n, v in self._b.items()}
        loss, grads, variables = self._tape(x, y)
        for n, a in saved.items():
            self._b[n].assign(a)
        out = {n: (np.zeros(tuple(v.shape)) if g is None else np.array(tf.convert_to_tensor(g)))
               for n, v, g in zip(self._order, variables, grads)}
        return float(loss), out

    def _train_step(self, x, y):
        loss, grads, variables = self._tape(x, y)
        self._apply(grads, variables)
        return float(loss)

    def _forward(self, x, training):
        saved = {n: v.numpy().copy() for n, v in self._b.items()}
        out = np.array(self._call(x, training))
        for n, a in saved.items():
            self._b[n].assign(a)
        return out


class KerasNative(TensorFlowNative):
    framework = "keras"

    def __init__(self, model, names, *, optimizer=None, loss=None, slots=None,
                 data_layout="NHWC"):
        import keras
        if keras.backend.backend() != "tensorflow":
            raise NativeError(f"KerasNative runs Keras on TensorFlow; this process runs Keras on "
                              f"{keras.backend.backend()}: set KERAS_BACKEND=tensorflow")
        optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
        loss = loss if loss is not None else getattr(model, "loss", None)
        if optimizer is None or loss is None:
            raise NativeError("KerasNative needs an optimizer and a loss: pass them, or "
                              "model.compile(optimizer=..., loss=...) first")
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.Dropout) and layer.rate > 0:
                raise NativeError(f"layer {layer.name!r} drops with rate={layer.rate}: native "
                                  f"code draws its own masks, so build it with rate 0 for the "
                                  f"comparison")
        super().__init__(model, optimizer, loss, names, slots=slots, data_layout=data_layout)

    def _named_variables(self):
        return {v.path: v for v in self.model.variables}

    def version(self):
        import keras
        return f"keras {keras.__version__} on tensorflow {tf.__version__} (native)"

    def _call_loss(self, out, y):
        return self.loss(y, out)

    def _reset_optimizer(self):
        """Zero every optimizer variable (slots and iteration count) but the learning rate."""
        lr = getattr(self.optimizer, "_learning_rate", None)
        for v in self.optimizer.variables:
            if v is not lr:
                v.assign(np.zeros(tuple(v.shape), tf.as_dtype(v.dtype).as_numpy_dtype))
