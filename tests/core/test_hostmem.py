"""rosetta.hostmem: freed host memory stays in the process, so a step that allocates and frees the
same large block every time stops paying a page fault per page per step. Each case runs in a
fresh process (malloc's settings are process-wide and read at start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rosetta.hostmem import glibc_version

pytestmark = pytest.mark.skipif(glibc_version() is None,
                                reason="malloc thresholds are glibc's; this C library is not")

# a step's temporaries as one block: allocate 48 MiB, touch every page, free; count page faults
_STEPS = """
import ctypes, json, os, resource, sys
sys.path[:0] = {path!r}
if {retain!r}:
    from rosetta.hostmem import retain_freed_memory
    rule = retain_freed_memory()
else:
    rule = None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 48 << 20
def step():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({{"rule": rule, "faults": faults,
                  "env": {{k: os.environ.get(k) for k in
                          ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}}}}))
"""


def _run(retain: bool, **env) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("ROSETTA_HOST_MEMORY", "GLIBC_TUNABLES")}
    clean.update(env)
    code = _STEPS.format(path=list(sys.path), retain=retain)
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_freed_block_is_reused_without_page_faults():
    pages = (48 << 20) // os.sysconf("SC_PAGE_SIZE")
    default = _run(False)
    kept = _run(True)
    # glibc's default serves 48 MiB (over its 32 MiB cap) by mmap: every page faults every step
    assert default["faults"] > 0.9 * pages, default
    assert kept["faults"] < 0.01 * pages, kept
    assert kept["rule"].startswith("glibc ") and "kept in the process" in kept["rule"]
    # exported, so the processes rosetta starts (workers, the Keras column) run under it too
    assert kept["env"] == {"MALLOC_MMAP_THRESHOLD_": str(1 << 30),
                           "MALLOC_TRIM_THRESHOLD_": str(2 << 30)}


def test_a_child_started_with_the_exported_rule_keeps_it():
    child = _run(False, MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(2 << 30))
    assert child["faults"] < 0.01 * (48 << 20) // os.sysconf("SC_PAGE_SIZE"), child
    again = _run(True, MALLOC_MMAP_THRESHOLD_=str(1 << 30), MALLOC_TRIM_THRESHOLD_=str(2 << 30))
    assert "kept in the process" in again["rule"]  # its own values: not "the user's"


@pytest.mark.parametrize("env, says", [
    ({"ROSETTA_HOST_MEMORY": "system"}, "ROSETTA_HOST_MEMORY=system"),
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "the user's MALLOC_MMAP_THRESHOLD_=65536"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=4096"}, "GLIBC_TUNABLES"),
])
def test_the_users_own_choice_stands(env, says):
    out = _run(True, **env)
    assert out["rule"].startswith("unchanged: ") and says in out["rule"], out
    if "ROSETTA_HOST_MEMORY" in env:  # glibc's defaults: the block is mmapped again every step
        assert out["faults"] > 0.9 * (48 << 20) // os.sysconf("SC_PAGE_SIZE"), out
    assert out["env"]["MALLOC_TRIM_THRESHOLD_"] is None


def test_the_command_line_applies_it():
    code = ("import sys; sys.path[:0] = %r\n"
            "from rosetta.cli import main\nfrom rosetta.hostmem import host_memory_rule\n"
            "main(['models']) \nprint(host_memory_rule(), file=sys.stderr)" % (list(sys.path),))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("ROSETTA_HOST_MEMORY", None)
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True,
                         text=True, timeout=120, check=True)
    assert "kept in the process" in out.stderr.strip().splitlines()[-1]
