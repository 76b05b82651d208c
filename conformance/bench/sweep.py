"""Cost as the work grows: ``rosetta bench SPEC --sweep batch=8,32,128,512`` (or ``seq=...``,
``width=...``).

Per point of the swept value and per backend (its default mode, the fastest on this CPU for the
zoo, or each mode of ``--modes``), one ``cases.run_case`` of rosetta's program alone, by the
timing rules of ``timing`` (the ratio to hand-written code is the plain ``rosetta bench`` table's
business; here the curve is the cost). Each row records:

* ``step_ms_median``: the median step time, synchronised;
* ``example_ms`` = step_ms_median / batch, and ``samples_per_second`` = batch / median step time;
* ``peak_memory_mb``: the process's peak resident set while the program was built, compiled and
  warmed up (CPU; a GPU's device peak), by ``timing``'s rule;
* ``floor_ms`` = 3 x forward FLOPs per example x batch / the float32 matmul peak: the arithmetic
  floor no implementation can beat (the peak measured at start and end, the better of the two).

The axes, each rewriting the spec's JSON, nothing else:

* ``batch``: the examples per step (every spec);
* ``seq``: the sequence length T of a token model (its first input integer, of shape (T,)): that
  input's shape, ``PositionEmbedding``'s ``max_length`` and a ``length`` dataset argument; a
  dataset whose shape no longer fits is replaced by synthetic batches (``cases.bench_batches``);
* ``width``: the units of every hidden Dense of an MLP (a chain of Flatten and Dense layers; the
  last Dense, the output, keeps its units).
"""

from __future__ import annotations

import argparse
import json

from rosetta.errors import SpecError
from rosetta.conformance.report import finish_figure
from rosetta.files import dumps_json, write_text
from rosetta.spec import TrainSpec

FORMAT = "rosetta/bench-sweep/1"
LIMITS = {"batch": 2 ** 20, "seq": 2 ** 16, "width": 2 ** 16}  # the largest value per axis
MAX_POINTS = 16
DEFAULT_SWEEP_STEPS = 50


def parse_sweep(text: str) -> tuple[str, list[int]]:
    """``"batch=8,32,128"`` as ``("batch", [8, 32, 128])``; ValueError with one line when the
    key is unknown, a value is not a positive integer, too big, repeated, or there are too
    many."""
    key, sep, values = str(text).partition("=")
    key = key.strip()
    if not sep or key not in LIMITS:
        raise ValueError(f"expected KEY=V1,V2,... with KEY one of {', '.join(LIMITS)}, "
                         f"found {text!r}")
    parts = [p.strip() for p in values.split(",")]
    out = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            v = 0
        if not 1 <= v <= LIMITS[key]:
            raise ValueError(f"{key} values are positive integers up to {LIMITS[key]:,}, "
                             f"found {p!r}")
        out.append(v)
    if len(set(out)) != len(out):
        raise ValueError(f"{key} values repeat: {values}")
    if len(out) > MAX_POINTS:
        raise ValueError(f"at most {MAX_POINTS} points, found {len(out)}")
    return key, sorted(out)


def sweep_argument(text: str) -> tuple[str, list[int]]:
    """argparse ``type`` of ``--sweep`` (a bad value: one line, exit 2, before any import)."""
    try:
        return parse_sweep(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _spec_json(spec: TrainSpec) -> dict:
    return json.loads(json.dumps(spec.to_json()))


def check_axis(spec: TrainSpec, key: str) -> None:
    """SpecError (one line) when ``key`` does not apply to ``spec``'s model."""
    g = spec.model
    if key == "seq":
        first = g.inputs[0]
        if first.kind != "int" or len(first.shape) != 1:
            raise SpecError(f"--sweep seq= applies to sequence models (a first input of integer "
                            f"tokens, shape (T,)); {spec.name}'s first input is {first.kind} "
                            f"{tuple(first.shape)}", where="command line")
    elif key == "width":
        dense = [n for n in g.nodes if n.op == "Dense"]
        if any(n.op not in ("Dense", "Flatten") for n in g.nodes) or len(dense) < 2:
            raise SpecError(f"--sweep width= applies to MLPs (Flatten and Dense layers, at "
                            f"least one hidden Dense); {spec.name} has "
                            f"{', '.join(sorted({n.op for n in g.nodes}))}",
                            where="command line")


def point_spec(spec: TrainSpec, key: str, value: int) -> TrainSpec:
    """``spec`` at one point of the sweep (``check_axis`` first)."""
    d = _spec_json(spec)
    if key == "batch":
        d["data"]["batch_size"] = value
    elif key == "seq":
        d["model"]["inputs"][0]["shape"] = [value]
        for n in d["model"]["nodes"]:
            if n["op"] == "PositionEmbedding":
                n["attrs"]["max_length"] = value
        if "length" in d["data"].get("args", {}):
            d["data"]["args"]["length"] = value
    elif key == "width":
        dense = [n for n in d["model"]["nodes"] if n["op"] == "Dense"]
        for n in dense[:-1]:
            n["attrs"]["units"] = value
    return TrainSpec.from_json(d)


def run_sweep(spec: TrainSpec, key: str, values, pairs, *, steps: int, block: int,
              warmup: int | None, device: str, dtype: str, peak_gflops: float,
              batch_size: int | None = None, log=lambda msg: None) -> list[dict]:
    """One row per point x (backend, mode): ``cases.run_case`` without the baseline, plus the
    swept ``key`` / ``value`` and ``example_ms``."""
    from rosetta.conformance.bench.cases import run_case

    rows = []
    for value in values:
        point = point_spec(spec, key, value)
        batch = value if key == "batch" else (batch_size or point.data.batch_size)
        for backend, mode in pairs:
            log(f"{spec.name} {key}={value} on {backend}/{mode}: {steps} steps ...")
            row = run_case(point, backend, mode, batch_size=batch, steps=steps, block=block,
                           warmup=warmup, device=device, dtype=dtype, peak_gflops=peak_gflops,
                           native=False)
            row.update({"sweep": key, "value": value,
                        "example_ms": row["step_ms_median"] / row["batch_size"]})
            log(f"  step {row['step_ms_median']:.3f} ms, {row['samples_per_second']:,.0f} "
                f"samples/s, floor {row['floor_ms']:.3f} ms")
            rows.append(row)
    return rows


COLUMNS = (("model", "model", "{}"), ("sweep", "sweep", "{}"), ("value", "value", "{}"),
           ("backend", "backend", "{}"), ("mode", "mode", "{}"), ("batch", "batch_size", "{}"),
           ("step ms", "step_ms_median", "{:.3f}"), ("IQR ms", "step_ms_iqr", "{:.3f}"),
           ("ms/example", "example_ms", "{:.4f}"), ("samples/s", "samples_per_second", "{:,.0f}"),
           ("floor ms", "floor_ms", "{:.4f}"), ("% peak", "peak_fraction", "{:.1%}"),
           ("mem MB", "peak_memory_mb", "{:.0f}"))
_TEXT = {"model", "sweep", "backend", "mode"}
NOTE = ("step ms: median over the timed steps (rosetta's program, synchronised); samples/s = "
        "batch / step; floor: 3 x forward FLOPs / the float32 matmul peak; mem: peak process "
        "RSS (CPU) or device memory (GPU)")


def _cells(rows) -> list[list[str]]:
    return [["-" if r.get(k) is None else f.format(r[k]) for _, k, f in COLUMNS] for r in rows]


def table(rows, env: dict | None = None) -> str:
    head = [h for h, _, _ in COLUMNS]
    body = _cells(rows)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def line(cells):
        return "  ".join(c.ljust(w) if COLUMNS[i][1] in _TEXT else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(head), line(["-" * w for w in widths]), *map(line, body), NOTE]
    if env:
        lines.append(f"device: {env.get('device')}; float32 matmul peak "
                     f"{env.get('matmul_peak_gflops', 0):.1f} GFLOP/s")
    return "\n".join(lines)


def markdown(rows, env: dict | None = None) -> str:
    out = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
           "|" + "|".join("---" if k in _TEXT else "---:" for _, k, _ in COLUMNS) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in _cells(rows)]
    foot = NOTE + (f"  \ndevice: {env.get('device')}; float32 matmul peak "
                   f"{env.get('matmul_peak_gflops', 0):.1f} GFLOP/s" if env else "")
    return "\n".join(out) + "\n\n" + foot + "\n"


def write(path, rows, env: dict, settings: dict) -> None:
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() == ".json":
        write_text(path, dumps_json({"format": FORMAT, "environment": env,
                                     "settings": settings, "results": list(rows)}, indent=1))
    else:
        write_text(path, markdown(rows, env))


def plot(path, rows) -> None:
    """Per model: time per step and time per example against the swept value, log-log, one line
    per backend / mode and the arithmetic floor dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(models), 2, figsize=(10, 4.2 * len(models)), squeeze=False)
    for (ax_step, ax_ex), model in zip(axes, models):
        mine = [r for r in rows if r["model"] == model]
        key = mine[0]["sweep"]
        lines = dict.fromkeys((r["backend"], r["mode"]) for r in mine)
        for backend, mode in lines:
            pts = sorted((r["value"], r) for r in mine
                         if (r["backend"], r["mode"]) == (backend, mode))
            xs = [v for v, _ in pts]
            ax_step.plot(xs, [r["step_ms_median"] for _, r in pts], marker="o",
                         label=f"{backend}/{mode}")
            ax_ex.plot(xs, [r["example_ms"] for _, r in pts], marker="o",
                       label=f"{backend}/{mode}")
        floor = sorted({(r["value"], r["floor_ms"], r["batch_size"]) for r in mine})
        xs = [v for v, _, _ in floor]
        ax_step.plot(xs, [f for _, f, _ in floor], "k--", linewidth=1,
                     label="arithmetic floor")
        ax_ex.plot(xs, [f / b for _, f, b in floor], "k--", linewidth=1,
                   label="arithmetic floor")
        for ax, what in ((ax_step, "ms per train step"), (ax_ex, "ms per example")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(v) for v in xs])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel(f"{what} (median, log)")
            ax.set_title(f"{model}: {what} against {key}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    finish_figure(fig, path, dpi=110)
