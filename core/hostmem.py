"""Host memory: keep the memory a training step frees inside the process, so that the next step
reuses it instead of asking the kernel for fresh pages (``rosetta``'s command line does this at
start; a Python user calls ``retain_freed_memory()`` once).

Why. glibc's ``malloc`` serves a request of at least ``M_MMAP_THRESHOLD`` bytes with a fresh
``mmap`` and returns it to the kernel on ``free``. Every page of such a block is then faulted in
(and zeroed by the kernel) again at its first touch, on every step. glibc raises the threshold by
itself when such a block is freed (to its size, with ``M_TRIM_THRESHOLD`` at twice that), but
only up to ``DEFAULT_MMAP_THRESHOLD_MAX``, 32 MiB on 64-bit Linux. A compiled XLA step allocates
its temporaries as one block (``resnet_digits`` at batch 32: 33.2 MiB), just over that cap: each
JAX step took 8,241 page faults and cost 86 ms where the same step with the block kept took 65 ms
(one core, measured on this project's 2-core machine; ``gpt`` on JAX 44.5 -> 29.2 ms; torch
eager, whose tensors come from ``malloc`` too, ``resnet_digits`` 72 -> 58 ms).

What. ``retain_freed_memory()`` sets both thresholds explicitly with ``mallopt`` (which also
stops glibc's own adjustment): blocks below ``MMAP_THRESHOLD`` (1 GiB) come from the heap, and
the heap's free top is given back to the kernel only beyond ``TRIM_THRESHOLD`` (2 GiB, glibc's
own two-to-one rule). Memory a step frees stays mapped for the next step, as a caching allocator
(torch's on CUDA, TensorFlow's BFC) keeps it; the process's resident size stays near its peak.
It also exports ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, which glibc reads at
start, so the processes rosetta starts (data-parallel workers, the Keras column of ``rosetta
bench``) run under the same rule.

It changes nothing when the C library is not glibc, when the user chose for themselves
(``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` or a ``glibc.malloc`` tunable in
``GLIBC_TUNABLES``, or another allocator in ``LD_PRELOAD``), or when ``ROSETTA_HOST_MEMORY=system``
asks for glibc's defaults. No framework is imported here.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 2 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_ENV = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}
_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc", "hoard")

_state: str | None = None


def glibc_version() -> str | None:
    """``"2.36"`` under glibc, else None."""
    try:
        v = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    return v.split()[-1] if v and v.startswith("glibc") else None


def _users_choice() -> str | None:
    """Why the user's own allocator settings stand, or None when there are none."""
    if os.environ.get("ROSETTA_HOST_MEMORY", "").strip().lower() == "system":
        return "glibc's defaults (ROSETTA_HOST_MEMORY=system)"
    preload = os.environ.get("LD_PRELOAD", "").lower()
    for name in _ALLOCATORS:
        if name in preload:
            return f"{name} (LD_PRELOAD)"
    ours = all(os.environ.get(k) == str(v) for k, v in _ENV.items())
    set_by_user = [k for k in _ENV if k in os.environ]
    if set_by_user and not ours:
        return "the user's " + ", ".join(f"{k}={os.environ[k]}" for k in set_by_user)
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "the user's GLIBC_TUNABLES"
    return None


def retain_freed_memory() -> str:
    """Keep freed host memory in the process (see the module docstring); idempotent. Returns
    one line saying what holds now (recorded in ``rosetta bench`` reports)."""
    global _state
    if _state is not None:
        return _state
    version = glibc_version()
    choice = _users_choice()
    if choice is not None:
        _state = f"unchanged: {choice}"
    elif version is None:
        _state = "unchanged: the C library is not glibc"
    else:
        try:
            mallopt = ctypes.CDLL(None).mallopt
            done = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and
                    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
        except (OSError, AttributeError):
            done = False
        if done:
            os.environ.update({k: str(v) for k, v in _ENV.items()})
            _state = (f"glibc {version} malloc: freed blocks below {MMAP_THRESHOLD >> 20} MiB "
                      f"kept in the process (mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim "
                      f"threshold {TRIM_THRESHOLD >> 20} MiB)")
        else:
            _state = f"unchanged: glibc {version} refused mallopt"
    return _state


def host_memory_rule() -> str:
    """What ``retain_freed_memory`` did in this process, or glibc's defaults when not called."""
    return _state or "glibc's defaults (retain_freed_memory not called)"
