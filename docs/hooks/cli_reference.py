"""MkDocs hook: the command-line reference is generated from the parser itself, so the page
lists every option of every command as ``rosetta COMMAND --help`` prints it and cannot fall
behind the code. A page asks for it with the line ``<!-- cli-reference -->``."""

from __future__ import annotations

import os

MARKER = "<!-- cli-reference -->"


def reference() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width
    from rosetta.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    parts = [f"## rosetta\n\n```text\n{parser.format_help().strip()}\n```\n"]
    for name, sub in commands.choices.items():
        parts.append(f"## rosetta {name}\n\n```text\n{sub.format_help().strip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, reference())
    return markdown
