"""Ctrl-C a ``rosetta train`` process at a chosen point and check how it ended.

The child is the real command (``rosetta.cli.main()``, the process entry point) with markers
written to a pipe as it reaches each point (the framework's import, compiling or tracing, the
first steps, steady state, a checkpoint save); the parent sends SIGINT a short random delay after
the marker and checks: exit status 130 within 2 s of the signal, standard error exactly one line
(``rosetta: interrupted``: no traceback, no "Exception ignored"), and every checkpoint in the run
folder whole (``rosetta.checkpoint.load`` verifies each).

The CI test (tests/core/test_interrupts.py) runs a few cases; the longer loop is this script:

    .venv/bin/python tests/interrupt_run.py --repeat 10 [--backends torch,jax] [--model cnn]
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

POINTS = ("import", "compile", "first-steps", "steady", "save")
LIMIT = 2.0   # seconds from SIGINT to exit

CHILD = r"""
import os, sys
fd = int(sys.argv[1])
def mark(name):
    os.write(fd, (name + "\n").encode())
import rosetta.training as train_mod, rosetta.checkpoint as ck
get = train_mod.get_backend
def get_backend(name):
    mark("import")
    be = get(name)
    compile_ = be.compile
    def compile(*a, **k):
        program = compile_(*a, **k)
        step = program.train_step
        calls = [0]
        def train_step(*a, **k):
            calls[0] += 1
            n = calls[0]
            mark({1: "compile", 3: "first-steps", 30: "steady"}.get(n, "step"))
            return step(*a, **k)
        program.train_step = train_step
        return program
    be.compile = compile
    return be
train_mod.get_backend = get_backend
save = ck.save
def save_marked(*a, **k):
    mark("save")
    return save(*a, **k)
ck.save = save_marked
sys.argv = ["rosetta"] + sys.argv[2:]
from rosetta.cli import main
sys.exit(main())
"""


@dataclass
class Result:
    backend: str
    point: str
    status: int | None
    seconds: float | None      # from SIGINT to exit (None: the point was never reached)
    stderr: str
    checkpoints: int
    problem: str               # "" when the run ended as it should

    @property
    def ok(self) -> bool:
        return not self.problem


def interrupt(backend: str, point: str, *, model: str = "cnn", steps: int = 400,
              delay: float | None = None, seed: int | None = None, python=sys.executable,
              workdir=None, twice: bool = False) -> Result:
    """One run of ``rosetta train MODEL --backend BACKEND``, interrupted at ``point`` (one of
    ``POINTS``) after ``delay`` seconds (default: random in [0, 0.3) s; 0 for ``save``);
    ``twice``: Ctrl-C pressed again 20 ms later."""
    rng = random.Random(seed)
    if delay is None:
        delay = 0.0 if point == "save" else rng.uniform(0.0, 0.3)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        run = Path(tmp) / "run"
        r, w = os.pipe()
        argv = [python, "-c", CHILD, str(w), "train", model, "--backend", backend,
                "--steps", str(steps), "--quiet", "--save", str(run), "--save-every", "5"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(argv, pass_fds=(w,), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, text=True)
        os.close(w)
        sent = None
        buf = b""
        deadline = time.monotonic() + 120
        while sent is None and time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(r, 4096)
            if not chunk:
                break
            buf += chunk
            if (point + "\n").encode() in buf:
                time.sleep(delay)
                proc.send_signal(signal.SIGINT)
                sent = time.monotonic()
                if twice:
                    time.sleep(0.02)
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGINT)
        os.close(r)
        if sent is None:
            proc.kill()
            _, err = proc.communicate()
            return Result(backend, point, proc.returncode, None, err, 0,
                          f"never reached {point!r} (status {proc.returncode}): {err[-500:]}")
        try:
            _, err = proc.communicate(timeout=30)
            seconds = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            seconds = None
        problems = []
        if seconds is None:
            problems.append("still running 30 s after SIGINT")
        elif seconds > LIMIT:
            problems.append(f"took {seconds:.2f} s to exit")
        if proc.returncode != 130:
            problems.append(f"exit status {proc.returncode}")
        if err.strip().splitlines() != ["rosetta: interrupted"]:
            problems.append(f"stderr is not one line: {err[-800:]!r}")
        count, bad = _check_checkpoints(run, python)
        if bad:
            problems.append(bad)
        return Result(backend, point, proc.returncode, seconds, err, count, "; ".join(problems))


def _check_checkpoints(run: Path, python) -> tuple[int, str]:
    """(number of checkpoints, "" or the first that does not load whole)."""
    steps = sorted(p for p in run.glob("step-*")) if run.is_dir() else []
    if not steps:
        return 0, ""
    code = ("import sys\nfrom rosetta import checkpoint\n"
            "for p in sys.argv[1:]:\n    checkpoint.load(p)\n")
    done = subprocess.run([python, "-c", code, *map(str, steps)], capture_output=True,
                          text=True)
    if done.returncode:
        return len(steps), f"a checkpoint is damaged: {done.stderr.strip()[-300:]}"
    return len(steps), ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="torch,tensorflow,jax")
    p.add_argument("--points", default=",".join(POINTS))
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--model", default="cnn")
    args = p.parse_args(argv)
    failed = 0
    for backend in args.backends.split(","):
        for point in args.points.split(","):
            ok, times = 0, []
            for i in range(args.repeat):
                res = interrupt(backend, point, model=args.model, seed=i)
                ok += res.ok
                if res.seconds is not None:
                    times.append(res.seconds)
                if not res.ok:
                    print(f"  {backend} {point} #{i}: {res.problem}", flush=True)
            failed += args.repeat - ok
            print(f"{backend:<11} {point:<12} {ok}/{args.repeat} ok, exit within "
                  f"{max(times) if times else float('nan'):.2f} s (worst)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
