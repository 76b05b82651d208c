"""The neutral spec: building, shape inference, errors that name the place, lossless JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rosetta as rs
from rosetta import models
from rosetta.ops import REGISTRY

from cases import BUILD, IDS


def test_every_op_is_declared_with_math_and_reference():
    # the set of ops is the registry's; each has a generated constructor exported by rosetta
    assert set(REGISTRY) <= set(rs.__all__), sorted(set(REGISTRY) - set(rs.__all__))
    for name, op in REGISTRY.items():
        assert op.__doc__ and "=" in op.__doc__, f"{name} documents no math"
        assert type(op).reference is not rs.ops.OpDef.reference, f"{name} has no reference"


def test_every_op_is_covered_by_a_test_case():
    used = {n.op for build in BUILD.values() for n in build().model.nodes}
    assert used >= set(REGISTRY) - {"Dropout"}  # Dropout has its own statistical tests


@pytest.mark.parametrize("case", IDS)
def test_json_roundtrip_is_lossless(case):
    spec = BUILD[case]()
    text = spec.dumps()
    back = rs.TrainSpec.from_json(json.loads(text))
    assert back == spec
    assert back.dumps() == text
    assert back.model.param_defs().keys() == spec.model.param_defs().keys()


@pytest.mark.parametrize("name", list(models.ZOO))
def test_zoo_json_roundtrip(name):
    spec = models.get(name)
    assert rs.TrainSpec.from_json(json.loads(spec.dumps())) == spec
    assert json.loads(spec.dumps())["format"] == "rosetta/1"


def test_zoo_specs_share_no_mutable_parts():
    """Each ``models.get`` builds its own spec: a change to one (a test setting a batch size)
    never reaches a spec built after it (a shared module-level DataSpec once did)."""
    first = {name: models.get(name) for name in models.ZOO}
    for spec in first.values():
        spec.data.batch_size = 1
        spec.data.args["planted"] = 1
    for name in models.ZOO:
        again = models.get(name)
        assert again.data.batch_size != 1 and "planted" not in again.data.args, name
        assert again.to_json() == models.get(name).to_json()


def test_shape_inference():
    g = models.get("cnn").model
    shapes = {n.name: n.out_type.shape for n in g.nodes}
    assert shapes == {"conv1": (8, 8, 16), "pool1": (4, 4, 16), "conv2": (4, 4, 32),
                      "flatten": (512,), "logits": (10,)}
    p = g.param_defs()
    assert p["conv1/kernel"].shape == (3, 3, 1, 16) and p["logits/kernel"].shape == (512, 10)


@pytest.mark.parametrize("size,k,s,d,pad,out,pads", [
    (7, 3, 2, 1, "same", 4, (1, 1)),
    (6, 3, 2, 1, "same", 3, (0, 1)),      # extra padding goes after
    (6, 1, 2, 1, "same", 3, (0, 0)),
    (7, 3, 1, 2, "same", 7, (2, 2)),
    (7, 3, 2, 1, "valid", 3, (0, 0)),
    (5, 2, 1, 1, ((1, 0),), 5, (1, 0)),
])
def test_padding_rule(size, k, s, d, pad, out, pads):
    from rosetta.ops.windows import resolve_padding
    assert resolve_padding(size, k, s, d, pad, 0) == (out, pads)


@pytest.mark.parametrize("build,where,words", [
    (lambda: rs.Sequential([rs.Dense(4, name="d"), rs.Conv2D(3, 3, name="c")], (5,), name="m"),
     "m/c", ["Conv2D", "rank 3", "(4,)"]),
    (lambda: rs.Sequential([rs.Conv2D(3, 5, name="c")], (3, 3, 1), name="m"),
     "m/c", ["output size"]),
    (lambda: rs.Sequential([rs.Conv2D(3, 3, groups=2, name="c")], (5, 5, 3), name="m"),
     "m/c", ["divisible by groups"]),
    (lambda: rs.Sequential([rs.Reshape((7,), name="r")], (2, 3), name="m"),
     "m/r", ["6 elements"]),
    (lambda: rs.Sequential([rs.Embedding(5, 2, name="e")], (3,), name="m"),
     "m/e", ["int input"]),
    (lambda: rs.Sequential([rs.LayerNorm(name="ln")], (3, 1), name="m"),
     "m/ln", ["size >= 2"]),
])
def test_bad_specs_name_the_node(build, where, words):
    with pytest.raises(rs.SpecError) as e:
        build()
    assert e.value.where == where, str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_add_and_concat_shape_errors():
    a, b = rs.Input((3, 4), name="a"), rs.Input((3, 5), name="b")
    with pytest.raises(rs.SpecError, match="m/plus.*equal or 1"):
        rs.Model([a, b], rs.Add(name="plus")([a, b]), name="m")
    with pytest.raises(rs.SpecError, match="m/cat.*equal except on axis 0"):
        rs.Model([a, b], rs.Concatenate(axis=0, name="cat")([a, b]), name="m")
    rs.Model([a, b], rs.Concatenate(name="cat")([a, b]), name="m")  # axis -1 is fine
    g = rs.Input((1, 4), name="g")   # Add broadcasts size-1 axes (NumPy rule), as Multiply
    assert rs.Model([a, g], rs.Add(name="plus")([a, g]), name="m").output_type.shape == (3, 4)


def test_multiply_broadcasts_size_one_axes_of_one_rank():
    a, g, h = rs.Input((3, 4), name="a"), rs.Input((1, 4), name="g"), rs.Input((3, 1), name="h")
    m = rs.Model([a, g, h], rs.Multiply(name="gate")([g, h]), name="m")
    assert m.nodes[-1].out_type.shape == (3, 4)
    b, v = rs.Input((3, 5), name="b"), rs.Input((4,), name="v")
    with pytest.raises(rs.SpecError, match="m/gate.*equal or 1.*shapes"):
        rs.Model([a, b], rs.Multiply(name="gate")([a, b]), name="m")
    with pytest.raises(rs.SpecError, match="m/gate.*one rank"):   # (3, 4) * (4,): no rank rule
        rs.Model([a, v], rs.Multiply(name="gate")([a, v]), name="m")


@pytest.mark.parametrize("bad,words", [
    (lambda: rs.Dense(0), "units"),
    (lambda: rs.Dense(3, activation="swish"), "activation"),
    (lambda: rs.Activation("gelu"), "approximate"),
    (lambda: rs.Activation("leaky_relu"), "slope"),
    (lambda: rs.Conv2D(3, 3, padding="full"), "padding"),
    (lambda: rs.BatchNorm(momentum=1.5), "momentum"),
    (lambda: rs.Dense(3, kernel_init="glorot_magic"), "initializer"),
    (lambda: rs.Dense(3, bogus=1), "unknown attribute"),
    (lambda: rs.optim.Adam(-1.0), "value"),
    (lambda: rs.optim.SGD(0.1, nesterov=True), "nesterov needs momentum"),
    (lambda: rs.schedules.as_schedule({"schedule": "warmup_cosine", "peak": 1.0,
                                       "warmup_steps": 5, "decay_steps": 5}), "decay_steps"),
    (lambda: rs.losses.SoftmaxCrossEntropy(1.0), "label_smoothing"),
])
def test_bad_attributes_are_spec_errors(bad, words):
    with pytest.raises(rs.SpecError, match=words):
        bad()


def test_graph_structure_errors():
    ok = models.get("mlp").to_json()

    def mutate(f):
        d = json.loads(json.dumps(ok))
        f(d)
        return d

    cases = [
        (lambda d: d["model"]["nodes"][1].__setitem__("inputs", ["nowhere"]), "nowhere"),
        (lambda d: d["model"]["nodes"][0].__setitem__("inputs", ["logits"]), "cycle"),
        (lambda d: d["model"]["nodes"][1].__setitem__("name", "hidden1"), "duplicate"),
        (lambda d: d["model"]["nodes"][1].__setitem__("op", "Dense2"), "unknown op"),
        (lambda d: d["model"].__setitem__("outputs", ["zzz"]), "unknown output"),
        (lambda d: d.__setitem__("format", "rosetta/9"), "format"),
        (lambda d: d["model"]["nodes"][0]["attrs"].__setitem__("units", "128"), "integer"),
        (lambda d: d["optimizer"].__setitem__("name", "adagrad2"), "unknown optimizer"),
        (lambda d: d["data"].__setitem__("dataset", "imagenet"), "unknown dataset"),
        (lambda d: d.__setitem__("steps", 0), "steps"),
        (lambda d: d["model"]["nodes"][0].__setitem__("name", "bad name"), "name"),
        (lambda d: d.__setitem__("extra", 1), "unknown key"),
    ]
    for f, words in cases:
        with pytest.raises(rs.SpecError, match=words):
            rs.TrainSpec.from_json(mutate(f))


def test_json_loading_executes_no_code(tmp_path):
    d = models.get("mlp").to_json()
    d["model"]["nodes"][0]["op"] = "__import__('os').system('touch pwned')"
    with pytest.raises(rs.SpecError, match="unknown op"):
        rs.TrainSpec.from_json(d)
    assert not (tmp_path / "pwned").exists()


def test_functional_auto_names_are_deterministic():
    def build():
        x = rs.Input((4,))
        h = rs.Dense(3)(x)
        h2 = rs.Dense(3)(h)
        return rs.Model(x, rs.Add()([h, h2]))
    a, b = build(), build()
    assert [n.name for n in a.nodes] == ["dense", "dense_1", "add"]
    assert a == b


def test_reference_forward_of_dag_by_hand():
    a, b = rs.Input((2,), name="a"), rs.Input((2,), name="b")
    y = rs.Concatenate(name="c")([rs.Add(name="s")([a, b]), a])
    g = rs.Model([a, b], y, name="m")
    out = g.reference_forward({}, {"a": np.array([[1.0, 2.0]]), "b": np.array([[10.0, 20.0]])})
    np.testing.assert_array_equal(out, [[11.0, 22.0, 1.0, 2.0]])
