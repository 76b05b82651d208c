"""Notebook HTML (rosetta.display), core only: specs, graphs, run records, checkpoints and the
conformance scoreboard render as escaped HTML tables, loss curves as inline PNGs, with no
framework imported (records and results are built by hand)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import rosetta as rs
from rosetta import checkpoint, display
from rosetta.conformance import report
from rosetta.conformance.suite import Result

from helpers import imported_after

PNG = b"\x89PNG\r\n\x1a\n"


def residual_spec(description=""):
    x = rs.Input((6,), name="x")
    h = rs.Dense(4, name="proj")(x)
    b = rs.BatchNorm(name="bn")(h)
    s = rs.Add(name="skip")(h, b)
    y = rs.Dense(3, name="head")(s)
    model = rs.Model(x, y, name="residual")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(label_smoothing=0.1),
                        optimizer=rs.optim.SGD(rs.schedules.Cosine(0.1, 50), momentum=0.9),
                        data=rs.DataSpec("clusters", 8, {"features": 6, "classes": 3}),
                        steps=7, seed=3, description=description)


def cells(html, row_label):
    """The text of the cells of the first row whose first cell is ``row_label``."""
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html):
        texts = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)
        if texts and texts[0] == row_label:
            return texts
    raise AssertionError(f"no row {row_label!r} in {html}")


def pngs(html):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_spec_and_graph_show_the_layer_table_loss_optimizer_and_data():
    spec = residual_spec(description="<script>alert(1)</script> & more")
    html = spec._repr_html_()
    assert html == display.spec_html(spec)
    assert cells(html, "x") == ["x", "Input", "", "(6,)", "0"]
    assert cells(html, "proj") == ["proj", "Dense", "x", "(4,)", "28"]
    assert cells(html, "bn") == ["bn", "BatchNorm", "proj", "(4,)", "8"]
    assert cells(html, "skip") == ["skip", "Add", "proj, bn", "(4,)", "0"]
    assert cells(html, "head (output)") == ["head (output)", "Dense", "skip", "(3,)", "15"]
    assert cells(html, "total")[-1] == "51" == f"{spec.model.param_count()}"
    assert "51 parameters + 8 state" in html        # BatchNorm's running mean and variance
    assert cells(html, "loss")[1] == "softmax_cross_entropy(label_smoothing=0.1)"
    opt = cells(html, "optimizer")[1]
    assert opt.startswith("sgd(momentum=0.9") and "cosine(value=0.1, decay_steps=50" in opt
    assert "built-in dataset &#x27;clusters&#x27;" in cells(html, "data")[1]
    assert "batch size 8" in cells(html, "data")[1]
    assert cells(html, "steps")[1] == "7" and cells(html, "seed")[1] == "3"
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    graph = spec.model._repr_html_()
    assert graph == display.graph_html(spec.model) and graph in html
    assert "loss" not in graph


def test_data_sources_and_constant_schedule_in_words(tmp_path):
    x, y = np.zeros((10, 6)), np.zeros(10, np.int64)
    arrays = rs.DataSpec.from_arrays(x, y, batch_size=5)
    assert display.data_text(arrays).startswith("in-memory arrays x (10, 6), y (10,)")
    path = rs.DataSpec.from_path(tmp_path / "d.npz", batch_size=4, label="target")
    assert "file" in display.data_text(path) and "label 'target'" in display.data_text(path)
    assert display.schedule_text(rs.schedules.Constant(0.001)) == "0.001 (constant)"
    assert display.optimizer_text(rs.optim.Adam(1e-3)).endswith("learning rate 0.001 (constant)")


def hand_record(**kw):
    rec = {"model": "mlp", "backend": "torch", "mode": "eager", "framework": "torch <9.9> & co",
           "device": "cpu", "dtype": "float64", "steps": 5, "start_step": 0, "batch_size": 32,
           "seed": 0, "losses": [2.3, 1.9, 1.5, 1.2, 1.0], "final_loss": 1.0,
           "metrics": {"loss": 1.1, "accuracy": 0.75}, "seconds": 0.5,
           "first_step_seconds": 0.2, "resumed_from": None, "saved": None, "sample": None,
           "program": object()}
    rec.update(kw)
    return rec


def test_run_record_is_the_dict_it_was_and_shows_its_loss_curve():
    plain = hand_record()
    rec = display.RunRecord(plain)
    assert isinstance(rec, dict) and rec == plain and rec["losses"] == plain["losses"]
    program = rec.pop("program")
    plain.pop("program")
    assert program is not None and json.dumps(rec) == json.dumps(plain)
    assert json.loads(json.dumps(rec, allow_nan=False)) == plain
    html = rec._repr_html_()
    for label, value in (("backend", "torch"), ("mode", "eager"), ("dtype", "float64"),
                         ("steps", "5"), ("held-out accuracy", "0.75"), ("final loss", "1")):
        assert cells(html, label)[1] == value, label
    assert "torch &lt;9.9&gt; &amp; co" in html and "<9.9>" not in html
    (png,) = pngs(html)
    assert png.startswith(PNG)
    resumed = display.RunRecord(hand_record(start_step=10, losses=[1.0]))._repr_html_()
    assert cells(resumed, "steps")[1] == "5 (updates 10..15)"
    assert pngs(display.RunRecord(hand_record(losses=[]))._repr_html_()) == []


def test_loss_curve_without_matplotlib_says_so():
    code = ("import sys; sys.modules['matplotlib'] = None\n"   # as if it were not installed
            "from rosetta import display\n"
            "assert display.loss_curve_png([1.0, 0.5]) is None\n"
            "html = display.RunRecord(losses=[1.0, 0.5])._repr_html_()\n"
            "assert 'base64' not in html and 'install matplotlib' in html\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


def test_checkpoint_shows_update_count_tensor_files_and_losses(tmp_path):
    spec = residual_spec()
    params = spec.model.init_params(0)
    path = checkpoint.save(tmp_path / "ck", spec, params=params, state=spec.model.init_state(),
                           optimizer={}, step=7, dtype="float32", backend="torch",
                           record={"losses": [1.5, 1.2, 1.1, 0.9, 0.8, 0.8, 0.7],
                                   "metrics": {"loss": 0.75},
                                   "data": {"epoch": 1, "batch": 2}})
    ck = checkpoint.load(path)
    html = ck._repr_html_()
    assert html == display.checkpoint_html(ck)
    assert cells(html, "updates")[1] == "7" and cells(html, "dtype")[1] == "float32"
    assert cells(html, "written by")[1] == "torch" and cells(html, "model")[1] == "residual"
    assert cells(html, "data position")[1] == "epoch 1, batch 2"
    assert cells(html, "held-out loss")[1] == "0.75"
    assert cells(html, "path")[1] == str(path)
    assert cells(html, "params.safetensors") == ["params.safetensors", "6", "51",
                                                 f"{51 * 4} B"]          # float32: 4 bytes
    assert cells(html, "state.safetensors")[1:3] == ["2", "8"]
    assert cells(html, "optimizer.safetensors")[1:3] == ["6", "51"]   # SGD momentum: one slot
    assert cells(html, "rng.safetensors")[1:] == ["0", "0", "0 B"]
    (png,) = pngs(html)
    assert png.startswith(PNG)


def result(passed=True, **kw):
    r = dict(model="mlp", backend_a="torch/cpu/float64", backend_b="jax/cpu/float64",
             tier="exact", dtype="float64", device="cpu", worst_abs=3e-17, worst_rel=2e-14,
             tolerance=1e-10, where="grads/<dense>/kernel @ step 1", passed=passed)
    r.update(kw)
    return Result(**r)


def test_scoreboard_rows_are_coloured_pass_and_fail():
    rows = [result(), result(False, worst_rel=float("nan"), worst_abs=float("inf"),
                             note="different specs")]
    rows.append(rows[0].to_json())            # a JSON dict row, as read back from a report
    board = report.Scoreboard(rows)
    assert isinstance(board, list) and len(board) == 3 and board[0] is rows[0]
    assert not board.passed and report.Scoreboard(rows[:1]).passed
    html = board._repr_html_()
    assert html == report.html_table(rows) == display.scoreboard_html(rows)
    assert "3 comparisons, 2 passed, 1 failed" in html
    ok = cells(html, "mlp")
    assert ok == ["mlp", "torch/cpu/float64 vs jax/cpu/float64", "exact", "float64",
                  "3.000e-17", "2.000e-14", "1.000e-10",
                  "grads/&lt;dense&gt;/kernel @ step 1", "PASS"]
    assert html.count(">PASS<") == 2 and html.count(">FAIL<") == 1
    colours = re.findall(r'<tr style="background:(#[0-9a-f]+)">', html)
    assert colours == [display._PASS, display._FAIL, display._PASS]
    assert display._PASS != display._FAIL
    fail = re.findall(r"<tr style=\"background:#[0-9a-f]+\">(.*?)</tr>", html)[1]
    assert "nan" in fail and "inf" in fail and "(different specs)" in fail
    page = report.html_report(rows, title="a <b> title")
    assert page.startswith("<!doctype html>") and html in page and "a &lt;b&gt; title" in page
    assert report.to_json(board)["passed"] is False and board.to_json()["results"][0]["passed"]
    assert board.table() == report.table(rows)


@pytest.mark.parametrize("what", ["spec", "record", "checkpoint", "scoreboard"])
def test_rendering_imports_no_framework(what, tmp_path):
    code = {
        "spec": "from rosetta import models; models.get('cnn')._repr_html_()",
        "record": "from rosetta.display import RunRecord\n"
                  "RunRecord(model='m', losses=[1.0, 0.5])._repr_html_()",
        "checkpoint": "from rosetta import checkpoint, models\n"
                      "s = models.get('mlp'); p = s.model.init_params(0)\n"
                      f"c = checkpoint.save({str(tmp_path / 'ck')!r}, s, params=p, state={{}}, "
                      "optimizer={}, step=1, dtype='float64', backend='jax', "
                      "record={'losses': [1.0]})\n"
                      "checkpoint.load(c)._repr_html_()",
        "scoreboard": "from rosetta.conformance import report\n"
                      "report.Scoreboard([{'model': 'm', 'passed': True}])._repr_html_()",
    }[what]
    assert imported_after(code) == set()
