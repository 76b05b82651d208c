"""``train(log=DIR)``: the JSON-lines scalars and the TensorBoard event files, read back with
tbparse (TensorBoard's own event reader), agree with the run record, the schedule and the
gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rosetta as rs
from rosetta.data import take
from rosetta.training import dataset_inputs, prepare_labels, train

from selection import BACKENDS


def spec():
    model = rs.Sequential([rs.Dense(6), rs.ReLU(), rs.Dense(3)], input_shape=(5,), name="tiny")
    return rs.TrainSpec(model=model, loss=rs.losses.SoftmaxCrossEntropy(),
                        optimizer=rs.optim.SGD(rs.schedules.Cosine(0.1, 4, final=0.01),
                                               momentum=0.9, clip_norm=0.05),
                        data=rs.DataSpec("clusters", batch_size=4,
                                         args={"n": 40, "features": 5, "classes": 3}),
                        steps=4)


def first_batch_grad_norm(s, backend):
    """The global gradient norm of update 0, from a fresh program and the first batch."""
    from rosetta.data import batches

    ds = s.data.load(model=s.model)
    _, idx = next(iter(batches(ds.n_train, 4, s.seed, 1)))
    prog = rs.get_backend(backend).compile(s, dtype="float64")
    _, g = prog.gradients(take(dataset_inputs(s, ds.x_train, "float64"), idx),
                          prepare_labels(s, ds.y_train)[idx])
    return float(np.sqrt(sum(np.sum(v * v) for v in g.values())))


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_writes_jsonl_and_tensorboard_events(tmp_path, backend):
    from tbparse import SummaryReader

    s = spec()
    rec = train(s, backend, dtype="float64", log=tmp_path / "log", log_every=2, eval_every=2,
                progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log" / "scalars.jsonl").read_text()
            .splitlines()]
    by_step: dict = {}
    for r in rows:
        by_step.setdefault(r.pop("step"), {}).update(r)
    assert sorted(by_step) == [0, 1, 2, 3, 4]
    for t in range(4):
        assert by_step[t]["train/loss"] == pytest.approx(rec["losses"][t], rel=1e-15)
        assert by_step[t]["train/lr"] == pytest.approx(float(s.optimizer.learning_rate(t)),
                                                       rel=1e-15)
        assert ("train/grad_norm" in by_step[t]) == (t % 2 == 0)
        assert ("eval/loss" in by_step[t]) == (t == 2)  # after updates 0, 1
    assert by_step[4]["eval/loss"] == pytest.approx(rec["metrics"]["loss"], rel=1e-12)
    # before clipping: the norm of the raw gradients (clip_norm 0.05 is far below it)
    assert by_step[0]["train/grad_norm"] == pytest.approx(first_batch_grad_norm(s, backend),
                                                          rel=1e-12)
    assert by_step[0]["train/grad_norm"] > 0.05

    events = SummaryReader(str(tmp_path / "log")).scalars
    assert len(list((tmp_path / "log").glob("events.out.tfevents.*"))) >= 1
    tb = {(int(r.step), r.tag): r.value for r in events.itertuples()}
    flat = {(t, tag): v for t, d in by_step.items() for tag, v in d.items()}
    assert set(tb) == set(flat)
    for key, v in flat.items():  # TensorBoard scalars are float32
        assert tb[key] == pytest.approx(v, rel=1e-6), key


def test_unwritable_log_dir_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(rs.DataError, match="exists and is not a folder"):
        train(spec(), BACKENDS[0], log=tmp_path / "file", progress=False)
