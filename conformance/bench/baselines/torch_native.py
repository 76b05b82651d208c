"""Hand-written PyTorch: ``nn.Module``s of torch's own layers (``nn.Conv2d``, ``nn.BatchNorm2d``,
``nn.LSTM`` / ``nn.GRU``, ``nn.TransformerEncoderLayer``), ``torch.optim`` and the textbook step
(zero_grad, forward, loss, backward, step), the learning rate set on the param groups before each
step as nanoGPT does. No rosetta import (see ``__init__``: the contract, and the families).

Canonical details a porting user must get right: the flattened (H, W, C) kernel rows reordered
for NCHW; TensorFlow's 'same' padding at stride 2 (bottom / right) by an explicit ``F.pad``;
torch's BatchNorm momentum is 1 - the canonical one; ``nn.LSTM``'s second bias (``bias_hh``)
frozen at zero (two trainable biases would move twice as fast); the attention's (E, heads, d)
kernels packed into ``in_proj_weight`` (heads x d = E).

The optimizer is ``torch.optim`` as users write it, with torch's defaults: on the CPU that is its
one-parameter-at-a-time loop (``foreach`` is its default on CUDA only). rosetta's lowering asks
for ``foreach=True``, the same numbers bit for bit; the README gives the ratio with ``foreach``
on both sides too.

Precision (``precision``, ``rosetta bench --precision``), as a torch user writes it on a CPU:
``bfloat16``: the model made in ``torch.bfloat16`` (``.to(torch.bfloat16)``), inputs, loss and
``torch.optim`` state in bf16. ``mixed_bfloat16`` / ``mixed_float16``: float32 parameters and
optimizer, the forward under ``torch.autocast("cpu", dtype=...)``, the loss on ``logits.float()``;
where CPU autocast leaves a float32 op of the policy in the low type (BatchNorm after a bf16
conv) the module casts its input up by hand (``x.float()``; LayerNorm already gets the float32
residual stream); ``mixed_float16`` adds ``torch.amp.GradScaler`` with the policy's rule
(initial scale 2**15, growth interval 2000, factor 2, back-off 0.5).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rosetta.conformance.bench.baselines import from_pairs


def _t(array):
    return torch.from_numpy(np.ascontiguousarray(array))


def _load(module: nn.Module, values: dict) -> None:
    """Copy {torch parameter name: array} into ``module`` (shapes must match)."""
    own = dict(module.named_parameters())
    with torch.no_grad():
        for name, array in values.items():
            own[name].copy_(_t(array))


def _conv_weight(k):
    return k.transpose(3, 2, 0, 1)  # (kH, kW, in, out) -> (out, in, kH, kW)


def _same_pad(size, k, stride):
    """TensorFlow's 'same': (before, after) padding of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


# --- sequential: linear, mlp, mlp100, mlp784, cnn, lenet, tutorial_cnn ------------------------

def sequential(arch, w, input_shape, factory):
    layers, values = [], {}
    shape = tuple(input_shape)  # (H, W, C) while spatial, then (features,)
    convs = any(la["op"] == "conv" for la in arch["layers"])
    flat_from = None
    for la in arch["layers"]:
        i = str(len(layers))
        if la["op"] == "conv":
            k = w[la["name"] + "/kernel"]
            pad = "same" if la["padding"] == "same" else 0
            layers.append(nn.Conv2d(k.shape[2], k.shape[3], k.shape[0], padding=pad, **factory))
            values.update({i + ".weight": _conv_weight(k), i + ".bias": w[la["name"] + "/bias"]})
            h, wd = shape[:2] if pad == "same" else (shape[0] - k.shape[0] + 1,
                                                    shape[1] - k.shape[1] + 1)
            shape = (h, wd, k.shape[3])
        elif la["op"] == "maxpool":
            layers.append(nn.MaxPool2d(la["size"]))
            shape = (shape[0] // la["size"], shape[1] // la["size"], shape[2])
        elif la["op"] == "flatten":
            layers.append(nn.Flatten())
            flat_from = shape if convs else None
            shape = (int(np.prod(shape)),)
        else:
            k = w[la["name"] + "/kernel"]
            if flat_from is not None:  # rows in (H, W, C) order; NCHW flattens (C, H, W)
                h, wd, c = flat_from
                k = k.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(h * wd * c, -1)
                flat_from = None
            layers.append(nn.Linear(*k.shape, **factory))
            values.update({i + ".weight": k.T, i + ".bias": w[la["name"] + "/bias"]})
            shape = (k.shape[1],)
        if la.get("relu"):
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    _load(model, values)
    return model, convs


# --- resnet ----------------------------------------------------------------------------------

class ConvBN(nn.Module):
    """conv (no bias, 'same' by TensorFlow's rule) -> BatchNorm (batch statistics in training;
    ``norm32``: its input cast to float32 first, the mixed policies' normalisation)."""

    norm32 = False

    def __init__(self, kernel, size, stride, momentum, eps, **factory):
        super().__init__()
        kh, _, cin, cout = kernel.shape
        before, after = _same_pad(size, kh, stride)
        self.pad = None if before == after else (before, after, before, after)
        self.conv = nn.Conv2d(cin, cout, kh, stride, before if self.pad is None else 0,
                              bias=False, **factory)
        self.bn = nn.BatchNorm2d(cout, eps=eps, momentum=1.0 - momentum, **factory)

    def forward(self, x):
        x = self.conv(F.pad(x, self.pad) if self.pad else x)
        return self.bn(x.float() if self.norm32 else x)


class BasicBlock(nn.Module):
    def __init__(self, a, b, proj):
        super().__init__()
        self.a, self.b, self.proj = a, b, proj

    def forward(self, x):
        short = x if self.proj is None else self.proj(x)
        return F.relu(self.b(F.relu(self.a(x))) + short)


class ResNet(nn.Module):
    def __init__(self, stem, blocks, head):
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.Sequential(*blocks), head

    def forward(self, x):
        h = self.blocks(F.relu(self.stem(x)))
        return self.head(h.mean(dim=(2, 3)))


def resnet(arch, w, input_shape, factory):
    size = input_shape[0]
    values = {}

    def conv_bn(conv, bn, stride, prefix):
        k = w[conv + "/kernel"]
        values.update({prefix + ".conv.weight": _conv_weight(k),
                       prefix + ".bn.weight": w[bn + "/scale"],
                       prefix + ".bn.bias": w[bn + "/bias"]})
        return ConvBN(k, size, stride, arch["momentum"], arch["epsilon"], **factory)

    stem = conv_bn(arch["stem"]["conv"], arch["stem"]["bn"], 1, "stem")
    blocks = []
    for i, b in enumerate(arch["blocks"]):
        p = f"blocks.{i}"
        a = conv_bn(b["conv1"], b["bn1"], b["stride"], p + ".a")
        proj = (conv_bn(b["proj_conv"], b["proj_bn"], b["stride"], p + ".proj")
                if b["proj_conv"] else None)
        size = -(-size // b["stride"])
        blocks.append(BasicBlock(a, conv_bn(b["conv2"], b["bn2"], 1, p + ".b"), proj))
    k = w[arch["head"] + "/kernel"]
    model = ResNet(stem, blocks, nn.Linear(*k.shape, **factory))
    values.update({"head.weight": k.T, "head.bias": w[arch["head"] + "/bias"]})
    _load(model, values)
    return model, True


# --- recurrent: lstm, gru --------------------------------------------------------------------

class RecurrentClassifier(nn.Module):
    """Embedding -> nn.LSTM / nn.GRU over the whole padded sequence -> the output at each
    example's last real step (the state after ``length`` steps: a forward recurrence's earlier
    steps never see the padding) -> Linear."""

    def __init__(self, cell, embedding, units, classes, **factory):
        super().__init__()
        self.embed = nn.Embedding(*embedding.shape, **factory)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(embedding.shape[1], units, batch_first=True, **factory)
        self.head = nn.Linear(units, classes, **factory)

    def forward(self, tokens, lengths):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out[torch.arange(out.shape[0], device=out.device), lengths - 1])


def recurrent(arch, w, input_shape, factory):
    rnn, head = arch["rnn"], arch["head"]
    k = w[head + "/kernel"]
    model = RecurrentClassifier(arch["cell"], w[arch["embed"] + "/embedding"], arch["units"],
                                k.shape[1], **factory)
    gates = w[rnn + "/bias"]
    values = {"embed.weight": w[arch["embed"] + "/embedding"],
              "rnn.weight_ih_l0": w[rnn + "/kernel"].T,
              "rnn.weight_hh_l0": w[rnn + "/recurrent_kernel"].T,
              "rnn.bias_ih_l0": gates,
              "rnn.bias_hh_l0": (w[rnn + "/recurrent_bias"] if arch["cell"] == "gru"
                                 else np.zeros_like(gates)),
              "head.weight": k.T, "head.bias": w[head + "/bias"]}
    _load(model, values)
    if arch["cell"] == "lstm":
        model.rnn.bias_hh_l0.requires_grad_(False)  # the canonical LSTM has one bias
    return model, False


# --- transformer: transformer, gpt -----------------------------------------------------------

class Transformer(nn.Module):
    """Embedding + learned positions, pre-norm ``nn.TransformerEncoderLayer``s (gelu, no
    dropout), final LayerNorm, [mean over the real tokens], Linear."""

    def __init__(self, arch, vocab, length, width, ff, classes, **factory):
        super().__init__()
        self.embed = nn.Embedding(vocab, width, **factory)
        self.pos = nn.Parameter(torch.zeros(length, width, **factory))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, arch["heads"], ff, dropout=0.0, activation="gelu",
                                       layer_norm_eps=arch["epsilon"], batch_first=True,
                                       norm_first=True, **factory)
            for _ in arch["blocks"])
        self.norm = nn.LayerNorm(width, eps=arch["epsilon"], **factory)
        self.head = nn.Linear(width, classes, **factory)
        self.causal, self.pool = arch["causal"], arch["pool"]

    def forward(self, tokens, lengths=None):
        t = tokens.shape[1]
        h = self.embed(tokens) + self.pos[:t]
        pad = None if lengths is None else (
            torch.arange(t, device=tokens.device)[None, :] >= lengths[:, None])
        mask = (torch.triu(torch.ones(t, t, dtype=torch.bool, device=tokens.device), 1)
                if self.causal else None)
        for block in self.blocks:
            h = block(h, src_mask=mask, src_key_padding_mask=pad, is_causal=self.causal)
        h = self.norm(h)
        if self.pool == "mean":
            real = (~pad).to(h.dtype)[..., None]
            h = (h * real).sum(1) / lengths[:, None].to(h.dtype)
        return self.head(h)


def transformer(arch, w, input_shape, factory):
    emb = w[arch["embed"] + "/embedding"]
    pos = w[arch["pos"] + "/embedding"]
    k = w[arch["head"] + "/kernel"]
    ff = w[arch["blocks"][0]["ff1"] + "/kernel"].shape[1]
    model = Transformer(arch, emb.shape[0], pos.shape[0], emb.shape[1], ff, k.shape[1],
                        **factory)
    width = emb.shape[1]
    values = {"embed.weight": emb, "pos": pos, "norm.weight": w[arch["final_norm"] + "/scale"],
              "norm.bias": w[arch["final_norm"] + "/bias"], "head.weight": k.T,
              "head.bias": w[arch["head"] + "/bias"]}
    for i, b in enumerate(arch["blocks"]):
        p, a = f"blocks.{i}.", b["attn"] + "/"
        proj = [w[a + n + "_kernel"].reshape(width, -1).T for n in ("query", "key", "value")]
        values.update({
            p + "self_attn.in_proj_weight": np.concatenate(proj, 0),
            p + "self_attn.in_proj_bias": np.concatenate(
                [w[a + n + "_bias"].reshape(-1) for n in ("query", "key", "value")]),
            p + "self_attn.out_proj.weight": w[a + "output_kernel"].reshape(-1, width).T,
            p + "self_attn.out_proj.bias": w[a + "output_bias"],
            p + "norm1.weight": w[b["ln1"] + "/scale"], p + "norm1.bias": w[b["ln1"] + "/bias"],
            p + "norm2.weight": w[b["ln2"] + "/scale"], p + "norm2.bias": w[b["ln2"] + "/bias"],
            p + "linear1.weight": w[b["ff1"] + "/kernel"].T,
            p + "linear1.bias": w[b["ff1"] + "/bias"],
            p + "linear2.weight": w[b["ff2"] + "/kernel"].T,
            p + "linear2.bias": w[b["ff2"] + "/bias"],
        })
    _load(model, values)
    return model, False


BUILDERS = {"sequential": sequential, "resnet": resnet, "recurrent": recurrent,
            "transformer": transformer}


# --- optimizer, schedule, trainer ------------------------------------------------------------

def learning_rate(lr):
    """lr(t) of the plain optimizer values: a number, or the warm-up cosine schedule."""
    if not isinstance(lr, dict):
        return lambda t: lr
    peak, warm, init, final = lr["peak"], lr["warmup_steps"], lr["init"], lr["final"]
    span = lr["decay_steps"] - warm

    def at(t):
        if t < warm:
            return init + (peak - init) * t / warm
        u = min(t - warm, span) / span
        return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * u))
    return at


def make_optimizer(params, o):
    lr = learning_rate(o["lr"])(0)
    if o["name"] == "adam":
        adam = torch.optim.AdamW if o.get("weight_decay") else torch.optim.Adam
        extra = {"weight_decay": o["weight_decay"]} if o.get("weight_decay") else {}
        return adam(params, lr=lr, betas=(o["beta1"], o["beta2"]), eps=o["eps"], **extra)
    return torch.optim.SGD(params, lr=lr, momentum=o["momentum"], nesterov=o["nesterov"],
                           weight_decay=o.get("weight_decay", 0.0))


AUTOCAST = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}


class Trainer:
    def __init__(self, arch, weights, loss, opt, dtype, device, mode, input_shape,
                 precision=None):
        precision = precision or dtype
        self.dtype = {"float32": torch.float32, "float64": torch.float64,
                      "bfloat16": torch.bfloat16}.get(precision, torch.float32)
        # mixed: the low type of autocast; None: no autocast
        self.autocast = AUTOCAST.get(precision)
        self.device = torch.device("cuda" if device in ("gpu", "cuda") else device)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        arch, weights = from_pairs(arch, weights, input_shape)
        self.lengths = bool(arch.get("lengths"))
        factory = {"dtype": self.dtype, "device": self.device}
        self.model, self.channels_first = BUILDERS[arch["model"]](arch, weights, input_shape,
                                                                  factory)
        if self.autocast is not None:
            for m in self.model.modules():
                if isinstance(m, ConvBN):
                    m.norm32 = True
        self.run = torch.compile(self.model) if mode == "compile" else self.model
        self.loss = loss
        self.scaler = (torch.amp.GradScaler(self.device.type, init_scale=2.0 ** 15,
                                            growth_factor=2.0, backoff_factor=0.5,
                                            growth_interval=2000)
                       if self.autocast == torch.float16 else None)
        self.opt = make_optimizer([p for p in self.model.parameters() if p.requires_grad], opt)
        self.lr, self.t = learning_rate(opt["lr"]), 0

    def put(self, x, y):
        if self.lengths:
            xs = tuple(torch.as_tensor(np.asarray(a), dtype=torch.int64) for a in x)
        elif np.asarray(x).dtype.kind in "iu":
            xs = (torch.as_tensor(np.asarray(x), dtype=torch.int64),)
        else:
            x = torch.as_tensor(np.asarray(x), dtype=self.dtype)
            xs = (x.permute(0, 3, 1, 2) if self.channels_first else x,)  # the loader's NCHW
        xs = tuple(a.contiguous().to(self.device) for a in xs)
        y = torch.as_tensor(np.asarray(y), dtype=self.dtype if self.loss == "mse" else
                            torch.int64)
        return xs, y.to(self.device)

    def loss_fn(self, out, y):
        if self.loss == "mse":
            return F.mse_loss(out, y)
        if self.loss == "sequence_cross_entropy":
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1),
                                   ignore_index=-1)
        return F.cross_entropy(out, y)

    def step(self, batch):
        xs, y = batch
        for group in self.opt.param_groups:
            group["lr"] = self.lr(self.t)
        self.opt.zero_grad(set_to_none=True)
        if self.autocast is None:
            loss = self.loss_fn(self.run(*xs), y)
        else:
            with torch.autocast(self.device.type, dtype=self.autocast):
                out = self.run(*xs)
            loss = self.loss_fn(out.float(), y)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
            self.t += 1
            return loss.item()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.t += 1  # a step GradScaler skips still moves lr(t) here (telling costs a sync)
        return loss.item()


def build(arch, weights, loss, optimizer, *, input_shape, dtype="float32", device="cpu",
          mode="eager", precision=None):
    """A trainer (see ``rosetta.conformance.bench.baselines``)."""
    return Trainer(arch, weights, loss, optimizer, dtype, device, mode, input_shape, precision)
