"""One clock: the progress bar's final time is the run's ``seconds`` (the summary line's). A
fake clock moves 5 s while the step compiles and 3 s while the held-out data is evaluated: a
bar with a clock of its own would show another time."""

from __future__ import annotations

import re
import time

import rosetta.run_loop
import rosetta.training
from rosetta import models
from rosetta.training import train

from selection import BACKENDS


def test_the_bar_and_the_summary_report_the_same_time(monkeypatch, capsys):
    now = [100.0]

    def clock():
        now[0] += 0.01
        return now[0]

    def slow(fn, seconds):
        def wrapped(*a, **k):
            now[0] += seconds
            return fn(*a, **k)
        return wrapped

    be = rosetta.training.get_backend(BACKENDS[0])
    monkeypatch.setattr(be, "compile", slow(be.compile, 5.0))
    monkeypatch.setattr(rosetta.run_loop, "evaluate", slow(rosetta.run_loop.evaluate, 3.0))
    monkeypatch.setattr(time, "perf_counter", clock)
    record = train(models.get("linear"), BACKENDS[0], steps=20, progress=True)
    err = capsys.readouterr().err
    shown = re.search(r"20 steps in ([0-9.]+)s", err)
    assert shown, err
    assert shown.group(1) == f"{record['seconds']:.1f}", (err, record["seconds"])
