"""Hand-written PyTorch: an ``nn.Sequential`` / ``nn.Module``, ``torch.optim`` and the textbook
step (zero_grad, forward, loss, backward, step). No rosetta import (see ``__init__``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class CNN(nn.Module):
    def __init__(self, in_channels, c1, c2, hw, classes, **factory):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1, **factory)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, **factory)
        self.fc = nn.Linear(c2 * hw[0] * hw[1], classes, **factory)

    def forward(self, x):  # NCHW
        x = self.pool(F.relu(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


def _copy(param, array):
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def _mlp(weights, input_shape, **factory):
    layers = [nn.Flatten()] if len(input_shape) > 1 else []
    for i, (k, _) in enumerate(weights):
        layers.append(nn.Linear(*k.shape, **factory))
        if i < len(weights) - 1:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    for lin, (k, b) in zip([m for m in model if isinstance(m, nn.Linear)], weights):
        _copy(lin.weight, k.T)
        _copy(lin.bias, b)
    return model


def _cnn(weights, input_shape, **factory):
    (k1, b1), (k2, b2), (kd, bd) = weights
    h, w, c = input_shape
    hw = (h // 2, w // 2)
    model = CNN(c, k1.shape[-1], k2.shape[-1], hw, kd.shape[-1], **factory)
    _copy(model.conv1.weight, k1.transpose(3, 2, 0, 1))
    _copy(model.conv1.bias, b1)
    _copy(model.conv2.weight, k2.transpose(3, 2, 0, 1))
    _copy(model.conv2.bias, b2)
    # the given kernel flattens (H, W, C); torch.flatten of NCHW is (C, H, W): reorder its rows
    c2 = k2.shape[-1]
    kd = kd.reshape(*hw, c2, -1).transpose(2, 0, 1, 3).reshape(c2 * hw[0] * hw[1], -1)
    _copy(model.fc.weight, kd.T)
    _copy(model.fc.bias, bd)
    return model


class Trainer:
    def __init__(self, arch, weights, loss, optimizer, dtype, device, mode, input_shape):
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self.device = torch.device("cuda" if device in ("gpu", "cuda") else device)
        self.arch = arch
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        factory = {"dtype": self.dtype, "device": self.device}
        self.model = (_mlp(weights, input_shape, **factory) if arch == "mlp" else
                      _cnn(weights, input_shape, **factory))
        self.run = torch.compile(self.model) if mode == "compile" else self.model
        self.loss_fn = nn.CrossEntropyLoss() if loss == "softmax_cross_entropy" else nn.MSELoss()
        self.int_labels = loss == "softmax_cross_entropy"
        o = optimizer
        if o["name"] == "adam":
            self.opt = torch.optim.Adam(self.model.parameters(), lr=o["lr"],
                                        betas=(o["beta1"], o["beta2"]), eps=o["eps"])
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=o["lr"],
                                       momentum=o["momentum"], nesterov=o["nesterov"])

    def put(self, x, y):
        x = torch.as_tensor(np.asarray(x), dtype=self.dtype)
        if self.arch == "cnn":
            x = x.permute(0, 3, 1, 2)  # the data loader's NCHW
        x = x.contiguous().to(self.device)
        y = torch.as_tensor(np.asarray(y), dtype=torch.int64 if self.int_labels else self.dtype)
        return x, y.to(self.device)

    def step(self, batch):
        x, y = batch
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.run(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()


def build(arch, weights, loss, optimizer, *, input_shape, dtype="float32", device="cpu",
          mode="eager"):
    """A trainer (see ``rosetta.conformance.baselines``)."""
    return Trainer(arch, weights, loss, optimizer, dtype, device, mode, input_shape)
