"""The certificate can fail (rosetta.conformance.import_fuzz): single-attribute changes to an
imported spec, and planted porting differences, each fail the certificate and are blamed on the
changed node or the right source parameter. The 20-change sweep is a command (the report)."""

from __future__ import annotations

import copy
import dataclasses

import pytest

torch = pytest.importorskip("torch")

from rosetta.conformance import import_fuzz as F  # noqa: E402
from rosetta.conformance.native import LINEAR  # noqa: E402
from rosetta.importers.imported import from_torch  # noqa: E402


@pytest.fixture(scope="module")
def imp():
    m, x, opt, loss = F.fuzz_model()
    return from_torch(m, x, optimizer=opt, loss=loss, name="fuzznet")


def test_the_unchanged_import_passes(imp):
    assert imp.certify(("torch",), steps=1).passed


@pytest.mark.parametrize("change,blamed", [
    (F.Change("node", "bn", "epsilon", 1e-5, 1e-4), "first diverging node: bn (BatchNorm"),
    (F.Change("node", "conv2", "padding", [[1, 1], [1, 1]], [[2, 0], [1, 1]]),
     "first diverging node: conv2 (Conv2D"),
    (F.Change("node", "drop", "rate", 0.25, 0.175), "first diverging node: drop (Dropout"),
    (F.Change("node", "conv", "strides", [2, 2], [3, 2]), "first misshapen node: conv (Conv2D"),
], ids=["epsilon", "padding", "dropout-rate", "stride"])
def test_a_single_attribute_change_fails_and_is_blamed(imp, change, blamed):
    row = F.certify_change(imp, change, steps=1)
    assert row["failed"] and row["blamed_right"], row
    assert blamed in row["blame"], row


def test_the_candidates_come_from_the_registry_and_skip_initializers(imp):
    changes = F.candidates(imp.spec)
    attrs = {(c.node, c.attr) for c in changes}
    assert ("bn", "momentum") in attrs and ("act", "slope") in attrs
    assert not any(c.attr.endswith("_init") for c in changes)
    assert len(changes) >= 20


def test_a_flatten_that_ignores_nchw_order_is_blamed_on_the_linear(imp):
    """A port that reads fc.weight as if the flatten were channels last."""
    bad = copy.copy(imp)
    bad.source = dataclasses.replace(imp.source, layouts={**imp.source.layouts,
                                                          "fc.weight": LINEAR})
    cert = bad.certify(("torch",), steps=1)
    assert not cert.passed
    assert "first diverging node: fc (Dense; source fc (Linear))" in cert.results[0]["blame"]


def test_a_batchnorm_momentum_taken_as_torchs_is_blamed_on_the_running_mean(imp):
    """torch's momentum 0.1 weighs the new batch; the spec's momentum weighs the old average."""
    row = F.certify_change(imp, F.Change("node", "bn", "momentum", 0.9, 0.1), steps=1)
    assert row["failed"]
    assert "state/bn/mean (source bn.running_mean)" in row["blame"], row
