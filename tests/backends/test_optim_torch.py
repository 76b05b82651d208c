"""torch's optimizers over 5 tensors or more run their multi-tensor implementation
(``foreach=True``), fewer keep torch's default: the same numbers bit for bit as torch's
one-parameter-at-a-time loop, in float32 and float64, through clipping,
epsilon-hat, decay masks, lr factors and schedules (every case of ``test_optim.OPTIMIZERS``
that lowers to ``torch.optim``)."""

from __future__ import annotations

import numpy as np
import pytest

from selection import BACKENDS
from test_optim import OPTIMIZERS

pytestmark = pytest.mark.skipif("torch" not in BACKENDS, reason="torch is not selected")

CASES = [k for k in OPTIMIZERS if not k.startswith("lion")]  # Lion: rosetta's own loop


def _run(opt, dtype, foreach: bool):
    import torch

    from rosetta.backends.torch.optimizers import lower as lower_optimizer

    rng = np.random.default_rng(0)
    shapes = {"hidden/kernel": (4, 5), "hidden/bias": (5,), "hidden2/kernel": (5, 5),
              "hidden2/bias": (5,), "out/kernel": (5, 3), "out/bias": (3,)}
    params = {p: torch.tensor(rng.normal(size=s), dtype=dtype, requires_grad=True)
              for p, s in shapes.items()}
    optimizer, scheduler = lower_optimizer(opt, params)
    assert all(g["foreach"] is True for g in optimizer.param_groups)  # 6 tensors
    for g in optimizer.param_groups:
        g["foreach"] = foreach
    for _ in range(5):
        for p in params.values():
            p.grad = torch.tensor(rng.normal(scale=0.2, size=p.shape), dtype=dtype)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    state = {(p, k): v for p, t in params.items() for k, v in optimizer.state[t].items()}
    return {p: t.detach() for p, t in params.items()}, state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_foreach_is_the_loop_bit_for_bit(case, dtype):
    import torch

    dt = getattr(torch, dtype)
    p1, s1 = _run(OPTIMIZERS[case](), dt, foreach=True)
    p0, s0 = _run(OPTIMIZERS[case](), dt, foreach=False)
    for path in p0:
        assert torch.equal(p1[path], p0[path]), (case, path)
    assert s1.keys() == s0.keys()
    for key in s0:
        assert torch.equal(torch.as_tensor(s1[key]), torch.as_tensor(s0[key])), (case, key)


def test_few_tensors_keep_torchs_default():
    import torch

    from rosetta.backends.torch.optimizers import FOREACH_MIN_TENSORS, lower as lower_optimizer

    for n, expected in ((FOREACH_MIN_TENSORS - 1, None), (FOREACH_MIN_TENSORS, True)):
        params = {f"layer{i}/kernel": torch.zeros(3, requires_grad=True) for i in range(n)}
        optimizer, _ = lower_optimizer(OPTIMIZERS["adam_constant"](), params)
        assert [g["foreach"] for g in optimizer.param_groups] == [expected]
