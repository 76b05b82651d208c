"""MkDocs hook: the backend capability table is generated from what each backend's ``Backend``
class declares (``rosetta.backend_registry``; no framework is imported) and the op registry, so
the page cannot fall behind the code. A page asks for it with the line
``<!-- backend-capabilities -->``; ``<!-- capability: TITLE -->`` gives one row of it as a
table (``rosetta.capabilities.row_markdown``); ``<!-- keras-export-refusals -->`` gives the ops
the Keras export refuses, with each reason."""

from __future__ import annotations

import re

CAPABILITIES = "<!-- backend-capabilities -->"
KERAS_REFUSALS = "<!-- keras-export-refusals -->"
ROW = re.compile(r"<!-- capability: (.+?) -->")


def on_page_markdown(markdown, page, config, files):
    if CAPABILITIES in markdown:
        from rosetta.capabilities import markdown_table
        markdown = markdown.replace(CAPABILITIES, markdown_table())
    if ROW.search(markdown):
        from rosetta.capabilities import row_markdown
        markdown = ROW.sub(lambda m: row_markdown(m.group(1).strip()), markdown)
    if KERAS_REFUSALS in markdown:
        from rosetta.backends.keras.model import refusals_markdown
        markdown = markdown.replace(KERAS_REFUSALS, refusals_markdown())
    return markdown
