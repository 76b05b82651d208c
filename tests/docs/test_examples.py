"""The examples of the getting-started and user-guide pages run as written, so the docs cannot
rot: each page's blocks run in order in a fresh folder of its own (a later block reads what an
earlier one wrote); Python blocks share one namespace per page; a shell block whose first word
is ``rosetta`` runs each of its commands through the ``rosetta`` entry point
(``rosetta.cli.main``, in this process: the frameworks load once, not once a command) and must
exit 0, or the status its ``expect-exit`` directive names, under the command line's contract
(tests/cli_run.py: no traceback, bad input one line). A command may send its standard output to
a file with ``> FILE``; other shell syntax is refused. See markdown_blocks.py for the directives.
"""

from __future__ import annotations

import shlex

import pytest

from cli_run import check_contract, run_cli
from markdown_blocks import TESTED_PAGES, blocks

_SHELL = {"|", "||", "&&", ";", "<", "2>", ">>", "&"}


def _run_shell(block) -> None:
    want = int(block.directives.get("expect-exit", 0))
    for command in block.commands():
        words = shlex.split(command, comments=True)
        assert words[0] == "rosetta", (f"{block.where}: a block that runs holds only rosetta "
                                       f"commands; move {command!r} into a block of its own")
        out = None
        if ">" in words:
            i = words.index(">")
            assert i == len(words) - 2, f"{block.where}: '> FILE' ends a command: {command!r}"
            words, out = words[:i], words[i + 1]
        bad = _SHELL.intersection(words)
        assert not bad, f"{block.where}: shell syntax {sorted(bad)} in {command!r}"
        outcome = run_cli(words[1:])
        check_contract(outcome)
        assert outcome.status == want, (f"{block.where}: exit {outcome.status}, expected "
                                        f"{want}: {command}\n{outcome}")
        if out is not None:
            with open(out, "w", encoding="utf-8") as f:
                f.write(outcome.out)


@pytest.mark.parametrize("page", TESTED_PAGES)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROSETTA_CACHE_DIR", str(tmp_path / ".cache"))
    namespace = {"__name__": "__docs__"}
    for block in blocks(page):
        if "file" in block.directives:
            (tmp_path / block.directives["file"]).write_text(block.code)
        elif "norun" in block.directives or not block.runnable:
            continue
        elif block.lang == "python":
            try:
                exec(compile(block.code, block.where, "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"{block.where}: {type(e).__name__}: {e}\n{block.code}") from e
        else:
            _run_shell(block)
