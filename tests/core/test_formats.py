"""Format versions (rosetta.formats): the spec JSON and the neutral checkpoint say which version
wrote them; every version up to this rosetta's is read, a newer one is refused with one line, and
a checkpoint written before the version check (tests/fixtures) still loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rosetta import checkpoint, models
from rosetta.errors import CheckpointError, SpecError
from rosetta.formats import read_version, versioned
from rosetta.spec import TrainSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "checkpoint-v1-mlp-torch"


def test_read_version():
    assert versioned("rosetta-checkpoint", 1) == "rosetta-checkpoint/1"
    assert read_version("rosetta-checkpoint/1", "rosetta-checkpoint", 1) == 1
    assert read_version("rosetta/1", "rosetta", 3) == 1
    with pytest.raises(ValueError, match=r'"format": "rosetta/2" is newer than this rosetta '
                                         r'\(.*\) reads \(rosetta/1 and older\): upgrade'):
        read_version("rosetta/2", "rosetta", 1)
    for bad in ("rosetta/0", "rosetta/x", "other/1", "rosetta/1/2", None, 1, ["rosetta/1"]):
        with pytest.raises(ValueError, match=r'expected "format": "rosetta/1", found'):
            read_version(bad, "rosetta", 1)


def test_formats_written_are_the_versions_read():
    spec = models.get("mlp")
    assert spec.to_json()["format"] == "rosetta/1"
    assert checkpoint.FORMAT == "rosetta-checkpoint/1"
    assert TrainSpec.from_json(json.loads(spec.dumps())) == spec


def test_a_newer_spec_version_is_refused_with_one_line():
    d = models.get("mlp").to_json()
    d["format"] = "rosetta/7"
    with pytest.raises(SpecError) as e:
        TrainSpec.from_json(d)
    msg = str(e.value)
    assert "\n" not in msg and "$.format" in msg and "rosetta/7" in msg and "upgrade" in msg


def test_a_checkpoint_written_before_the_version_check_loads():
    """The fixture was written by ``rosetta train mlp --backend torch --steps 3 --save`` at the
    commit before format versions were read (63d8f13)."""
    ck = checkpoint.load(FIXTURE)
    assert ck.step == 3 and ck.dtype == "float32" and ck.backend == "torch"
    assert checkpoint.spec_sha256(ck.spec) == checkpoint.spec_sha256(models.get("mlp"))
    assert set(ck.params) == set(ck.spec.model.param_defs())
    assert all(np.all(np.isfinite(v)) for v in ck.params.values())


def test_a_newer_checkpoint_version_is_refused_with_one_line(tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(FIXTURE, ck)
    rec = json.loads((ck / "record.json").read_text())
    rec["format"] = "rosetta-checkpoint/2"
    (ck / "record.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(ck)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(ck / "record.json"))
    assert '"format": "rosetta-checkpoint/2" is newer than this rosetta' in msg
    rec["format"] = "something-else/1"
    (ck / "record.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match=r'expected "format": "rosetta-checkpoint/1", '
                                              r"found 'something-else/1'"):
        checkpoint.load(ck)
