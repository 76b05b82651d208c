"""The neutral checkpoint format (core only, no framework): round trip, verification of every
tampering, atomic saves that survive SIGKILL, run folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rosetta as rs
from rosetta import checkpoint
from rosetta.errors import CheckpointError


def small_spec(units=5, optimizer=None):
    model = rs.Sequential([rs.Dense(units), rs.BatchNorm(), rs.ReLU(), rs.Dense(3)],
                          input_shape=(4,), name="small")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=optimizer or rs.optim.Adam(
                            rs.schedules.WarmupCosine(0.01, 2, 10)),
                        data=rs.DataSpec("clusters", batch_size=4, args={"features": 4,
                                                                         "classes": 3}),
                        steps=10)


def tensors(spec, seed=0, dtype="float64"):
    params = {k: v.astype(dtype) for k, v in spec.model.init_params(seed).items()}
    state = {k: v.astype(dtype) for k, v in spec.model.init_state().items()}
    rng = np.random.default_rng(seed)
    opt = {k: rng.random(np.shape(v)).astype(dtype)
           for k, v in checkpoint.initial_optimizer_state(spec, params).items()}
    return params, state, opt


def write(path, spec=None, step=7, dtype="float64", seed=0):
    spec = spec or small_spec()
    params, state, opt = tensors(spec, seed, dtype)
    checkpoint.save(path, spec, params=params, state=state, optimizer=opt, step=step,
                    dtype=dtype, backend="torch",
                    rng={"torch_generator": np.arange(5, dtype=np.uint8)},
                    record={"data": {"seed": 0, "batch_size": 4}})
    return spec, params, state, opt


def test_round_trip_is_exact(tmp_path):
    spec, params, state, opt = write(tmp_path / "ck")
    ck = checkpoint.load(tmp_path / "ck")
    assert ck.spec == spec and ck.step == 7 and ck.dtype == "float64" and ck.backend == "torch"
    for a, b in ((ck.params, params), (ck.state, state), (ck.optimizer, opt)):
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
            assert a[k].dtype == b[k].dtype
    np.testing.assert_array_equal(ck.rng["torch_generator"], np.arange(5, dtype=np.uint8))
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == ["optimizer.safetensors", "params.safetensors", "record.json",
                     "rng.safetensors", "spec.json", "state.safetensors"]
    # no pickle: every tensor file is safetensors (8-byte header length, then JSON)
    raw = (tmp_path / "ck" / "params.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert header["dense/kernel"]["dtype"] == "F64" and header["dense/kernel"]["shape"] == [4, 5]


def test_float32_checkpoint_keeps_float32(tmp_path):
    write(tmp_path / "ck", dtype="float32")
    ck = checkpoint.load(tmp_path / "ck")
    assert all(v.dtype == np.float32 for v in ck.params.values())


def test_lazily_created_slots_are_completed_with_initial_values(tmp_path):
    spec = small_spec(optimizer=rs.optim.Adagrad(0.1, initial_accumulator=0.25))
    params, state, _ = tensors(spec)
    checkpoint.save(tmp_path / "ck", spec, params=params, state=state, optimizer={}, step=0,
                    dtype="float64", backend="jax")
    ck = checkpoint.load(tmp_path / "ck")
    assert set(ck.optimizer) == {f"accumulator/{k}" for k in params}
    assert all(np.all(v == 0.25) for v in ck.optimizer.values())


def test_non_finite_parameters_are_never_saved(tmp_path):
    spec, params, state, opt = write(tmp_path / "ck")
    params = dict(params)
    params["dense/kernel"] = params["dense/kernel"].copy()
    params["dense/kernel"][0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="dense/kernel"):
        checkpoint.save(tmp_path / "ck", spec, params=params, state=state, optimizer=opt,
                        step=9, dtype="float64", backend="torch")
    assert checkpoint.load(tmp_path / "ck").step == 7  # the good one is untouched


def _rehash(path):
    """An attacker's edit: recompute the record's checksums so that only the content checks
    can catch it."""
    rec = json.loads((path / "record.json").read_text())
    for name in rec["files"]:
        rec["files"][name] = checkpoint._sha256(path / name)
    rec["spec_sha256"] = checkpoint.spec_sha256(
        rs.TrainSpec.from_json(json.loads((path / "spec.json").read_text())))
    (path / "record.json").write_text(json.dumps(rec))


def _retensor(path, fn, file="params.safetensors"):
    from safetensors.numpy import load, save

    t = load((path / file).read_bytes())
    (path / file).write_bytes(save(fn(dict(t))))


def tamper_truncate(p):
    f = p / "params.safetensors"
    f.write_bytes(f.read_bytes()[:-10])


def tamper_flip(p):
    f = p / "optimizer.safetensors"
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x01
    f.write_bytes(bytes(b))


def tamper_rename(p):
    _retensor(p, lambda t: {("dense/kernelX" if k == "dense/kernel" else k): v
                            for k, v in t.items()})
    _rehash(p)


def tamper_shape(p):
    _retensor(p, lambda t: {**t, "dense/bias": np.zeros(6)})
    _rehash(p)


def tamper_dtype(p):
    _retensor(p, lambda t: {**t, "dense/bias": t["dense/bias"].astype(np.float32)})
    _rehash(p)


def tamper_missing_slot(p):
    _retensor(p, lambda t: {k: v for k, v in t.items() if k != "m/dense/kernel"},
              "optimizer.safetensors")
    _rehash(p)


def tamper_nan(p):
    _retensor(p, lambda t: {**t, "dense/bias": np.full(5, np.nan)})
    _rehash(p)


def tamper_other_spec(p):
    spec = small_spec(units=6)
    (p / "spec.json").write_text(json.dumps(spec.to_json()))
    _rehash(p)


def tamper_record(p):
    (p / "record.json").write_text("{not json")


def tamper_no_record(p):
    (p / "record.json").unlink()


def tamper_delete_file(p):
    (p / "state.safetensors").unlink()


def tamper_garbage_tensor_file(p):
    (p / "rng.safetensors").write_bytes(b"\x00" * 64)
    _rehash(p)


TAMPERS = {
    "truncated": (tamper_truncate, "params.safetensors: SHA-256 does not match"),
    "flipped_byte": (tamper_flip, "optimizer.safetensors: SHA-256 does not match"),
    "renamed_tensor": (tamper_rename, "params.safetensors: tensor 'dense/kernel' is missing"),
    "wrong_shape": (tamper_shape, "tensor 'dense/bias' has shape (6,), the spec needs (5,)"),
    "wrong_dtype": (tamper_dtype, "tensor 'dense/bias' is float32, the record says float64"),
    "missing_slot": (tamper_missing_slot, "optimizer.safetensors: tensor 'm/dense/kernel' is "
                                          "missing"),
    "nan": (tamper_nan, "tensor 'dense/bias' holds NaN or Inf"),
    "another_spec": (tamper_other_spec, "has shape (5,), the spec needs (6,)"),
    "record_not_json": (tamper_record, "record.json: not valid JSON"),
    "no_record": (tamper_no_record, "no checkpoint in this folder"),
    "deleted_file": (tamper_delete_file, "state.safetensors: missing"),
    "garbage_tensor_file": (tamper_garbage_tensor_file, "rng.safetensors: not a readable "
                                                        "safetensors file"),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_checkpoint_is_refused_with_the_place(tmp_path, name):
    tamper, message = TAMPERS[name]
    write(tmp_path / "ck")
    tamper(tmp_path / "ck")
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(tmp_path / "ck")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_checkpoint_of_another_spec_is_refused(tmp_path):
    write(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="written for another spec"):
        checkpoint.load(tmp_path / "ck", small_spec(units=6))
    assert checkpoint.load(tmp_path / "ck", small_spec()).step == 7


def test_run_folder_latest_and_keep(tmp_path):
    root = tmp_path / "run"
    for step in (2, 4, 6, 8):
        write(checkpoint.step_dir(root, step), step=step)
        checkpoint.prune(root, 3)
    assert [s for s, _ in checkpoint.saved_steps(root)] == [4, 6, 8]
    assert checkpoint.load(root).step == 8
    (root / ".tmp-step-00000010-deadbeef").mkdir()  # a save that was killed
    assert checkpoint.load(root).step == 8
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a folder"):
        checkpoint.load(tmp_path / "file")


KILLED_SAVE = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_checkpoint import small_spec, tensors
    from rosetta import checkpoint

    spec = small_spec()
    params, state, opt = tensors(spec, seed=1)
    real_write = checkpoint._write

    def slow_write(path, data):
        real_write(path, data)
        print("wrote", path.name, flush=True)
        time.sleep(0.3)

    checkpoint._write = slow_write
    checkpoint.save({target!r}, spec, params=params, state=state, optimizer=opt, step=99,
                    dtype="float64", backend="torch")
""")


@pytest.mark.parametrize("target", ["same_dir", "run_folder"])
@pytest.mark.parametrize("kill_after", ["params.safetensors", "record.json"])
def test_sigkill_while_saving_leaves_the_last_checkpoint_whole(tmp_path, target, kill_after):
    root = tmp_path / "run"
    first = checkpoint.step_dir(root, 7)
    _, params, _, _ = write(first)
    dest = first if target == "same_dir" else checkpoint.step_dir(root, 99)
    script = KILLED_SAVE.format(tests=os.path.dirname(__file__), target=str(dest))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.strip() == f"wrote {kill_after}":
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    ck = checkpoint.load(root)
    assert ck.step == 7 and ck.path == first
    np.testing.assert_array_equal(ck.params["dense/kernel"], params["dense/kernel"])


def test_a_save_killed_between_its_renames_is_recovered(tmp_path):
    """Replacing a checkpoint renames the old one aside, then the new one in: killed between
    the two, the old one comes back when the folder is next read."""
    write(tmp_path / "ck")
    os.rename(tmp_path / "ck", tmp_path / ".old-ck-0123abcd")
    assert checkpoint.load(tmp_path / "ck").step == 7
