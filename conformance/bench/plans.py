"""What the hand-written baselines are given: the spec's graph read into a plan (a plain ``arch``
dict of one family, the loss, the optimizer and the input shape; see ``baselines``), the canonical
weights, and the baseline built from them. Also the bench-only specs (``mlp784``) and the
whole-zoo plan of a bare ``rosetta bench``."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

import rosetta as rs
from rosetta.backend import normalize_device
from rosetta.schedules import Constant, WarmupCosine
from rosetta.spec import TrainSpec



def _baselines() -> dict[str, str]:
    """{backend: the module of its hand-written baseline}: ``baselines/<backend>_native.py``,
    for every registered backend that has one."""
    from rosetta.backend_registry import backend_names

    here = Path(__file__).with_name("baselines")
    return {name: f"{__package__}.baselines.{name}_native" for name in backend_names()
            if (here / f"{name}_native.py").is_file()}


BASELINES = _baselines()


# --- bench-only specs ---------------------------------------------------------------------------

def mlp784() -> TrainSpec:
    """docs/design.md section 7's MLP: 28x28x1 -> flatten -> 784-512-512-10 ReLU, Adam, batch 128, on the
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
# ``baselines`` (None when the graph is not of that family's shape).

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


def load_bench_spec(name: str, load_spec) -> TrainSpec:
    return BENCH_SPECS[name]() if name in BENCH_SPECS else load_spec(name)


def zoo_plan() -> tuple[list[str], list[tuple[str, str]]]:
    """What a bare ``rosetta bench`` times: every zoo model that has a hand-written baseline, then
    the bench-only specs (``mlp784``); and ``(name, why)`` for each zoo model left out."""
    from rosetta import models

    timed, skipped = [], []
    for name in models.ZOO:
        why = no_baseline_reason(models.get(name))
        if why is None:
            timed.append(name)
        else:
            skipped.append((name, why))
    return timed + list(BENCH_SPECS), skipped


def no_baseline_reason(spec: TrainSpec) -> str | None:
    """Why no hand-written baseline fits ``spec`` (None when one does), in one line."""
    if baseline_plan(spec) is not None:
        return None
    if any(n.op == "Dropout" for n in spec.model.nodes) or any(
            n.attrs.get("dropout") for n in spec.model.nodes):
        return ("dropout: a hand-written model draws its own framework's random masks, not "
                "rosetta's, so it cannot train to rosetta's numbers")
    if _plain_optimizer(spec.optimizer) is None:
        return f"no baseline writes its optimizer ({spec.optimizer.kind} with these options)"
    if not _loss_fits(spec.loss):
        return f"no baseline writes its loss ({spec.loss.kind} with these options)"
    return "no baseline family (sequential, resnet, recurrent, transformer) fits its graph"


def _loss_fits(loss) -> bool:
    return (loss.kind == "mse" or loss.kind == "softmax_cross_entropy"
            and loss.label_smoothing == 0.0 or loss.kind == "sequence_cross_entropy"
            and loss.label_smoothing == 0.0 and loss.ignore_label == -1)


def baseline_plan(spec: TrainSpec) -> dict | None:
    """What the hand-written baselines need for ``spec``: the plain ``arch`` description of its
    family (see ``baselines``), loss, optimizer and input shape, or None when
    no baseline is written for its shape, its loss (softmax or sequence cross-entropy without
    smoothing, MSE) or its optimizer (see ``_plain_optimizer``)."""
    arch = next((a for a in (f(spec.model) for f in ARCHS) if a is not None), None)
    optimizer = _plain_optimizer(spec.optimizer)
    if arch is None or not _loss_fits(spec.loss) or optimizer is None:
        return None
    return {"arch": arch, "loss": spec.loss.kind, "optimizer": optimizer,
            "input_shape": tuple(spec.model.inputs[0].shape)}


def build_baseline(spec: TrainSpec, backend: str, *, dtype: str, device: str, mode: str,
                   params: dict | None = None):
    """The hand-written trainer for ``spec`` on ``backend`` (None when none fits), from the
    spec's initial parameters (or ``params``) as plain NumPy arrays in the program's host dtype.
    ``dtype`` is a precision policy (``rosetta.precision``): a low one reaches the baseline as
    ``precision=`` (its own mixed-precision code), the weights in the host dtype (float32)."""
    from rosetta.precision import policy

    plan = baseline_plan(spec)
    if plan is None or backend not in BASELINES:  # no hand-written baseline for this backend
        return None
    host = policy(dtype).host
    params = spec.model.init_params(spec.seed) if params is None else params
    weights = {k: np.asarray(v, host) for k, v in params.items()}
    module = importlib.import_module(BASELINES[backend])
    low = {} if dtype == host else {"precision": dtype}
    return module.build(plan["arch"], weights, plan["loss"], plan["optimizer"],
                        input_shape=plan["input_shape"], dtype=host,
                        device=normalize_device(device), mode=mode, **low)


def baseline_input(spec: TrainSpec, x: dict):
    """A host batch's inputs as the baselines take them: the array of a single input, else the
    tuple in the graph's input order ((tokens, lengths))."""
    arrays = tuple(x[i.name] for i in spec.model.inputs)
    return arrays[0] if len(arrays) == 1 else arrays
