"""Asking every framework for a number of compute threads (``--threads`` of ``rosetta train`` and
``rosetta bench``). On a small shared machine the frameworks' default of one thread per core can
lose most of its time to contention (OpenMP spinning); one thread is often faster there.
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
