"""Sharp edges of the command line a new user hit: each refused with one line before
any framework runs, or done the way the help text says."""

from __future__ import annotations

import json
import os

import pytest

from rosetta.cli import load_spec, with_data
from rosetta.errors import SpecError

from cli_run import check_contract, run_cli


def _refused(argv, *words):
    o = run_cli([str(a) for a in argv])
    check_contract(o)
    assert o.status == 2, str(o)
    for w in words:
        assert w in o.err, str(o)
    return o


@pytest.fixture
def linear_json(tmp_path):
    o = run_cli(["spec", "linear"])
    assert o.status == 0
    return json.loads(o.out)


def test_a_known_key_with_an_unknown_value_is_refused(tmp_path, linear_json):
    linear_json["kind"] = "banana"
    (tmp_path / "s.json").write_text(json.dumps(linear_json))
    _refused(["train", tmp_path / "s.json", "--backend", "torch"], "$.kind", "banana")


def test_a_build_function_that_raises_is_one_line_naming_file_and_line(tmp_path):
    f = tmp_path / "spec.py"
    f.write_text("import rosetta as rs\n\ndef build():\n    return 1 / 0\n")
    o = _refused(["train", f, "--backend", "torch"], str(f), "line 4", "ZeroDivisionError")
    assert "Traceback" not in o.err


CSV = "a,target,b\n" + "".join(f"{i * 0.5},{i % 2},{-i}\n" for i in range(20))
PY_SPEC = """import rosetta as rs
model = rs.Sequential([rs.Dense(2)], input_shape=(2,), name="tab")
spec = rs.TrainSpec(model, rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.1),
                    rs.DataSpec.from_path("t.csv", batch_size=4, label="target"))
"""


def test_data_paths_in_py_and_json_specs_are_relative_to_the_spec_file(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "t.csv").write_text(CSV)
    (tmp_path / "specs" / "s.py").write_text(PY_SPEC)
    monkeypatch.chdir(tmp_path)                    # started elsewhere than the spec file
    py = load_spec("specs/s.py")
    assert py.data.resolved_path() == tmp_path / "specs" / "t.csv"
    (tmp_path / "specs" / "s.json").write_text(py.dumps())
    js = load_spec("specs/s.json")
    assert js.data.resolved_path() == py.data.resolved_path()
    assert py.data.load(py.model).n_train == 16


def test_data_without_label_keeps_the_spec_label_column(tmp_path, monkeypatch):
    (tmp_path / "t.csv").write_text(CSV)
    (tmp_path / "s.py").write_text(PY_SPEC)
    (tmp_path / "u.csv").write_text(CSV.replace("target", "y2"))
    monkeypatch.chdir(tmp_path)
    spec = load_spec("s.py")
    kept = with_data(spec, "t.csv")
    assert kept.data.label == "target"
    assert kept.data.load(kept.model).columns == ("a", "b")
    assert with_data(spec, "u.csv", "y2").data.label == "y2"
    with pytest.raises(SpecError, match="--label applies"):
        with_data(spec, None, "y2")


def test_export_refuses_an_earlier_export_unless_overwrite(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "export.json").write_text("{}")
    _refused(["export", tmp_path / "ck", "--format", "torch", "--out", out], "--overwrite",
             "earlier export")
    assert os.listdir(out) == ["export.json"]
    # with --overwrite it goes on (to the missing checkpoint here)
    _refused(["export", tmp_path / "ck", "--format", "torch", "--out", out, "--overwrite"],
             "no such checkpoint")


def test_a_fresh_run_refuses_a_log_folder_that_holds_a_run(tmp_path):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "scalars.jsonl").write_text('{"step": 0, "train/loss": 1.0}\n')
    _refused(["train", "linear", "--backend", "torch", "--log", tmp_path / "log"],
             "--log", "new folder", "--resume")
    assert len((tmp_path / "log" / "scalars.jsonl").read_text().splitlines()) == 1


def test_conformance_checks_the_device_split_before_any_framework(monkeypatch):
    """``--devices`` that the batch does not split over is refused before a framework is
    imported, and ``--batch-size`` (which that error suggests) and ``--threads`` are taken."""
    import rosetta.threads
    from helpers import imported_after
    from rosetta.conformance import command

    code = ("from rosetta.cli import main\n"
            "assert main(['conformance', 'mlp', '--devices', '1,3', '--quiet']) == 2\n")
    assert imported_after(code) == set()
    _refused(["conformance", "mlp", "--devices", "1,3", "--quiet"], "mlp", "3 devices",
             "--batch-size")
    seen = []

    def reached(name):
        raise SpecError("reached the backends")

    monkeypatch.setattr(command, "get_backend", reached)
    monkeypatch.setattr(command.validate, "check_memory",
                        lambda spec, batch, *a, **k: seen.append(("batch", batch)))
    monkeypatch.setattr(rosetta.threads, "pin_threads", lambda n: seen.append(("threads", n)))
    _refused(["conformance", "mlp", "--devices", "1,3", "--batch-size", "30", "--threads", "1",
              "--quiet"], "reached the backends")
    assert seen == [("threads", 1), ("batch", 30)]


def test_assert_conformant_imports_without_pytest():
    import subprocess
    import sys

    code = """import sys
class NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('pytest', '_pytest', 'pluggy'):
            raise ImportError(f'{name} is hidden')
sys.meta_path.insert(0, NoPytest())
from rosetta.conformance.pytest_plugin import assert_conformant, ConformanceError
assert 'pytest' not in sys.modules and callable(assert_conformant)
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_the_all_extra_installs_the_tensorboard_command_the_docs_run():
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert "tensorboard --logdir" in (root / "docs" / "guide" / "logs.md").read_text()
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]

    def packages(name, seen=()):
        out = set()
        for req in extras[name]:
            m = re.fullmatch(r"rosetta-ml\[(.+)\]", req)
            if m:
                for e in m.group(1).split(","):
                    out |= packages(e.strip())
            else:
                out.add(re.split(r"[<>=!~\[; ]", req)[0].lower())
        return out

    assert "tensorboard" in packages("all") and "tensorboard" in packages("log")


def test_default_threads_are_the_cores_less_the_load(monkeypatch):
    from rosetta import threads

    assert threads.default_threads(cores=2, load=0.0) == 2
    assert threads.default_threads(cores=2, load=0.9) == 1
    assert threads.default_threads(cores=2, load=14.0) == 1
    assert threads.default_threads(cores=16, load=3.2) == 13
    for v in (*threads.THREAD_VARIABLES, "OMP_WAIT_POLICY", "XLA_FLAGS"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(threads, "default_threads", lambda: 1)
    assert threads.apply_default_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")               # the user's own setting wins
    assert threads.apply_default_threads() is None and os.environ["OMP_NUM_THREADS"] == "3"
