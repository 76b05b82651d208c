"""The neutral checkpoint (docs/design.md section 9): a folder any backend writes and any backend resumes.

Layout of one checkpoint directory::

    spec.json              the TrainSpec (rosetta/1 JSON; file data paths made absolute)
    params.safetensors     trainable parameters by canonical path, canonical layout
    state.safetensors      model state (BatchNorm running statistics) by canonical path
    optimizer.safetensors  optimizer slots by ``<slot>/<parameter path>`` (``m/dense/kernel``)
    rng.safetensors        the writing backend's own dropout stream (read back only by the same
                           backend: masks never match across frameworks)
    record.json            format and its version (``rosetta-checkpoint/1``: a newer version is
                           refused, every older one read; ``rosetta.formats``), update count, data position (seed, batch size, epoch, batch),
                           dtype, backend, mode and framework versions, metrics, the losses so
                           far, and the SHA-256 of every other file

Tensors are stored with safetensors (never pickle) in the run's dtype. ``record.json`` is written
last, and the whole directory is first written under a hidden temporary name in the same folder,
every file fsynced, then renamed into place: a process killed while saving leaves at most a
hidden ``.tmp-*`` folder, and every visible checkpoint is whole.

``load`` verifies, before any value reaches a framework: the record's format, every file's
checksum, the spec, then every tensor's name, shape and dtype against the spec (parameters, state,
and the optimizer slots the spec's optimizer has), and that every value is finite. The first
problem is a ``CheckpointError`` naming the file and the tensor.

A training run saves into a *run folder* (``--save DIR``): one checkpoint per save,
``DIR/step-00000050``; ``latest(DIR)`` is the one with the highest update count, and ``keep``
bounds how many are kept (oldest removed after a successful save).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rosetta.errors import CheckpointError, RosettaError
from rosetta.files import install_folder, recover_folders, temp_folder
from rosetta.formats import read_version, versioned
from rosetta.spec import TrainSpec

FORMAT_NAME = "rosetta-checkpoint"
VERSION = 1  # the version written; every version from 1 up to it is read (rosetta.formats)
FORMAT = versioned(FORMAT_NAME, VERSION)
RECORD = "record.json"
SPEC = "spec.json"
TENSOR_FILES = ("params", "state", "optimizer", "rng")
STEP_DIR = re.compile(r"^step-(\d{8,})$")


@dataclass
class Checkpoint:
    """A verified checkpoint in memory: the spec, the tensors by canonical name, the record."""

    path: Path
    spec: TrainSpec
    params: dict
    state: dict
    optimizer: dict
    rng: dict
    record: dict = field(default_factory=dict)

    @property
    def step(self) -> int:
        """Updates applied: the next update is number ``step``."""
        return int(self.record["step"])

    @property
    def dtype(self) -> str:
        return self.record["dtype"]

    @property
    def backend(self) -> str:
        return self.record["backend"]

    @property
    def precision(self) -> str:
        """The precision policy it was trained under (``rosetta.precision``); the tensors are
        in ``dtype`` (float32 master values for the low precisions)."""
        return self.record.get("precision") or self.record["dtype"]

    def _repr_html_(self) -> str:
        """Jupyter: the record, the tensor files and the loss curve (``rosetta.display``)."""
        from rosetta.display import checkpoint_html

        return checkpoint_html(self)


def spec_sha256(spec: TrainSpec) -> str:
    """SHA-256 of the model, loss and optimizer of a spec (what a checkpoint's tensors belong to;
    data, steps and seed may change between runs)."""
    d = spec.to_json()
    core = {k: d[k] for k in ("model", "loss", "optimizer")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def expected_tensors(spec: TrainSpec) -> dict[str, dict[str, tuple]]:
    """{file: {tensor name: shape}} that a checkpoint of ``spec`` holds (rng aside)."""
    g = spec.model
    params = {k: tuple(d.shape) for k, d in g.param_defs().items()}
    state = {k: tuple(d.shape) for k, d in g.state_defs().items()}
    slots = spec.optimizer.state_names(params)
    return {"params": params, "state": state,
            "optimizer": {k: params[k.split("/", 1)[1]] for k in slots}}


def initial_optimizer_state(spec: TrainSpec, params: dict) -> dict:
    """The optimizer slots before any update (zeros, or Adagrad's initial accumulator), by the
    canonical names: what a backend that creates its state lazily has not exported yet."""
    return spec.optimizer.slots(spec.optimizer.init_state(params))


# --- writing ---------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())



def _tensors_bytes(tensors: dict, dtype: str | None) -> bytes:
    from safetensors.numpy import save

    out = {}
    for k, v in tensors.items():
        a = np.ascontiguousarray(v)
        if dtype is not None and np.issubdtype(a.dtype, np.floating):
            a = a.astype(dtype, copy=False)
        out[k] = a
    return save(out)


def save(path, spec: TrainSpec, *, params: dict, state: dict, optimizer: dict, step: int,
         dtype: str, backend: str, rng: dict | None = None, record: dict | None = None) -> Path:
    """Write one checkpoint directory at ``path`` atomically (see the module docstring); an
    existing checkpoint at ``path`` is replaced only once the new one is whole. Returns ``path``.

    ``optimizer`` is completed with the initial value of any slot a backend creates lazily (a
    checkpoint before the first update); ``record`` adds fields to the record (metrics, data
    position, backend, losses)."""
    path = Path(path)
    for name, tensors in (("parameters", params), ("optimizer state", optimizer)):
        bad = next((k for k, v in tensors.items() if not np.all(np.isfinite(v))), None)
        if bad is not None:
            raise FloatingPointError(f"not saving a checkpoint: {name} {bad!r} are not finite "
                                     f"at update {step}")
    optimizer = {**initial_optimizer_state(spec, params), **optimizer}
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(path)
    try:
        files = {}
        spec_json = json.dumps(spec.to_json(), indent=1).encode()
        _write(tmp / SPEC, spec_json)
        files[SPEC] = hashlib.sha256(spec_json).hexdigest()
        for name, tensors in (("params", params), ("state", state), ("optimizer", optimizer),
                              ("rng", rng or {})):
            data = _tensors_bytes(tensors, dtype if name != "rng" else None)
            _write(tmp / f"{name}.safetensors", data)
            files[f"{name}.safetensors"] = hashlib.sha256(data).hexdigest()
        from rosetta import __version__

        rec = {"format": FORMAT, **(record or {}), "step": int(step), "dtype": dtype,
               "backend": backend,
               "model": spec.name, "spec_sha256": spec_sha256(spec), "rosetta": __version__,
               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                   timespec="seconds"),
               "files": files}
        _write(tmp / RECORD, json.dumps(rec, indent=1, allow_nan=False).encode())
        install_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path



def step_dir(root, step: int) -> Path:
    return Path(root) / f"step-{int(step):08d}"


def saved_steps(root) -> list[tuple[int, Path]]:
    """(update count, directory) of the whole checkpoints in a run folder, oldest first."""
    root = Path(root)
    out = []
    recover_folders(root)
    if root.is_dir():
        for p in root.iterdir():
            m = STEP_DIR.match(p.name)
            if m and p.is_dir() and (p / RECORD).is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


def prune(root, keep: int | None) -> None:
    """Remove all but the ``keep`` newest checkpoints of a run folder (None: keep all)."""
    if keep is None:
        return
    for _, p in saved_steps(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)


def resolve(path) -> Path:
    """A checkpoint directory from ``path``: itself if it holds ``record.json``, else the newest
    checkpoint of the run folder ``path``."""
    path = Path(path)
    recover_folders(path.parent)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (give a folder written by "
                              f"'rosetta train --save')")
    if not path.is_dir():
        raise CheckpointError(f"{path}: a checkpoint is a folder (written by 'rosetta train "
                              f"--save'), found a file")
    if (path / RECORD).is_file():
        return path
    steps = saved_steps(path)
    if not steps:
        raise CheckpointError(f"{path}: no checkpoint in this folder (no {RECORD}, no step-* "
                              f"checkpoints)")
    return steps[-1][1]


# --- reading ---------------------------------------------------------------------------------
def _read_record(path: Path) -> dict:
    f = path / RECORD
    if not f.is_file():
        raise CheckpointError(f"{path}: not a rosetta checkpoint ({RECORD} is missing)")
    try:
        rec = json.loads(f.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{f}: not valid JSON ({e}); the checkpoint is damaged") from None
    found = rec.get("format") if isinstance(rec, dict) else type(rec).__name__
    try:
        read_version(found, FORMAT_NAME, VERSION)
    except ValueError as e:
        raise CheckpointError(f"{f}: {e}") from None
    files = rec.get("files")
    want = {SPEC} | {f"{n}.safetensors" for n in TENSOR_FILES}
    if not isinstance(files, dict) or set(files) != want:
        raise CheckpointError(f"{f}: 'files' must list the checksums of {sorted(want)}")
    step = rec.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{f}: 'step' must be a non-negative integer, found {step!r}")
    if rec.get("dtype") not in ("float32", "float64"):
        raise CheckpointError(f"{f}: 'dtype' must be float32 or float64, found "
                              f"{rec.get('dtype')!r}")
    if not isinstance(rec.get("backend"), str):
        raise CheckpointError(f"{f}: 'backend' must name the backend that wrote it")
    from rosetta.precision import PRECISIONS, LossScale, policy

    prec = rec.get("precision")
    if prec is not None:
        if prec not in PRECISIONS or policy(prec).host != rec["dtype"]:
            raise CheckpointError(f"{f}: 'precision' must be one of {', '.join(PRECISIONS)} "
                                  f"stored in {rec['dtype']}, found {prec!r}")
        if rec.get("loss_scale") is not None:
            if not policy(prec).loss_scale:
                raise CheckpointError(f"{f}: 'loss_scale' is kept only by mixed_float16, "
                                      f"this checkpoint is {prec}")
            LossScale().load(rec["loss_scale"], where=f"{f}: loss_scale")
    return rec


def _verify_checksums(path: Path, rec: dict) -> None:
    for name, digest in rec["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing (the checkpoint is incomplete)")
        if _sha256(f) != digest:
            raise CheckpointError(f"{f}: SHA-256 does not match {RECORD} (the file was changed "
                                  f"or damaged after saving)")


def _read_tensors(f: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        return load(f.read_bytes())
    except (SafetensorError, ValueError, OSError) as e:
        raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from None


def _check_tensors(f: Path, tensors: dict, want: dict, dtype: str) -> None:
    for name in sorted(want):
        if name not in tensors:
            raise CheckpointError(f"{f}: tensor {name!r} is missing")
    for name in sorted(tensors):
        if name not in want:
            raise CheckpointError(f"{f}: unexpected tensor {name!r} (the spec has no such "
                                  f"{'slot' if f.stem == 'optimizer' else 'parameter'})")
    for name in sorted(want):
        a = tensors[name]
        if tuple(a.shape) != tuple(want[name]):
            raise CheckpointError(f"{f}: tensor {name!r} has shape {tuple(a.shape)}, the spec "
                                  f"needs {tuple(want[name])}")
        if a.dtype != np.dtype(dtype):
            raise CheckpointError(f"{f}: tensor {name!r} is {a.dtype}, the record says {dtype}")
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"{f}: tensor {name!r} holds NaN or Inf")


def load(path, spec: TrainSpec | None = None) -> Checkpoint:
    """Read and verify the checkpoint at ``path`` (a checkpoint or a run folder: its newest).
    With ``spec``, the checkpoint must have been written for the same model, loss and
    optimizer."""
    path = resolve(path)
    rec = _read_record(path)
    _verify_checksums(path, rec)
    try:
        ck_spec = TrainSpec.from_json(json.loads((path / SPEC).read_text()))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / SPEC}: not valid JSON ({e})") from None
    except RosettaError as e:
        raise CheckpointError(f"{path / SPEC}: {e}") from None
    if rec.get("spec_sha256") != spec_sha256(ck_spec):
        raise CheckpointError(f"{path / RECORD}: spec_sha256 does not match {SPEC}")
    if spec is not None and spec_sha256(spec) != spec_sha256(ck_spec):
        raise CheckpointError(
            f"{path}: this checkpoint was written for another spec (model "
            f"{ck_spec.name!r}, {ck_spec.model.param_count():,} parameters, optimizer "
            f"{ck_spec.optimizer.kind!r}); resume it without a SPEC, or give the spec it was "
            f"trained with")
    want = expected_tensors(ck_spec)
    tensors = {}
    for name in TENSOR_FILES:
        f = path / f"{name}.safetensors"
        tensors[name] = _read_tensors(f)
        if name != "rng":
            _check_tensors(f, tensors[name], want[name], rec["dtype"])
    return Checkpoint(path, ck_spec, tensors["params"], tensors["state"], tensors["optimizer"],
                      tensors["rng"], rec)


def restore(program, ckpt: Checkpoint) -> None:
    """Put a checkpoint into a compiled ``Program``: parameters, state, optimizer slots and the
    update count; the dropout stream too when the same backend wrote it."""
    cast = lambda d: {k: v.astype(program.dtype) for k, v in d.items()}  # noqa: E731
    program.load(cast(ckpt.params), cast(ckpt.state))
    program.load_optimizer_state(cast(ckpt.optimizer), ckpt.step)
    if ckpt.backend == program.backend and ckpt.rng:
        program.load_rng_state(ckpt.rng)
    if getattr(program, "loss_scale", None) is not None:  # continues on any backend
        program.load_loss_scale(ckpt.record.get("loss_scale"))
