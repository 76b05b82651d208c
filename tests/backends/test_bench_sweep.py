"""``rosetta bench --sweep`` (cost curves) and the bare ``rosetta bench`` plan (the whole zoo): the
sweep runs and its numbers are consistent, bad ``--sweep`` values are one line, exit 2, and the
plan lists every zoo model. No test asserts on speed, and none times the zoo."""

from __future__ import annotations

import json
import numpy as np
import pytest

from rosetta import models
from rosetta.conformance import bench
from rosetta.conformance.bench import report, sweep

from cli_run import check_contract, run_cli as cli_run
from selection import BACKENDS as SELECTED

BACKENDS = [b for b in SELECTED if b in bench.BASELINES]


def test_cli_sweep_report_is_consistent(tmp_path):
    """Two batch sizes of mlp on every backend's default mode: one row per point x backend,
    samples/s = batch / step, the floor below the step time, memory recorded, the same rows in
    the JSON, the Markdown and the plot."""
    r = cli_run(["bench", "mlp", "--sweep", "batch=8,4", "--backends", *BACKENDS,
                 "--steps", "3", "--warmup", "1", "--block", "1", "--quiet",
                 "--report", tmp_path / "s.json", "--report", tmp_path / "s.md",
                 "--plot", tmp_path / "s.png"])
    check_contract(r)
    assert r.status == 0, r
    d = json.loads((tmp_path / "s.json").read_text())
    assert d["format"] == sweep.FORMAT and d["settings"]["sweep"] == {"batch": [4, 8]}
    rows = d["results"]
    from rosetta.backend_registry import get_backend
    assert sorted((r["value"], r["backend"], r["mode"]) for r in rows) == sorted(
        (v, b, get_backend(b).modes[0]) for v in (4, 8) for b in BACKENDS)
    peak = d["environment"]["matmul_peak_gflops"]
    for row in rows:
        assert row["sweep"] == "batch" and row["batch_size"] == row["value"]
        step_s = row["step_ms_median"] / 1e3
        assert row["samples_per_second"] == pytest.approx(row["batch_size"] / step_s)
        assert row["example_ms"] == pytest.approx(row["step_ms_median"] / row["batch_size"])
        assert row["flops_per_step"] == bench.train_flops(models.get("mlp").model,
                                                          row["batch_size"])
        assert row["floor_ms"] == pytest.approx(row["flops_per_step"] / (peak * 1e9) * 1e3)
        assert 0 < row["floor_ms"] <= row["step_ms_median"]
        assert row["peak_memory_mb"] > 0 and row["native_step_ms"] is None
    md = (tmp_path / "s.md").read_text()
    assert md.startswith("| model | sweep |") and len(
        [ln for ln in md.splitlines() if ln.startswith("| mlp ")]) == len(rows)
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert r.out.count("\nmlp ") == len(rows)


@pytest.mark.parametrize("text,words", [
    ("depth=2,4", "one of batch, seq, width"), ("batch", "KEY=V1,V2"),
    ("batch=8,x", "positive integers"), ("batch=0,8", "positive integers"),
    ("seq=8,65537", "up to 65,536"), ("batch=8,8", "repeat"), ("width=" + ",".join(
        str(i) for i in range(1, 18)), "at most 16 points"),
])
def test_bad_sweep_values(text, words):
    with pytest.raises(ValueError, match=words):
        sweep.parse_sweep(text)


@pytest.mark.parametrize("args,words", [
    (["bench", "mlp", "--sweep", "batch=8,x"], "positive integers"),
    (["bench", "mlp", "--sweep", "seq=8,16"], "applies to sequence models"),
    (["bench", "cnn", "--sweep", "width=8,16"], "applies to MLPs"),
    (["bench", "--sweep", "batch=8,16"], "needs the SPEC"),
    (["bench", "mlp", "--sweep", "batch=8,16", "--batch-size", "4"], "drop --batch-size"),
    (["bench", "gpt", "--sweep", "batch=8,1048576"], "needs at least"),
])
def test_cli_bad_sweep_is_one_line(args, words):
    """In-process (``cli_run``): exit 2, one line on stderr, before any timing."""
    o = cli_run(args + ["--backends", *SELECTED])
    check_contract(o)
    assert o.status == 2 and words in o.err, o


def test_sweep_points_rewrite_the_spec():
    """seq changes the token input, the learned positions and the text windows; width the hidden
    Dense units only; the FLOPs follow."""
    gpt = models.get("gpt")
    short = sweep.point_spec(gpt, "seq", 16)
    assert short.model.inputs[0].shape == (16,) and short.data.args["length"] == 16
    assert next(n for n in short.model.nodes
                if n.op == "PositionEmbedding").attrs["max_length"] == 16
    # per-token work: everything but attention's T x T products scales with T
    assert short.model.flops_per_example() < gpt.model.flops_per_example() / 4 * 1.1
    wide = sweep.point_spec(bench.mlp784(), "width", 64)
    assert [n.attrs["units"] for n in wide.model.nodes if n.op == "Dense"] == [64, 64, 10]
    assert wide.model.param_count() == 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert sweep.point_spec(gpt, "batch", 8).data.batch_size == 8
    # the majority data no longer fits 8 tokens: synthetic batches of the new shape
    lstm = sweep.point_spec(models.get("lstm"), "seq", 8)
    host, source = bench.bench_batches(lstm, 4, "float32")
    (x, y), = host[:1]
    assert source == "synthetic" and x["tokens"].shape == (4, 8)
    assert np.all((x["lengths"] >= 1) & (x["lengths"] <= 8))
    assert sweep.parse_sweep("batch=512, 8,32") == ("batch", [8, 32, 512])


def test_bare_bench_plans_the_whole_zoo():
    """A bare ``rosetta bench`` times every zoo model that has a baseline and mlp784, and lists
    the others with the reason (the dropout variants), none silently dropped."""
    timed, skipped = bench.zoo_plan()
    assert set(timed) | {m for m, _ in skipped} == set(models.ZOO) | {"mlp784"}
    assert timed[-1] == "mlp784" and not set(timed) & {m for m, _ in skipped}
    assert {m for m, _ in skipped} == {"mlp_dropout", "cnn_dropout", "transformer_dropout"}
    assert all("dropout" in why for _, why in skipped)
    for name in timed[:-1]:
        assert bench.baseline_plan(models.get(name)) is not None, name
    rows = [{"model": "mlp", "backend": "torch", "mode": "eager", "batch_size": 4,
             "step_ms_median": 1.0, "best": True}]
    text = report.table(rows, None, skipped)
    assert "not timed, no hand-written baseline: mlp_dropout, cnn_dropout, " \
           "transformer_dropout (dropout" in text
