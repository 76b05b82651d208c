"""Run the ``rosetta`` command line in-process and check the exit-status contract (docs/design.md section 6).

``run_cli(argv)`` calls ``rosetta.cli.main`` with stdout and stderr captured and returns an
``Outcome``; ``check_contract`` asserts, for any input: no traceback (an exception escaping
``main`` is one); status 0, 1 or 2; bad input (2) is exactly one line on stderr; ``--json``
prints valid strict JSON; a training run exits 0 only with finite losses and metrics.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import traceback
from dataclasses import dataclass


@dataclass
class Outcome:
    argv: list
    status: object
    out: str
    err: str
    traceback: str | None

    def __str__(self):
        return (f"argv={self.argv!r}\nstatus={self.status!r}\nstderr={self.err[-2000:]}\n"
                f"stdout={self.out[-500:]}\n{self.traceback or ''}")


def run_cli(argv) -> Outcome:
    from rosetta.cli import main

    out, err = io.StringIO(), io.StringIO()
    tb = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as e:  # argparse: --help (0) or a usage error (2)
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001  a traceback: what the contract forbids
            status, tb = None, traceback.format_exc()
    return Outcome(list(argv), status, out.getvalue(), err.getvalue(), tb)


def _strict_json(line: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=refuse)


def _finite(v) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(_finite(x) for x in v.values())
    if isinstance(v, list):
        return all(_finite(x) for x in v)
    return True


def check_contract(o: Outcome) -> None:
    assert o.traceback is None, f"traceback\n{o}"
    assert "Traceback (most recent call last)" not in o.err, f"traceback on stderr\n{o}"
    assert o.status in (0, 1, 2), f"exit status {o.status!r}\n{o}"
    lines = [ln for ln in o.err.splitlines() if ln.strip()]
    if o.status == 2:
        assert len(lines) == 1 and lines[0].startswith("rosetta: "), \
            f"bad input must be exactly one line on stderr\n{o}"
    if "--json" in o.argv and o.out.strip():
        record = _strict_json(o.out.strip().splitlines()[-1])
        if o.status == 0 and o.argv[0] == "train":
            assert _finite(record), f"exit 0 with non-finite results\n{o}"
            assert math.isfinite(record["final_loss"]), str(o)
    if o.status == 1 and o.argv[0] == "train":
        assert any(ln.startswith("rosetta: training failed") for ln in lines), str(o)
