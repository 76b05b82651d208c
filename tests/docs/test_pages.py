"""The documentation's text: the not-to-run budget, the README's length, no issue numbers or
dated lab notes, every page in the navigation. (The site itself is built by
``mkdocs build --strict`` in .ci/run.)"""

from __future__ import annotations

import re
from pathlib import Path

from markdown_blocks import DOCS, MAX_NORUN, TESTED_PAGES, blocks

ROOT = DOCS.parent


def test_norun_blocks_are_few_and_say_why():
    marked = [b for p in TESTED_PAGES for b in blocks(p) if "norun" in b.directives]
    assert len(marked) <= MAX_NORUN, [b.where for b in marked]
    for b in marked:
        assert b.directives["norun"].strip(), f"{b.where}: norun needs its reason"
        assert b.lang in ("python", "bash", "sh", "shell"), (
            f"{b.where}: only a block that would run can be marked norun")


def test_tested_pages_have_examples_that_run():
    for page in ("getting-started.md", "guide/checkpoints.md", "guide/data.md"):
        assert any(b.runnable and "norun" not in b.directives for b in blocks(page)), page


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n < 250, f"README.md has {n} lines; the detail belongs in docs/"


def _texts():
    yield ROOT / "README.md"
    yield from sorted(DOCS.rglob("*.md"))


def test_no_issue_numbers_or_dates():
    issue = re.compile(r"\(#\d+\)|\bissues? \d+\b|#1[0-9]\b")
    date = re.compile(r"\b20\d\d-\d\d-\d\d\b")
    for path in _texts():
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not issue.search(line), f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
            assert not date.search(line), f"{path.relative_to(ROOT)}:{i}: {line.strip()}"


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, re.M))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")
             if "figures" not in p.parts}
    assert pages == listed, {"not in the nav": sorted(pages - listed),
                             "missing file": sorted(listed - pages)}


def test_design_keeps_its_section_numbers():
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", text, re.M)]
    assert numbers == list(range(1, 15)), numbers
