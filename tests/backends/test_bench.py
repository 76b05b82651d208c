"""``rosetta bench``: the baselines train to rosetta's numbers, the benchmark runs and its numbers
are consistent. No test asserts on speed: a benchmark is never a timed test."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import rosetta as rs
from rosetta.backend import Batch
from rosetta.backend_registry import get_backend
from rosetta.conformance import bench
from rosetta.conformance.bench import report as bench_report
from rosetta.errors import BackendUnavailable, DataError
from rosetta import models
from rosetta.models import vision

from selection import BACKENDS as SELECTED

# the timing tests pair each backend with its hand-written baseline (conformance/bench/baselines/):
# mxnet has none (docs/guide/mxnet.md), so they run on the backends that do
BACKENDS = [b for b in SELECTED if b in bench.BASELINES]

MODELS = ["linear", "mlp", "cnn", "mlp784"]
# the rest of the zoo, every family of baselines: each on every backend's default mode (the
# modes' lowerings are proven on MODELS above); the slow ones as small variants of the zoo
# models (same blocks, same optimizer and schedule, narrower), see SMALL
# (mlp100 is mlp's code path exactly: recognised below, not trained again)
ZOO_REST = ["lenet", "tutorial_cnn", "resnet_small", "lstm", "gru", "transformer_small",
            "gpt_small"]


def _small_resnet():
    spec = models.get("resnet")
    # the stem, an identity block and a strided projection block
    return rs.TrainSpec(model=vision.resnet_graph(widths=(4, 8), name="resnet_small"),
                        loss=spec.loss, optimizer=spec.optimizer, data=spec.data)


def _small_sequence(causal):
    """The zoo's transformer (key padding, mean pool) or gpt (causal, per-token logits) with
    width 8 (2 heads x 4), feed-forward 16, one block, sequences of 16, a 1-step warm-up."""
    tokens = rs.Input((16,), name="tokens", kind="int")
    lengths = None if causal else rs.Input((), name="lengths", kind="int")
    h = rs.Embedding(96 if causal else 4, 8, name="embed")(tokens)
    h = rs.PositionEmbedding(16, name="pos")(h)
    h = rs.TransformerBlock(h, heads=2, head_dim=4, ff_dim=16, lengths=lengths, causal=causal,
                            name="block1")
    h = rs.LayerNorm(name="ln_f")(h)
    if not causal:
        h = rs.SequencePool("mean", name="pool")([h, lengths])
    out = rs.Dense(96 if causal else 3, name="logits")(h)
    zoo = models.get("gpt" if causal else "transformer")
    opt = rs.optim.AdamW(rs.schedules.WarmupCosine(3e-3, 1, 10), weight_decay=0.01)
    data = rs.DataSpec("text", 4, {"length": 16}) if causal else zoo.data
    inputs = tokens if causal else [tokens, lengths]
    return rs.TrainSpec(model=rs.Model(inputs, out, name=zoo.name + "_small"), loss=zoo.loss,
                        optimizer=opt, data=data)


SMALL = {"resnet_small": _small_resnet,
         "transformer_small": lambda: _small_sequence(causal=False),
         "gpt_small": lambda: _small_sequence(causal=True)}


def _spec(name):
    if name in SMALL:
        return SMALL[name]()
    return bench.BENCH_SPECS[name]() if name in bench.BENCH_SPECS else models.get(name)


def _cases():
    for b in BACKENDS:
        for m in get_backend(b).modes:
            for name in MODELS:
                if m == "compile" and name != "mlp":
                    continue  # torch.compile takes a while per model: one model is enough
                yield pytest.param(b, m, name, id=f"{b}-{m}-{name}")
        for name in ZOO_REST:
            yield pytest.param(b, get_backend(b).modes[0], name,
                               id=f"{b}-{get_backend(b).modes[0]}-{name}")


@pytest.mark.parametrize("backend,mode,name", list(_cases()))
def test_baseline_losses_match_rosetta(backend, mode, name):
    """Same weights, batches and optimizer: the hand-written code and rosetta's program compute
    the same per-step losses in float64 (so the timing compares like with like)."""
    steps = 4 if name in MODELS else 3
    ours, theirs = bench.compare_losses(_spec(name), backend, mode, steps=steps,
                                        dtype="float64", batch_size=8 if name in MODELS else 4)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    assert ours[-1] != ours[0]  # it trained


def test_every_zoo_model_has_a_baseline():
    """Every zoo model (and its small variant tested above) is recognised by its family."""
    families = {"linear": "sequential", "mlp": "sequential", "cnn": "sequential",
                "mlp100": "sequential", "tutorial_cnn": "sequential", "lenet": "sequential",
                "resnet": "resnet", "resnet_digits": "resnet", "lstm": "recurrent",
                "gru": "recurrent", "transformer": "transformer", "gpt": "transformer"}
    # the zoo's dropout variants (the conformance suite's dropout specs) have no baseline yet: a
    # hand-written step draws its masks from its framework's RNG, so it cannot train to
    # rosetta's numbers; the plan refuses them rather than time a different computation
    dropout = {"mlp_dropout", "cnn_dropout", "transformer_dropout"}
    assert set(families) | dropout == set(models.ZOO)
    for name in dropout:
        assert bench.baseline_plan(models.get(name)) is None, name
    for name, family in families.items():
        assert bench.baseline_plan(models.get(name))["arch"]["model"] == family, name
    for name in SMALL:
        assert bench.baseline_plan(_spec(name)) is not None, name
    gpt = bench.baseline_plan(models.get("gpt"))
    assert gpt["arch"]["causal"] and gpt["arch"]["pool"] is None and len(
        gpt["arch"]["blocks"]) == 2 and gpt["loss"] == "sequence_cross_entropy"
    assert gpt["optimizer"]["lr"]["schedule"] == "warmup_cosine"
    resnet = bench.baseline_plan(models.get("resnet"))["arch"]
    assert [b["stride"] for b in resnet["blocks"]] == [1, 2, 2]
    assert [b["proj_conv"] is None for b in resnet["blocks"]] == [True, False, False]


def test_flop_counts_for_known_layers():
    dense = rs.Sequential([rs.Dense(10, name="d")], input_shape=(64,), name="dense_only")
    assert dense.flops_per_example() == 2 * 64 * 10
    assert bench.train_flops(dense, 32) == 3 * 2 * 64 * 10 * 32
    conv = rs.Sequential([rs.Conv2D(16, 3, padding="same", name="c")], input_shape=(8, 8, 3),
                         name="conv_only")
    assert conv.flops_per_example() == 2 * (8 * 8 * 16) * (3 * 3 * 3)
    assert bench.train_flops(conv, 4) == 3 * 2 * 8 * 8 * 16 * 27 * 4
    # the design's MLP (docs/design.md section 7) 784-512-512-10: 3 x 2 x 668,672 multiply-adds x 128 examples
    assert bench.train_flops(bench.mlp784().model, 128) == 3 * 2 * (784 * 512 + 512 * 512 +
                                                                    512 * 10) * 128


def test_baseline_plan_recognises_the_zoo_and_refuses_others():
    assert bench.baseline_plan(models.get("mlp"))["arch"]["model"] == "sequential"
    assert bench.baseline_plan(models.get("cnn"))["arch"]["layers"][1] == {"op": "maxpool",
                                                                           "size": 2}
    assert [la.get("name") for la in bench.baseline_plan(bench.mlp784())["arch"]["layers"]] \
        == [None, "hidden1", "hidden2", "logits"]
    odd = rs.TrainSpec(model=rs.Sequential([rs.Dense(8, activation="tanh", name="h"),
                                            rs.Dense(3, name="o")], input_shape=(4,), name="t"),
                       loss=rs.losses.SoftmaxCrossEntropy(), optimizer=rs.optim.Adam(0.01),
                       data=rs.DataSpec("images"))
    assert bench.baseline_plan(odd) is None
    gpt = models.get("gpt")
    for opt in (rs.optim.AdamW(1e-3, clip_norm=1.0), rs.optim.AdamW(1e-3, decay="kernels"),
                rs.optim.Adam(1e-3, epsilon_mode="hat"), rs.optim.RMSprop(1e-3),
                rs.optim.Adam(rs.schedules.Cosine(1e-3, 10))):
        assert bench.baseline_plan(rs.TrainSpec(gpt.model, gpt.loss, opt, gpt.data)) is None, opt
    tokens, lengths = rs.Input((6,), name="t", kind="int"), rs.Input((), name="n", kind="int")
    h = rs.Embedding(4, 8, name="e")(tokens)
    both = rs.LSTM(4, bidirectional=True, name="r")([h, lengths])
    bi = rs.Model([tokens, lengths], rs.Dense(3, name="o")(both), name="bi")
    assert bench.baseline_plan(rs.TrainSpec(bi, rs.losses.SoftmaxCrossEntropy(),
                                            rs.optim.Adam(0.01), rs.DataSpec("majority"))) is None


def _check_row(row, steps, block, batch):
    ms = [row[k] for k in ("step_ms_min", "step_ms_p25", "step_ms_median", "step_ms_p75",
                           "step_ms_max")]
    assert all(v > 0 for v in ms)
    assert ms == sorted(ms)  # min <= p25 <= median <= p75 <= max
    assert row["step_ms_iqr"] == pytest.approx(row["step_ms_p75"] - row["step_ms_p25"])
    assert row["compile_seconds"] > 0
    assert row["samples_per_second"] == pytest.approx(batch / (row["step_ms_median"] / 1e3))
    assert row["flops_per_step"] == bench.train_flops(_spec(row["model"]).model, batch)
    assert row["gflops"] == pytest.approx(row["flops_per_step"] / row["step_ms_median"] / 1e6)
    assert 0 < row["peak_fraction"] == pytest.approx(row["gflops"] / 50.0)
    assert row["floor_ms"] == pytest.approx(row["flops_per_step"] / 50e9 * 1e3)
    assert row["peak_memory_mb"] > 0
    assert np.isfinite(row["first_loss"]) and np.isfinite(row["last_loss"])
    if row["native_step_ms"] is not None:
        assert row["native_step_ms_min"] <= row["native_step_ms"] <= row["native_step_ms_max"]
        assert row["native_compile_seconds"] > 0 and row["overhead_ratio"] > 0
        assert row["blocks"] == -(-steps // block)
        assert row["loss_gap"] < 1e-5  # float32, the same first step


@pytest.mark.parametrize("backend", BACKENDS)
def test_bench_case_runs_and_is_consistent(backend):
    mode = get_backend(backend).modes[0]
    row = bench.run_case(models.get("mlp"), backend, mode, batch_size=16, steps=6, block=2,
                         warmup=1, peak_gflops=50.0)
    assert (row["model"], row["backend"], row["mode"], row["batch_size"]) == ("mlp", backend,
                                                                              mode, 16)
    _check_row(row, steps=6, block=2, batch=16)
    assert row["native_step_ms"] is not None


# one backend per low policy (the CI budget): the framework's own hand-written code of the
# policy (torch autocast + GradScaler, a flax model in bf16) timed beside rosetta's
PRECISION_CASES = [(b, p) for b, p in (("torch", "mixed_bfloat16"), ("jax", "bfloat16"),
                                       ("torch", "mixed_float16")) if b in BACKENDS]


@pytest.mark.parametrize("backend, precision", PRECISION_CASES)
def test_bench_under_a_precision_policy(backend, precision):
    mode = get_backend(backend).modes[0]
    row = bench.run_case(models.get("mlp"), backend, mode, batch_size=16, steps=2, block=1,
                         warmup=1, peak_gflops=50.0, dtype=precision)
    assert row["dtype"] == precision and row["blocks"] == 2
    assert row["step_ms_median"] > 0 and row["native_step_ms"] > 0
    assert row["float32_step_ms"] > 0  # rosetta's float32 step, timed in the same blocks
    # the hand-written code of the policy trains to rosetta's loss after one update, within
    # 8 unit roundoffs of the low type; and the low type really ran (not float32's loss)
    assert row["loss_gap_step"] <= row["loss_bound"] == bench.loss_bound(precision)
    float32 = bench.run_case(models.get("mlp"), backend, mode, batch_size=16, steps=1,
                             block=1, warmup=1, native=False)
    assert row["first_loss"] != float32["first_loss"]
    text = bench_report.table([row])
    assert "float32 ms" in text and "loss gap" in text and "LOSS CHECK FAILED" not in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_bench_without_baseline(backend):
    spec = rs.TrainSpec(model=rs.Sequential([rs.Dense(8, activation="tanh", name="h"),
                                             rs.Dense(4, name="o")], input_shape=(5,),
                                            name="tanh_mlp"),
                        loss=rs.losses.SoftmaxCrossEntropy(), optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec("digits", 8))  # 64 features: synthetic data instead
    row = bench.run_case(spec, backend, get_backend(backend).modes[0], steps=3, block=2,
                         warmup=1, peak_gflops=50.0)
    assert row["data"] == "synthetic"
    assert row["native_step_ms"] is None and row["overhead_ratio"] is None
    assert row["step_ms_median"] > 0


def test_mark_best_and_reports(tmp_path):
    base = {"batch_size": 8, "step_ms_iqr": 0.1, "compile_seconds": 1.0,
            "samples_per_second": 1.0, "gflops": 1.0, "peak_fraction": 0.01,
            "peak_memory_mb": 100.0, "native_step_ms": 1.0, "native_step_ms_iqr": 0.1,
            "native_compile_seconds": 1.0, "overhead_ratio": 1.0, "floor_ms": 0.01}
    rows = [dict(base, model="mlp", backend="torch", mode="eager", step_ms_median=2.0),
            dict(base, model="mlp", backend="torch", mode="compile", step_ms_median=1.5),
            dict(base, model="mlp", backend="jax", mode="jit", step_ms_median=3.0,
                 native_step_ms=None, overhead_ratio=None)]
    bench.mark_best(rows)
    assert [r["best"] for r in rows] == [False, True, True]
    text = bench_report.table(rows, {"device": "cpu: test", "matmul_peak_gflops": 10.0,
                                     "matmul_peak": "numpy"})
    assert "compile" in text and "ratio" in text and "floor" in text
    bench_report.write(tmp_path / "b.json", rows, {"device": "cpu"}, {"steps": 3})
    d = json.loads((tmp_path / "b.json").read_text())
    assert d["format"] == bench_report.FORMAT and len(d["results"]) == 3
    bench_report.write(tmp_path / "b.md", rows, None, {})
    md = (tmp_path / "b.md").read_text()
    assert md.startswith("| model |") and md.count("\n| mlp |") == 3
    bench_report.plot(tmp_path / "b.png", rows)
    assert (tmp_path / "b.png").stat().st_size > 1000


@pytest.mark.parametrize("backend", BACKENDS)
def test_modes_in_the_contract(backend):
    be = get_backend(backend)
    assert be.modes and be.resolve_mode(None) == be.modes[0]
    with pytest.raises(BackendUnavailable, match="modes: " + ", ".join(be.modes)):
        be.compile(models.get("linear"), mode="turbo")
    spec = models.get("linear")
    p = be.compile(spec, dtype="float64", mode=be.modes[0])
    assert p.mode == be.modes[0]
    x, y = np.ones((4, 1)), np.zeros((4, 1))
    batch = p.prepare_batch({"x": x}, y)
    assert isinstance(batch, Batch) and batch.size == 4
    other = be.compile(spec, dtype="float64")
    assert p.train_step(batch) == pytest.approx(other.train_step({"x": x}, y), rel=1e-14)
    with pytest.raises(DataError, match="another Program"):
        other.train_step(batch)


# --- the command line ---------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rosetta.cli", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_bench_report_and_plot(backend, tmp_path):
    mode = get_backend(backend).modes[0]
    r = run_cli("bench", "mlp", "--backends", backend, "--modes", mode, "--steps", "4",
                "--block", "2", "--warmup", "1", "--batch-size", "16",
                "--report", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"))
    assert r.returncode == 0, r.stderr
    assert "ratio" in r.stdout and "mlp" in r.stdout
    d = json.loads((tmp_path / "r.json").read_text())
    (row,) = d["results"]
    for key in ("model", "backend", "mode", "compile_seconds", "step_ms_median", "step_ms_iqr",
                "samples_per_second", "peak_memory_mb", "gflops", "peak_fraction",
                "native_step_ms", "overhead_ratio"):
        assert row[key] is not None, key
    assert row["best"] is True and row["batch_size"] == 16
    env = d["environment"]
    assert env["matmul_peak_gflops"] > 0 and "threads" in env and backend in env["frameworks"]
    assert (tmp_path / "r.png").stat().st_size > 1000
    r = run_cli("bench", "linear", "--backends", backend, "--steps", "2", "--block", "1",
                "--warmup", "1", "--modes", mode, "--report", str(tmp_path / "r.md"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r.md").read_text().startswith("| model |")


@pytest.mark.parametrize("args,words", [
    (["bench", "mlp", "--modes", "turbo"], "unknown mode"),
    (["bench", "mlp", "--report", "out.txt"], ".json or .md"),
    (["bench", "mlp", "--plot", "out.pdf"], ".png"),
    (["bench", "resnet9000"], "unknown model"),
    (["bench", "mlp", "--steps", "0"], "positive integer"),
    (["bench", "mlp", "--precision", "mixed_bfloat16", "--sweep", "batch=8,16"],
     "does not take --sweep"),
    (["bench", "mlp", "--precision", "bfloat16", "--dtype", "float64"], "disagree"),
    (["bench", "mlp", "--imported", "gpt2"], "takes no SPEC"),
    (["bench", "--imported", "bert", "--device", "gpu"], "takes no SPEC"),
])
def test_cli_bench_bad_input(args, words):
    r = run_cli(*args, "--backends", *SELECTED)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_train_mode(backend):
    mode = get_backend(backend).modes[0]
    r = run_cli("train", "linear", "--backend", backend, "--mode", mode, "--steps", "3",
                "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["mode"] == mode
    r = run_cli("train", "linear", "--backend", backend, "--mode", "turbo", "--steps", "3")
    assert r.returncode == 2 and "turbo" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_column(backend):
    """Keras 3 on the backend, in its own process: a step time or a stated reason."""
    row = bench.run_keras(models.get("mlp"), backend, batch_size=16, steps=3, warmup=1)
    if "keras_error" in row:
        assert row["keras_error"]
    else:
        assert row["keras_step_ms"] > 0 and row["keras_compile_seconds"] > 0


def test_keras_column_under_a_precision_policy():
    """--keras with --precision: Keras's own dtype policy of that name, set in its process."""
    row = bench.run_keras(models.get("mlp"), BACKENDS[0], batch_size=16, steps=2, warmup=1,
                          dtype="mixed_bfloat16")
    if "keras_error" in row:
        assert row["keras_error"]
    else:
        assert row["keras_policy"] == "mixed_bfloat16" and row["keras_step_ms"] > 0


def test_keras_rules():
    """Keras trains to rosetta's numbers only under Keras's own update rule, or not at all."""
    ruled, why = bench.keras_rules(models.get("gpt"))
    assert why is None and ruled.optimizer.epsilon_mode == "hat"
    assert ruled.optimizer.weight_decay == 0.01 and ruled.optimizer.kind == "adamw"
    assert ruled.optimizer.learning_rate == models.get("gpt").optimizer.learning_rate
    ruled, why = bench.keras_rules(models.get("resnet"))
    assert ruled is None and "coupled" in why
    lenet = models.get("lenet")
    assert bench.keras_rules(lenet)[0].optimizer == lenet.optimizer  # constant lr: the same


# where Keras 3 trains to rosetta's float64 numbers (1e-10), measured over the whole zoo: on jax
# every sequential model (Adam included); on tensorflow the SGD models (its Adam is 1e-7 away);
# on torch none (1e-8 to 1e-9 away, the forward before any update already 2e-9 away): see the
# docs/bench/baselines.md
KERAS_AGREES = [("jax", "cnn"), ("tensorflow", "linear")]


@pytest.mark.parametrize("backend,name", [c for c in KERAS_AGREES if c[0] in BACKENDS])
def test_keras_trains_to_rosettas_numbers(backend, name):
    """Keras 3's own layers and optimizer on the backend, in float64, compute the per-step
    losses of rosetta's program with Keras's update rule."""
    d = bench.keras_losses(models.get(name), backend, steps=3, batch_size=4)
    assert "keras_error" not in d, d
    np.testing.assert_allclose(d["keras"], d["rosetta"], rtol=1e-10)
    # train_on_batch's own report: the same losses through its float32 loss tracker
    np.testing.assert_allclose(d["keras_reported"], d["rosetta"], rtol=1e-6)
    assert d["rosetta"][-1] != d["rosetta"][0]
