"""Several hosts on one machine (docs/design.md section 14): each host its own command through
the engine's own launcher (torchrun with a c10d rendezvous, a TF_CONFIG worker, a
jax.distributed process), its own process session and working folder, linked only by the
rendezvous endpoint on 127.0.0.1 and the run folder.

* the parallel tier across hosts: 2 hosts x 1 device against one device, float64 within the
  exact bound, on every backend with an engine;
* 2 x 2 torch workers under torchrun (``-m rosetta train``) end cleanly (no launcher stack) and
  their checkpoint resumes on 1 JAX device and on 2 TensorFlow devices, equal to the
  uninterrupted run within 1e-10;
* a lost worker: SIGKILL one host's worker; the other host exits non-zero within the worker
  timeout with one line naming the lost worker, the newest checkpoint is whole, and ``--resume``
  on the run folder continues to the uninterrupted run's numbers.

Every multi-process run has a hard bound (``rosetta.hosts.wait`` kills a host still running at
it, and the test fails). Tiny mlp, float64, batch 4, a few steps.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from rosetta import checkpoint, hosts, models
from rosetta.conformance.parallel import compare_runs, record_parallel, tier
from rosetta.conformance.runner import record
from rosetta.distributed import engines
from rosetta.training import train

from selection import BACKENDS

HOSTED = [b for b in BACKENDS if b in engines()]
BOUND = 240.0  # seconds: no host command of these tests may run longer
TIMEOUT = 10.0  # --worker-timeout of the lost-worker runs
BUSY = 0.6 * TIMEOUT  # seconds the surviving host is stopped when its peer is killed
LAUNCHER_NOISE = ("Traceback", "RendezvousConnectionError", "frame #", "Error")


def _mlp(steps=2):
    spec = models.get("mlp")
    spec.data.batch_size = 4
    spec.steps = steps
    return spec


def _spec_file(tmp_path, steps):
    path = tmp_path / "mlp.json"
    path.write_text(json.dumps(_mlp(steps).to_json()))
    return path


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))
                        / np.maximum(np.abs(np.asarray(b)), 1e-300)))


def _worst(ckpt, other):
    """The worst relative difference ||a - b|| / ||b|| over two checkpoints' tensors
    (parameters, optimizer state)."""
    worst = 0.0
    for which in ("params", "optimizer"):
        a, b = getattr(ckpt, which), getattr(other, which)
        assert sorted(a) == sorted(b)
        for k in b:
            x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
            worst = max(worst, float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-300)))
    return worst


@pytest.mark.parametrize("backend", HOSTED)
def test_two_hosts_equal_one_device(backend):
    """The parallel tier across 2 hosts x 1 device: loss, gradients, parameters, optimizer
    state of every step against one device, float64 within 1e-10."""
    spec = _mlp()
    one = record(spec, backend, dtype="float64", steps=2)
    many = record_parallel(spec, backend, 2, dtype="float64", steps=2, hosts=2)
    r = compare_runs(spec, one, many, tier("float64"), "float64", None, "inject")
    assert r.passed and r.worst_rel <= 1e-10 and r.checked_steps == 2, r.where
    assert many.meta["hosts"] == 2


def test_torchrun_two_by_two_resumes_on_jax_and_tensorflow(tmp_path):
    """``torchrun --nnodes 2 --nproc-per-node 2 ... -m rosetta train``: both hosts exit 0
    without a launcher stack, and the checkpoint of the 4 workers resumes on 1 JAX device and
    on 2 TensorFlow devices, each equal to the uninterrupted one-device run within 1e-10."""
    need = {"torch", "jax", "tensorflow"}
    if not need <= set(BACKENDS):
        pytest.skip("needs torch, jax and tensorflow")
    spec_file = _spec_file(tmp_path, 3)
    run = tmp_path / "run"
    argv = ["rosetta", "train", str(spec_file), "--backend", "torch", "--devices", "4",
            "--steps", "2", "--dtype", "float64", "--quiet", "--save", str(run)]
    started = hosts.wait(hosts.start("torch", argv, tmp_path, hosts=2, per_host=2), BOUND)
    assert hosts.failed(started) is None, hosts.failed(started)
    for h in started:
        noise = [w for w in LAUNCHER_NOISE if w in h.output()]
        assert not noise, f"host {h.rank}: {noise}\n{h.output()}"
    straight = train(_mlp(3), "jax", dtype="float64", progress=False)["losses"]
    on_jax = train(None, "jax", resume=run, steps=1, progress=False)
    assert on_jax["start_step"] == 2 and _rel(on_jax["losses"], straight[2:]) < 1e-10
    on_tf = train(None, "tensorflow", devices=2, resume=run, steps=1, progress=False)
    assert on_tf["devices"] == 2 and _rel(on_tf["losses"], straight[2:]) < 1e-10


@pytest.mark.parametrize("backend", HOSTED)
def test_lost_worker_ends_the_others_and_the_run_resumes(backend, tmp_path):
    """SIGKILL host 1's worker once a checkpoint is saved, while host 0's is stopped for
    ``BUSY`` seconds: host 0 exits non-zero within the worker timeout (plus the probe's few
    seconds), its output has one line naming worker 1;
    the newest checkpoint is whole; ``--resume`` on the run folder (one device here) for 3
    more updates ends at the uninterrupted run's parameters and optimizer state within 1e-10.
    (The hosts' run is long, so that it is still running when its worker is killed.)"""
    total = 10 ** 6
    spec_file = _spec_file(tmp_path, total)
    run = tmp_path / "run"
    argv = ["rosetta", "train", str(spec_file), "--backend", backend, "--devices", "2",
            "--dtype", "float64", "--quiet", "--save", str(run), "--save-every", "2", "--keep", "3",
            "--worker-timeout", str(TIMEOUT)]
    started = hosts.start(backend, argv, tmp_path, hosts=2)
    try:
        deadline = time.monotonic() + BOUND
        while not checkpoint.saved_steps(run):
            assert time.monotonic() < deadline and all(h.proc.poll() is None for h in started), \
                hosts.failed(hosts.wait(started, 1)) or "no checkpoint in time"
            time.sleep(0.1)
        # host 0 is busy (stopped) when its peer dies and meets the failed collective only
        # later, as on a loaded machine: its line must still come before any engine's own
        # runtime ends it for the silent peer (JAX's heartbeat)
        survivors = hosts.worker_pids(started[0])
        for pid in survivors:
            os.kill(pid, signal.SIGSTOP)
        os.kill(hosts.worker_pids(started[1])[0], signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(BUSY)
        for pid in survivors:
            os.kill(pid, signal.SIGCONT)
        hosts.wait(started, BOUND)
    finally:
        for h in started:
            if h.proc.poll() is None:
                hosts.kill_session(h)
    survivor = started[0]
    took = survivor.started + survivor.seconds - killed
    print(f"{backend}: host 0 exited {took:.1f} s after worker 1 was killed")   # shown with -s
    assert survivor.code not in (0, "timeout"), survivor.output()
    assert took < TIMEOUT + 15, f"host 0 took {took:.1f}s to exit"
    lines = [ln for ln in survivor.output().splitlines() if "lost worker" in ln]
    assert len(lines) == 1 and "lost worker 1 of 2" in lines[0], survivor.output()
    newest = checkpoint.load(run)  # whole: it loads and verifies
    assert 0 < newest.step < total and all(h.code != "timeout" for h in started)
    resumed = train(None, backend, resume=run, steps=3, progress=False,
                    save=tmp_path / "resumed")
    train(_mlp(total), backend, dtype="float64", steps=newest.step + 3, progress=False,
          save=tmp_path / "straight")
    assert resumed["start_step"] == newest.step
    assert _worst(checkpoint.load(tmp_path / "resumed"),
                  checkpoint.load(tmp_path / "straight")) < 1e-10


def test_the_same_command_starts_and_continues_a_run(tmp_path):
    """``--save DIR --resume DIR`` (what a restarted host runs): the first start trains from
    update 0, a later one continues from DIR's newest checkpoint to the same total
    (``steps``), and a finished run says so in one line."""
    from rosetta.errors import CheckpointError

    backend = BACKENDS[0]
    run = tmp_path / "run"
    first = train(_mlp(), backend, dtype="float64", steps=2, save=run, resume=run,
                  progress=False)
    again = train(_mlp(), backend, dtype="float64", steps=3, save=run, resume=run,
                  progress=False)
    assert (first["start_step"], len(first["losses"])) == (0, 2)
    assert (again["start_step"], len(again["losses"])) == (2, 1)
    with pytest.raises(CheckpointError, match="already made its 3 updates"):
        train(_mlp(), backend, dtype="float64", steps=3, save=run, resume=run, progress=False)
