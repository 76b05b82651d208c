"""Precision policies (docs/design.md section 13): one table saying, per op family, the type of
an op's inputs, of its compute and of its output, and the type of the parameters, gradients,
optimizer state and update; and the one dynamic loss-scale rule of ``mixed_float16``.

Policies (``PRECISIONS``; ``--dtype`` names the first two and stays their alias):

* ``float64``, ``float32``: everything in that type;
* ``bfloat16``: pure bf16: parameters, compute, gradients, optimizer state and the update in bf16;
* ``mixed_bfloat16``, ``mixed_float16``: float32 master parameters and optimizer state; the
  products (matmul, convolution, attention and recurrent products) take their inputs in the low
  type, compute and return it; normalisation statistics, softmax, reductions (average pooling,
  sequence means), the loss and the update run in float32 (their inputs cast up); every other op
  (activations, additions, max pooling, dropout, reshapes) computes in the type of its inputs.
  Gradients reach the optimizer in float32 (the master parameters' type), before clipping.

Under every low policy (``bfloat16`` too) a sum accumulates in float32 and is rounded once to
its result's type, the sums of the backward included: a product's bias gradient (its output
gradient summed over the batch and positions) is accumulated in float32, then rounded to the
bias's type (torch and TensorFlow's XLA step do so natively; the JAX and TensorFlow lowerings
write it out, ``backends/<b>/bias.py``: XLA:CPU and TensorFlow's graph runtime sum a bf16
gradient in bf16).

``mixed_float16`` scales the loss (``LossScale``): float16 gradients of a small loss underflow.

The op families (``family``) are decided here from the op's name and attributes, once; an op
not named in ``FAMILIES`` is elementwise (it computes in its inputs' type). Each op's docstring
ends with ``sentence(op)``, generated from this table (``rosetta.ops.registry.register``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rosetta.errors import BackendUnavailable, SpecError

PRECISIONS = ("float32", "float64", "bfloat16", "mixed_bfloat16", "mixed_float16")
LOW = {"bfloat16": "bfloat16", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}

# op families
PRODUCT = "product"          # matmul, convolution, attention and recurrent products
FLOAT32 = "float32"          # normalisation statistics, softmax, reductions: float32 in mixed
ELEMENTWISE = "elementwise"  # computes in the type of its inputs
LOSS = "loss"                # the loss (not an op of the graph): float32 in mixed

FAMILIES = {
    **dict.fromkeys(("Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D",
                     "Conv2DTranspose", "MatMul", "MultiHeadAttention", "DotProductAttention",
                     "LSTM", "GRU", "SimpleRNN"), PRODUCT),
    **dict.fromkeys(("BatchNorm", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm2D",
                     "Softmax", "LogSoftmax", "Reduce", "AvgPool1D", "AvgPool2D",
                     "GlobalAvgPool2D", "SequencePool"), FLOAT32),
}
# the softmax inside these products runs in float32 under a mixed policy (a separate float32
# stage of the product: its scores are cast up, its weights cast back to the low type)
INNER_SOFTMAX = ("MultiHeadAttention", "DotProductAttention")


def family(op: str, attrs: dict | None = None) -> str:
    """The op family of a node: ``Activation('softmax')`` is a softmax (``FLOAT32``); every
    other op by ``FAMILIES``, ``ELEMENTWISE`` when not named there."""
    if op == "Activation" and (attrs or {}).get("fn") in ("softmax", "log_softmax"):
        return FLOAT32
    return FAMILIES.get(op, ELEMENTWISE)


@dataclass(frozen=True)
class Policy:
    """One precision policy: ``param`` the type of the (master) parameters, gradients, optimizer
    state and update; ``low`` the type products compute in; ``mixed``: normalisation, softmax,
    reductions and the loss run in float32 while products run in ``low``; ``loss_scale``: the
    dynamic loss scale of ``LossScale`` is applied."""

    name: str
    param: str
    low: str
    mixed: bool
    loss_scale: bool

    @property
    def host(self) -> str:
        """The NumPy dtype arrays cross the Program API in (bf16 values are exact in float32)."""
        return "float64" if self.param == "float64" else "float32"

    def types(self, fam: str) -> tuple[str, str, str]:
        """(inputs, compute, output) of an op of family ``fam``; ``"same"`` for elementwise ops
        (the type of their inputs)."""
        if fam == ELEMENTWISE:
            return ("same", "same", "same")
        t = self.low if (fam == PRODUCT or not self.mixed) else "float32"
        return (t, t, t)

    def compute_type(self, fam: str, inputs: str) -> str:
        """The type an op of family ``fam`` computes (and returns) in, given its inputs'."""
        t = self.types(fam)[1]
        return inputs if t == "same" else t


def policy(name: str) -> Policy:
    """The policy named ``name``; ``BackendUnavailable`` naming the choices otherwise."""
    if name not in PRECISIONS:
        raise BackendUnavailable(f"precision must be one of {', '.join(PRECISIONS)}, found "
                                 f"{name!r}")
    if name in ("float32", "float64"):
        return Policy(name, name, name, False, False)
    if name == "bfloat16":
        return Policy(name, "bfloat16", "bfloat16", False, False)
    return Policy(name, "float32", LOW[name], True, name == "mixed_float16")


def resolve(dtype: str | None, precision: str | None, default: str | None = "float32"):
    """The precision of a run given ``--dtype`` (its alias) and ``--precision``; both given and
    different is a ``DataError``."""
    from rosetta.errors import DataError

    if dtype is not None and precision is not None and dtype != precision:
        raise DataError(f"--dtype {dtype} and --precision {precision} disagree: give one "
                        f"(--dtype is an alias of --precision)")
    name = precision or dtype or default
    if name is not None:
        policy(name)
    return name


def node_types(graph, pol: Policy) -> dict[str, str]:
    """{node name: the type its output is computed in} under ``pol``, inputs arriving in the
    parameters' type (``pol.param``): the types each backend's lowered step must show."""
    out = {i.name: pol.param for i in graph.inputs}
    for node in graph.nodes:
        ins = [out[s] for s in node.inputs]
        widest = "float32" if "float32" in ins else (ins[0] if ins else pol.param)
        if pol.param == "float64":
            widest = "float64"
        if node.op == "Embedding":
            widest = pol.param
        out[node.name] = pol.compute_type(family(node.op, node.attrs), widest)
    return out


def check_graph(graph, pol: Policy, where: str = "$.model") -> None:
    """A mixed policy runs a fused softmax activation of a product in float32, which a fused
    layer cannot: refused with the fix (an ``Activation('softmax')`` node of its own)."""
    if not pol.mixed:
        return
    for node in graph.nodes:
        if (family(node.op, node.attrs) == PRODUCT
                and node.attrs.get("activation") in ("softmax", "log_softmax")):
            raise SpecError(f"{pol.name}: the fused {node.attrs['activation']} of {node.op} "
                            f"{node.name!r} must run in float32, its product in "
                            f"{pol.low}; make the softmax an Activation node of its own",
                            where=f"{where}.nodes.{node.name}")


def sentence(op: str) -> str:
    """The docstring sentence of ``op``: what each mixed policy runs it in."""
    fam = FAMILIES.get(op, ELEMENTWISE)
    if fam == PRODUCT:
        s = ("Precision: under mixed_bfloat16 / mixed_float16 its inputs are cast to bfloat16 / "
             "float16 and its product computes and returns that type (parameters stay float32 "
             "masters)")
        if op in INNER_SOFTMAX:
            s += "; its softmax runs in float32"
        return s + "; bfloat16 runs it all in bf16."
    if fam == FLOAT32:
        return ("Precision: under mixed_bfloat16 / mixed_float16 its inputs are cast to float32 "
                "and it computes and returns float32; bfloat16 runs it in bf16.")
    extra = " (softmax / log_softmax: float32, as a softmax)" if op == "Activation" else ""
    return (f"Precision: it computes and returns the type of its inputs under every "
            f"policy{extra}.")


# --- dynamic loss scaling (mixed_float16) ----------------------------------------------------
INITIAL_SCALE = 2.0 ** 15
GROWTH_INTERVAL = 2000
GROWTH_FACTOR = 2.0
BACKOFF = 0.5


@dataclass
class LossScale:
    """The one dynamic loss-scale rule of ``mixed_float16``, on every backend.

    A step computes the gradients of ``loss * scale`` (in float32 master parameters' type), then
    g = g_scaled / scale in float32 (exact: the scale is a power of two). If every element of
    every g is finite, the update is applied (clipping first) and ``good`` counts it: when
    ``good`` reaches ``interval`` the scale is multiplied by ``factor`` and ``good`` restarts at 0.
    If any element is not finite, the update is skipped: no parameter or optimizer slot moves,
    the update count (``Program.step``, hence lr(step), Adam's bias corrections and the
    schedule's step) does not advance, the scale is multiplied by ``backoff`` and ``good``
    restarts at 0. The skipped step still consumed its batch (the data order is the run's).
    The state (``scale``, ``good``) is in the neutral checkpoint's record (``loss_scale``), so
    a resume on any backend continues it exactly."""

    scale: float = INITIAL_SCALE
    good: int = 0
    interval: int = GROWTH_INTERVAL
    factor: float = GROWTH_FACTOR
    backoff: float = BACKOFF

    def after(self, finite: bool) -> bool:
        """Advance the rule after a step whose unscaled gradients were all ``finite``; True
        when the update is applied."""
        if finite:
            self.good += 1
            if self.good == self.interval:
                self.scale *= self.factor
                self.good = 0
            return True
        self.scale *= self.backoff
        self.good = 0
        return False

    def to_json(self) -> dict:
        """{"scale", "good"}: what the neutral checkpoint's record keeps (``loss_scale``)."""
        return {"scale": float(self.scale), "good": int(self.good)}

    def load(self, d: dict, where: str = "loss_scale") -> None:
        """Continue from ``to_json``'s dict, checked (``CheckpointError`` naming the field)."""
        from rosetta.errors import CheckpointError

        scale, good = (d or {}).get("scale"), (d or {}).get("good")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
                or not 0 < scale < float("inf"):
            raise CheckpointError(f"{where}: 'scale' must be a positive finite number, found "
                                  f"{scale!r}")
        if isinstance(good, bool) or not isinstance(good, int) or not 0 <= good < self.interval:
            raise CheckpointError(f"{where}: 'good' must be an integer in [0, "
                                  f"{self.interval}), found {good!r}")
        self.scale, self.good = float(scale), good
