"""A ``Program``: one lowered training setup on one device and dtype (the contract), and
``BackendProgram``, the host-side half every backend's program shares.

The contract (``Program``) is what the core's training loop, the CLI and the conformance suite
speak; a hand-written native adapter (``rosetta.conformance.native``) implements it directly.
Conventions every program keeps:

* parameters and state cross this API as NumPy arrays under canonical paths and layouts
  (``dense/kernel`` is (in, out) everywhere; torch transposes inside its own ``params.py``);
* inputs arrive as ``{input name: array}`` in canonical layout (channels last); labels as an
  integer array (class ids) or a float array of the output's shape;
* ``train_step`` applies update number ``program.step`` with ``lr(step)``, then increments it;
* ``gradients`` and ``forward`` leave parameters, state and optimizer state untouched;
* ``masks`` (conformance mode) maps each node that draws a keep-mask to a keep-mask (1 keep,
  0 drop) of the node's per-example shape with the batch axis; given, it replaces the framework's
  RNG, so dropout agrees across backends: y = x * mask / (1 - rate);
* ``prepare_batch`` checks, converts and places a batch on the device once; ``train_step`` takes
  the ``Batch`` it returns in place of ``(inputs, labels)`` (no checks, no copies: data already on
  the device, as the benchmark feeds it);
* a backend lowers in one of its ``modes`` (how the step is compiled); the first is the default.

``BackendProgram`` holds, once for every backend, what is not framework code: the spec check,
dtype and device normalisation, the Embedding vocabularies and the dropout draws of the graph,
the one strict check of inputs, labels and injected masks (the same ``DataError`` text on every
backend, before any framework sees the arrays), the dispatch of host arrays and prepared
``Batch``es, and the check of optimizer slots before a resume. A backend implements the
framework part: converting checked host arrays to its own (``_native_inputs``,
``_native_labels``, ``_to_device``), and running one step, gradients or forward on them
(``_run_step``, ``_run_gradients``, ``_run_forward``), plus ``load``/``export_*`` and
``_set_optimizer_state``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from rosetta.datacheck import check_embedding_ids, embedding_vocab
from rosetta.dropout import check_masks, mask_draws
from rosetta.ops.normalization import check_unbiased_batch, unbiased_cells
from rosetta.errors import BackendUnavailable, CheckpointError, DataError, SpecError

DTYPES = ("float32", "float64")


def normalize_device(device: str) -> str:
    """``cuda`` and ``gpu`` mean the same: the first GPU."""
    d = str(device).lower()
    return "gpu" if d in ("cuda", "gpu", "cuda:0", "gpu:0") else d


def batch_shape(shape) -> str:
    """A per-example shape with its batch axis, as messages show it: (N, 64); (N,) for one
    number per example."""
    shape = tuple(shape)
    return "(N,)" if not shape else f"({', '.join(['N', *map(str, shape)])})"


class Batch:
    """A batch made by ``Program.prepare_batch``: native arrays on the program's device.

    ``args`` is what the backend's compiled step takes (backend specific); ``size`` the number of
    examples. A Batch belongs to the program that made it.
    """

    __slots__ = ("owner", "args", "size")

    def __init__(self, owner, args, size: int):
        self.owner, self.args, self.size = owner, args, int(size)

    def check(self, program, masks=None):
        """The native arguments, after checking this Batch was made by ``program``."""
        if self.owner is not program:
            raise DataError("this Batch was prepared by another Program: call "
                            "program.prepare_batch(inputs, labels) on the program that runs it")
        if masks:
            raise DataError("masks cannot be given with a prepared Batch; pass host arrays "
                            "(inputs, labels, masks) instead")
        return self.args

    def __repr__(self):
        return f"Batch(size={self.size}, on {self.owner!r})"


class Program(ABC):
    """One lowered training setup on one device and dtype (the contract)."""

    backend: str
    dtype: str
    device: str
    model: object       # torch.nn.Module / tf.Module / flax.linen.Module
    optimizer: object   # torch.optim.Optimizer / tf.Module optimizer / optax.GradientTransformation
    step: int = 0       # updates applied since load()
    mode: str = ""      # how the step is compiled: one of the backend's ``modes``

    @abstractmethod
    def load(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """Set parameters and model state from canonical arrays; reset the optimizer and step."""

    @abstractmethod
    def export_params(self) -> dict[str, np.ndarray]:
        """Trainable parameters as canonical NumPy arrays, by path."""

    @abstractmethod
    def export_state(self) -> dict[str, np.ndarray]:
        """Non-trainable model state (BatchNorm running statistics), by path."""

    @abstractmethod
    def prepare_batch(self, inputs: dict[str, np.ndarray], labels: np.ndarray) -> Batch:
        """Check and convert ``(inputs, labels)`` once, the way ``train_step`` would, and place
        them on the program's device: a ``Batch`` that ``train_step(batch)`` runs on without
        further checks or host-to-device copies."""

    @abstractmethod
    def train_step(self, inputs: dict[str, np.ndarray] | Batch, labels: np.ndarray | None = None,
                   masks: dict | None = None) -> float:
        """One compiled optimizer update in training mode; returns the loss before the update.
        ``inputs`` may be a ``Batch`` from ``prepare_batch`` (then no ``labels`` or ``masks``)."""

    @abstractmethod
    def gradients(self, inputs, labels, masks: dict | None = None
                  ) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and canonical-layout gradients in training mode, without applying anything."""

    @abstractmethod
    def forward(self, inputs, training: bool = False, masks: dict | None = None) -> np.ndarray:
        """The model output (canonical layout). ``training`` picks batch statistics and dropout;
        running statistics are not updated."""

    def export_optimizer_state(self) -> dict[str, np.ndarray]:
        """Optimizer state as canonical arrays named ``<slot>/<parameter path>``: SGD with
        momentum ``velocity/...`` (v of the canonical rule); Adam and AdamW ``m/...`` and
        ``v/...``. Plain SGD has none (an empty dict)."""
        return {}

    @property
    def _param_shapes(self) -> dict[str, tuple]:
        """{canonical path: canonical shape} of the spec's parameters (``self.graph``)."""
        return {path: tuple(d.shape) for path, d in self.graph.param_defs().items()}

    def load_optimizer_state(self, slots: dict[str, np.ndarray], step: int) -> None:
        """Set the optimizer state and the update count, after ``load``: ``slots`` has exactly
        the names ``export_optimizer_state`` gives after an update (``<slot>/<parameter path>``,
        canonical layout, every parameter; empty for an optimizer without state), and the next
        ``train_step`` applies update number ``step`` with lr(step) (its bias corrections,
        epsilon-hat factor and dropout masks those of update ``step``), so that a program
        resumed from exported state continues exactly as the one that exported it.

        Raises ``CheckpointError`` naming the first missing, unknown or misshapen slot."""
        raise BackendUnavailable(f"backend {self.backend!r} cannot load optimizer state")

    # the dynamic loss scale of a ``mixed_float16`` program (rosetta.precision.LossScale), None
    # under every other policy; ``load`` restarts it at the rule's initial state
    loss_scale = None

    def export_loss_scale(self) -> dict | None:
        """The loss-scale state ``{"scale", "good"}`` of a ``mixed_float16`` program, None
        otherwise: neutral, any backend continues it (``load_loss_scale``)."""
        return self.loss_scale.to_json() if self.loss_scale is not None else None

    def load_loss_scale(self, d: dict | None) -> None:
        """Continue the loss scale of ``export_loss_scale`` (after ``load``); None leaves the
        initial state. A state given to a program without a loss scale is ignored only when
        None; otherwise ``CheckpointError``."""
        if d is None:
            return
        if self.loss_scale is None:
            raise CheckpointError(f"a loss scale was given, but precision "
                                  f"{getattr(self, 'precision', '?')} keeps none")
        self.loss_scale.load(d)

    def export_rng_state(self) -> dict[str, np.ndarray]:
        """The position of this backend's own dropout stream, as arrays (empty when the program
        draws nothing at random, or derives its masks from the update count). Only the same
        backend can read it back (``load_rng_state``); masks never match across backends."""
        return {}

    def load_rng_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Put the dropout stream where ``export_rng_state`` of the same backend found it."""
        if arrays:
            raise BackendUnavailable(f"backend {self.backend!r} keeps no dropout stream to load")


class BackendProgram(Program):
    """The host-side base of every backend's ``Program``: checks and dispatch, no framework.

    A subclass calls ``_setup`` first in its constructor, then builds its native model and
    optimizer; it implements the framework hooks below. Checked host arrays reach the hooks as
    NumPy: float inputs and float targets already in the program dtype, integer inputs and class
    ids as the integer arrays given (each backend casts them to its own index type).
    """

    def _setup(self, spec, dtype: str, device: str, mode: str) -> None:
        """The spec check and the normalised dtype and device; the graph's Embedding
        vocabularies (``_index_limits``) and dropout draws (``_mask_draws``)."""
        from rosetta.spec import TrainSpec

        if not isinstance(spec, TrainSpec):
            raise SpecError(f"compile takes a rosetta TrainSpec, found {type(spec).__name__}")
        from rosetta.backend_registry import get_backend
        from rosetta.precision import PRECISIONS, check_graph, policy

        if dtype not in PRECISIONS:
            raise BackendUnavailable(f"{self.backend} backend: dtype {dtype!r} is not "
                                     f"supported; choose one of {', '.join(PRECISIONS)}")
        get_backend(self.backend).check_precision(dtype)   # the backend's declaration
        self.policy = policy(dtype)
        check_graph(spec.model, self.policy)
        self.spec = spec
        self.graph = spec.model
        # ``dtype``: the type arrays cross the API in (float32 for the low precisions, whose
        # values are exact in float32); ``precision``: the policy the step runs
        self.dtype = self.policy.host
        self.precision = dtype
        self.np_dtype = np.dtype(self.dtype)
        self._reset_loss_scale()
        self.device = normalize_device(device)
        self.mode = mode
        self._int_labels = spec.loss.label_kind == "int"
        self._index_limits = embedding_vocab(self.graph)
        # every op that draws a keep-mask in training (Dropout, attention weights) declares it
        self._mask_draws = mask_draws(self.graph)
        self._unbiased_cells = unbiased_cells(self.graph)

    def _reset_loss_scale(self) -> None:
        """The loss scale at the rule's initial state (``mixed_float16``), else None; a
        backend's ``load`` calls it."""
        from rosetta.precision import LossScale

        self.loss_scale = LossScale() if self.policy.loss_scale else None

    # --- the one check of host arrays -------------------------------------------------------------
    def check_inputs(self, inputs) -> dict[str, np.ndarray]:
        """``inputs`` (one array, a list in input order, or {name: array}) as {input name: host
        array}, in graph order, each a batch of its input's per-example shape: float inputs
        numbers, cast to the program dtype; ``int`` inputs integers (Embedding ids in range).
        The first problem is a ``DataError`` naming the input."""
        given = self.graph.as_input_dict(inputs)
        out = {}
        for inp in self.graph.inputs:
            x = np.asarray(given[inp.name])
            where = f"input {inp.name!r}"
            if x.ndim != len(inp.shape) + 1 or tuple(x.shape[1:]) != tuple(inp.shape):
                raise DataError(f"{where}: expected a batch of shape {batch_shape(inp.shape)}, "
                                f"found {x.shape}")
            if inp.kind == "int":
                if not np.issubdtype(x.dtype, np.integer):
                    raise DataError(f"{where}: expected integer indices, found {x.dtype}")
                check_embedding_ids(self._index_limits, inp.name, x)
            else:
                if x.dtype.kind not in "biuf":
                    raise DataError(f"{where}: expected numbers, found {x.dtype}")
                x = x.astype(self.np_dtype, copy=False)
            out[inp.name] = x
        return out

    def check_labels(self, labels) -> np.ndarray:
        """Class ids (integers of shape (N, *output shape[:-1]), each in [0, classes)) or float
        targets shaped like the output (cast to the program dtype); else a ``DataError``."""
        y = np.asarray(labels)
        out_shape = tuple(self.graph.output_type.shape)
        if self._int_labels:
            want = out_shape[:-1]
            if not np.issubdtype(y.dtype, np.integer) or y.ndim != len(want) + 1 \
                    or tuple(y.shape[1:]) != want:
                raise DataError(f"labels: expected integer class ids of shape "
                                f"{batch_shape(want)}, found {y.dtype} {y.shape}")
            self.spec.loss.check_labels(y, out_shape[-1])
            return y
        if y.ndim != len(out_shape) + 1 or tuple(y.shape[1:]) != out_shape \
                or y.dtype.kind not in "biuf":
            raise DataError(f"labels: expected targets shaped like the output "
                            f"{batch_shape(out_shape)}, found {y.dtype} {y.shape}")
        return y.astype(self.np_dtype, copy=False)

    def check_batch(self, inputs, labels) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``check_inputs`` and ``check_labels``, one row of each per example, and more than one
        value per channel where a BatchNorm stores the unbiased variance (n / (n - 1))."""
        x, y = self.check_inputs(inputs), self.check_labels(labels)
        rows = {len(a) for a in x.values()} | {len(y)}
        if len(rows) > 1:
            raise DataError(f"inputs and labels must have one row per example, found "
                            f"{', '.join(f'{k} {len(a)}' for k, a in x.items())} and labels "
                            f"{len(y)} rows")
        check_unbiased_batch(self._unbiased_cells, len(y))
        return x, y

    def check_masks(self, masks, batch: int) -> dict | None:
        """Injected keep-masks checked against the graph's dropout draws
        (``rosetta.dropout.check_masks``), by node in graph order; None when none are given."""
        return check_masks(self._mask_draws, masks, batch) if masks else None

    # --- the dispatch: host arrays or a prepared Batch ---------------------------------------------
    def prepare_batch(self, inputs, labels) -> Batch:
        x, y = self.check_batch(inputs, labels)
        return Batch(self, self._to_device(self._native_batch(x, y)), len(y))

    def train_step(self, inputs, labels=None, masks=None) -> float:
        if isinstance(inputs, Batch):
            return self._run_step(inputs.check(self, masks), None)
        x, y = self.check_batch(inputs, labels)
        return self._run_step(self._native_batch(x, y), self.check_masks(masks, len(y)))

    def gradients(self, inputs, labels, masks=None) -> tuple[float, dict[str, np.ndarray]]:
        x, y = self.check_batch(inputs, labels)
        return self._run_gradients(self._native_batch(x, y), self.check_masks(masks, len(y)))

    def forward(self, inputs, training: bool = False, masks=None) -> np.ndarray:
        x = self.check_inputs(inputs)
        batch = len(next(iter(x.values())))
        return self._run_forward(self._native_inputs(x), training,
                                 self.check_masks(masks, batch))

    def load_optimizer_state(self, slots: dict, step: int) -> None:
        """``slots`` checked against the NumPy reference's names and the parameter shapes before
        anything is set (``CheckpointError`` naming the first missing, unknown or misshapen one),
        then handed to the backend (``_set_optimizer_state``)."""
        checked = self.spec.optimizer.check_slots(self._param_shapes, slots, step)
        self._set_optimizer_state(checked, int(step))

    # --- the framework part ------------------------------------------------------------------------
    def _native_batch(self, x: dict, y: np.ndarray):
        """What the backend's step runs on, from checked host arrays (not yet placed)."""
        return self._native_inputs(x), self._native_labels(y)

    @abstractmethod
    def _native_inputs(self, x: dict[str, np.ndarray]):
        """Checked host inputs as the backend's model takes them."""

    @abstractmethod
    def _native_labels(self, y: np.ndarray):
        """Checked host labels as the backend's loss takes them."""

    def _to_device(self, batch):
        """A native batch placed on the program's device (``prepare_batch``); as is by default."""
        return batch

    @abstractmethod
    def _run_step(self, batch, masks: dict | None) -> float:
        """One update on a native batch (``masks``: checked keep-masks or None); the loss."""

    @abstractmethod
    def _run_gradients(self, batch, masks: dict | None) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and canonical gradients on a native batch."""

    @abstractmethod
    def _run_forward(self, inputs, training: bool, masks: dict | None) -> np.ndarray:
        """The model output on native inputs."""

    def _set_optimizer_state(self, slots: dict[str, np.ndarray], step: int) -> None:
        """Set checked canonical optimizer slots and the update count."""
        raise BackendUnavailable(f"backend {self.backend!r} cannot load optimizer state")

    # --- the dropout stream's position ----------------------------------------------------------
    # the one array a backend keeps its dropout stream's position under (None: its masks follow
    # from (seed, update count), nothing to save); only that backend reads it back
    rng_key: str | None = None

    def export_rng_state(self) -> dict[str, np.ndarray]:
        """``{rng_key: the stream's position}`` for a program that draws keep-masks from a
        stream of its own; {} otherwise."""
        if self.rng_key is None or not self._mask_draws:
            return {}
        return {self.rng_key: self._rng_position()}

    def load_rng_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Continue the dropout stream from ``export_rng_state`` of a program of this backend
        and spec. {} leaves it where ``load`` put it (seeded from ``spec.seed``); another
        backend's keys, or a stream given to a program without dropout, raise
        ``CheckpointError``."""
        key = self.rng_key
        foreign = sorted(set(arrays) - {key})
        if foreign:
            keeps = (f"{self.backend} keeps its dropout stream as {key}" if key else
                     f"{self.backend} derives dropout masks from the seed and the update count "
                     f"and keeps no stream: it reads only {{}}")
            raise CheckpointError(f"rng state: {', '.join(foreign)} is not {self.backend}'s "
                                  f"({keeps})")
        if not arrays:
            return
        if not self._mask_draws:
            raise CheckpointError(f"rng state: {key} given, but this program has no dropout "
                                  f"stream")
        self._set_rng_position(np.asarray(arrays[key]))

    def _rng_position(self) -> np.ndarray:
        """The dropout stream's position (for a backend with an ``rng_key``)."""
        raise NotImplementedError

    def _set_rng_position(self, a: np.ndarray) -> None:
        """Put the dropout stream at ``a`` (checked: ``CheckpointError`` if it is not one)."""
        raise NotImplementedError

    def __repr__(self):
        extra = "" if self.precision == self.dtype else f", precision={self.precision}"
        return (f"Program({self.backend}, {self.graph.name}, dtype={self.dtype}{extra}, "
                f"device={self.device}, step={self.step}, mode={self.mode})")
