"""Conformance reports: a terminal table, JSON (the scoreboard), Markdown, HTML and PNG plots."""

from __future__ import annotations

import html
import platform
from pathlib import Path

import numpy as np

from rosetta.files import dumps_json, save_figure, write_text


def _fmt(v):
    if v is None:
        return "-"
    return f"{v:.2e}" if isinstance(v, float) and np.isfinite(v) else str(v)


# noise: the float32 tier's measured rounding noise at the worst element, relative like worst_rel
# and tolerance (conformance/noise.py); "-" in the other tiers
COLUMNS = ("model", "backend_a", "backend_b", "tier", "dtype", "worst_rel", "worst_abs",
           "tolerance", "noise", "passed", "where")
NUMBERS = ("worst_rel", "worst_abs", "tolerance", "noise")


def table(results) -> str:
    rows = [[str(c) for c in COLUMNS]]
    for r in results:
        d = r.to_json() if hasattr(r, "to_json") else r
        rows.append([("PASS" if d["passed"] else "FAIL") if c == "passed" else
                     _fmt(d.get(c)) if c in NUMBERS else str(d[c])[:70] for c in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        d = r.to_json() if hasattr(r, "to_json") else r
        if not d["passed"]:
            lines.append(f"FAIL {d['model']} {d['backend_a']} vs {d['backend_b']} "
                         f"({d['tier']}): {d['where']} {d.get('note', '')}".rstrip())
    return "\n".join(lines)


def environment() -> dict:
    import importlib.metadata as md

    from rosetta.backend_registry import backend_classes

    env = {"python": platform.python_version(), "machine": platform.machine()}
    packages = ["numpy"] + [d for cls in backend_classes().values() for d in cls.distributions]
    for pkg in packages:
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return env


def to_json(results, extra: dict | None = None) -> dict:
    rows = [r.to_json() if hasattr(r, "to_json") else r for r in results]
    return {"format": "rosetta/conformance/1", "environment": environment(),
            "passed": all(r["passed"] for r in rows), "results": rows, **(extra or {})}


def markdown(results) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    sep = "|" + "---|" * len(COLUMNS)
    body = []
    for r in results:
        d = r.to_json() if hasattr(r, "to_json") else r
        cells = [("pass" if d[c] else "**FAIL**") if c == "passed" else
                 _fmt(d.get(c)) if c in NUMBERS else
                 str(d[c]).replace("|", "\\|") for c in COLUMNS]
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body]) + "\n"


def html_table(results) -> str:
    """The scoreboard as an HTML fragment: one row per comparison (model, the two sides, tier,
    dtype, worst absolute and relative error, tolerance, where), PASS rows green and FAIL rows
    red (``rosetta.display.scoreboard_html``)."""
    from rosetta.display import scoreboard_html

    return scoreboard_html(results)


def html_report(results, title="rosetta conformance") -> str:
    """A standalone HTML page around ``html_table``."""
    title = html.escape(title)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1>{html_table(results)}</body></html>\n")


class Scoreboard(list):
    """Conformance results (``suite.Result`` objects or their JSON dicts) as a list, which a
    notebook shows as the coloured scoreboard table and IPython prints as the terminal table::

        results, trajectories = suite.run(spec, ["torch", "jax"], steps=3)
        Scoreboard(results)          # in a notebook cell

    It is a list in every other way: index it, iterate it, pass it to ``table``, ``to_json``,
    ``markdown`` or ``write``."""

    @property
    def passed(self) -> bool:
        return all((r.to_json() if hasattr(r, "to_json") else r)["passed"] for r in self)

    def table(self) -> str:
        return table(self)

    def to_json(self, extra: dict | None = None) -> dict:
        return to_json(self, extra)

    def _repr_html_(self) -> str:
        return html_table(self)

    def _repr_pretty_(self, p, cycle):
        p.text(table(self))


def write(path, results, extra=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".json":
        write_text(path, dumps_json(to_json(results, extra), indent=1))
    elif suffix == ".md":
        write_text(path, markdown(results))
    elif suffix in (".html", ".htm"):
        write_text(path, html_report(results))
    else:
        raise ValueError(f"report format from the suffix: .json, .md or .html, found {path.name!r}")
    return path


def plot(path, trajectories: dict, results) -> Path:
    """One row per (model, dtype): loss per step for each backend (distinct line styles, since
    agreeing curves lie on top of each other) and the worst relative gap per step for each pair,
    with the tier's bound dashed. ``trajectories`` maps (model, dtype) to trajectories."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(trajectories)
    rows = max(1, len(keys))
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.0 * rows), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for i, (model, dtype) in enumerate(keys):
        ax = axes[i][0]
        for j, t in enumerate(trajectories[(model, dtype)]):
            ax.plot(t.loss, styles[j % len(styles)], label=t.label, linewidth=1.6)
        ax.set_title(f"{model} ({dtype}): loss per step")
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
        ax = axes[i][1]
        for r in results:
            d = r.to_json() if hasattr(r, "to_json") else r
            if d["model"] == model and d["dtype"] == dtype and d.get("drift"):
                gaps = np.maximum(np.array(d["drift"], dtype=float), 1e-18)
                ax.semilogy(gaps, marker=".", label=f"{d['backend_a']} vs {d['backend_b']}")
                ax.axhline(d["tolerance"], color="gray", linestyle="--", linewidth=0.8)
        ax.set_title(f"{model} ({dtype}): worst relative gap per step (bound dashed)")
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    return finish_figure(fig, path, dpi=100)


def finish_figure(fig, path, dpi: int) -> Path:
    """Lay out ``fig``, write it to ``path`` (atomically, its folder made) and close it: the end
    of every plot rosetta draws."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=dpi)
    plt.close(fig)
    return path
