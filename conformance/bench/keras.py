"""The Keras 3 column (``--keras``): the same model, weights and batches in Keras 3
(``train_on_batch``, Keras's default compile) on each backend, timed in a subprocess per backend
after the alternating run (``run_keras``, ``baselines/keras_native.py`` run by path with
``KERAS_BACKEND`` set): a reference column, not part of the ratio. ``keras_losses`` checks in
float64 that Keras trains to rosetta's numbers under Keras's own update rule (``keras_rules``)."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from rosetta.backend_registry import get_backend
from rosetta.schedules import Constant
from rosetta.spec import TrainSpec

from rosetta.conformance.bench.cases import DEFAULT_STEPS, _with_batch_size, bench_batches
from rosetta.conformance.bench.plans import baseline_input, baseline_plan


def run_keras(spec: TrainSpec, backend: str, *, batch_size: int | None = None,
              steps: int = DEFAULT_STEPS, warmup: int | None = None, dtype: str = "float32",
              timeout: float = 900) -> dict:
    """Time the same model, weights and batches in Keras 3 (``train_on_batch``) on ``backend``,
    in a subprocess with ``KERAS_BACKEND`` set (``baselines/keras_native.py``, run by path).
    Not interleaved with rosetta: it runs after, in its own process. Returns ``keras_*`` fields
    (``keras_error`` when it could not run).

    ``dtype`` a low precision policy (``bfloat16``, ``mixed_bfloat16``, ``mixed_float16``):
    Keras's own machinery for it, the global ``keras.config.set_dtype_policy`` of that name
    (float32 variables under the mixed ones; ``compile`` wraps the optimizer in a
    ``LossScaleOptimizer`` under ``mixed_float16``), on the float32 weights and batches. Keras
    decides per layer what runs in which type by its own rules, not by rosetta's table: a
    reference column, as in float32."""
    warmup = max(3, steps // 10) if warmup is None else warmup
    d = _keras_run(spec, backend, "time", batch_size, steps, warmup, dtype, timeout)
    if "keras_error" in d:
        return d
    return {"keras_version": d["keras"], "keras_policy": d.get("policy"),
            "keras_compile_seconds": d["compile_seconds"],
            "keras_step_ms": d["step_ms_median"], "keras_step_ms_iqr": d["step_ms_iqr"]}


def keras_rules(spec: TrainSpec) -> tuple[TrainSpec | None, str | None]:
    """``spec`` with Keras's own update rule where rosetta has it (Adam / AdamW: epsilon added
    before the bias correction, ``epsilon_mode="hat"``), so that Keras 3 must train to its
    numbers; or (None, why) where Keras's rule is not rosetta's: SGD's weight decay (Keras's is
    decoupled, rosetta's coupled L2) and SGD with momentum under a schedule (Keras folds the
    learning rate into the momentum)."""
    opt = spec.optimizer
    if opt.kind in ("adam", "adamw"):
        opt = type(opt)(**{**opt.hyperparams(), "learning_rate": opt.learning_rate,
                           "epsilon_mode": "hat"})
    elif opt.kind == "sgd" and opt.weight_decay:
        return None, "Keras's SGD weight decay is decoupled, rosetta's is coupled L2"
    elif opt.kind == "sgd" and opt.momentum and not isinstance(opt.learning_rate, Constant):
        return None, "Keras's SGD folds a changing learning rate into the momentum"
    return TrainSpec(spec.model, spec.loss, opt, spec.data, spec.steps, spec.seed,
                     spec.description), None


def keras_losses(spec: TrainSpec, backend: str, *, steps: int = 3,
                 batch_size: int | None = None, timeout: float = 900) -> dict:
    """Per-step float64 losses of Keras 3 on ``backend`` and of rosetta's program for the spec
    with Keras's update rule (``keras_rules``), from the same weights and batches:
    ``{"keras": [...], "keras_reported": [...], "rosetta": [...]}`` (``keras_reported``: what
    ``train_on_batch`` returned, rounded by its float32 loss tracker), or
    ``{"keras_error": why}``."""
    ruled, why = keras_rules(spec)
    if ruled is None:
        return {"keras_error": why}
    # Keras runs the spec as it is (its Adam is the "hat" rule by itself)
    d = _keras_run(spec, backend, "losses", batch_size, steps, 0, "float64", timeout)
    if "keras_error" in d:
        return d
    be = get_backend(backend)
    batch_size = batch_size or spec.data.batch_size
    ruled = _with_batch_size(ruled, batch_size)
    host, _ = bench_batches(ruled, batch_size, "float64")
    program = be.compile(ruled, dtype="float64")
    rb = [program.prepare_batch(x, y) for x, y in host]
    return {"keras": d["losses"], "keras_reported": d["reported"],
            "rosetta": [program.train_step(rb[i % len(rb)]) for i in range(steps)]}


def _keras_run(spec, backend, task, batch_size, steps, warmup, dtype, timeout) -> dict:
    """Run ``keras_native.py`` on a payload of the spec's plan, weights and batches."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    plan = baseline_plan(spec)
    if plan is None:
        return {"keras_error": "no hand-written baseline fits this spec"}
    if importlib.util.find_spec("keras") is None:
        return {"keras_error": "keras is not installed"}
    from rosetta.precision import LOW

    policy = dtype if dtype in LOW else None
    dtype = "float32" if policy else dtype   # the weights and batches (the masters' type)
    batch_size = batch_size or spec.data.batch_size
    spec = _with_batch_size(spec, batch_size)
    host, _ = bench_batches(spec, batch_size, dtype)
    params = spec.model.init_params(spec.seed)
    arrays = {f"w:{k}": np.asarray(v, dtype) for k, v in params.items()}
    for i, (x, y) in enumerate(host):
        xs = baseline_input(spec, x)
        if isinstance(xs, tuple):
            arrays[f"x{i}"], arrays[f"l{i}"] = xs
        else:
            arrays[f"x{i}"] = xs
        arrays[f"y{i}"] = y if plan["loss"] != "mse" else np.asarray(y, dtype)
    meta = {"arch": plan["arch"], "loss": plan["loss"], "optimizer": plan["optimizer"],
            "input_shape": list(plan["input_shape"]), "batches": len(host), "steps": steps,
            "warmup": warmup, "dtype": dtype, "policy": policy, "task": task}
    script = Path(__file__).parent / "baselines" / "keras_native.py"
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if dtype == "float64":
        env["JAX_ENABLE_X64"] = "1"  # else Keras-on-jax truncates float64 to float32
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "payload.npz"
        np.savez(payload, meta=json.dumps(meta), **arrays)
        try:
            r = subprocess.run([sys.executable, str(script), str(payload)], env=env,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"keras_error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"keras_error": f"exit {r.returncode}: {tail[:200]}"}
    return json.loads(lines[-1])
