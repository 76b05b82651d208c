"""The fenced code blocks of a Markdown page, with the directives written before them.

A directive is an HTML comment on the lines just above a block (blank lines between allowed):

- ``<!-- norun: REASON -->``: the block is shown, not run; the reason is required.
- ``<!-- file: NAME -->``: the block's text is written to NAME in the page's folder (a spec file
  a later command reads), not run.
- ``<!-- expect-exit: N -->``: a command block that must exit with status N (bad input, 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: the pages whose examples run: getting started and the user guide
TESTED_PAGES = ["getting-started.md"] + sorted(
    str(p.relative_to(DOCS)) for p in (DOCS / "guide").glob("*.md"))

#: at most this many blocks of the tested pages may be marked not to run
MAX_NORUN = 6

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
_DIRECTIVE = re.compile(r"^<!--\s*([\w-]+)\s*:\s*(.*?)\s*-->$")
DIRECTIVES = ("norun", "file", "expect-exit")


@dataclass
class Block:
    page: str
    line: int           # 1-based line of the opening fence
    lang: str
    code: str
    directives: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    def commands(self) -> list[str]:
        """A shell block's commands: continuation lines joined, comments and blanks dropped."""
        text = re.sub(r"\\\n\s*", " ", self.code)
        out = []
        for ln in text.splitlines():
            ln = ln.strip()
            if ln and not ln.startswith("#"):
                out.append(ln)
        return out

    @property
    def runnable(self) -> bool:
        """Python blocks run; shell blocks run when their first word is ``rosetta``."""
        if "file" in self.directives:
            return False
        if self.lang == "python":
            return True
        if self.lang in ("bash", "sh", "shell"):
            cmds = self.commands()
            return bool(cmds) and cmds[0].split()[0] == "rosetta"
        return False


def blocks(page: str) -> list[Block]:
    text = (DOCS / page).read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        directives = {}
        i = line - 2
        while i >= 0 and (not lines[i].strip() or _DIRECTIVE.match(lines[i].strip())):
            d = _DIRECTIVE.match(lines[i].strip())
            if d:
                key, value = d.groups()
                if key not in DIRECTIVES:
                    raise ValueError(f"docs/{page}:{i + 1}: unknown directive {key!r}; "
                                     f"known: {', '.join(DIRECTIVES)}")
                directives[key] = value
            i -= 1
        found.append(Block(page, line, m.group(1).lower(), m.group(2), directives))
    return found
