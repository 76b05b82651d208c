"""Asking every framework for a number of compute threads (``--threads`` of ``rosetta train`` and
``rosetta bench``), and the default when none is asked for (``default_threads``).

On a small shared machine the frameworks' default of one thread per core can lose most of its
time to contention: an OpenMP thread that finishes its share spins waiting for the others, and a
thread the kernel took off its core for another process makes every other one wait (resnet, 20
torch steps on 2 cores with one competing process: 27.8 s against 2.6 s with one thread). So the
default is the cores this process may use less the load of everything else (the 1-minute load
average, rounded), at least one, with OpenMP threads that wait passively
(``OMP_WAIT_POLICY=PASSIVE``): all cores on an idle machine, fewer on a busy one.
"""

from __future__ import annotations

import os


def pin_threads(n: int) -> None:
    """Ask every framework for ``n`` compute threads, through the environment variables they
    read when imported (so: call before any framework is imported; no framework is imported
    here). torch: ``OMP_NUM_THREADS``; TensorFlow: ``TF_NUM_INTRAOP_THREADS`` /
    ``TF_NUM_INTEROP_THREADS``; XLA (jax): with n == 1, ``--xla_cpu_multi_thread_eigen=false``
    (XLA has no flag for another count); NumPy's BLAS (the peak measurement) through
    ``threadpoolctl`` in ``matmul_peak``."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(n)
    if n == 1 and "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false").strip()


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    """The compute threads a run uses when ``--threads`` is not given: ``cores`` (default the
    cores this process may run on) less ``load`` (default the 1-minute load average: what else
    the machine is running), rounded, at least 1."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def apply_default_threads() -> int | None:
    """Pin ``default_threads()`` (before any framework is imported), with passive OpenMP waits,
    unless the environment already sets a thread count (then nothing changes). Returns the
    count pinned, or None."""
    if any(os.environ.get(v) for v in THREAD_VARIABLES):
        return None
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    n = default_threads()
    pin_threads(n)
    return n
