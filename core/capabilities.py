"""The capability table: what each registered backend can do, read from what its ``Backend``
class declares (``rosetta.backend.Backend``; no framework is imported).
One source for the docs page (docs/reference/backends.md, through docs/hooks/capabilities.py)
and for ``rosetta backends --capabilities``; a capability a backend lacks is refused in one line
by the code that reads the same attribute, so the table and the refusal cannot disagree."""

from __future__ import annotations

import inspect

from rosetta import distributed
from rosetta.backend_registry import backend_class, backend_names
from rosetta.errors import BackendUnavailable


def _engine(cls) -> str:
    """Several devices: the first sentence of the engine's own docstring, or the refusal."""
    if cls.engine is None:
        return "no: one device only (`--devices N` is refused)"
    doc = " ".join(inspect.getdoc(cls.engine).split())
    first = doc.split(". ")[0].rstrip(".")
    return "yes: " + (first[0].lower() + first[1:] if first[1:2].islower() else first)


def _parallel_precisions(cls) -> str:
    """The precision policies of the data-parallel step (``Engine.precisions``)."""
    engine = cls.engine
    if engine is None:
        return "no: one device only"
    if engine.precisions is None:
        return "every policy of one device"
    return (", ".join(f"`{p}`" for p in engine.precisions)
            + f"; the others refused: {engine.precision_refusal}")


def _hosts(cls) -> str:
    """Several hosts: whether the engine writes a host's launch command."""
    engine = cls.engine
    if engine is None:
        return "no"
    own = type(engine).host_command is not distributed.Engine.host_command
    return ("yes: each host runs its own command through the engine's launcher "
            "(docs/guide/distributed.md)" if own else "no")


# (row title, how to read it from a Backend class): one place for the rows
ROWS = (
    ("framework packages", lambda c: ", ".join(f"`{m}`" for m in c.requires) or "none"),
    ("installed with", lambda c: (f"its own environment: {c.own_environment}"
                                  if c.own_environment else f"`pip install 'rosetta-ml[{c.extra or c.name}]'`")),
    ("step modes (default first)", lambda c: ", ".join(f"`{m}`" for m in c.modes) or "one"),
    ("precision policies", lambda c: ", ".join(f"`{p}`" for p in c.precisions)),
    ("export formats", lambda c: "; ".join(f"`{name}` ({', '.join(f.dtypes)}): {f.description}"
                                           for name, f in c.formats.items()) or "none"),
    ("several devices", _engine),
    ("precision policies on several devices", _parallel_precisions),
    ("several hosts", _hosts),
    ("sharded parameters (`--shard-params`)",
     lambda c: c.shard_params if c.shard_params is not None
     else f"refused: {c.shard_params_refusal}"),
)


def table() -> dict[str, dict[str, str]]:
    """{backend name: {row title: text}} for every backend the entry points register; a backend
    whose package does not load has the one line saying why in each row."""
    out = {}
    for name in backend_names():
        try:
            cls = backend_class(name)
        except BackendUnavailable as e:
            out[name] = {title: str(e) for title, _ in ROWS}
            continue
        out[name] = {title: read(cls) for title, read in ROWS}
    return out


def markdown_table() -> str:
    """The table as Markdown: one column per backend, one row per capability."""
    cells = table()
    names = list(cells)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for title, _ in ROWS:
        row = [cells[n][title].replace("|", "/") for n in names]
        lines.append(f"| {title} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def row_markdown(title: str) -> str:
    """One capability as a two-column table (backend, what it does), for the guide page of that
    feature (``<!-- capability: TITLE -->``; TITLE is a row title of ``ROWS``, up to its first
    parenthesis is enough)."""
    titles = [t for t, _ in ROWS if t == title or t.split(" (")[0] == title]
    if len(titles) != 1:
        raise KeyError(f"no capability row {title!r}; rows: {', '.join(t for t, _ in ROWS)}")
    cells = table()
    lines = [f"| backend | {titles[0]} |", "|---|---|"]
    lines += [f"| {name} | {rows[titles[0]].replace('|', '/')} |" for name, rows in cells.items()]
    return "\n".join(lines)


__all__ = ["ROWS", "table", "markdown_table", "row_markdown"]
