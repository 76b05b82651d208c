"""Ctrl-C that always works: the ``rosetta`` process ends within ``GRACE`` seconds of SIGINT
with exit status 130 and one line, whatever it was doing.

Python's own SIGINT handling is not enough with the frameworks loaded:

* a Python signal handler runs only between bytecodes of the main thread, so while a C++ call
  holds the thread (an XLA compile, a TensorFlow trace, a long kernel) nothing happens;
* a ``KeyboardInterrupt`` raised inside a garbage-collection callback (JAX installs one) is
  "ignored": printed as a traceback, and the run goes on;
* unwinding through the frameworks and then tearing the interpreter down can crash (SIGSEGV)
  after "interrupted" was printed.

So ``install()`` (called once by the ``rosetta`` command, in the main thread) arranges three
things:

1. the SIGINT handler raises ``KeyboardInterrupt``, so ``finally`` blocks run as usual (a
   checkpoint being written is removed whole: ``rosetta.files``); the command catches it and
   calls ``stop()``;
2. ``signal.set_wakeup_fd`` makes the C-level handler write the signal number to a pipe the
   moment the signal arrives, even while the main thread is inside C++; a watchdog thread blocked
   on that pipe wakes, waits ``GRACE`` seconds for the normal path, then calls ``stop()`` itself;
3. a ``KeyboardInterrupt`` that reaches ``sys.unraisablehook`` (swallowed by a callback) calls
   ``stop()`` at once instead of being printed and lost.

``stop()`` writes "rosetta: interrupted" to standard error once and ends the process with
``os._exit(130)``: no interpreter teardown (the frameworks' atexit hooks and destructors are what
crash), nothing swallowed. Files are never left half-written: every file rosetta writes is
written to a temporary and renamed (``rosetta.files``), so the last checkpoint is whole, and the
temporaries of a killed process are removed by the next write into that folder.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

GRACE = 0.5          # seconds the normal path gets before the watchdog ends the process
STATUS = 130         # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C
MESSAGE = "rosetta: interrupted"

_installed = False
_stopping = threading.Lock()
_requested = threading.Event()


def requested() -> bool:
    """Whether a SIGINT reached this process since ``install()``: whatever then ends the
    command (a framework may turn the ``KeyboardInterrupt`` into an error of its own) ends it
    as an interrupt."""
    return _requested.is_set()


def stop() -> None:
    """End the process now: one line on standard error, exit status 130. Safe to call from
    any thread, any number of times (the first call wins; the others wait for the exit)."""
    if not _stopping.acquire(blocking=False):
        threading.Event().wait()   # another thread is ending the process
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001  a closed or broken stream must not stop the exit
            pass
    try:
        os.write(2, (MESSAGE + "\n").encode())
    except OSError:
        pass
    os._exit(STATUS)


def _on_sigint(signum, frame):
    """The first SIGINT raises ``KeyboardInterrupt``; a second one (Ctrl-C pressed again) is
    ignored: the first is being handled, and the watchdog ends the process within ``GRACE``."""
    if _requested.is_set():
        return
    _requested.set()
    raise KeyboardInterrupt


def _watch(fd: int) -> None:
    """The watchdog: block on the wakeup pipe; after a SIGINT, give the main thread ``GRACE``
    seconds to unwind and stop, then stop the process from here."""
    while True:
        try:
            data = os.read(fd, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        if signal.SIGINT in data:
            _requested.set()
            threading.Event().wait(GRACE)
            stop()


def _unraisable(previous):
    def hook(info):
        if isinstance(info.exc_value, KeyboardInterrupt) or info.exc_type is KeyboardInterrupt:
            stop()
        previous(info)
    return hook


def install() -> bool:
    """Install the handling above in this process (idempotent). Only from the main thread of
    a process that ``rosetta`` owns (the command line): it ends the process on Ctrl-C. Returns
    whether it is installed."""
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.signal(signal.SIGINT, _on_sigint)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(r,), name="rosetta-interrupt-watchdog",
                     daemon=True).start()
    sys.unraisablehook = _unraisable(sys.unraisablehook)
    _installed = True
    return True
