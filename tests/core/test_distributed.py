"""The neutral part of data parallel (rosetta.distributed): the split rule, the launchers'
environment, bad input as one clear line; the deployment manifests under conformance/deploy/
parse and set exactly the environment variables the code reads. No framework is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rosetta import distributed as dist
from rosetta.backends.tensorflow.distributed import parse_tf_config
from rosetta.errors import BackendUnavailable, DataError

DEPLOY = Path(__file__).resolve().parents[2] / "conformance" / "deploy"
ENGINES = ("torch", "tensorflow", "jax")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launch_env(backend):
    return dist.engine(backend).launch_env


def clear_launchers(monkeypatch):
    for backend in ENGINES:
        for name in launch_env(backend):
            monkeypatch.delenv(name, raising=False)


def test_replica_rows_split_the_global_batch_in_order():
    assert [dist.replica_rows(8, r, 4) for r in range(4)] == [
        slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    with pytest.raises(DataError, match="does not split evenly"):
        dist.replica_rows(6, 0, 4)


def test_check_devices():
    assert dist.check_devices(2, 32) == 2
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(DataError, match="positive integer"):
            dist.check_devices(bad)
    with pytest.raises(DataError, match="32 examples does not split evenly over 3 devices"):
        dist.check_devices(3, 32)
    with pytest.raises(DataError, match="global, replica"):
        dist.check_batchnorm("local")


def test_worker_environment_is_torchruns_and_jaxs(monkeypatch):
    monkeypatch.setenv("RANK", "7")  # a stale launcher variable never leaks into a worker
    env = dist.worker_env("torch", 2, "cpu", 1, 29400)
    assert launch_env("torch") == TORCHRUN_ENV
    assert {k: env[k] for k in TORCHRUN_ENV} == {
        "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29400"}
    assert env[dist.WORKER_ENV] == "1"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --foo")
    env = dist.worker_env("jax", 4, "cpu", 0, 1)
    assert env["XLA_FLAGS"].split() == ["--foo", "--xla_force_host_platform_device_count=4"]
    assert "RANK" not in dist.worker_env("tensorflow", 2, "cpu", 0, 1)
    assert [dist.processes(b, 3) for b in ("torch", "tensorflow", "jax")] == [3, 1, 1]


def test_launchers_environment_is_read(monkeypatch):
    clear_launchers(monkeypatch)
    assert not any(dist.launched(b) for b in ENGINES)
    assert dist.world_from_env("torch") == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert dist.launched("torch") and dist.world_from_env("torch") == (1, 2)
    assert not dist.is_main_process("torch")
    cfg = {"cluster": {"worker": ["a:1", "b:1", "c:1"]}, "task": {"type": "worker", "index": 2}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cfg))
    assert dist.launched("tensorflow") and dist.world_from_env("tensorflow") == (2, 3)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert dist.launched("jax") and dist.world_from_env("jax") == (3, 4)
    monkeypatch.setenv("JAX_PROCESS_ID", "three")
    with pytest.raises(DataError, match="JAX_PROCESS_ID must be set to an integer"):
        dist.world_from_env("jax")


@pytest.mark.parametrize("text", ["{", '{"cluster": {}}',
                                  '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
                                  '"index": 1}}'])
def test_bad_tf_config(text):
    with pytest.raises(DataError, match="TF_CONFIG"):
        parse_tf_config(text)


def test_in_memory_data_cannot_travel_to_workers():
    import numpy as np

    import rosetta as rs

    model = rs.Sequential([rs.Dense(2, name="d")], input_shape=(3,), name="m")
    spec = rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.SGD(0.1),
                        data=rs.DataSpec.from_arrays(np.zeros((8, 3)), np.zeros(8, int)))
    with pytest.raises(DataError, match="save it as .npz"):
        dist.portable_spec(spec)


def test_cli_bad_devices_is_one_line():
    p = subprocess.run([sys.executable, "-m", "rosetta.cli", "train", "mlp", "--backend",
                        "torch", "--devices", "3", "--batch-size", "32"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "split evenly over 3 devices" in p.stderr
    p = subprocess.run([sys.executable, "-m", "rosetta.cli", "conformance", "mlp",
                        "--backends", "torch", "--devices", "1,x"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--devices takes device counts" in p.stderr, p.stderr


# --- the deployment manifests ------------------------------------------------------------------

def _docs(name):
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests")
    return list(yaml.safe_load_all((DEPLOY / name).read_text()))


def _containers(docs):
    for d in docs:
        spec = d["spec"]
        pod = spec["template"]["spec"] if d["kind"] == "Job" else spec
        if d["kind"] in ("Job", "Pod"):
            yield from pod["containers"]


RUN = ["rosetta", "train", "resnet", "--devices", "2", "--save", "/ckpt/run", "--resume",
       "/ckpt/run"]


def _typed(backend, rank, endpoints):
    """The command ``rosetta.hosts`` starts on host ``rank``, as a user types it."""
    from rosetta.hosts import typed

    module = RUN[:3] + ["--backend", backend] + RUN[3:]
    argv, env = dist.engine(backend).host_command(module, hosts=2, per_host=1, rank=rank,
                                                  endpoints=endpoints)
    return typed(argv), env


@pytest.mark.parametrize("name,backend,endpoints", [
    ("tensorflow-job.yaml", "tensorflow", ["rosetta-tf-0.rosetta-tf:12345",
                                           "rosetta-tf-1.rosetta-tf:12345"]),
    ("jax-job.yaml", "jax", ["rosetta-jax-0.rosetta-jax:1234"] * 2)])
def test_manifests_set_exactly_the_variables_read(name, backend, endpoints, monkeypatch):
    """Each pod runs the command and sets the variables ``Engine.host_command`` gives its host
    (the ones the tests over localhost run), exactly the variables the code reads."""
    containers = list(_containers(_docs(name)))
    assert len(containers) == 2
    for index, c in enumerate(containers):
        env = {e["name"]: e["value"] for e in c["env"]}
        assert set(env) == set(launch_env(backend))
        assert (c["command"], env) == _typed(backend, index, endpoints)
        clear_launchers(monkeypatch)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert dist.launched(backend) and dist.world_from_env(backend) == (index, 2)


def test_torch_manifest_runs_torchrun_as_the_hosts_tests_do():
    """The indexed Job's command is ``torchrun`` with the c10d rendezvous ``host_command``
    writes (host r: ``--node-rank $JOB_COMPLETION_INDEX``); torchrun sets the variables read."""
    (c,) = list(_containers(_docs("torch-job.yaml")))
    line = " ".join(c["args"]).split()
    want, env = _typed("torch", 0, ["rosetta-torch-0.rosetta-torch:29500"])
    want[want.index("--node-rank") + 1] = "$JOB_COMPLETION_INDEX"
    assert line == want and env == {}
    assert "env" not in c  # nothing else: the torchrun variables are the ones read
    assert set(launch_env("torch")) == {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                        "MASTER_PORT"}


def test_dockerfile_installs_every_framework_and_runs_the_suite():
    text = (DEPLOY / "Dockerfile").read_text()
    assert '.[torch,tensorflow,jax]' in text and 'CMD ["rosetta", "conformance"]' in text


def test_a_backend_without_a_data_parallel_engine_is_refused_before_any_worker():
    with pytest.raises(BackendUnavailable, match="mxnet has no data-parallel engine"):
        dist.launch("mxnet", 2, "nowhere:nothing", {})
    assert dist.check_engine("jax") is dist.engine("jax")
    assert set(dist.engines()) >= set(ENGINES) and "mxnet" not in dist.engines()


# --- several hosts: the commands, the worker timeout, a run folder that resumes itself ---------

def test_host_commands_are_each_launchers_own():
    from rosetta.hosts import commands, typed

    run = ["rosetta", "train", "mlp"]
    (t0, e0), (t1, e1) = commands("torch", run, hosts=2, per_host=2, ports=[5, 6],
                                  python="py", max_restarts=3)
    assert e0 == e1 == {} and t0[:3] == ["py", "-m", "torch.distributed.run"]
    line = " ".join(typed(t1))
    assert line.startswith("torchrun --nnodes 2 --nproc-per-node 2 --node-rank 1 "
                           "--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:5 ")
    assert line.endswith("--max-restarts 3 -m rosetta train mlp")
    # on one machine the roles torch's c10d rendezvous would race for are given: host 0 holds
    # the store, and each host's own loopback address puts the nodes in rank order
    assert "--rdzv-conf is_host=0 --local-addr 127.0.0.101 " in line
    assert "--rdzv-conf is_host=1 --local-addr 127.0.0.100 " in " ".join(typed(t0))
    (a0, f0), (a1, f1) = commands("tensorflow", run, hosts=2, ports=[5, 6], python="py")
    assert typed(a1) == run and json.loads(f1["TF_CONFIG"]) == {
        "cluster": {"worker": ["127.0.0.1:5", "127.0.0.1:6"]},
        "task": {"type": "worker", "index": 1}}
    (_, j0), (_, j1) = commands("jax", run, hosts=2, per_host=3, ports=[5, 6], python="py")
    assert (j1["JAX_COORDINATOR_ADDRESS"], j1["JAX_NUM_PROCESSES"], j1["JAX_PROCESS_ID"]) == (
        "127.0.0.1:5", "2", "1")
    assert j1["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
    with pytest.raises(BackendUnavailable, match="one device per CPU worker"):
        commands("tensorflow", run, hosts=2, per_host=2)
    with pytest.raises(BackendUnavailable, match="no launcher that restarts"):
        commands("jax", run, hosts=2, max_restarts=1)
    with pytest.raises(DataError, match="at least 2 hosts"):
        commands("torch", run, hosts=1)


def test_worker_timeout_is_read_and_checked(monkeypatch):
    monkeypatch.delenv(dist.WORKER_TIMEOUT_ENV, raising=False)
    assert dist.worker_timeout() == 60.0
    dist.set_worker_timeout(7.5)
    assert dist.worker_timeout() == 7.5
    monkeypatch.setenv(dist.WORKER_TIMEOUT_ENV, "-1")
    with pytest.raises(DataError, match="--worker-timeout"):
        dist.worker_timeout()
    p = subprocess.run([sys.executable, "-m", "rosetta", "train", "mlp", "--backend", "torch",
                        "--worker-timeout", "0"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "positive number of seconds" in p.stderr, p.stderr


def test_a_step_is_awaited_at_most_the_worker_timeout():
    """``await_step``: a result ready on the third look returns; one never ready raises
    ``CollectiveTimeout`` after the bound (which ``abandon`` takes as a failed collective)."""
    looks = iter([False, False, True])
    dist.await_step(lambda: next(looks), seconds=5.0)
    with pytest.raises(dist.CollectiveTimeout, match=r"within 0.05 s \(--worker-timeout\)"):
        dist.await_step(lambda: False, seconds=0.05)


def test_a_run_folder_that_resumes_itself(tmp_path):
    from rosetta.run_plan import resumes_itself

    assert resumes_itself(tmp_path / "run", tmp_path / "x" / ".." / "run")
    assert not resumes_itself(tmp_path / "run", tmp_path / "other")
    assert not resumes_itself(None, tmp_path) and not resumes_itself(tmp_path, None)
