"""``rosetta bench``: the same spec timed on every backend and mode, side by side with hand-written
native code (DESIGN section 7, issue 5).

What is measured, per spec x backend x mode (``run_case``):

* ``compile_seconds``: lowering the spec plus the first training step (tracing, XLA or inductor
  compilation), apart from the steady state. ``native_compile_seconds`` the same for the baseline.
* steady-state step time: after ``warmup`` steps, ``steps`` steps of rosetta's lowered program and
  ``steps`` steps of the hand-written baseline (``rosetta.conformance.baselines``), ALTERNATING in
  blocks of ``block`` steps in one process (rosetta first in even blocks, native first in odd
  ones), so that machine noise hits both alike. Every step is timed on its own and ends
  synchronised: both return the loss as a Python float (``.item()``, ``float(tensor)``,
  ``float(jax array)``), which waits for the device. The batches are prepared on the device before
  timing (``Program.prepare_batch``, the baseline's ``put``) and cycled.
* ``step_ms_median`` / ``step_ms_iqr`` over every timed step; ``overhead_ratio``: the median over
  the paired blocks of (rosetta block median / native block median) -- a paired statistic, robust
  to drift and to one-off stalls.
* ``samples_per_second`` = batch / median step time.
* FLOPs per step: ``TRAIN_FLOPS_FACTOR`` (3) x the graph's forward FLOPs per example
  (``Graph.flops_per_example``: multiply-adds count 2) x batch. The rule: the backward pass of a
  Dense or Conv layer costs two forward passes (gradient with respect to the input and to the
  kernel), so a step is about 3 forward passes; the optimizer's elementwise update (a few FLOPs
  per parameter) is not counted, nor is the first layer's unneeded input gradient counted out.
  ``gflops`` = FLOPs per step / median step time; ``peak_fraction`` = gflops / the machine's
  float32 matmul peak, measured at start and again at the end, the better of the two (a shared
  machine's load varies; ``matmul_peak``: best of several large float32 matmuls, NumPy on the CPU,
  the framework on a GPU); ``floor_ms`` = FLOPs per step / peak, the arithmetic floor.
* ``peak_memory_mb``: on the CPU the process's peak resident set size (VmHWM, reset through
  ``/proc/self/clear_refs`` before each implementation is built, so it is the peak while it was
  built, compiled and warmed up; it includes the framework runtime and everything loaded before);
  on a GPU the framework's peak device memory.

Fairness: the same spec, initial weights, batches, dtype and batch size for both sides (the
baseline's first loss is recorded beside rosetta's: ``loss_gap``); TF32 off (the backends and the
baselines switch it off); nothing is pinned unless asked (``--threads N``): thread counts and the
environment variables that set them are recorded in the report (``environment.threads``).

``--keras`` adds Keras 3 (``train_on_batch``, Keras's default compile) on each backend, timed in
a subprocess per backend after the alternating run (``run_keras``): a reference column, not part
of the ratio.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import importlib.util
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

import rosetta as rs
from rosetta.backend import normalize_device
from rosetta.backend_registry import backend_names, get_backend
from rosetta.data import batches as batch_indices, take
from rosetta.errors import DataError, SpecError
from rosetta.schedules import Constant, WarmupCosine
from rosetta.spec import TrainSpec
from rosetta.threads import pin_threads
from rosetta import validate
from rosetta.train import check_data, dataset_inputs, prepare_labels

TRAIN_FLOPS_FACTOR = 3
DEFAULT_STEPS = 200
DEFAULT_BLOCK = 10
N_BATCHES = 4  # distinct batches prepared on the device and cycled

BASELINES = {"torch": "rosetta.conformance.baselines.torch_native",
             "tensorflow": "rosetta.conformance.baselines.tensorflow_native",
             "jax": "rosetta.conformance.baselines.jax_native"}


# --- bench-only specs ---------------------------------------------------------------------------

def mlp784() -> TrainSpec:
    """DESIGN section 7's MLP: 28x28x1 -> flatten -> 784-512-512-10 ReLU, Adam, batch 128, on the
    synthetic 28x28 'images' dataset (4 classes used of the 10 outputs)."""
    model = rs.Sequential([
        rs.Flatten(name="flatten"),
        rs.Dense(512, activation="relu", name="hidden1"),
        rs.Dense(512, activation="relu", name="hidden2"),
        rs.Dense(10, name="logits"),
    ], input_shape=(28, 28, 1), name="mlp784")
    return TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                     optimizer=rs.optim.Adam(1e-3),
                     data=rs.DataSpec("images", 128, {"height": 28, "width": 28, "channels": 1}),
                     steps=200, description=mlp784.__doc__)


BENCH_SPECS = {"mlp784": mlp784}


# --- the hand-written baseline that fits a spec --------------------------------------------------
# Each recogniser reads the graph and returns the plain ``arch`` dict of one family of
# ``rosetta.conformance.baselines`` (None when the graph is not of that family's shape).

def _dense_ok(node, activations=("identity", "relu")):
    a = node.attrs
    return node.op == "Dense" and a["use_bias"] and a["activation"] in activations


def _conv_ok(node, use_bias=True, activations=("identity", "relu")):
    a = node.attrs
    k = a["kernel_size"]
    return (node.op == "Conv2D" and k[0] == k[1] and a["dilation"] == (1, 1)
            and a["groups"] == 1 and a["use_bias"] == use_bias
            and a["activation"] in activations)


def _relu(node, source):
    return (node.op == "Activation" and node.attrs["fn"] == "relu"
            and tuple(node.inputs) == (source,))


def _chain(graph) -> bool:
    prev = graph.inputs[0].name
    for n in graph.nodes:
        if tuple(n.inputs) != (prev,):
            return False
        prev = n.name
    return list(graph.outputs) == [prev]


def _sequential_arch(g) -> dict | None:
    """[conv(stride 1) | maxpool | flatten | dense]* ending in a linear Dense, as a chain."""
    if len(g.inputs) != 1 or g.inputs[0].kind != "float" or not _chain(g):
        return None
    layers, spatial = [], len(g.inputs[0].shape) == 3
    for n in g.nodes:
        a = n.attrs
        if n.op == "Conv2D" and spatial and _conv_ok(n) and a["strides"] == (1, 1) \
                and a["padding"] in ("same", "valid"):
            layers.append({"op": "conv", "name": n.name, "kernel": a["kernel_size"][0],
                           "padding": a["padding"], "relu": a["activation"] == "relu"})
        elif n.op == "MaxPool2D" and spatial and a["kernel_size"][0] == a["kernel_size"][1] \
                and a["strides"] == a["kernel_size"] and a["padding"] == "valid":
            layers.append({"op": "maxpool", "size": a["kernel_size"][0]})
        elif n.op == "Flatten" and spatial:
            layers.append({"op": "flatten"})
            spatial = False
        elif n.op == "Dense" and _dense_ok(n) and len(g.types[n.inputs[0]].shape) == 1:
            layers.append({"op": "dense", "name": n.name, "relu": a["activation"] == "relu"})
        else:
            return None
    if not layers or layers[-1]["op"] != "dense" or layers[-1]["relu"]:
        return None
    return {"model": "sequential", "layers": layers}


def _resnet_arch(g) -> dict | None:
    """conv-BN-ReLU stem, basic blocks (conv-BN-ReLU-conv-BN + identity or conv-BN shortcut,
    ReLU), global mean pool, Dense."""
    if len(g.inputs) != 1 or len(g.inputs[0].shape) != 3 or len(g.outputs) != 1:
        return None
    nodes, norms = list(g.nodes), set()
    pos = [0]

    def take(op, inputs):
        if pos[0] >= len(nodes):
            raise LookupError
        n = nodes[pos[0]]
        if n.op != op or tuple(n.inputs) != tuple(inputs):
            raise LookupError
        pos[0] += 1
        return n

    def conv_bn(source, stride=None):
        c = take("Conv2D", (source,))
        if not _conv_ok(c, use_bias=False, activations=("identity",)) \
                or c.attrs["padding"] != "same" or c.attrs["strides"][0] != c.attrs["strides"][1]:
            raise LookupError
        bn = take("BatchNorm", (c.name,))
        norms.add((bn.attrs["momentum"], bn.attrs["epsilon"]))
        return c, bn

    try:
        c, bn = conv_bn(g.inputs[0].name)
        if c.attrs["strides"] != (1, 1):
            return None
        h = take("Activation", (bn.name,))
        if not _relu(h, bn.name):
            return None
        stem, blocks = {"conv": c.name, "bn": bn.name}, []
        while nodes[pos[0]].op == "Conv2D":
            x = h.name
            c1, b1 = conv_bn(x)
            r = take("Activation", (b1.name,))
            c2, b2 = conv_bn(r.name)
            proj = (None, None)
            if nodes[pos[0]].op == "Conv2D":
                proj = conv_bn(x)
            add = nodes[pos[0]]
            short = proj[1].name if proj[1] else x
            if add.op != "Add" or tuple(add.inputs) != (b2.name, short) or not _relu(r, b1.name):
                return None
            pos[0] += 1
            h = take("Activation", (add.name,))
            stride = c1.attrs["strides"][0]
            if not _relu(h, add.name) or c2.attrs["strides"] != (1, 1) or (
                    proj[0] is not None and proj[0].attrs["strides"][0] != stride) or (
                    proj[0] is None and stride != 1):
                return None
            blocks.append({"conv1": c1.name, "bn1": b1.name, "conv2": c2.name, "bn2": b2.name,
                           "proj_conv": proj[0] and proj[0].name,
                           "proj_bn": proj[1] and proj[1].name, "stride": stride})
        pool = take("GlobalAvgPool2D", (h.name,))
        head = take("Dense", (pool.name,))
    except (LookupError, IndexError):
        return None
    if pos[0] != len(nodes) or not _dense_ok(head, ("identity",)) or len(norms) != 1 \
            or g.outputs != [head.name] or not blocks:
        return None
    (momentum, epsilon), = norms
    return {"model": "resnet", "stem": stem, "blocks": blocks, "head": head.name,
            "momentum": momentum, "epsilon": epsilon}


def _recurrent_arch(g) -> dict | None:
    """Embedding -> LSTM | GRU (final state, masked by the lengths) -> Dense."""
    if [i.kind for i in g.inputs] != ["int", "int"] or len(g.nodes) != 3:
        return None
    (tokens, lengths), (emb, rnn, head) = g.inputs, g.nodes
    ok = (emb.op == "Embedding" and tuple(emb.inputs) == (tokens.name,)
          and rnn.op in ("LSTM", "GRU") and tuple(rnn.inputs) == (emb.name, lengths.name)
          and not rnn.attrs["return_sequences"] and not rnn.attrs["bidirectional"]
          and _dense_ok(head, ("identity",)) and tuple(head.inputs) == (rnn.name,)
          and g.outputs == [head.name] and len(tokens.shape) == 1 and lengths.shape == ())
    if not ok:
        return None
    return {"model": "recurrent", "cell": rnn.op.lower(), "embed": emb.name, "rnn": rnn.name,
            "head": head.name, "units": rnn.attrs["units"], "lengths": True}


def _transformer_arch(g) -> dict | None:
    """Embedding + positions, pre-norm blocks (self-attention without dropout, gelu_exact
    feed-forward), LayerNorm, [mean pool over the lengths], Dense."""
    kinds = [i.kind for i in g.inputs]
    if kinds not in (["int"], ["int", "int"]) or len(g.inputs[0].shape) != 1:
        return None
    tokens = g.inputs[0].name
    lengths = g.inputs[1].name if len(kinds) == 2 else None
    nodes = list(g.nodes)
    if len(nodes) < 4 or (nodes[0].op, nodes[1].op) != ("Embedding", "PositionEmbedding") \
            or tuple(nodes[0].inputs) != (tokens,) or tuple(nodes[1].inputs) != (nodes[0].name,):
        return None
    width = g.types[nodes[1].name].shape[-1]
    x, i, blocks, attrs, eps = nodes[1].name, 2, [], set(), set()
    while i + 7 <= len(nodes) and nodes[i + 1].op == "MultiHeadAttention":
        ln1, att, add1, ln2, ff1, ff2, add2 = nodes[i:i + 7]
        a = att.attrs
        keys = (ln1.name, ln1.name) + ((lengths,) if lengths else ())
        ok = (ln1.op == ln2.op == "LayerNorm" and tuple(ln1.inputs) == (x,)
              and tuple(att.inputs) == keys and a["dropout"] == 0.0 and a["use_bias"]
              and a["output_dim"] in (None, width) and a["heads"] * a["head_dim"] == width
              and add1.op == "Add" and tuple(add1.inputs) == (x, att.name)
              and tuple(ln2.inputs) == (add1.name,)
              and _dense_ok(ff1, ("gelu_exact",)) and tuple(ff1.inputs) == (ln2.name,)
              and _dense_ok(ff2, ("identity",)) and tuple(ff2.inputs) == (ff1.name,)
              and add2.op == "Add" and tuple(add2.inputs) == (add1.name, ff2.name))
        if not ok:
            return None
        attrs.add((a["heads"], a["head_dim"], a["causal"]))
        eps |= {ln1.attrs["epsilon"], ln2.attrs["epsilon"]}
        blocks.append({"ln1": ln1.name, "attn": att.name, "ln2": ln2.name, "ff1": ff1.name,
                       "ff2": ff2.name})
        x, i = add2.name, i + 7
    rest = nodes[i:]
    pooled = lengths is not None
    if not blocks or len(attrs) != 1 or len(rest) != 2 + pooled:
        return None
    norm, head = rest[0], rest[-1]
    eps.add(norm.attrs.get("epsilon"))
    ok = (norm.op == "LayerNorm" and tuple(norm.inputs) == (x,) and len(eps) == 1
          and _dense_ok(head, ("identity",)) and g.outputs == [head.name])
    if pooled:
        pool = rest[1]
        ok = ok and (pool.op == "SequencePool" and pool.attrs["mode"] == "mean"
                     and tuple(pool.inputs) == (norm.name, lengths)
                     and tuple(head.inputs) == (pool.name,))
    else:
        ok = ok and tuple(head.inputs) == (norm.name,)
    if not ok:
        return None
    (heads, head_dim, causal), = attrs
    return {"model": "transformer", "embed": nodes[0].name, "pos": nodes[1].name,
            "blocks": blocks, "heads": heads, "head_dim": head_dim, "causal": causal,
            "epsilon": eps.pop(), "final_norm": norm.name, "pool": "mean" if pooled else None,
            "head": head.name, "lengths": pooled}


ARCHS = (_sequential_arch, _resnet_arch, _recurrent_arch, _transformer_arch)


def _plain_lr(schedule) -> float | dict | None:
    if isinstance(schedule, Constant):
        return float(schedule.value)
    if isinstance(schedule, WarmupCosine):
        return schedule.to_json()
    return None


def _plain_optimizer(opt) -> dict | None:
    """The optimizer as the baselines' plain values, or None when they do not write it: Adam /
    AdamW (canonical epsilon) or SGD, decay on every parameter, constant or warm-up cosine
    learning rate, no clipping, no per-parameter learning rates."""
    lr = _plain_lr(opt.learning_rate)
    if lr is None or getattr(opt, "clip_norm", None) is not None \
            or getattr(opt, "clip_value", None) is not None or getattr(opt, "lr_scale", None) \
            or getattr(opt, "decay", "all") != "all" \
            or getattr(opt, "epsilon_mode", "canonical") != "canonical":
        return None
    if opt.kind in ("adam", "adamw"):
        return {"name": "adam", "lr": lr, "beta1": opt.beta1, "beta2": opt.beta2,
                "eps": opt.epsilon, "weight_decay": getattr(opt, "weight_decay", 0.0)}
    if opt.kind == "sgd":
        return {"name": "sgd", "lr": lr, "momentum": opt.momentum, "nesterov": opt.nesterov,
                "weight_decay": opt.weight_decay}
    return None


def baseline_plan(spec: TrainSpec) -> dict | None:
    """What the hand-written baselines need for ``spec``: the plain ``arch`` description of its
    family (see ``rosetta.conformance.baselines``), loss, optimizer and input shape, or None when
    no baseline is written for its shape, its loss (softmax or sequence cross-entropy without
    smoothing, MSE) or its optimizer (see ``_plain_optimizer``)."""
    arch = next((a for a in (f(spec.model) for f in ARCHS) if a is not None), None)
    loss = spec.loss
    fits = (loss.kind == "mse" or loss.kind == "softmax_cross_entropy"
            and loss.label_smoothing == 0.0 or loss.kind == "sequence_cross_entropy"
            and loss.label_smoothing == 0.0 and loss.ignore_label == -1)
    optimizer = _plain_optimizer(spec.optimizer)
    if arch is None or not fits or optimizer is None:
        return None
    return {"arch": arch, "loss": loss.kind, "optimizer": optimizer,
            "input_shape": tuple(spec.model.inputs[0].shape)}


def build_baseline(spec: TrainSpec, backend: str, *, dtype: str, device: str, mode: str,
                   params: dict | None = None):
    """The hand-written trainer for ``spec`` on ``backend`` (None when none fits), from the
    spec's initial parameters (or ``params``) as plain NumPy arrays in the program dtype."""
    plan = baseline_plan(spec)
    if plan is None or backend not in BASELINES:  # no hand-written baseline for this backend
        return None
    params = spec.model.init_params(spec.seed) if params is None else params
    weights = {k: np.asarray(v, dtype) for k, v in params.items()}
    module = importlib.import_module(BASELINES[backend])
    return module.build(plan["arch"], weights, plan["loss"], plan["optimizer"],
                        input_shape=plan["input_shape"], dtype=dtype,
                        device=normalize_device(device), mode=mode)


def baseline_input(spec: TrainSpec, x: dict):
    """A host batch's inputs as the baselines take them: the array of a single input, else the
    tuple in the graph's input order ((tokens, lengths))."""
    arrays = tuple(x[i.name] for i in spec.model.inputs)
    return arrays[0] if len(arrays) == 1 else arrays


# --- data ---------------------------------------------------------------------------------------

def bench_batches(spec: TrainSpec, batch_size: int, dtype: str, count: int = N_BATCHES,
                  seed: int = 0) -> tuple[list, str]:
    """``count`` host batches (inputs dict, labels) from the spec's dataset when it fits the
    model, else synthetic (normal inputs, uniform labels); and which it was."""
    from rosetta.conformance.oracle import sample_inputs, sample_targets

    try:
        ds = spec.data.load(model=spec.model)
        check_data(spec, ds, batch_size)
    except (DataError, SpecError):
        if spec.data.source != "dataset":
            raise  # the user's own data: a bad file is their error, never a silent substitute
        out = [(sample_inputs(spec.model, batch_size, seed + i),
                sample_targets(spec, batch_size, seed + 100 + i)) for i in range(count)]
        return [({k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in x.items()},
                 prepare_labels(spec, y)) for x, y in out], "synthetic"
    x = dataset_inputs(spec, ds.x_train, dtype)
    y = prepare_labels(spec, ds.y_train)
    return [(take(x, idx), y[idx])
            for _, idx in batch_indices(ds.n_train, batch_size, seed, count)], ds.name


# --- machine: matmul peak, memory, threads -------------------------------------------------------

def matmul_peak(device: str = "cpu", n: int | None = None, repeats: int = 5,
                threads: int | None = None) -> dict:
    """The machine's float32 matmul rate in GFLOP/s: the best of ``repeats`` n x n products
    (NumPy on the CPU, its BLAS limited to ``threads`` when given and ``threadpoolctl`` is
    installed; on a GPU, torch, else jax, with TF32 off)."""
    from contextlib import nullcontext

    device = normalize_device(device)
    if device == "gpu":
        return _gpu_matmul_peak(n or 8192, repeats)
    n = n or 2048
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    limit, note = nullcontext(), "its BLAS's default threads"
    if threads:
        try:
            from threadpoolctl import threadpool_limits
            limit, note = threadpool_limits(threads), f"{threads} BLAS thread(s)"
        except ImportError:
            note += " (threadpoolctl missing: --threads not applied to it)"
    with limit:
        a @ b
        best = min(_timeit(lambda: a @ b) for _ in range(repeats))
    return {"gflops": 2 * n ** 3 / best / 1e9, "how": f"numpy float32 {n}x{n} matmul, best of "
            f"{repeats}, {note}", "library": "numpy " + np.__version__}


def _timeit(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _gpu_matmul_peak(n: int, repeats: int) -> dict:
    if "torch" in sys.modules or importlib.util.find_spec("torch"):
        import torch
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False
            a = torch.randn(n, n, device="cuda")
            b = torch.randn(n, n, device="cuda")
            (a @ b).sum().item()

            def run():
                (a @ b).sum().item()
            best = min(_timeit(run) for _ in range(repeats))
            return {"gflops": 2 * n ** 3 / best / 1e9, "how": f"torch float32 {n}x{n} matmul "
                    f"(TF32 off), best of {repeats}", "library": "torch " + torch.__version__}
    import jax
    import jax.numpy as jnp
    dev = jax.devices("gpu")[0]
    a = jax.device_put(jnp.ones((n, n), jnp.float32), dev)
    f = jax.jit(lambda x: jnp.dot(x, x, precision=jax.lax.Precision.HIGHEST))
    f(a).block_until_ready()
    best = min(_timeit(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return {"gflops": 2 * n ** 3 / best / 1e9, "how": f"jax float32 {n}x{n} matmul (HIGHEST), "
            f"best of {repeats}", "library": "jax " + jax.__version__}


def reset_peak_memory(backend: str, device: str) -> None:
    if device == "gpu":
        try:
            if backend == "torch":
                import torch
                torch.cuda.reset_peak_memory_stats()
            elif backend == "tensorflow":
                import tensorflow as tf
                tf.config.experimental.reset_memory_stats("GPU:0")
        except Exception:  # noqa: BLE001 - a missing statistic is reported as None
            pass
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set size (Linux >= 4.0)
    except OSError:
        pass


def peak_memory_mb(backend: str, device: str) -> float | None:
    """Peak device memory (GPU) or peak resident set size of the process (CPU), in MiB."""
    try:
        if device == "gpu":
            if backend == "torch":
                import torch
                return torch.cuda.max_memory_allocated() / 2 ** 20
            if backend == "tensorflow":
                import tensorflow as tf
                return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
            import jax
            stats = jax.devices("gpu")[0].memory_stats() or {}
            peak = stats.get("peak_bytes_in_use")
            return None if peak is None else peak / 2 ** 20
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except Exception:  # noqa: BLE001
        pass
    if device == "gpu":
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS",
              "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS",
              "CUDA_VISIBLE_DEVICES")


def thread_settings(backends) -> dict:
    """Thread counts as the frameworks report them (the benchmark sets none unless asked:
    ``--threads``)."""
    out = {"cpu_count": os.cpu_count(),
           "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    if hasattr(os, "sched_getaffinity"):
        out["usable_cpus"] = len(os.sched_getaffinity(0))
    if "torch" in backends:
        import torch
        out["torch"] = {"intra_op": torch.get_num_threads(),
                        "inter_op": torch.get_num_interop_threads()}
    if "tensorflow" in backends:
        import tensorflow as tf
        t = tf.config.threading
        out["tensorflow"] = {"intra_op": t.get_intra_op_parallelism_threads(),
                             "inter_op": t.get_inter_op_parallelism_threads(),
                             "note": "0 = TensorFlow's default (one thread per core)"}
    if "jax" in backends:
        out["jax"] = {"note": "XLA's CPU runtime: one intra-op pool of one thread per core "
                              "unless XLA_FLAGS says otherwise"}
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if normalize_device(device) != "gpu":
        return f"cpu: {cpu_name()} ({os.cpu_count()} logical cores)"
    try:
        import torch
        if torch.cuda.is_available():
            return f"gpu: {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    try:
        import jax
        return f"gpu: {jax.devices('gpu')[0].device_kind}"
    except Exception:  # noqa: BLE001
        return "gpu"


# --- one case -----------------------------------------------------------------------------------

def _timed(step, batches, n: int, start: int, out: list) -> None:
    """Run ``n`` steps (batches cycled from ``start``), appending each step's seconds."""
    clock = time.perf_counter
    k = len(batches)
    for i in range(n):
        b = batches[(start + i) % k]
        t = clock()
        step(b)
        out.append(clock() - t)


def _quantiles(xs) -> dict:
    a = np.asarray(xs, dtype=np.float64) * 1e3
    p25, med, p75 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "p25": float(p25), "p75": float(p75), "iqr": float(p75 - p25),
            "min": float(a.min()), "max": float(a.max())}


def _with_batch_size(spec: TrainSpec, batch_size: int) -> TrainSpec:
    data = dataclasses.replace(spec.data, batch_size=batch_size)
    return TrainSpec(spec.model, spec.loss, spec.optimizer, data, spec.steps, spec.seed,
                     spec.description)


def run_case(spec: TrainSpec, backend: str, mode: str, *, batch_size: int | None = None,
             steps: int = DEFAULT_STEPS, block: int = DEFAULT_BLOCK, warmup: int | None = None,
             device: str = "cpu", dtype: str = "float32", peak_gflops: float | None = None,
             native: bool = True) -> dict:
    """Time one spec on one backend and mode against its hand-written baseline (see the module
    docstring); returns one ``results`` entry of the report."""
    device = normalize_device(device)
    batch_size = batch_size or spec.data.batch_size
    spec = _with_batch_size(spec, batch_size)
    block = max(1, min(block, steps))
    warmup = max(3, steps // 10) if warmup is None else warmup
    host, source = bench_batches(spec, batch_size, dtype)
    be = get_backend(backend)

    gc.collect()
    reset_peak_memory(backend, device)
    t0 = time.perf_counter()
    program = be.compile(spec, dtype=dtype, device=device, mode=mode)
    lower_s = time.perf_counter() - t0
    rb = [program.prepare_batch(x, y) for x, y in host]
    t0 = time.perf_counter()
    first_loss = program.train_step(rb[0])
    compile_s = lower_s + time.perf_counter() - t0
    _timed(program.train_step, rb, warmup, 1, [])
    memory = peak_memory_mb(backend, device)

    trainer = None
    if native:
        gc.collect()
        reset_peak_memory(backend, device)
        t0 = time.perf_counter()
        trainer = build_baseline(spec, backend, dtype=dtype, device=device, mode=mode)
        build_s = time.perf_counter() - t0
    if trainer is not None:
        nb = [trainer.put(baseline_input(spec, x), y) for x, y in host]
        t0 = time.perf_counter()
        native_first = trainer.step(nb[0])
        native_compile_s = build_s + time.perf_counter() - t0
        _timed(trainer.step, nb, warmup, 1, [])
        native_memory = peak_memory_mb(backend, device)

    ros_times: list[float] = []
    nat_times: list[float] = []
    block_ratios = []
    start = 1 + warmup
    done = 0
    i = 0
    while done < steps:
        n = min(block, steps - done)
        r_block: list[float] = []
        n_block: list[float] = []
        order = [(program.train_step, rb, r_block)]
        if trainer is not None:
            order.append((trainer.step, nb, n_block))
            if i % 2:
                order.reverse()
        for step, bs, out in order:
            _timed(step, bs, n, start, out)
        ros_times += r_block
        nat_times += n_block
        if n_block:
            block_ratios.append(statistics.median(r_block) / statistics.median(n_block))
        start += n
        done += n
        i += 1
    last_loss = program.train_step(rb[start % len(rb)])

    g = spec.model
    flops = train_flops(g, batch_size)
    q = _quantiles(ros_times)
    med_s = q["median"] / 1e3
    gflops = flops / med_s / 1e9
    row = {
        "model": spec.name, "backend": backend, "mode": mode, "device": device, "dtype": dtype,
        "batch_size": batch_size, "steps": steps, "warmup": warmup, "block": block,
        "data": source, "framework": be.version(),
        "compile_seconds": compile_s,
        "step_ms_median": q["median"], "step_ms_iqr": q["iqr"], "step_ms_p25": q["p25"],
        "step_ms_p75": q["p75"], "step_ms_min": q["min"], "step_ms_max": q["max"],
        "samples_per_second": batch_size / med_s,
        "peak_memory_mb": memory, "memory": "device" if device == "gpu" else "process RSS",
        "flops_per_step": int(flops), "gflops": gflops,
        "peak_fraction": gflops / peak_gflops if peak_gflops else None,
        "floor_ms": flops / (peak_gflops * 1e9) * 1e3 if peak_gflops else None,
        "first_loss": first_loss, "last_loss": last_loss,
        "native_compile_seconds": None, "native_step_ms": None, "native_step_ms_iqr": None,
        "native_peak_memory_mb": None, "native_first_loss": None, "native_last_loss": None,
        "overhead_ratio": None, "overhead_ratio_iqr": None, "loss_gap": None,
    }
    if trainer is not None:
        nq = _quantiles(nat_times)
        native_last = trainer.step(nb[start % len(nb)])
        rp25, rp75 = np.percentile(block_ratios, [25, 75])
        row.update({
            "native_compile_seconds": native_compile_s, "native_step_ms": nq["median"],
            "native_step_ms_iqr": nq["iqr"], "native_step_ms_p25": nq["p25"],
            "native_step_ms_p75": nq["p75"], "native_step_ms_min": nq["min"],
            "native_step_ms_max": nq["max"], "native_peak_memory_mb": native_memory,
            "native_first_loss": native_first, "native_last_loss": native_last,
            "overhead_ratio": float(statistics.median(block_ratios)),
            "overhead_ratio_iqr": float(rp75 - rp25), "blocks": len(block_ratios),
            "loss_gap": abs(first_loss - native_first) / max(abs(native_first), 1e-30),
        })
    return row


def set_peak(rows: list[dict], peak_gflops: float) -> list[dict]:
    """``peak_fraction`` and ``floor_ms`` of every row against ``peak_gflops``."""
    for r in rows:
        r["peak_fraction"] = r["gflops"] / peak_gflops
        r["floor_ms"] = r["flops_per_step"] / (peak_gflops * 1e9) * 1e3
    return rows


def mark_best(rows: list[dict]) -> list[dict]:
    """``best``: per (model, backend), the mode with the lowest median step time."""
    best = {}
    for r in rows:
        k = (r["model"], r["backend"])
        if k not in best or r["step_ms_median"] < best[k]["step_ms_median"]:
            best[k] = r
    for r in rows:
        r["best"] = best[(r["model"], r["backend"])] is r
    return rows


def environment(backends, device: str, peak: dict) -> dict:
    from rosetta.conformance.report import environment as versions

    env = versions()
    how = peak["how"]
    if "start_gflops" in peak:
        how += (f"; best of the measurements at start ({peak['start_gflops']:.1f}) and end "
                f"({peak['end_gflops']:.1f})")
    env.update({"device": device_name(device), "platform": platform.platform(),
                "matmul_peak_gflops": peak["gflops"], "matmul_peak": how,
                "threads": thread_settings(backends),
                "frameworks": {b: get_backend(b).version() for b in backends}})
    return env


# --- Keras 3 (optional column: --keras) ----------------------------------------------------------

def run_keras(spec: TrainSpec, backend: str, *, batch_size: int | None = None,
              steps: int = DEFAULT_STEPS, warmup: int | None = None, dtype: str = "float32",
              timeout: float = 900) -> dict:
    """Time the same model, weights and batches in Keras 3 (``train_on_batch``) on ``backend``,
    in a subprocess with ``KERAS_BACKEND`` set (``baselines/keras_native.py``, run by path).
    Not interleaved with rosetta: it runs after, in its own process. Returns ``keras_*`` fields
    (``keras_error`` when it could not run)."""
    warmup = max(3, steps // 10) if warmup is None else warmup
    d = _keras_run(spec, backend, "time", batch_size, steps, warmup, dtype, timeout)
    if "keras_error" in d:
        return d
    return {"keras_version": d["keras"], "keras_compile_seconds": d["compile_seconds"],
            "keras_step_ms": d["step_ms_median"], "keras_step_ms_iqr": d["step_ms_iqr"]}


def keras_rules(spec: TrainSpec) -> tuple[TrainSpec | None, str | None]:
    """``spec`` with Keras's own update rule where rosetta has it (Adam / AdamW: epsilon added
    before the bias correction, ``epsilon_mode="hat"``), so that Keras 3 must train to its
    numbers; or (None, why) where Keras's rule is not rosetta's: SGD's weight decay (Keras's is
    decoupled, rosetta's coupled L2) and SGD with momentum under a schedule (Keras folds the
    learning rate into the momentum)."""
    opt = spec.optimizer
    if opt.kind in ("adam", "adamw"):
        opt = type(opt)(**{**opt.hyperparams(), "learning_rate": opt.learning_rate,
                           "epsilon_mode": "hat"})
    elif opt.kind == "sgd" and opt.weight_decay:
        return None, "Keras's SGD weight decay is decoupled, rosetta's is coupled L2"
    elif opt.kind == "sgd" and opt.momentum and not isinstance(opt.learning_rate, Constant):
        return None, "Keras's SGD folds a changing learning rate into the momentum"
    return TrainSpec(spec.model, spec.loss, opt, spec.data, spec.steps, spec.seed,
                     spec.description), None


def keras_losses(spec: TrainSpec, backend: str, *, steps: int = 3,
                 batch_size: int | None = None, timeout: float = 900) -> dict:
    """Per-step float64 losses of Keras 3 on ``backend`` and of rosetta's program for the spec
    with Keras's update rule (``keras_rules``), from the same weights and batches:
    ``{"keras": [...], "keras_reported": [...], "rosetta": [...]}`` (``keras_reported``: what
    ``train_on_batch`` returned, rounded by its float32 loss tracker), or
    ``{"keras_error": why}``."""
    ruled, why = keras_rules(spec)
    if ruled is None:
        return {"keras_error": why}
    # Keras runs the spec as it is (its Adam is the "hat" rule by itself)
    d = _keras_run(spec, backend, "losses", batch_size, steps, 0, "float64", timeout)
    if "keras_error" in d:
        return d
    be = get_backend(backend)
    batch_size = batch_size or spec.data.batch_size
    ruled = _with_batch_size(ruled, batch_size)
    host, _ = bench_batches(ruled, batch_size, "float64")
    program = be.compile(ruled, dtype="float64")
    rb = [program.prepare_batch(x, y) for x, y in host]
    return {"keras": d["losses"], "keras_reported": d["reported"],
            "rosetta": [program.train_step(rb[i % len(rb)]) for i in range(steps)]}


def _keras_run(spec, backend, task, batch_size, steps, warmup, dtype, timeout) -> dict:
    """Run ``keras_native.py`` on a payload of the spec's plan, weights and batches."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    plan = baseline_plan(spec)
    if plan is None:
        return {"keras_error": "no hand-written baseline fits this spec"}
    if importlib.util.find_spec("keras") is None:
        return {"keras_error": "keras is not installed"}
    batch_size = batch_size or spec.data.batch_size
    spec = _with_batch_size(spec, batch_size)
    host, _ = bench_batches(spec, batch_size, dtype)
    params = spec.model.init_params(spec.seed)
    arrays = {f"w:{k}": np.asarray(v, dtype) for k, v in params.items()}
    for i, (x, y) in enumerate(host):
        xs = baseline_input(spec, x)
        if isinstance(xs, tuple):
            arrays[f"x{i}"], arrays[f"l{i}"] = xs
        else:
            arrays[f"x{i}"] = xs
        arrays[f"y{i}"] = y if plan["loss"] != "mse" else np.asarray(y, dtype)
    meta = {"arch": plan["arch"], "loss": plan["loss"], "optimizer": plan["optimizer"],
            "input_shape": list(plan["input_shape"]), "batches": len(host), "steps": steps,
            "warmup": warmup, "dtype": dtype, "task": task}
    script = Path(__file__).parent / "baselines" / "keras_native.py"
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if dtype == "float64":
        env["JAX_ENABLE_X64"] = "1"  # else Keras-on-jax truncates float64 to float32
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "payload.npz"
        np.savez(payload, meta=json.dumps(meta), **arrays)
        try:
            r = subprocess.run([sys.executable, str(script), str(payload)], env=env,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"keras_error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"keras_error": f"exit {r.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])


# --- threads (only when asked: --threads) -------------------------------------------------------

# pin_threads lives in rosetta.threads (rosetta train uses it too)

def apply_thread_pin(n: int, backends) -> None:
    """After the frameworks are imported: the calls that take effect then (torch
    ``set_num_threads``, TensorFlow's threading config)."""
    if "torch" in backends:
        import torch
        torch.set_num_threads(n)
    if "tensorflow" in backends:
        import tensorflow as tf
        try:  # only before TensorFlow's runtime starts; the environment variables cover it after
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:
            pass


# --- the command --------------------------------------------------------------------------------

def _log(args):
    return (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr,
                                                                    flush=True))


def plan_modes(backends: list[str], modes: list[str] | None) -> list[tuple[str, str]]:
    """(backend, mode) pairs: every mode of each backend, or those of ``modes`` it has; a mode
    no selected backend has is bad input."""
    from rosetta.errors import BackendUnavailable

    known = {b: get_backend(b).modes for b in backends}
    if modes:
        unknown = [m for m in modes if not any(m in ms for ms in known.values())]
        if unknown:
            valid = ", ".join(f"{b}: {'/'.join(ms)}" for b, ms in known.items())
            raise BackendUnavailable(f"unknown mode(s) {', '.join(unknown)} for the selected "
                                     f"backends (modes: {valid})")
    return [(b, m) for b in backends for m in known[b] if not modes or m in modes]


def load_bench_spec(name: str, load_spec) -> TrainSpec:
    return BENCH_SPECS[name]() if name in BENCH_SPECS else load_spec(name)


def run_command(args, load_spec) -> int:
    from rosetta.backend_registry import available_backends
    from rosetta.conformance import bench_report

    log = _log(args)
    reports = args.report or []
    for path, suffixes, flag in ([(r, (".json", ".md"), "--report") for r in reports]
                                 + [(args.plot, (".png",), "--plot")]):
        if path is not None:  # checked before any work: the suffix and a writable folder
            validate.check_output(path, flag, suffixes)
    if args.data and not args.specs:
        raise SpecError("--data needs the SPEC to time on it", where="command line")
    names = args.specs or list(DEFAULT_SPECS)
    specs = [load_bench_spec(n, load_spec) for n in names]  # bad input fails before any import
    if args.devices > 1:  # data-parallel throughput and scaling (parallel_bench.py)
        from rosetta.conformance import parallel_bench

        return parallel_bench.run_command(args, specs, args.backends or available_backends())
    if args.threads:
        pin_threads(args.threads)
    backends = args.backends or available_backends()
    for b in backends:
        get_backend(b)  # a clear BackendUnavailable for a missing one
    device = validate.require_device(backends, args.device)
    for spec in specs:
        validate.check_dtype_range(spec, args.dtype)
        validate.check_memory(spec, args.batch_size or spec.data.batch_size, args.dtype,
                              ignore=args.ignore_memory)
    if args.threads:
        apply_thread_pin(args.threads, backends)
    pairs = plan_modes(backends, args.modes)
    log(f"measuring the float32 matmul peak on {device} ...")
    peak = matmul_peak(device, threads=args.threads)
    log(f"peak {peak['gflops']:.1f} GFLOP/s ({peak['how']})")
    rows, keras_done = [], {}
    for spec in specs:
        for backend, mode in pairs:
            log(f"{spec.name} on {backend}/{mode}: compiling and timing "
                f"{args.steps} + {args.steps if not args.no_native else 0} steps ...")
            row = run_case(spec, backend, mode, batch_size=args.batch_size, steps=args.steps,
                           block=args.block, warmup=args.warmup, device=device,
                           dtype=args.dtype, peak_gflops=peak["gflops"],
                           native=not args.no_native)
            rows.append(row)
            ratio = row["overhead_ratio"]
            log(f"  step {row['step_ms_median']:.3f} ms"
                + (f", native {row['native_step_ms']:.3f} ms, ratio {ratio:.3f}"
                   if ratio is not None else ", no hand-written baseline for this spec"))
            if args.keras:
                key = (spec.name, backend)
                if key not in keras_done:
                    log(f"{spec.name} in Keras 3 on {backend} (train_on_batch, subprocess) ...")
                    keras_done[key] = run_keras(spec, backend, batch_size=args.batch_size,
                                                steps=args.steps, warmup=args.warmup,
                                                dtype=args.dtype)
                    k = keras_done[key]
                    log(f"  keras {k['keras_step_ms']:.3f} ms" if "keras_step_ms" in k
                        else f"  keras: {k['keras_error']}")
                row.update(keras_done[key])
    # the peak again at the end: on a shared machine the load varies, and the best of the two is
    # the better estimate of what the hardware does (both are recorded)
    end = matmul_peak(device, threads=args.threads)
    peak = dict(peak, start_gflops=peak["gflops"], end_gflops=end["gflops"],
                gflops=max(peak["gflops"], end["gflops"]))
    set_peak(rows, peak["gflops"])
    mark_best(rows)
    env = environment(backends, device, peak)
    settings = {"specs": [s.name for s in specs], "backends": backends,
                "modes": [f"{b}/{m}" for b, m in pairs], "device": device, "dtype": args.dtype,
                "batch_size": args.batch_size, "steps": args.steps, "block": args.block,
                "warmup": args.warmup, "threads": args.threads, "native": not args.no_native,
                "keras": args.keras,
                "flops_rule": f"{TRAIN_FLOPS_FACTOR} x forward FLOPs per example x batch"}
    print(bench_report.table(rows, env))
    from rosetta.conformance.auto import recommendations

    print("recommendation (fastest backend and mode per model; --backend auto also checks "
          "float64 agreement):")
    for line in recommendations(rows):
        print(f"  {line}")
    for path in reports:
        bench_report.write(path, rows, env, settings)
        log(f"report written to {path}")
    if args.plot:
        bench_report.plot(args.plot, rows)
        log(f"plot written to {args.plot}")
    return 0


# what a bare ``rosetta bench`` times: the zoo models that have hand-written baselines, and the
# DESIGN's MLP (the rest of the zoo is timed when named: ``rosetta bench resnet gpt``)
DEFAULT_SPECS = ("mlp", "cnn", "mlp784")


def add_parser(sub, positive_int):
    b = sub.add_parser("bench", help="time a spec on every backend and mode against "
                                     "hand-written native code")
    b.add_argument("specs", nargs="*", metavar="SPEC",
                   help=f"zoo names, the bench-only {', '.join(BENCH_SPECS)}, or spec files "
                        f"(default: {', '.join(DEFAULT_SPECS)}, the specs with "
                        f"hand-written baselines)")
    b.add_argument("--backends", nargs="+", choices=backend_names())
    b.add_argument("--modes", nargs="+", metavar="MODE",
                   help="torch: eager, compile; tensorflow: xla, function; jax: jit "
                        "(default: every mode of each backend)")
    b.add_argument("--batch-size", type=positive_int,
                   help="examples per step (default: each spec's own)")
    b.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS,
                   help=f"timed steps for rosetta and as many for the baseline (default "
                        f"{DEFAULT_STEPS})")
    b.add_argument("--warmup", type=positive_int,
                   help="untimed steps after the first (default: steps / 10, at least 3)")
    b.add_argument("--block", type=positive_int, default=DEFAULT_BLOCK,
                   help=f"steps per alternating block (default {DEFAULT_BLOCK})")
    b.add_argument("--device", default="cpu", choices=["cpu", "gpu", "cuda"])
    b.add_argument("--devices", type=positive_int, default=1, metavar="N",
                   help="time each backend's data-parallel step on 1 and N devices: throughput "
                        "and scaling efficiency (conformance/parallel_bench.py)")
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    from rosetta.cli import data_arguments

    data_arguments(b, "time the steps on batches of this data file (see rosetta train --help)")
    b.add_argument("--threads", type=positive_int,
                   help="ask every framework for this many compute threads (default: their "
                        "own defaults; recorded in the report either way)")
    b.add_argument("--keras", action="store_true",
                   help="also time the model in Keras 3 (train_on_batch) on each backend, one "
                        "subprocess per backend (KERAS_BACKEND)")
    b.add_argument("--no-native", action="store_true",
                   help="time rosetta only, without the hand-written baselines")
    b.add_argument("--report", metavar="PATH", action="append",
                   help="write .json or .md (repeat for both)")
    b.add_argument("--plot", metavar="PATH.png", help="bar chart of step times")
    b.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    validate.memory_argument(b)
    return b


# --- like for like: the baseline trains to rosetta's numbers -------------------------------------

def train_flops(graph, batch_size: int) -> int:
    """FLOPs of one training step by the benchmark's rule: 3 x forward FLOPs x batch."""
    return TRAIN_FLOPS_FACTOR * graph.flops_per_example() * batch_size


def compare_losses(spec: TrainSpec, backend: str, mode: str | None = None, *, steps: int = 4,
                   dtype: str = "float64", batch_size: int | None = None,
                   device: str = "cpu") -> tuple[list[float], list[float]]:
    """Per-step losses of rosetta's program and of the hand-written baseline, from the same
    initial weights on the same batches (the benchmark's own batches, cycled)."""
    be = get_backend(backend)
    mode = be.resolve_mode(mode)
    batch_size = batch_size or spec.data.batch_size
    spec = _with_batch_size(spec, batch_size)
    host, _ = bench_batches(spec, batch_size, dtype)
    program = be.compile(spec, dtype=dtype, device=device, mode=mode)
    trainer = build_baseline(spec, backend, dtype=dtype, device=device, mode=mode)
    if trainer is None:
        raise SpecError(f"no hand-written baseline fits spec {spec.name!r}")
    rb = [program.prepare_batch(x, y) for x, y in host]
    nb = [trainer.put(baseline_input(spec, x), y) for x, y in host]
    ours = [program.train_step(rb[i % len(rb)]) for i in range(steps)]
    theirs = [trainer.step(nb[i % len(nb)]) for i in range(steps)]
    return ours, theirs
