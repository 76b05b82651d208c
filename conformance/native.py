"""Your own native code under the suite: a hand-written model + optimizer as a ``Program``.

A user who ported a model by hand (a ``torch.nn.Module`` + ``torch.optim`` optimizer, a Keras
model + optimizer, hand-written TensorFlow, or a flax module + optax transformation) wraps it in
one of the framework adapters, with a map from their parameter names to the spec's canonical paths:

    TorchNative(model, optimizer, loss, names, data_layout="NCHW")     # native_torch.py
    TensorFlowNative(model, optimizer, loss, names) / KerasNative(...)   # native_tensorflow.py
    FlaxNative(module, variables, tx, loss, names)                       # native_jax.py

``names`` maps each native parameter (and model-state buffer) name to a canonical path, with a
``Layout`` where the framework's layout differs from the canonical one: ``{"fc.weight":
("logits/kernel", "linear"), "fc.bias": "logits/bias"}``. The adapter is a ``rosetta.backend.
Program``, so ``runner.record`` records it exactly like a backend: ``load`` writes the spec's
initial parameters into the user's model through the map (both start from the same numbers),
``gradients`` and ``train_step`` run the user's own forward, loss and optimizer, and ``export_*``
read them back in canonical layout. What is compared: the loss of every step, every gradient,
every parameter after each update, model state (mapped buffers), and the optimizer state only
where the user maps its slots (``slots={"m": "exp_avg", "v": "exp_avg_sq"}`` on torch).

Dropout: native code draws its masks from its own RNG, which cannot take the suite's. A spec with
dropout is therefore compared with dropout off on both sides (``runner.without_dropout``); the
user's model must not drop anything during the comparison (build it with rate 0, or
``deterministic=True``); an adapter given masks that drop something raises ``NativeError``.

Bad input (an unmapped parameter, a path the spec lacks, a shape that does not fit after the
layout) raises ``NativeError`` naming the parameter and the fix: exit status 2 on the command
line. No framework is imported here; each adapter imports its own.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from rosetta.backend import Batch, Program
from rosetta.errors import RosettaError


class NativeError(RosettaError):
    """The user's native program or its name map does not fit the spec."""


# --- layouts ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """How one parameter's native array relates to its canonical array (both directions)."""

    name: str
    to_native: Callable[[np.ndarray], np.ndarray]
    to_canonical: Callable[[np.ndarray], np.ndarray]

    def __str__(self):
        return self.name


def transposed(perm: tuple, name: str) -> Layout:
    """native = canonical.transpose(perm)."""
    inverse = tuple(int(i) for i in np.argsort(perm))
    return Layout(name, lambda a: np.transpose(a, perm), lambda a: np.transpose(a, inverse))


IDENTITY = Layout("identity", lambda a: a, lambda a: a)
LINEAR = transposed((1, 0), "linear")             # torch Linear (out, in); canonical (in, out)
CONV1D = transposed((2, 1, 0), "conv1d")          # torch (out, in, k); canonical (k, in, out)
CONV2D = transposed((3, 2, 0, 1), "conv2d")       # torch OIHW; canonical HWIO
LAYOUTS = {la.name: la for la in (IDENTITY, LINEAR, CONV1D, CONV2D)}


def flatten_nchw(channels: int, height: int, width: int, then: Layout | str = "linear") -> Layout:
    """The kernel of a Dense layer after a flatten of channels-first activations: its input rows
    come in (C, H, W) order where the canonical kernel's come in (H, W, C) order (rosetta
    flattens channels last). ``then`` is the Dense layout itself (torch: ``linear``)."""
    then = layout(then)
    c, h, w = channels, height, width

    def to_native(k):
        out = k.shape[-1]
        return then.to_native(k.reshape(h, w, c, out).transpose(2, 0, 1, 3).reshape(-1, out))

    def to_canonical(a):
        k = then.to_canonical(a)
        out = k.shape[-1]
        return k.reshape(c, h, w, out).transpose(1, 2, 0, 3).reshape(-1, out)

    return Layout(f"flatten_nchw({c},{h},{w})+{then.name}", to_native, to_canonical)


def layout(x) -> Layout:
    if isinstance(x, Layout):
        return x
    if x not in LAYOUTS:
        raise NativeError(f"unknown layout {x!r}: use one of {sorted(LAYOUTS)}, "
                          f"flatten_nchw(c, h, w) or a Layout")
    return LAYOUTS[x]


DATA_LAYOUTS = {"NHWC": None, "NLC": None, "NCHW": (0, 3, 1, 2), "NCL": (0, 2, 1)}


# --- the adapter --------------------------------------------------------------------------------

class NativeProgram(Program):
    """The framework-neutral half of an adapter: the name map, layouts, checks and bookkeeping.
    A framework adapter implements the underscored methods on native names and arrays."""

    backend = "native"
    framework = "?"
    device = "cpu"
    mode = "native"

    def __init__(self, names: dict, *, slots: dict | None = None, data_layout: str = "NHWC"):
        if not isinstance(names, dict) or not names:
            raise NativeError("names must map your parameter names to canonical paths, e.g. "
                              "{'fc.weight': ('logits/kernel', 'linear'), 'fc.bias': "
                              "'logits/bias'}")
        self.names = {}
        for native, target in names.items():
            path, lay = (target, IDENTITY) if isinstance(target, str) else target
            self.names[native] = (path, layout(lay))
        self.slots = dict(slots or {})
        if data_layout not in DATA_LAYOUTS:
            raise NativeError(f"data_layout {data_layout!r}: use one of {sorted(DATA_LAYOUTS)}")
        self.data_layout = data_layout
        self.graph = None
        self.step = 0

    @property
    def backend_label(self) -> str:
        return f"native-{self.framework}"

    # framework part -----------------------------------------------------------------------
    def _trainable(self) -> dict:
        """{native name: shape} of the trainable parameters."""
        raise NotImplementedError

    def _buffers(self) -> dict:
        """{native name: shape} of the non-trainable arrays (running statistics ...)."""
        return {}

    def _get(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def _set(self, name: str, array: np.ndarray) -> None:
        raise NotImplementedError

    def _reset_optimizer(self) -> None:
        raise NotImplementedError

    def _gradients(self, x, y) -> tuple[float, dict]:
        """Loss and {native name: gradient} in training mode; nothing changes."""
        raise NotImplementedError

    def _train_step(self, x, y) -> float:
        raise NotImplementedError

    def _forward(self, x, training: bool) -> np.ndarray:
        raise NotImplementedError

    def _slot(self, name: str, key: str) -> np.ndarray | None:
        """The optimizer's ``key`` array of parameter ``name`` (None before the first step)."""
        raise NativeError(f"{self.framework} adapter cannot read optimizer slots: leave "
                          f"slots unset")

    def _to_native_batch(self, x: np.ndarray, y: np.ndarray):
        raise NotImplementedError

    def version(self) -> str:
        return self.framework

    # binding to a spec ----------------------------------------------------------------------
    def bind(self, spec) -> "NativeProgram":
        """Check the name map against ``spec``: every trainable parameter mapped, every canonical
        parameter and state array reached, shapes that fit after the layout."""
        self.graph = spec.model
        if len(spec.model.inputs) != 1:
            raise NativeError(f"native comparison takes a model with one input; "
                              f"{spec.name} has {len(spec.model.inputs)}")
        canon = {p: tuple(d.shape) for p, d in spec.model.param_defs().items()}
        state = {p: tuple(np.shape(v)) for p, v in spec.model.init_state().items()}
        trainable, buffers = self._trainable(), self._buffers()
        for n in trainable:
            if n not in self.names:
                raise NativeError(f"native parameter {n!r} is not in the name map: map it to "
                                  f"one of the spec's paths {sorted(canon)}")
        reached = {}
        for n, (path, lay) in self.names.items():
            if path in reached:
                raise NativeError(f"name map: {reached[path]!r} and {n!r} both map to {path!r}; "
                                  f"each spec path takes one of your parameters")
            reached[path] = n
            if n in trainable:
                where, shapes = "parameter", canon
            elif n in buffers:
                where, shapes = "state", state
            else:
                raise NativeError(f"name map entry {n!r}: your model has no such parameter or "
                                  f"buffer; its names are {sorted(trainable) + sorted(buffers)}")
            if path not in shapes:
                raise NativeError(f"name map entry {n!r} -> {path!r}: the spec has no {where} "
                                  f"{path!r}; its {where} paths are {sorted(shapes)}")
            have = tuple((trainable if where == "parameter" else buffers)[n])
            try:
                want = tuple(np.shape(lay.to_native(np.zeros(shapes[path]))))
            except ValueError:
                want = f"nothing (layout {lay} does not apply to {len(shapes[path])} axes)"
            if want != have:
                raise NativeError(f"{n!r} -> {path!r}: canonical shape {shapes[path]} becomes "
                                  f"{want} through layout {lay}, but yours is {have}: fix the "
                                  f"path or the layout (e.g. 'linear' for a torch Linear "
                                  f"weight, 'conv2d' for OIHW, flatten_nchw(c, h, w) after a "
                                  f"channels-first flatten)")
        for path in list(canon) + list(state):
            if path not in reached:
                raise NativeError(f"spec path {path!r} is reached by no entry of the name map: "
                                  f"add 'your name': {path!r}")
        return self

    def _check_bound(self):
        if self.graph is None:
            raise NativeError("bind(spec) the native program before using it")

    def _mapped(self, category: str):
        names = self._trainable() if category == "params" else self._buffers()
        return [(n, p, la) for n, (p, la) in self.names.items() if n in names]

    # the Program API ----------------------------------------------------------------------
    def load(self, params, state):
        self._check_bound()
        for n, path, lay in self._mapped("params"):
            self._set(n, lay.to_native(np.asarray(params[path])))
        for n, path, lay in self._mapped("state"):
            self._set(n, lay.to_native(np.asarray(state[path])))
        self._reset_optimizer()
        self.step = 0

    def export_params(self):
        return {p: np.array(lay.to_canonical(self._get(n))) for n, p, lay in
                self._mapped("params")}

    def export_state(self):
        return {p: np.array(lay.to_canonical(self._get(n))) for n, p, lay in
                self._mapped("state")}

    def export_optimizer_state(self):
        out = {}
        for slot, key in self.slots.items():
            for n, p, lay in self._mapped("params"):
                a = self._slot(n, key)
                if a is not None:
                    out[f"{slot}/{p}"] = np.array(lay.to_canonical(a))
        return out

    def _inputs(self, inputs) -> np.ndarray:
        name = self.graph.inputs[0].name
        if isinstance(inputs, dict):
            if name not in inputs:
                raise NativeError(f"inputs lack {name!r}")
            inputs = inputs[name]
        perm = DATA_LAYOUTS[self.data_layout]
        x = np.asarray(inputs)
        return np.ascontiguousarray(np.transpose(x, perm)) if perm and x.ndim == len(perm) else x

    def _output(self, out) -> np.ndarray:
        perm = DATA_LAYOUTS[self.data_layout]
        out = np.asarray(out)
        if perm and out.ndim == len(perm):
            return np.transpose(out, np.argsort(perm))
        return out

    @staticmethod
    def _check_masks(masks):
        for node, m in (masks or {}).items():
            if not np.all(np.asarray(m) == 1):
                raise NativeError(f"dropout node {node!r}: native code draws its own masks and "
                                  f"cannot take the suite's; compare with dropout off")

    def prepare_batch(self, inputs, labels):
        self._check_bound()
        return Batch(self, self._to_native_batch(self._inputs(inputs), np.asarray(labels)),
                     len(labels))

    def _batch(self, inputs, labels, masks):
        if isinstance(inputs, Batch):
            return inputs.check(self, masks)
        self._check_masks(masks)
        return self.prepare_batch(inputs, labels).args

    def gradients(self, inputs, labels, masks=None):
        loss, g = self._gradients(*self._batch(inputs, labels, masks))
        return float(loss), {p: np.array(lay.to_canonical(g[n])) for n, p, lay in
                             self._mapped("params")}

    def train_step(self, inputs, labels=None, masks=None):
        loss = self._train_step(*self._batch(inputs, labels, masks))
        self.step += 1
        return float(loss)

    def forward(self, inputs, training=False, masks=None):
        self._check_masks(masks)
        self._check_bound()
        x, _ = self._to_native_batch(self._inputs(inputs), None)
        return self._output(self._forward(x, training))

    def __repr__(self):
        return f"<{type(self).__name__} {self.framework} {self.dtype}>"


# --- building one from the user's factory -------------------------------------------------------

def load_factory(ref: str):
    """``module:function`` (the module importable from the current directory) -> the function."""
    mod, sep, fn = ref.partition(":")
    if not sep or not mod or not fn:
        raise NativeError(f"--native {ref!r}: give it as module:factory, e.g. my_port:build")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(mod)
    except ImportError as e:
        raise NativeError(f"--native {ref!r}: cannot import {mod!r} ({e})") from None
    factory = getattr(module, fn, None)
    if not callable(factory):
        raise NativeError(f"--native {ref!r}: module {mod!r} has no function {fn!r}")
    return factory


def build_native(factory, spec, dtype: str) -> NativeProgram:
    """Call the user's ``factory(dtype)`` and bind its program to ``spec``."""
    if isinstance(factory, str):
        factory = load_factory(factory)
    prog = factory(dtype)
    if not isinstance(prog, NativeProgram):
        raise NativeError(f"the native factory returned {type(prog).__name__}; it must return "
                          f"a TorchNative, TensorFlowNative, KerasNative or FlaxNative")
    if prog.dtype != dtype:
        raise NativeError(f"the native factory was asked for {dtype} and built a {prog.dtype} "
                          f"model: build it in the dtype it is given")
    return prog.bind(spec)
