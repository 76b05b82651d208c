"""A certificate's saved source run certifies a backend without the source's framework
(``certificate.certify_saved``, ``rosetta certify FOLDER --backends ...``): MXNet, in its own
environment (no torch there), against an imported torch model with a frozen parameter, a
BatchNorm and an LSTM's two biases (the lowerings the import adds to every backend); and a saved
source run changed by 1e-8 fails the replay and is blamed on the source's own parameter name.
Tiny model (hidden 4, T 3, batch 2, float64, 2 Adam steps)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rosetta  # noqa: E402
from rosetta.cli import main as rosetta_main  # noqa: E402
from rosetta.conformance.trajectory import Trajectory  # noqa: E402
from rosetta.importers.certificate import certify_saved  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "cross"))
from test_mxnet_trajectories import ROOT, mxnet_python  # noqa: E402


class Net(nn.Module):
    """x (N, T, 3) -> LSTM -> last step -> BatchNorm1d -> Linear (its bias frozen)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, batch_first=True)
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(self.bn(out[:, -1]))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The torch source certified on torch, its run saved beside the certificate."""
    torch.manual_seed(0)
    m = Net().double()
    m.fc.bias.requires_grad_(False)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=0.05)
    imp = rosetta.from_torch(m, (torch.randn(2, 3, 3, dtype=torch.float64),), optimizer=opt,
                             loss=nn.MSELoss())
    assert imp.spec.optimizer.frozen, "fc.bias is frozen in the spec"
    out = tmp_path_factory.mktemp("cert")
    cert = imp.certify(("torch",), steps=2, out=out)
    assert cert.passed, cert.table()
    return out


def test_replay_certifies_a_backend_and_replaces_its_row(folder):
    cert = certify_saved(folder, ["torch"])
    assert cert.passed, cert.table()
    rows = json.loads((folder / "certificate.json").read_text())["results"]
    assert [r["backend"] for r in rows] == ["torch"]   # replaced, not added twice
    assert all(r["passed"] for r in rows)


def test_a_changed_source_run_fails_and_blames_the_source_parameter(folder, tmp_path):
    bad = tmp_path / "bad"
    for f in folder.rglob("*"):
        if f.is_file():
            (bad / f.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            (bad / f.relative_to(folder)).write_bytes(f.read_bytes())
    traj = Trajectory.load(bad / "source_trajectory.npz")
    path = next(k for k in traj.params if k.endswith("recurrent_bias"))
    traj.params[path][2] *= 1 + 1e-8           # the LSTM's second bias after step 2
    traj.save(bad / "source_trajectory.npz")
    assert rosetta_main(["certify", str(bad), "--backends", "torch"]) == 1
    row = next(r for r in json.loads((bad / "certificate.json").read_text())["results"]
               if r["backend"] == "torch")
    assert not row["passed"] and "rnn.bias_hh_l0" in row["blame"], row["blame"]


def test_certify_refuses_a_folder_without_a_saved_run_and_a_missing_backend(tmp_path, capsys):
    assert rosetta_main(["certify", str(tmp_path), "--backends", "torch"]) == 2
    assert "no certificate.json" in capsys.readouterr().err
    (tmp_path / "certificate.json").write_text('{"dtype": "float64"}')
    assert rosetta_main(["certify", str(tmp_path), "--backends", "torch"]) == 2
    assert "not a certificate rosetta wrote" in capsys.readouterr().err
    assert rosetta_main(["certify", str(tmp_path), "--backends", "nosuch"]) == 2
    assert "not installed in this environment" in capsys.readouterr().err


def test_mxnet_in_its_own_environment_certifies_from_the_saved_run(folder):
    python = mxnet_python()
    if python is None:
        pytest.skip("the MXNet environment is not built: `bash .ci/mxnet` builds .venv-mxnet "
                    "(or set ROSETTA_MXNET_PYTHON)")
    r = subprocess.run([str(python), "-c", "import sys; from rosetta.cli import main; "
                        "sys.exit(main())", "certify", str(folder), "--backends", "mxnet"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {x["backend"]: x for x in json.loads((folder / "certificate.json").read_text())
            ["results"]}
    assert rows["mxnet"]["passed"] and "mxnet" in r.stdout
    assert max(rows["mxnet"]["worst"].values()) < 1e-10
    assert rows["torch"]["passed"], "the rows of the other backends are kept"
