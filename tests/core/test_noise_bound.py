"""The float32 tier's noise bound (conformance/noise.py), on hand-made numbers."""

from __future__ import annotations

import numpy as np

from rosetta.conformance.noise import (NOISE_FLOOR, NOISE_MULTIPLE, NOISE_ULPS, U, Measured,
                                       compare_noisy, perturb, use)


def test_perturb_moves_floats_by_at_most_one_ulp_and_leaves_integers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10_000)
    p = perturb({"x": x, "ids": np.arange(5)}, rng)
    x32 = x.astype(np.float32)
    assert p["x"].dtype == np.float32
    steps = (p["x"] - x32) / np.spacing(x32)
    assert set(np.unique(steps)) == {-1.0, 0.0, 1.0}
    assert p["ids"].dtype.kind == "i" and (p["ids"] == np.arange(5)).all()


def test_bound_is_multiple_of_spread_plus_floors():
    ref = {"params/w": np.array([1.0, 0.0, 2.0])}
    spread = {"params/w": np.array([1e-6, 0.0, 0.0])}
    bound = NOISE_MULTIPLE * spread["params/w"] + U * (NOISE_ULPS * np.abs(ref["params/w"])
                                                      + NOISE_FLOOR * 2.0)
    inside = {"params/w": ref["params/w"] + 0.9 * bound}
    outside = {"params/w": ref["params/w"] + np.array([0.0, 1.1, 0.0]) * bound}
    (key, w), = compare_noisy(inside, Measured(ref, spread), "x")
    assert key == "params/w" and use(w) <= 1 and w.noise is not None
    (_, w), = compare_noisy(outside, Measured(ref, spread), "x")
    assert use(w) > 1 and w.index == (1,)
    assert np.isclose(w.tolerance, bound[1] / 2.0) and w.noise == 0.0


def test_missing_tensor_fails_and_order_is_causal():
    ref = {"params/w": np.ones(2), "loss": np.array(1.0), "grads/w": np.ones(2)}
    m = Measured(ref, {k: np.zeros_like(v) for k, v in ref.items()})
    rows = compare_noisy({"loss": np.array(1.0), "grads/w": np.ones(2)}, m, "x")
    assert [k for k, _ in rows] == ["loss", "grads/w", "params/w"]
    assert use(rows[-1][1]) == np.inf


def test_tensors_other_than_parameters_use_their_largest_spread():
    ref = {"grads/w": np.array([1.0, 0.0])}
    spread = {"grads/w": np.array([1e-3, 0.0])}
    got = {"grads/w": np.array([1.0, 5e-3])}     # within 16 x the tensor's largest spread
    (_, w), = compare_noisy(got, Measured(ref, spread), "x")
    assert use(w) <= 1 and np.isclose(w.noise, 1e-3)


def test_noise_spread_counts_own_runs_but_never_a_bias_against_the_others():
    from rosetta.conformance.noise import noise_spread

    ref = {"g": np.zeros(3)}
    others = [{"g": np.array([0.0, 1e-7, 0.0])}, {"g": np.array([0.0, 0.0, 0.0])}]
    # held's runs: all shifted by a bias of 1e-3 (a bug), one element noisy by 2e-7 among them
    held = [{"g": np.array([1e-3, 1e-3, 1e-3])}, {"g": np.array([1e-3, 1e-3, 1e-3 + 2e-7])}]
    s = noise_spread(ref, _measured(ref, a=held, b=others[:1], c=others[1:]), "a")["g"]
    assert np.allclose(s, [0.0, 1e-7, 2e-7])        # the bias 1e-3 is nowhere in the spread
    # pooled others count their differences from each other
    s = noise_spread(ref, _measured(ref, a=held, b=others[:1], c=others[1:]), "b")["g"]
    assert s[1] >= 1e-3 - 1e-12                      # b is held: a's bias is another order

    # a backend whose repeated run differed (hidden state, a random draw) adds no own noise
    m = _measured(ref, a=held, b=others[:1], c=others[1:])
    m["a"].reproducible = False
    assert np.allclose(noise_spread(ref, m, "a")["g"], [0.0, 1e-7, 0.0])


def _measured(ref, **runs):
    from rosetta.conformance.noise import spread_of

    return {c: Measured(ref, spread_of(ref, rs), rs) for c, rs in runs.items()}
