"""The benchmark's measurement rules, and the machine they run on: the paired-block timing, the
FLOPs rule and the matmul peak, memory, threads (docs/design.md section 7).

What is measured, per spec x backend x mode (``cases.run_case``):

* ``compile_seconds``: lowering the spec plus the first training step (tracing, XLA or inductor
  compilation), apart from the steady state. ``native_compile_seconds`` the same for the baseline.
* steady-state step time: after ``warmup`` steps, ``steps`` steps of rosetta's lowered program and
  ``steps`` steps of the hand-written baseline (``baselines``), ALTERNATING in blocks of
  ``block`` steps in one process (rosetta first in even blocks, native first in odd ones), so
  that machine noise hits both alike. Every step is timed on its own and ends
  synchronised: both return the loss as a Python float (``.item()``, ``float(tensor)``,
  ``float(jax array)``), which waits for the device. The batches are prepared on the device before
  timing (``Program.prepare_batch``, the baseline's ``put``) and cycled.
* ``step_ms_median`` / ``step_ms_iqr`` over every timed step; ``overhead_ratio``: the median over
  the paired blocks of (rosetta block median / native block median) -- a paired statistic, robust
  to drift and to one-off stalls.
* ``samples_per_second`` = batch / median step time.
* FLOPs per step: ``TRAIN_FLOPS_FACTOR`` (3) x the graph's forward FLOPs per example
  (``Graph.flops_per_example``: multiply-adds count 2) x batch. The rule: the backward pass of a
  Dense or Conv layer costs two forward passes (gradient with respect to the input and to the
  kernel), so a step is about 3 forward passes; the optimizer's elementwise update (a few FLOPs
  per parameter) is not counted, nor is the first layer's unneeded input gradient counted out.
  ``gflops`` = FLOPs per step / median step time; ``peak_fraction`` = gflops / the machine's
  float32 matmul peak, measured at start and again at the end, the better of the two (a shared
  machine's load varies; ``matmul_peak``: best of several large float32 matmuls, NumPy on the CPU,
  on a GPU the first installed backend whose device hook measures one); ``floor_ms`` = FLOPs per step / peak, the arithmetic floor.
* ``peak_memory_mb``: on the CPU the process's peak resident set size (VmHWM, reset through
  ``/proc/self/clear_refs`` before each implementation is built, so it is the peak while it was
  built, compiled and warmed up; it includes the framework runtime and everything loaded before);
  on a GPU the framework's peak device memory (the backend's ``device.gpu_peak_memory_mb``).

The framework-specific parts (GPU memory, GPU name and matmul peak, thread settings and pinning)
are each backend's device hooks (``rosetta.backend.Backend``, module contract); nothing here
names a framework.

Fairness: the same spec, initial weights, batches, dtype and batch size for both sides (the
baseline's first loss is recorded beside rosetta's: ``loss_gap``); TF32 off (the backends and the
baselines switch it off); nothing is pinned unless asked (``--threads N``): thread counts and the
environment variables that set them are recorded in the report (``environment.threads``).
Host memory: the command line keeps freed memory in the process (``rosetta.hostmem``); the
baseline runs in the same process and the Keras column's process inherits the same rule, so every
column is timed under it (``environment.host_memory``).
"""

from __future__ import annotations

import os
import platform
import resource
import time

import numpy as np

from rosetta.backend import normalize_device
from rosetta.backend_registry import available_backends, get_backend
from rosetta.errors import BackendUnavailable
from rosetta.hostmem import host_memory_rule

TRAIN_FLOPS_FACTOR = 3


def train_flops(graph, batch_size: int) -> int:
    """FLOPs of one training step by the benchmark's rule: 3 x forward FLOPs x batch."""
    return TRAIN_FLOPS_FACTOR * graph.flops_per_example() * batch_size


# --- machine: matmul peak, memory, threads -------------------------------------------------------

def matmul_peak(device: str = "cpu", n: int | None = None, repeats: int = 5,
                threads: int | None = None) -> dict:
    """The machine's float32 matmul rate in GFLOP/s: the best of ``repeats`` n x n products
    (NumPy on the CPU, its BLAS limited to ``threads`` when given and ``threadpoolctl`` is
    installed; on a GPU, the first installed backend whose ``device.gpu_matmul_peak`` measures
    one, TF32 off)."""
    from contextlib import nullcontext

    device = normalize_device(device)
    if device == "gpu":
        return _gpu_matmul_peak(n or 8192, repeats)
    n = n or 2048
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    limit, note = nullcontext(), "its BLAS's default threads"
    if threads:
        try:
            from threadpoolctl import threadpool_limits
            limit, note = threadpool_limits(threads), f"{threads} BLAS thread(s)"
        except ImportError:
            note += " (threadpoolctl missing: --threads not applied to it)"
    with limit:
        a @ b
        best = min(_timeit(lambda: a @ b) for _ in range(repeats))
    return {"gflops": 2 * n ** 3 / best / 1e9, "how": f"numpy float32 {n}x{n} matmul, best of "
            f"{repeats}, {note}", "library": "numpy " + np.__version__}


def _timeit(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _device_hooks():
    """The device modules of the installed backends, in listing order (imports them)."""
    for name in available_backends():
        yield name, get_backend(name).module("device")


def _gpu_matmul_peak(n: int, repeats: int) -> dict:
    for _, hooks in _device_hooks():
        found = hooks.gpu_matmul_peak(n, repeats)
        if found is not None:
            return found
    raise BackendUnavailable("no installed backend measures a GPU matmul (none sees a GPU)")


def reset_peak_memory(backend: str, device: str) -> None:
    if device == "gpu":
        try:
            get_backend(backend).module("device").reset_gpu_peak_memory()
        except Exception:  # noqa: BLE001 - a missing statistic is reported as None
            pass
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set size (Linux >= 4.0)
    except OSError:
        pass


def peak_memory_mb(backend: str, device: str) -> float | None:
    """Peak device memory (GPU) or peak resident set size of the process (CPU), in MiB."""
    try:
        if device == "gpu":
            return get_backend(backend).module("device").gpu_peak_memory_mb()
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except Exception:  # noqa: BLE001
        pass
    if device == "gpu":
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS",
              "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS",
              "CUDA_VISIBLE_DEVICES")


def thread_settings(backends) -> dict:
    """Thread counts as the frameworks report them (the benchmark sets none unless asked:
    ``--threads``)."""
    out = {"cpu_count": os.cpu_count(),
           "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ}}
    if hasattr(os, "sched_getaffinity"):
        out["usable_cpus"] = len(os.sched_getaffinity(0))
    for name in backends:
        settings = get_backend(name).module("device").thread_settings()
        if settings is not None:
            out[name] = settings
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if normalize_device(device) != "gpu":
        return f"cpu: {cpu_name()} ({os.cpu_count()} logical cores)"
    for _, hooks in _device_hooks():
        try:
            found = hooks.gpu_name()
        except Exception:  # noqa: BLE001 - no name from this one: ask the next
            found = None
        if found:
            return f"gpu: {found}"
    return "gpu"


# --- threads (only when asked: --threads) -------------------------------------------------------

# pin_threads lives in rosetta.threads (rosetta train uses it too)

def apply_thread_pin(n: int, backends) -> None:
    """After the frameworks are imported: the calls that take effect then (each backend's
    ``device.pin_threads``: torch ``set_num_threads``, TensorFlow's threading config)."""
    for name in backends:
        get_backend(name).module("device").pin_threads(n)


# --- paired blocks ---------------------------------------------------------------------------

def _timed(step, batches, n: int, start: int, out: list) -> None:
    """Run ``n`` steps (batches cycled from ``start``), appending each step's seconds."""
    clock = time.perf_counter
    k = len(batches)
    for i in range(n):
        b = batches[(start + i) % k]
        t = clock()
        step(b)
        out.append(clock() - t)


def _quantiles(xs) -> dict:
    a = np.asarray(xs, dtype=np.float64) * 1e3
    p25, med, p75 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "p25": float(p25), "p75": float(p75), "iqr": float(p75 - p25),
            "min": float(a.min()), "max": float(a.max())}


def environment(backends, device: str, peak: dict) -> dict:
    from rosetta.conformance.report import environment as versions

    env = versions()
    how = peak["how"]
    if "start_gflops" in peak:
        how += (f"; best of the measurements at start ({peak['start_gflops']:.1f}) and end "
                f"({peak['end_gflops']:.1f})")
    env.update({"device": device_name(device), "platform": platform.platform(),
                "matmul_peak_gflops": peak["gflops"], "matmul_peak": how,
                "threads": thread_settings(backends), "host_memory": host_memory_rule(),
                "frameworks": {b: get_backend(b).version() for b in backends}})
    return env
