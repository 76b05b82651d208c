"""``rosetta bench`` reports: a terminal table, JSON (``results`` + environment), Markdown and a
PNG bar chart of step times with the arithmetic floor marked."""

from __future__ import annotations

from pathlib import Path

from rosetta.conformance.report import finish_figure
from rosetta.files import dumps_json, write_text

FORMAT = "rosetta/bench/1"

# (header, key, format) of the table columns
COLUMNS = (
    ("model", "model", "{}"),
    ("backend", "backend", "{}"),
    ("mode", "mode", "{}"),
    ("best", "best", "{}"),
    ("compile s", "compile_seconds", "{:.2f}"),
    ("step ms", "step_ms_median", "{:.3f}"),
    ("IQR ms", "step_ms_iqr", "{:.3f}"),
    ("samples/s", "samples_per_second", "{:,.0f}"),
    ("GFLOP/s", "gflops", "{:.2f}"),
    ("% peak", "peak_fraction", "{:.1%}"),
    ("mem MB", "peak_memory_mb", "{:.0f}"),
    ("native ms", "native_step_ms", "{:.3f}"),
    ("native compile s", "native_compile_seconds", "{:.2f}"),
    ("ratio", "overhead_ratio", "{:.3f}"),
)
KERAS_COLUMNS = (("keras ms", "keras_step_ms", "{:.3f}"),)
# under a low precision (``--precision``): rosetta's float32 step, the speed-up of the low
# precision over it, and the loss check against the hand-written code after one update
PRECISION_COLUMNS = (("float32 ms", "float32_step_ms", "{:.3f}"),
                     ("f32/low", "float32_speedup", "{:.2f}"),
                     ("loss gap", "loss_gap_step", "{:.1e}"),
                     ("bound", "loss_bound", "{:.1e}"))


def columns(rows):
    """The columns, with Keras's when a row has it, and the precision's under a low one."""
    return (COLUMNS + (KERAS_COLUMNS if any("keras_step_ms" in r or "keras_error" in r
                                            for r in rows) else ())
            + (PRECISION_COLUMNS if any("float32_step_ms" in r for r in rows) else ()))


def _cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if key == "float32_speedup" and row.get("float32_step_ms"):
        v = row["float32_step_ms"] / row["step_ms_median"]
    if key == "best":
        return "*" if v else ""
    if v is None:
        return "-"
    return fmt.format(v)


def _cells(rows) -> list[list[str]]:
    return [[_cell(r, key, fmt) for _, key, fmt in columns(rows)] for r in rows]


def table(rows, env: dict | None = None, skipped=(), refused=()) -> str:
    head = [h for h, _, _ in columns(rows)]
    body = _cells(rows)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    right = {i for i, (_, key, _) in enumerate(columns(rows))
             if key not in ("model", "backend", "mode", "best")}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(head), line(["-" * w for w in widths]), *map(line, body)]
    lines.append(footnote(rows, env, skipped, refused))
    return "\n".join(lines)


def footnote(rows, env: dict | None, skipped=(), refused=()) -> str:
    """The table's notes: the device and peak, the floors, what the columns mean, the Keras
    errors, the cases a backend refused (``refused``: {model, backend, mode, refused} with its
    one line) and the zoo models not timed (``skipped``: (model, why) pairs) with the reason."""
    parts = []
    if env:
        parts.append(f"device: {env.get('device')}; float32 matmul peak "
                     f"{env.get('matmul_peak_gflops', 0):.1f} GFLOP/s ({env.get('matmul_peak')})")
        if env.get("host_memory"):
            parts.append(f"host memory: {env['host_memory']}")
    floors = {}
    for r in rows:
        if r.get("floor_ms") is not None:
            floors[(r["model"], r["batch_size"])] = r["floor_ms"]
    if floors:
        parts.append("arithmetic floor (3 x forward FLOPs / peak): " + ", ".join(
            f"{m} (batch {b}) {ms:.3f} ms" for (m, b), ms in floors.items()))
    parts.append("step ms: median over the timed steps, synchronised; native: the hand-written "
                 "baseline, timed alternating with rosetta; ratio: median over paired blocks of "
                 "rosetta / native; best (*): the fastest mode of each backend")
    dtypes = {r.get("dtype") for r in rows}
    if any("float32_step_ms" in r for r in rows):
        parts.append(f"precision {', '.join(sorted(map(str, dtypes)))}: native is the "
                     "framework's own hand-written mixed-precision code; float32 ms: rosetta's "
                     "float32 step in the same blocks; f32/low: float32 ms / step ms (> 1: the "
                     "low precision is faster); loss gap: |rosetta - native| / |native| of the "
                     "loss after one update, held to bound (8 unit roundoffs of the low type)")
        bad = [f"{r['model']} {r['backend']}/{r['mode']}" for r in rows
               if r.get("loss_gap_step") is not None and r["loss_gap_step"] > r["loss_bound"]]
        if bad:
            parts.append(f"LOSS CHECK FAILED (gap above the bound): {', '.join(bad)}")
    if any("keras_step_ms" in r or "keras_error" in r for r in rows):
        policies = sorted({r["keras_policy"] for r in rows if r.get("keras_policy")})
        parts.append("keras ms: Keras 3 train_on_batch on the row's backend, Keras's default "
                     "compile (XLA on jax and tensorflow, eager on torch), in its own process"
                     + (f", under Keras's dtype policy {', '.join(policies)} (Keras's own "
                        f"per-layer rules)" if policies and policies != ["float32"] else ""))
        errors = {(r["model"], r["backend"]): r["keras_error"] for r in rows
                  if r.get("keras_error")}
        parts += [f"keras on {b} ({m}): {e}" for (m, b), e in errors.items()]
    parts += [f"{r['model']} on {r['backend']}/{r['mode']}: {r['refused']}"
              for r in refused]
    reasons: dict = {}
    for model, why in skipped:
        reasons.setdefault(why, []).append(model)
    parts += [f"not timed, no hand-written baseline: {', '.join(ms)} ({why})"
              for why, ms in reasons.items()]
    return "\n".join(parts)


def markdown(rows, env: dict | None = None, skipped=(), refused=()) -> str:
    cols = columns(rows)
    head = [h for h, _, _ in cols]
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" if k in ("model", "backend", "mode", "best") else "---:"
                          for _, k, _ in cols) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
            for cells in _cells(rows)]
    return ("\n".join(out) + "\n\n"
            + footnote(rows, env, skipped, refused).replace("\n", "  \n") + "\n")


def to_json(rows, env: dict, settings: dict) -> dict:
    return {"format": FORMAT, "environment": env, "settings": settings, "results": list(rows)}


def write(path, rows, env: dict, settings: dict, skipped=(), refused=()) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".json":
        write_text(path, dumps_json(to_json(rows, env, settings), indent=1))
    elif suffix == ".md":
        write_text(path, markdown(rows, env, skipped, refused))
    else:
        raise ValueError(f"report format from the suffix: .json or .md, found {path.name!r}")
    return path


def _spread(rows, key: str):
    """Asymmetric error bars: median - p25 below, p75 - median above (0 where absent)."""
    median_key = "step_ms_median" if key == "step_ms" else key
    lo, hi = [], []
    for r in rows:
        med, p25, p75 = r.get(median_key), r.get(f"{key}_p25"), r.get(f"{key}_p75")
        ok = None not in (med, p25, p75)
        lo.append(med - p25 if ok else 0.0)
        hi.append(p75 - med if ok else 0.0)
    return [lo, hi]


def plot(path, rows) -> Path:
    """One panel per (model, batch): a bar per backend/mode (rosetta solid, native hatched, the
    IQR as error bars) and the arithmetic floor as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["batch_size"]), []).append(r)
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(4.8 * max(1, len(groups)), 4.8),
                             squeeze=False)
    for ax, ((model, batch), rs) in zip(axes[0], groups.items()):
        labels = [f"{r['backend']}\n{r['mode']}" for r in rs]
        xs = range(len(rs))
        w = 0.38
        ax.bar([x - w / 2 for x in xs], [r["step_ms_median"] for r in rs], w,
               yerr=_spread(rs, "step_ms"), label="rosetta", color="#4878a8")
        if any(r.get("native_step_ms") is not None for r in rs):
            ax.bar([x + w / 2 for x in xs], [r.get("native_step_ms") or 0 for r in rs], w,
                   yerr=_spread(rs, "native_step_ms"), label="native (hand-written)",
                   color="#b0c4de", hatch="//", edgecolor="#4878a8")
        if any(r.get("keras_step_ms") is not None for r in rs):
            ax.scatter(list(xs), [r.get("keras_step_ms") or float("nan") for r in rs],
                       marker="D", color="#e0a030", zorder=3, label="Keras 3 train_on_batch")
        floor = next((r["floor_ms"] for r in rs if r.get("floor_ms") is not None), None)
        if floor is not None:
            ax.axhline(floor, color="#c04040", linestyle="--", linewidth=1,
                       label=f"arithmetic floor {floor:.3g} ms")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("train step, ms (median, IQR bars; log scale)")
        ax.set_title(f"{model}, batch {batch}")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False)
    return finish_figure(fig, path, dpi=110)
