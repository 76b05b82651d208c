"""rosetta.importers.from_torch: capture, exact mapping, refusals, the certificate and its blame,
an optimizer in progress carried through the neutral checkpoint, the command line.

Small models (8x8 inputs, batch 2, float64, 1-2 steps); backends torch and jax (TensorFlow's
compile alone costs ~20 s here: its certificate runs in the report's bigger runs)."""

from __future__ import annotations

import copy
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402
from rosetta import checkpoint  # noqa: E402
from rosetta.importers import ImportRefused, maps  # noqa: E402


class Net(nn.Module):
    """conv (stride 2) -> GroupNorm -> relu -> grouped conv + residual -> max pool -> channels-
    first flatten (H*W > 1) -> dropout -> Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.gn = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 2 * 2, 5)

        self.relu = nn.ReLU(inplace=True)   # in place: the blame must copy what it reads

    def forward(self, x):
        y = self.relu(self.gn(self.conv(x)))
        y = self.conv2(y) + y
        y = torch.flatten(self.pool(y), 1)
        return self.fc(self.drop(y))


def make(seed=0):
    torch.manual_seed(seed)
    return Net().double(), torch.randn(2, 3, 8, 8, dtype=torch.float64)


@pytest.fixture(scope="module")
def imported():
    m, x = make()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          weight_decay=1e-3)
    return rosetta.from_torch(m, (x,), optimizer=opt,
                              loss=nn.CrossEntropyLoss(label_smoothing=0.1))


def test_forward_equals_the_source_in_eval_mode(imported):
    m, x = make()
    m.eval()
    ref = imported.spec.model.reference_forward(imported.params, x.numpy().transpose(0, 2, 3, 1),
                                                state=dict(imported.state))
    np.testing.assert_allclose(ref, m(x).detach().numpy(), rtol=1e-12, atol=1e-13)
    assert imported.names["fc.weight"] == "fc/kernel"
    assert imported.names["conv2.weight"] == "conv2/kernel"
    assert imported.spec.optimizer.to_json()["nesterov"] is True
    assert imported.spec.loss.label_smoothing == 0.1


def test_certificate_passes_on_torch_and_jax(imported):
    cert = imported.certify(("torch", "jax"), steps=1)
    assert cert.passed, cert.table()
    assert cert.dropout == "inject"
    for r in cert.results:
        assert max(r["worst"].values()) < 1e-10, r


@pytest.mark.parametrize("change,blamed", [
    (lambda d: d["nodes"]["gn"]["attrs"].update(epsilon=1e-3), "gn (GroupNorm"),
    (lambda d: d["nodes"]["conv2"]["attrs"].update(dilation=[2, 2], padding=[[2, 2], [2, 2]]),
     "conv2 (Conv2D"),
    (lambda d: d["nodes"]["relu"]["attrs"].update(fn="tanh"), "relu (Activation"),
])
def test_a_planted_change_fails_and_is_blamed_on_its_node(imported, change, blamed):
    d = imported.spec.to_json()
    d["model"]["nodes"] = {n["name"]: n for n in d["model"]["nodes"]}
    change(d["model"])
    d["model"]["nodes"] = list(d["model"]["nodes"].values())
    bad = copy.copy(imported)
    spec = rosetta.TrainSpec.from_json(d)
    spec.data = imported.spec.data
    bad.spec = spec
    cert = bad.certify(("torch",), steps=1)
    assert not cert.passed
    node = blamed.split(" ")[0]
    assert f"first diverging node: {node} " in cert.results[0]["blame"], cert.results[0]


def test_a_planted_stride_that_changes_shapes_fails(imported):
    d = imported.spec.to_json()
    d["model"]["nodes"][0]["attrs"].update(strides=[1, 1])
    spec = rosetta.TrainSpec.from_json(d)
    spec.data = imported.spec.data
    bad = copy.copy(imported)
    bad.spec = spec
    cert = bad.certify(("torch",), steps=1)
    assert not cert.passed
    assert "'fc.weight' -> 'fc/kernel'" in cert.results[0]["blame"], cert.results[0]


def test_injected_dropout_masks_are_applied_in_the_source_layout(imported):
    """The dropout reads a channels-first flatten: a mask in the wrong layout, or none, fails."""
    from rosetta.importers import certificate

    cert = imported.certify(("torch",), steps=2)
    assert cert.passed and cert.dropout == "inject", cert.table()
    assert imported.certify(("torch",), steps=1, dropout="off").dropout == "off"
    real = certificate._to_source_layout
    certificate._to_source_layout = lambda mask, layout, chw: mask   # the layout ignored
    try:
        assert not imported.certify(("torch",), steps=1).passed
    finally:
        certificate._to_source_layout = real


def test_a_planted_optimizer_change_is_blamed_on_a_source_parameter(imported):
    bad = copy.copy(imported)
    spec = rosetta.TrainSpec.from_json({**imported.spec.to_json(), "optimizer": {
        **imported.spec.optimizer.to_json(), "momentum": 0.5}})
    spec.data = imported.spec.data
    bad.spec = spec
    cert = bad.certify(("torch",), steps=2)
    assert not cert.passed
    blame = cert.results[0]["blame"]
    # nesterov: the momentum acts on the first update already (p -= lr * (g + mu * v))
    assert blame.startswith("first divergence at step 0: params/"), blame
    path = blame.split("params/", 1)[1].split(" ", 1)[0]
    assert f"(source {imported.source_name(path)})" in blame, blame


def test_refusals_name_every_unsupported_module_before_anything_is_written():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4, affine=False)
            self.act = nn.Hardtanh()
            self.pool = nn.AvgPool2d(2, padding=1)

        def forward(self, x):   # the pool on its own branch: a refused input hides a module
            return torch.cat([torch.flatten(self.act(self.bn(self.conv(x))) * 2.0, 1),
                              torch.flatten(self.pool(x), 1)], 1)

    with pytest.raises(ImportRefused) as e:
        rosetta.from_torch(Bad().double(), torch.randn(2, 3, 8, 8, dtype=torch.float64))
    lines = e.value.lines
    assert any(line.startswith("bn (BatchNorm2d): unsupported module: BatchNorm(affine=False)")
               for line in lines), lines
    assert any(line.startswith("act (Hardtanh): unsupported module: hardtanh(-1, 1) (the spec "
                               "clips only as relu6") for line in lines), lines
    assert any(line.startswith("pool (AvgPool2d): unsupported module: average pooling with "
                               "padding and count_include_pad=True") for line in lines), lines


def test_optimizer_settings_the_spec_lacks_are_refused():
    m, x = make()
    opt = torch.optim.Adam(list(m.parameters())[1:], weight_decay=0.1)
    with pytest.raises(ImportRefused) as e:
        rosetta.from_torch(m, x, optimizer=opt)
    text = "\n".join(e.value.lines)
    assert "conv.weight: not in the optimizer" in text
    assert "coupled L2" in text


def test_requires_grad_false_maps_to_frozen_and_certifies():
    """A frozen middle layer (gradients flow through it to conv and gn) and the classifier's
    bias, in an AdamW with decay (torch skips them: no gradient): frozen in the spec, and the
    certificate's parameters after every step (the frozen ones unmoved),
    gradients and optimizer state equal the source's (torch only here, for CI time: the
    frozen rule's agreement across backends is test_optim.py's and test_frozen.py's)."""
    m, x = make()
    m.conv2.weight.requires_grad_(False)
    m.fc.bias.requires_grad_(False)
    opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    imp = rosetta.from_torch(m, x, optimizer=opt)
    assert imp.spec.optimizer.frozen == [imp.names["conv2.weight"], imp.names["fc.bias"]]
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed, cert.table()
    params = imp.params
    imp.unfreeze()   # trains what the source does not: the certificate no longer applies
    assert imp.spec.optimizer.frozen == [] and imp.params.keys() == params.keys()
    with pytest.raises(rosetta.RosettaError, match="frozen parameters changed since the import"):
        imp.certify(("torch",), steps=1)


def test_param_groups_map_to_lr_scale_and_the_kernels_decay_mask():
    m, x = make()
    decay = [p for n, p in m.named_parameters() if n.endswith("weight") and "gn" not in n]
    rest = [p for n, p in m.named_parameters() if not (n.endswith("weight") and "gn" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": rest, "weight_decay": 0.0, "lr": 0.02}], lr=0.01)
    imp = rosetta.from_torch(m, x, optimizer=opt)
    o = imp.spec.optimizer
    assert (o.kind, o.weight_decay, o.decay) == ("adamw", 0.05, "kernels")
    assert o.lr_scale["fc/bias"] == 2.0 and "fc/kernel" not in o.lr_scale
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed, cert.table()


def test_adam_in_progress_continues_from_the_checkpoint(tmp_path):
    """Adam run 3 steps in torch, imported with its state, saved; the checkpoint resumed by the
    torch backend continues equal to the source going on (1e-10); the report resumes it on
    TensorFlow."""
    from rosetta.backend_registry import get_backend

    m, x = make(1)
    for mod in m.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    batches = [(torch.as_tensor(rng.standard_normal((2, 3, 8, 8))),
                torch.as_tensor(rng.integers(0, 5, 2))) for _ in range(5)]
    loss = nn.CrossEntropyLoss()

    def step(xb, yb):
        opt.zero_grad()
        loss(m(xb), yb).backward()
        opt.step()

    for xb, yb in batches[:3]:
        step(xb, yb)
    imp = rosetta.from_torch(m, x, optimizer=opt, loss=loss)
    assert imp.step == 3 and "m/fc/kernel" in imp.optimizer_state
    imp.save(tmp_path / "ckpt")
    ck = checkpoint.load(tmp_path / "ckpt")
    prog = get_backend("torch").compile(ck.spec, dtype="float64")
    checkpoint.restore(prog, ck)
    for xb, yb in batches[3:]:
        prog.train_step({"x": xb.numpy().transpose(0, 2, 3, 1)}, yb.numpy())
        step(xb, yb)
    got = prog.export_params()
    for name, p in m.named_parameters():
        want = imp.source.layouts[name].to_canonical(p.detach().numpy())
        np.testing.assert_allclose(got[imp.names[name]], want, rtol=1e-10, atol=1e-12)


class Clamped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.clamp(self.conv(x), min=0.0)


def test_a_user_mapping_imports_a_module_the_table_lacks():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Clamped()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.mean(self.block(x), dim=(2, 3)))

    torch.manual_seed(0)
    model, x = Model().double(), torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with pytest.raises(ImportRefused, match=r"block \(Clamped\): unsupported module: "
                                            r"aten.clamp"):
        rosetta.from_torch(model, x)

    @maps(Clamped)
    def clamped(module, x, b):
        y = b.layer("Conv2D", [x], name="conv", params={"kernel": ("conv.weight", "conv2d"),
                                                         "bias": ("conv.bias", "identity")},
                    filters=4, kernel_size=3)
        return b.layer("Activation", [y], name="relu", fn="relu")

    try:
        imp = rosetta.from_torch(model, x)
        assert imp.names["block.conv.weight"] == "block_conv/kernel"
        assert imp.certify(("torch",), steps=1).passed
    finally:
        from rosetta.importers.torch_graph import MAPS
        MAPS.pop(Clamped)


class BNNet(nn.Module):
    """conv -> BatchNorm2d (torch momentum 0.3, eps 1e-3) -> relu -> global pool -> Linear ->
    BatchNorm1d (defaults) -> Linear: both of torch's running-variance rules in one model (and
    a cat of one tensor, as DenseNet's first dense layer makes)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4, momentum=0.3, eps=1e-3)
        self.fc = nn.Linear(4, 6, bias=False)
        self.bn1 = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        y = torch.relu(self.bn(torch.cat([self.conv(x)], 1)))   # DenseNet's cat of one
        y = torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1)
        return self.head(torch.relu(self.bn1(self.fc(y))))


def _bn_net():
    torch.manual_seed(1)
    m = BNNet().double()
    with torch.no_grad():   # running statistics away from their initial values
        for bn in (m.bn, m.bn1):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    return m, torch.randn(2, 3, 5, 5, dtype=torch.float64)


def test_batchnorm_imports_with_torchs_running_variance_and_certifies():
    """torch BatchNorm1d/2d -> BatchNorm(momentum = 1 - torch's, running_var="unbiased"): the
    eval forward and the running statistics after a step equal torch's, and the certificate
    passes on torch, tensorflow and jax in float64 (batch 2: n / (n - 1) = 2 on BatchNorm1d)."""
    m, x = _bn_net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    imp = rosetta.from_torch(m, (x,), optimizer=opt, loss=nn.CrossEntropyLoss())
    nodes = {n["name"]: n for n in imp.spec.model.to_json()["nodes"]}
    assert nodes["bn"]["attrs"] == {"momentum": 0.7, "epsilon": 1e-3, "running_var": "unbiased"}
    assert nodes["bn1"]["attrs"]["momentum"] == pytest.approx(0.9, abs=1e-16)
    assert imp.names["bn.running_var"] == "bn/var"
    state = dict(imp.state)
    imp.spec.model.reference_forward(imp.params, x.numpy().transpose(0, 2, 3, 1), state=state,
                                     training=True)
    m.train()
    m(x)
    for src, path in (("bn.running_var", "bn/var"), ("bn1.running_var", "bn1/var"),
                      ("bn1.running_mean", "bn1/mean")):
        np.testing.assert_allclose(state[path], dict(m.named_buffers())[src].numpy(),
                                   rtol=1e-13)
    cert = imp.certify(("torch", "tensorflow", "jax"), steps=2)
    assert cert.passed, cert.table()
    for r in cert.results:
        assert max(r["worst"].values()) < 1e-10, r


def test_batchnorm_with_a_cumulative_average_is_refused_in_one_line():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None)).double()
    with pytest.raises(ImportRefused) as e:
        rosetta.from_torch(m, torch.randn(2, 3, 6, 6, dtype=torch.float64))
    assert e.value.lines == ["1 (BatchNorm2d): unsupported module: BatchNorm(momentum=None) (a "
                             "cumulative average of every batch's statistics: the spec's "
                             "BatchNorm has an exponential moving average)"]


SOURCE = textwrap.dedent('''
    import torch
    import torch.nn as nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(
                torch.relu(self.conv(x)), 1), 1))

    def build():
        torch.manual_seed(0)
        m = Small().double()
        return {"model": m, "optimizer": torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                "loss": nn.CrossEntropyLoss()}

    def bad():
        return nn.Sequential(nn.Conv2d(3, 4, 3),
                             nn.BatchNorm2d(4, track_running_stats=False)).double()
''')


def test_cli_import_certify_and_refuse(tmp_path):
    from cli_run import run_cli   # in process: the contract of docs/design.md section 6, no interpreter start-up

    src = tmp_path / "models.py"
    src.write_text(SOURCE)
    r = run_cli(["import", f"{src}:build", "--out", tmp_path / "ck", "--input-shape", "2,3,6,6",
                 "--backends", "torch", "--steps", "2"])
    assert r.status == 0 and r.traceback is None, str(r)
    assert "PASS" in r.out
    assert checkpoint.load(tmp_path / "ck").spec.optimizer.momentum == 0.9
    r = run_cli(["import", f"{src}:bad", "--out", tmp_path / "ck2", "--input-shape", "2,3,6,6"])
    assert r.status == 2 and r.traceback is None, str(r)
    assert r.err.startswith("rosetta import: 1 (BatchNorm2d): unsupported module: "
                            "BatchNorm(track_running_stats=False)"), r.err
    assert not (tmp_path / "ck2").exists()


def test_a_model_that_computes_another_graph_in_eval_mode_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.relu(x) if self.training else torch.tanh(x))

    with pytest.raises(ImportRefused, match=r"<root> \(Branchy\): unsupported call: it computes "
                                            r"a different graph in eval mode \(aten.relu.default"):
        rosetta.from_torch(Branchy().double(), torch.randn(2, 4, dtype=torch.float64))


def test_a_token_model_with_adamw_imports_and_certifies():
    """Integer inputs stay integers; Embedding, LayerNorm, tanh-GELU, a residual add and a
    sequence flatten map; AdamW's decoupled decay."""
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.ln = nn.Embedding(20, 8), nn.LayerNorm(8)
            self.fc, self.out, self.drop = nn.Linear(8, 8), nn.Linear(5 * 8, 3), nn.Dropout(0.2)

        def forward(self, x):
            h = self.ln(self.emb(x))
            h = nn.functional.gelu(self.fc(h), approximate="tanh") + h
            return self.out(self.drop(torch.flatten(h, 1)))

    torch.manual_seed(0)
    m = Tokens().double()
    imp = rosetta.from_torch(m, torch.randint(0, 20, (2, 5)), loss=nn.CrossEntropyLoss(),
                             optimizer=torch.optim.AdamW(m.parameters(), lr=1e-2,
                                                         weight_decay=0.1))
    assert [n.op for n in imp.spec.model.nodes][:3] == ["Embedding", "LayerNorm", "Dense"]
    cert = imp.certify(("torch",), steps=2)
    assert cert.passed, cert.table()


def _squeeze_excitation():
    """torchvision.ops.SqueezeExcitation as torchvision writes it (torchvision is not a test
    dependency): x * sigmoid(fc2(relu(fc1(avgpool(x)))))."""
    class SqueezeExcitation(nn.Module):
        def __init__(self, channels, squeeze):
            super().__init__()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
            self.activation, self.scale_activation = nn.ReLU(), nn.Sigmoid()

        def forward(self, x):
            scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
            return self.scale_activation(scale) * x

    return SqueezeExcitation


def test_a_squeeze_excite_block_imports_and_certifies_on_three_backends():
    """A squeeze-excite block as torchvision writes it (the gate (N, C, 1, 1) broadcast over (N, C, H, W): a
    Multiply), hard-swish, ReLU6 (traced as hardtanh(0, 6)), a same-shape multiply, SiLU."""
    SqueezeExcitation = _squeeze_excitation()

    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act = nn.Conv2d(3, 8, 3, padding=1), nn.Hardswish()
            self.se, self.act2 = SqueezeExcitation(8, 4), nn.ReLU6()
            self.fc = nn.Linear(8 * 4 * 4, 3)

        def forward(self, x):
            y = self.act2(self.se(self.act(self.conv(x))))
            return self.fc(torch.flatten(nn.functional.silu(y * torch.sigmoid(y)), 1))

    torch.manual_seed(0)
    m = SE().double()
    imp = rosetta.from_torch(m, torch.randn(2, 3, 4, 4, dtype=torch.float64),
                             loss=nn.CrossEntropyLoss(),
                             optimizer=torch.optim.SGD(m.parameters(), lr=0.1))
    ops = [n.op for n in imp.spec.model.nodes]
    assert ops.count("Multiply") == 2 and "HardSwish" in ops, ops
    gate = imp.spec.model.nodes[ops.index("Multiply")]
    assert sorted(t.shape for t in gate.in_types) == [(1, 1, 8), (4, 4, 8)]
    assert [n.attrs["fn"] for n in imp.spec.model.nodes if n.op == "Activation"] == [
        "relu", "sigmoid", "relu6", "sigmoid", "silu"]
    cert = imp.certify(("torch", "tensorflow", "jax"), steps=1)
    assert cert.passed, cert.table()


def test_hardsigmoid_maps_exactly_forward_and_says_why_its_gradient_differs():
    """torch's Hardsigmoid backward rounds 1/6 to float32: the import says so in its notes."""
    m = nn.Sequential(nn.Linear(4, 4), nn.Hardsigmoid()).double()
    x = 4 * torch.randn(2, 4, dtype=torch.float64)
    imp = rosetta.from_torch(m, x)
    ref = imp.spec.model.reference_forward(imp.params, x.numpy())
    np.testing.assert_allclose(ref, m(x).detach().numpy(), rtol=1e-15, atol=1e-15)
    assert any("hard_sigmoid (m_1)" in n and "1.0f/6.0f" in n for n in imp.notes), imp.notes


def test_ceil_mode_pools_import_as_extra_padding_after():
    """ceil_mode=True adds a last window each time: max 8 -> 4 (floor 3), average 4 -> 3 with
    padding 1 excluded (floor 2), average 3 -> 2 unpadded (floor 1): the spec's pools with one
    more cell of padding after."""
    class Pools(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 1)
            self.mp = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.ap = nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False)
            self.ap2 = nn.AvgPool2d(2, ceil_mode=True)
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            y = self.ap2(self.ap(self.mp(self.conv(x))))
            return self.fc(torch.flatten(y, 1))

    torch.manual_seed(0)
    m = Pools().double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    imp = rosetta.from_torch(m, x, loss=nn.CrossEntropyLoss(),
                             optimizer=torch.optim.SGD(m.parameters(), lr=0.1))
    pads = {n.name: n.attrs["padding"] for n in imp.spec.model.nodes if "Pool" in n.op}
    assert pads == {"mp": ((0, 1), (0, 1)), "ap": ((1, 2), (1, 2)), "ap2": ((0, 1), (0, 1))}
    m.eval()
    ref = imp.spec.model.reference_forward(imp.params, x.numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(ref, m(x).detach().numpy(), rtol=1e-13, atol=1e-14)
    cert = imp.certify(("torch", "jax"), steps=1)
    assert cert.passed, cert.table()
