"""Step time of rosetta's lowered LSTM / GRU against the native layer used directly.

    python -m rosetta.conformance.bench.recurrent [--steps 40] [--batch 32] [--length 32]
        [--features 32] [--units 64] [--backends torch,jax]

Model: x (T, C) -> LSTM or GRU (H, last state) -> Dense(10), softmax cross-entropy, plain SGD,
float32 on the CPU. One training step = forward + backward + update, ending synchronised (the loss
as a Python float). rosetta's ``Program.train_step`` on a prepared batch is timed ALTERNATING
with the hand-written native step, one step each in turn (rosetta first on even rounds), after a
warm-up; the ratio is median(rosetta) / median(native).

Native baselines: torch ``nn.LSTM`` / ``nn.GRU`` + ``nn.Linear`` with ``torch.optim.SGD``; JAX
flax ``nn.RNN(nn.OptimizedLSTMCell)`` / ``nn.RNN(nn.GRUCell)`` + ``nn.Dense`` with ``optax.sgd``
under ``jax.jit``. TensorFlow has no baseline here: its fused layers are Keras's, which cannot be
imported next to the tf.Module backend; its rosetta time is printed alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import rosetta as rs
from rosetta.backend_registry import get_backend


def _spec(op, t, c, h, classes=10):
    model = rs.Sequential([getattr(rs, op)(h, name="rnn"), rs.Dense(classes, name="head")],
                          input_shape=(t, c), name=f"bench_{op.lower()}")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.SGD(0.01), data=rs.DataSpec("images"), steps=1)


def _torch_native(op, x, y, c, h, classes=10):
    import torch
    from torch import nn
    rnn = (nn.LSTM if op == "LSTM" else nn.GRU)(c, h, batch_first=True)
    head = nn.Linear(h, classes)
    params = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        _, h_n = rnn(xt)
        h_last = (h_n[0] if isinstance(h_n, tuple) else h_n)[-1]
        loss = nn.functional.cross_entropy(head(h_last), yt)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def _jax_native(op, x, y, c, h, classes=10):
    import flax.linen as nn
    import jax
    import optax

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            cell = nn.OptimizedLSTMCell(h) if op == "LSTM" else nn.GRUCell(h)
            carry, _ = nn.RNN(cell, return_carry=True)(x)
            h_last = carry[1] if op == "LSTM" else carry  # LSTM carry is (c, h)
            return nn.Dense(classes)(h_last)

    net = Net()
    params = net.init(jax.random.key(0), x)["params"]
    tx = optax.sgd(0.01)
    opt_state = tx.init(params)

    @jax.jit
    def train(params, opt_state, x, y):
        def loss_fn(p):
            logits = net.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, g = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(g, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    xj, yj = jax.device_put(x), jax.device_put(y)
    state = [params, opt_state]

    def step():
        state[0], state[1], loss = train(state[0], state[1], xj, yj)
        return float(loss)
    return step


NATIVE = {"torch": _torch_native, "jax": _jax_native}


def bench(op, backend, args):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.length, args.features)).astype(np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int64)
    prog = get_backend(backend).compile(_spec(op, args.length, args.features, args.units),
                                        dtype="float32", device="cpu")
    batch = prog.prepare_batch(x, y)
    steps = {"rosetta": lambda: prog.train_step(batch)}
    if backend in NATIVE:
        steps["native"] = NATIVE[backend](op, x, y, args.features, args.units)
    for fn in steps.values():  # compile and warm up
        for _ in range(args.warmup):
            fn()
    times = {k: [] for k in steps}
    names = list(steps)
    for i in range(args.steps):
        for k in (names if i % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t0)
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    ratio = med["rosetta"] / med["native"] if "native" in med else float("nan")
    return med, ratio


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--ops", default="LSTM,GRU")
    p.add_argument("--backends", default="torch,jax,tensorflow")
    args = p.parse_args(argv)
    print(f"batch {args.batch}, T {args.length}, C {args.features}, H {args.units}, float32, "
          f"CPU; median ms per train step")
    print(f"{'op':6} {'backend':11} {'rosetta':>9} {'native':>9} {'ratio':>6}")
    for op in args.ops.split(","):
        for backend in args.backends.split(","):
            med, ratio = bench(op, backend, args)
            native = f"{med['native']:9.2f}" if "native" in med else f"{'-':>9}"
            shown = f"{ratio:6.2f}" if ratio == ratio else f"{'-':>6}"   # no native: no ratio
            print(f"{op:6} {backend:11} {med['rosetta']:9.2f} {native} {shown}", flush=True)


if __name__ == "__main__":
    main()
