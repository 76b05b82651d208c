"""``--backend auto``: the choice logic with injected timings (timing is never asserted), the
cache, and the guard: a backend planted with a real framework trap fails the float64 check and is
never picked, however fast."""

from __future__ import annotations

import pytest

import rosetta as rs
from rosetta.conformance import auto
from rosetta.training import train

from selection import BACKENDS

pytestmark = pytest.mark.cross


def spec():
    model = rs.Sequential([rs.Dense(8), rs.ReLU(), rs.Dense(3)], input_shape=(5,), name="small")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.AdamW(0.01, weight_decay=0.1),
                        data=rs.DataSpec("clusters", batch_size=4,
                                         args={"n": 40, "features": 5, "classes": 3}),
                        steps=4)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROSETTA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def injected(times: dict):
    calls = []

    def measure(spec, backend, **kwargs):
        calls.append(backend)
        return {"mode": rs.get_backend(backend).modes[0], "step_s": times.get(backend, 1.0),
                "compile_s": 0.0, "steps": 5}

    return measure, calls


def all_pass(spec, backends):
    return list(backends), {}


def test_picks_the_fastest_then_uses_the_cache_until_remeasure(cache):
    times = {b: 0.010 * (i + 1) for i, b in enumerate(BACKENDS)}
    times[BACKENDS[-1]] = 0.001
    measure, calls = injected(times)
    c = auto.choose(spec(), backends=BACKENDS, measure=measure, check=all_pass)
    assert c["backend"] == BACKENDS[-1] and not c["cached"]
    assert "measured" in c["message"] and BACKENDS[-1] in c["message"]
    assert sorted(calls) == sorted(BACKENDS)
    again = auto.choose(spec(), backends=BACKENDS, measure=measure, check=all_pass)
    assert again["cached"] and again["backend"] == BACKENDS[-1] and "cached" in again["message"]
    assert len(calls) == len(BACKENDS)                  # no re-timing
    times[BACKENDS[0]] = 0.0001
    fresh = auto.choose(spec(), backends=BACKENDS, measure=measure, check=all_pass,
                        remeasure=True)
    assert fresh["backend"] == BACKENDS[0] and len(calls) == 2 * len(BACKENDS)
    # another batch size, dtype or spec is another cache entry
    other = auto.choose(spec(), backends=BACKENDS, measure=measure, check=all_pass,
                        batch_size=8)
    assert not other["cached"]


def test_an_excluded_backend_is_never_picked():
    fastest = BACKENDS[0]
    times = {b: 0.01 for b in BACKENDS}
    times[fastest] = 1e-6
    measure, calls = injected(times)

    def check(spec, backends):
        return [b for b in backends if b != fastest], {fastest: "disagrees (planted)"}

    c = auto.choose(spec(), backends=BACKENDS, measure=measure, check=check)
    assert c["backend"] != fastest and fastest not in calls
    assert f"excluded: {fastest} disagrees (planted)" in c["message"]


def test_a_backend_with_a_planted_trap_fails_the_check_and_is_never_picked(monkeypatch):
    """torch's ``Adam(weight_decay)`` (coupled L2) planted for AdamW: the real float64 check
    drops torch, and ``auto`` picks another backend even when torch is timed fastest."""
    if "torch" not in BACKENDS:
        pytest.skip("the planted trap is torch's coupled Adam weight decay; torch not selected")
    from test_traps import trap_torch_adam_coupled_decay

    trap_torch_adam_coupled_decay(monkeypatch)
    kept, why = auto.agreeing(spec(), BACKENDS)
    assert "torch" not in kept and set(kept) == set(BACKENDS) - {"torch"}
    assert "torch" in why
    times = {b: 0.01 for b in BACKENDS}
    times["torch"] = 1e-6
    measure, _ = injected(times)
    c = auto.choose(spec(), backends=BACKENDS, measure=measure)
    assert c["backend"] != "torch" and "torch" in c["excluded"]


def test_train_auto_records_the_choice(monkeypatch):
    times = {b: 0.01 for b in BACKENDS}
    times[BACKENDS[1]] = 0.001
    measure, _ = injected(times)
    monkeypatch.setattr(auto, "time_step", measure)
    monkeypatch.setattr(auto, "agreeing", all_pass)
    rec = train(spec(), "auto", dtype="float64", progress=False)
    assert rec["backend"] == BACKENDS[1] and rec["program"].backend == BACKENDS[1]
    assert rec["auto"]["times"][BACKENDS[1]] == 0.001 and not rec["auto"]["cached"]


def test_recommendations_name_the_fastest_and_the_factor():
    rows = [{"model": "m", "backend": "torch", "mode": "eager", "step_ms_median": 4.0},
            {"model": "m", "backend": "jax", "mode": "jit", "step_ms_median": 1.0},
            {"model": "n", "backend": "tensorflow", "mode": "xla", "step_ms_median": 2.0}]
    assert auto.recommendations(rows) == ["m: jax/jit 1 ms, 4.00x faster than torch/eager",
                                          "n: tensorflow/xla 2 ms"]
