"""MkDocs hook: the ``--shard-params`` table is generated from each backend's declaration
(``Backend.shard_params`` / ``shard_params_refusal``; ``rosetta.distributed.shard_params_table``),
so the page cannot fall behind the code. A page asks for it with the line
``<!-- shard-params -->``."""

from __future__ import annotations

MARKER = "<!-- shard-params -->"


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        from rosetta.distributed import shard_params_table
        return markdown.replace(MARKER, shard_params_table())
    return markdown
