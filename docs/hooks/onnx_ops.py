"""MkDocs hook: the ONNX supported-op table is generated from the importer's mapping table
(``rosetta.importers.onnx_ops.ONNX_OPS``), so the page cannot fall behind the code. A page asks
for it with the line ``<!-- onnx-ops -->``."""

from __future__ import annotations

MARKER = "<!-- onnx-ops -->"


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        from rosetta.importers.onnx_ops import markdown_table
        return markdown.replace(MARKER, markdown_table())
    return markdown
