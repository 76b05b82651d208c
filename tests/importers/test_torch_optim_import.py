"""torch optimizers, LR schedulers and their position mapped to the spec's (rosetta.importers
.torch_optim): each schedule equals torch's own lr sequence, RMSprop and Adagrad certify against
torch, what the spec cannot express is refused in one line. Small MLPs, float64, torch backend."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
T = torch.optim.lr_scheduler

import rosetta  # noqa: E402
from rosetta.importers import ImportRefused  # noqa: E402


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


X = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

SCHEDULERS = {
    "step": lambda o: T.StepLR(o, 3, 0.5),
    "exponential": lambda o: T.ExponentialLR(o, 0.9),
    "cosine (periodic past T_max)": lambda o: T.CosineAnnealingLR(o, 4, 0.001),
    "linear warm-up": lambda o: T.LinearLR(o, 0.1, 1.0, 5),
    "sequential": lambda o: T.SequentialLR(o, [T.LinearLR(o, 0.1, 1.0, 3),
                                               T.CosineAnnealingLR(o, 6), T.StepLR(o, 2, 0.5)],
                                           [3, 12]),
}


def torch_lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()
    return np.array(out)


@pytest.mark.parametrize("make", SCHEDULERS.values(), ids=SCHEDULERS.keys())
def test_each_scheduler_is_the_spec_schedule_with_its_position(make):
    """Imported fresh, then again after 7 updates: lr(t) of the spec equals the lr torch uses at
    each of 20 updates (1e-13 relative), and the position (last_epoch) is carried."""
    m = mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = make(opt)
    schedule = rosetta.from_torch(m, X, optimizer=opt, scheduler=sched).spec.optimizer \
        .learning_rate
    ref = make(torch.optim.SGD(mlp().parameters(), lr=0.1))
    want = torch_lrs(ref, 20)
    got = np.array([float(schedule(t)) for t in range(20)])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-18)
    x, y = X, torch.tensor([0, 1, 2, 0])
    for _ in range(7):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        sched.step()
    imp = rosetta.from_torch(m, X, optimizer=opt, scheduler=sched)
    assert imp.step == 7 and imp.spec.optimizer.learning_rate == schedule
    assert float(imp.spec.optimizer.learning_rate(7)) == pytest.approx(
        opt.param_groups[0]["lr"], rel=1e-13)


def test_a_scheduler_out_of_step_with_the_optimizer_is_refused():
    m = mlp()
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    sched = T.StepLR(opt, 2)
    sched.step()   # stepped without an update: last_epoch 1, update count 0
    with pytest.raises(ImportRefused, match=r"last_epoch=1 but the optimizer has made 0"):
        rosetta.from_torch(m, X, optimizer=opt, scheduler=sched)


@pytest.mark.parametrize("make,line", [
    (lambda p: (torch.optim.RMSprop(p, weight_decay=1e-3), None), "coupled L2"),
    (lambda p: (torch.optim.Adagrad(p, weight_decay=1e-3), None), "coupled L2"),
    (lambda p: (torch.optim.AdamW(p, amsgrad=True), None), "amsgrad=True"),
    (lambda p: (torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1), None), "dampening"),
    (lambda p: (lambda o: (o, T.OneCycleLR(o, 0.1, total_steps=10)))(
        torch.optim.SGD(p, lr=0.1, momentum=0.9)), "cycles the optimizer's momentum"),
    (lambda p: (lambda o: (o, T.ReduceLROnPlateau(o)))(torch.optim.SGD(p, lr=0.1)),
     "unsupported scheduler"),
    (lambda p: (torch.optim.Adadelta(p), None), "unsupported optimizer"),
])
def test_what_the_spec_cannot_express_is_refused_in_one_line(make, line):
    m = mlp()
    opt, sched = make(m.parameters())
    with pytest.raises(ImportRefused, match=line) as e:
        rosetta.from_torch(m, X, optimizer=opt, scheduler=sched)
    assert len(e.value.lines) == 1, e.value.lines


@pytest.mark.parametrize("make", [
    lambda p: (lambda o: (o, T.StepLR(o, 1, 0.7)))(
        torch.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True)),
    lambda p: (torch.optim.RMSprop(p, lr=0.01, alpha=0.9), None),
    lambda p: (torch.optim.Adagrad(p, lr=0.1, lr_decay=0.1, initial_accumulator_value=0.2),
               None),
    lambda p: (lambda o: (o, T.LinearLR(o, 0.2, 1.0, 2)))(
        torch.optim.Adam(p, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
], ids=["rmsprop-centered-momentum-steplr", "rmsprop", "adagrad-lr_decay", "adam-decoupled"])
def test_rmsprop_adagrad_and_schedulers_certify_against_torch(make):
    m = mlp()
    opt, sched = make(m.parameters())
    imp = rosetta.from_torch(m, X, optimizer=opt, scheduler=sched, loss=nn.CrossEntropyLoss())
    cert = imp.certify(("torch",), steps=3)
    assert cert.passed, cert.table()


def test_rmsprop_in_progress_carries_its_slots():
    m = mlp()
    opt = torch.optim.RMSprop(m.parameters(), lr=0.01, momentum=0.5, centered=True)
    x, y = X, torch.tensor([0, 1, 2, 0])
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    imp = rosetta.from_torch(m, X, optimizer=opt, loss=nn.CrossEntropyLoss())
    assert imp.step == 2
    st = opt.state[m[0].weight]
    np.testing.assert_array_equal(imp.optimizer_state[f"mg/{imp.names['0.weight']}"],
                                  st["grad_avg"].numpy().T)
    assert {k.split("/")[0] for k in imp.optimizer_state} == {"v", "mg", "velocity"}
    assert imp.certify(("torch",), steps=2).passed
