"""Rich HTML for notebooks: what Jupyter shows for a spec, a graph, a run record, a checkpoint
and a conformance scoreboard (their ``_repr_html_`` delegate here).

NumPy and the standard library only; matplotlib is imported where a loss curve is drawn (its Agg
canvas on a ``matplotlib.figure.Figure``: pyplot and the notebook's own backend are left alone),
and without matplotlib the HTML says so instead of the picture. No framework is imported, and
nothing here imports ``rosetta.conformance``: a scoreboard is any list of results, each a
``Result`` (``to_json()``) or its JSON dict. Every piece of text is escaped with ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np

_PASS, _FAIL = "#d9f2d9", "#f8d7d7"
_TABLE = 'style="border-collapse:collapse;margin:4px 0"'
_CELL = 'style="padding:1px 8px;text-align:{}"'


def _e(x) -> str:
    return html.escape(str(x))


def _num(v) -> str:
    """An integer with thousands separators, a float in 4 significant digits (tiny or huge ones
    in exponent form), anything else as text."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v) or v == 0:
            return str(v)
        return f"{v:.3e}" if abs(v) < 1e-3 or abs(v) >= 1e6 else f"{v:.4g}"
    return str(v)


def _table(headers, rows, *, row_styles=None, footer=None) -> str:
    """An HTML table (``headers`` None: no header row); cells are escaped here, numbers
    right-aligned."""
    def cell(tag, v):
        align = "right" if isinstance(v, (int, float, np.integer, np.floating)) \
            and not isinstance(v, bool) else "left"
        return f"<{tag} {_CELL.format(align)}>{_e(_num(v))}</{tag}>"

    head = "" if headers is None else \
        f"<thead><tr>{''.join(cell('th', h) for h in headers)}</tr></thead>"
    body = []
    for i, row in enumerate(rows):
        style = f' style="background:{row_styles[i]}"' if row_styles and row_styles[i] else ""
        body.append(f"<tr{style}>{''.join(cell('td', v) for v in row)}</tr>")
    if footer is not None:
        body.append(f"<tr style=\"font-weight:bold\">{''.join(cell('td', v) for v in footer)}"
                    f"</tr>")
    return f"<table {_TABLE}>{head}<tbody>{''.join(body)}</tbody></table>"


def _fields(pairs) -> str:
    """A two-column table of (name, value) without a header; pairs whose value is None or ""
    are left out."""
    return _table(None, [(k, v) for k, v in pairs if v is not None and v != ""])


def _call(name, args: dict) -> str:
    """``name(k=v, ...)``: a loss, optimizer or schedule from its JSON."""
    inner = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                      for k, v in args.items())
    return f"{name}({inner})"


# --- loss curves -------------------------------------------------------------------------------
def loss_curve_png(losses, start: int = 0, title: str = "training loss") -> bytes | None:
    """The loss per update as PNG bytes (update ``start`` first), or None when there is nothing
    to draw or matplotlib is not installed. Drawn on matplotlib's Agg canvas without pyplot, so
    a notebook's ``%matplotlib`` backend is not touched."""
    y = np.asarray(list(losses or []), dtype=np.float64)
    if y.size == 0:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    fig = Figure(figsize=(4.8, 2.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(start, start + y.size)
    ax.plot(x, y, marker="." if y.size <= 50 else None, linewidth=1.4)
    finite = y[np.isfinite(y)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("update")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _curve(losses, start=0, title="training loss") -> str:
    if not losses:
        return ""
    png = loss_curve_png(losses, start, title)
    if png is None:
        return "<p><i>(install matplotlib to see the loss curve)</i></p>"
    return (f'<img alt="{_e(title)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}">')


# --- spec and graph ----------------------------------------------------------------------------
def _count(defs: dict) -> int:
    return int(sum(int(np.prod(d.shape)) for d in defs.values()))


def graph_html(graph) -> str:
    """The layer table of a ``Graph``: node name, op, inputs, per-example output shape and
    trainable parameter count per node, with the total (non-trainable state counted apart)."""
    rows = [(i.name, "Input" if i.kind == "float" else "Input (int)", "", str(i.shape), 0)
            for i in graph.inputs]
    for n in graph.nodes:
        name = n.name + (" (output)" if n.name in graph.outputs else "")
        rows.append((name, n.op, ", ".join(n.inputs), str(n.out_type.shape), _count(n.params)))
    total = graph.param_count()
    state = _count(graph.state_defs())
    note = f" + {state:,} state" if state else ""
    head = (f"<p><b>{_e(graph.name)}</b>: {total:,} parameters{_e(note)}, "
            f"{graph.flops_per_example():,} FLOPs per example</p>")
    return head + _table(("node", "op", "inputs", "output shape", "parameters"), rows,
                         footer=("total", "", "", "", total))


def schedule_text(schedule) -> str:
    """``0.001 (constant)`` or ``warmup_cosine(peak=..., ...)``."""
    d = dict(schedule.to_json())
    kind = d.pop("schedule", type(schedule).__name__)
    if kind == "constant" and set(d) == {"value"}:
        return f"{_num(d['value'])} (constant)"
    return _call(kind, d)


def optimizer_text(optimizer) -> str:
    d = dict(optimizer.to_json())
    name = d.pop("name", type(optimizer).__name__)
    d.pop("learning_rate", None)
    return _call(name, d) + ", learning rate " + schedule_text(optimizer.learning_rate)


def loss_text(loss) -> str:
    d = dict(loss.to_json())
    return _call(d.pop("name", type(loss).__name__), d)


def _shapes(a) -> str:
    if isinstance(a, dict):
        return "{" + ", ".join(f"{k}: {_shapes(v)}" for k, v in a.items()) + "}"
    return str(tuple(np.shape(a)))


def data_text(data) -> str:
    """Where a ``DataSpec`` reads from, and its batch size."""
    if data.source == "path":
        where = (f"file {data.path} (label {data.label!r}, test fraction {data.test_fraction}, "
                 f"seed {data.seed})")
    elif data.source == "arrays":
        held = (f"test fraction {data.test_fraction}, seed {data.seed}")
        if data.arrays is None:
            where = f"in-memory arrays (not stored in JSON; {held})"
        else:
            x, y = data.arrays[:2]
            where = f"in-memory arrays x {_shapes(x)}, y {_shapes(y)} ({held})"
    else:
        where = f"built-in dataset {data.dataset!r}" + (f" {data.args}" if data.args else "")
    return f"{where}, batch size {data.batch_size}"


def spec_html(spec) -> str:
    """A ``TrainSpec``: the layer table, then loss, optimizer (with its schedule), data, steps
    and seed."""
    fields = _fields([("loss", loss_text(spec.loss)),
                      ("optimizer", optimizer_text(spec.optimizer)),
                      ("data", data_text(spec.data)), ("steps", spec.steps),
                      ("seed", spec.seed), ("description", spec.description.strip())])
    return f"<div>{graph_html(spec.model)}{fields}</div>"


# --- run records -------------------------------------------------------------------------------
class RunRecord(dict):
    """The run record ``rosetta.training.train`` returns: a plain dict in every way (``rec["losses"]``,
    ``rec.pop("program")``, ``json.dumps(rec)``), which a notebook shows as a table and the loss
    curve."""

    def _repr_html_(self) -> str:
        return record_html(self)


def record_html(rec: dict) -> str:
    """Backend, mode, framework, device, dtype, steps, final loss, held-out metrics, time, the
    checkpoint written, and the loss curve (an inline base64 PNG)."""
    start = rec.get("start_step") or 0
    steps = rec.get("steps")
    if steps is not None and start:
        steps = f"{steps} (updates {start}..{start + steps})"
    metrics = rec.get("metrics") or {}
    seconds = rec.get("seconds")
    fields = _fields([
        ("model", rec.get("model")), ("backend", rec.get("backend")), ("mode", rec.get("mode")),
        ("framework", rec.get("framework")), ("device", rec.get("device")),
        ("dtype", rec.get("dtype")), ("steps", steps), ("batch size", rec.get("batch_size")),
        ("seed", rec.get("seed")), ("final loss", rec.get("final_loss")),
        *((f"held-out {k}", v) for k, v in metrics.items()),
        ("seconds", None if seconds is None else round(float(seconds), 2)),
        ("resumed from", rec.get("resumed_from")), ("checkpoint", rec.get("saved")),
    ])
    title = " ".join(str(x) for x in (rec.get("model"), "on", rec.get("backend"),
                                      rec.get("dtype")) if x is not None)
    sample = rec.get("sample")
    sample = f"<pre>{_e(sample)}</pre>" if sample else ""
    return (f"<div><p><b>{_e(title)}</b></p><div style=\"display:flex;gap:16px;"
            f"align-items:flex-start;flex-wrap:wrap\">{fields}"
            f"{_curve(rec.get('losses'), start, 'training loss: ' + title)}</div>{sample}</div>")


# --- checkpoints -------------------------------------------------------------------------------
def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # not reached


def checkpoint_html(ck) -> str:
    """A ``Checkpoint``: path, model, update count, dtype, the backend that wrote it, metrics,
    a table of its tensor files (tensors, elements, bytes) and the loss curve of the whole run
    (``record["losses"]``)."""
    rec = ck.record
    metrics = rec.get("metrics") or {}
    data = rec.get("data") or {}
    fields = _fields([
        ("path", str(ck.path)), ("model", rec.get("model")), ("updates", rec.get("step")),
        ("dtype", rec.get("dtype")), ("written by", rec.get("backend")),
        ("mode", rec.get("mode")), ("framework", rec.get("framework")),
        ("data position", f"epoch {data['epoch']}, batch {data['batch']}"
         if "epoch" in data and "batch" in data else None),
        *((f"held-out {k}", v) for k, v in metrics.items()),
        ("created", rec.get("created")),
    ])
    rows = []
    for name in ("params", "state", "optimizer", "rng"):
        tensors = getattr(ck, name, None) or {}
        arrays = [np.asarray(v) for v in tensors.values()]
        rows.append((f"{name}.safetensors", len(arrays), int(sum(a.size for a in arrays)),
                     _size(int(sum(a.nbytes for a in arrays)))))
    tensors = _table(("file", "tensors", "elements", "size"), rows)
    title = f"checkpoint of {rec.get('model', '')} after {rec.get('step', '?')} updates"
    return (f"<div><p><b>{_e(title)}</b></p><div style=\"display:flex;gap:16px;"
            f"align-items:flex-start;flex-wrap:wrap\"><div>{fields}{tensors}</div>"
            f"{_curve(rec.get('losses'), 0, 'loss per update')}</div></div>")


# --- conformance scoreboard --------------------------------------------------------------------
def _as_dict(r) -> dict:
    return r.to_json() if hasattr(r, "to_json") else dict(r)


def _err(v):
    """A worst error: a float, or the string a non-finite one became in JSON."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def scoreboard_html(results) -> str:
    """One row per comparison: model, the two sides, tier, dtype, worst absolute and relative
    error, the tolerance, where the worst element is, and PASS (green) or FAIL (red)."""
    rows, styles = [], []
    for r in results:
        d = _as_dict(r)
        where = d.get("where", "")
        if d.get("note"):
            where = f"{where} ({d['note']})" if where else d["note"]
        rows.append((d.get("model", ""), f"{d.get('backend_a', '')} vs {d.get('backend_b', '')}",
                     d.get("tier", ""), d.get("dtype", ""), _err(d.get("worst_abs")),
                     _err(d.get("worst_rel")), _err(d.get("tolerance")), where,
                     "PASS" if d.get("passed") else "FAIL"))
        styles.append(_PASS if d.get("passed") else _FAIL)
    passed = sum(s == _PASS for s in styles)
    head = (f"<p><b>conformance</b>: {len(rows)} comparisons, {passed} passed, "
            f"{len(rows) - passed} failed</p>")
    return head + _table(("model", "backends", "tier", "dtype", "worst abs", "worst rel",
                          "tolerance", "where", "result"), rows, row_styles=styles)
