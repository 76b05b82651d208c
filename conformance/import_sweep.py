"""Sweep ``rosetta.from_torch`` over torchvision's classification builders and a few timm models
(not run by CI).

    .venv/bin/python -m rosetta.conformance.import_sweep [--size 64] [--steps 1]
        [--batch 2] [--keras [--apps MobileNetV2,ResNet50,...]]
        [--backends torch,tensorflow,jax] [--families resnet,vgg,...] [--timm resnet18,...]
        [--max-params 100e6] [--certify-max-params 100e6] [--groupnorm] [--selfnoise]
        [--isolate] [--out sweep.json]

Each builder is made with random weights (nothing is downloaded), in float64, at ``size`` x
``size`` inputs, ``batch`` examples (2 by default); builders over ``max-params`` parameters are listed as skipped; the rest
are imported (SGD with momentum, cross-entropy) and, up to ``certify-max-params`` parameters,
certified on ``backends`` for ``steps`` steps; a refusal is reported: the first line, and the
distinct reasons over every line. torch's BatchNorm imports as
``BatchNorm(running_var="unbiased")``; ``--groupnorm`` adds the ResNet-family builders with
``norm_layer=GroupNorm(32)`` as well.
Prints a Markdown table; ``--out`` also writes the rows as JSON (after every row).

``--keras`` sweeps ``rosetta.from_keras`` over Keras applications instead (``KERAS_APPS``),
under this process's ``KERAS_BACKEND``: each built with ``weights=None``, ``size`` x ``size``
inputs, 10 classes and logits out (``classifier_activation=None``), compiled with Keras's
``SGD(0.01)`` (exact in float64 on tensorflow) and sparse cross-entropy from logits; the
certificate runs Keras as the source.

``--hf --export all`` (or a comma-separated list of formats) also writes each certified import
to every export format and runs each artifact by its own framework without rosetta
(``conformance.artifacts.check``; MXNet through ``rosetta export`` in ``.venv-mxnet`` where
this environment lacks it), giving the worst relative error against the spec's forward per
format, or the line saying why it was not written.

``--isolate`` (torchvision and timm rows) certifies each backend in a process of its own from
the saved source run (``certify(isolate=True)``): one process holding three frameworks peaks at
the sum of their peaks (about 21 GB for ConvNeXt-Small at batch 8, 64x64).

``--selfnoise`` (torchvision and timm rows) also measures the source against itself in
channels_last memory format over the same free-running steps (``self_noise``): the model's own
float64 noise at that batch.

``--hf`` sweeps ``rosetta.from_torch`` over the small HuggingFace and timm transformer configs of
``conformance/hf_models.py`` instead (``--hf-models`` picks some): token ids (batch 2, length 8)
or 32x32 images, Adam(1e-3), cross-entropy (token level for LM heads), certified with dropout
off (HuggingFace's attention dropout is a functional call no mask can be given to) for
``--steps`` steps on ``--backends``; in float64, except the models of ``hf_models.FLOAT32``
(their source computes part of a float64 forward in float32), imported and certified in float32
(their row also gives the float64 import's refusal line; ``--hf-dtype`` forces one dtype).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

FAMILIES = ("resnet", "resnext", "wide_resnet", "vgg", "mobilenet_v2", "mobilenet_v3",
            "efficientnet", "regnet", "densenet", "squeezenet", "shufflenet", "mnasnet",
            "convnext")
KERAS_APPS = ("MobileNetV2", "MobileNetV3Small", "MobileNetV3Small-noprep", "ResNet50",
              "EfficientNetB0", "DenseNet121")   # -noprep: include_preprocessing=False
GROUPNORM = ("resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2")
TIMM = ("resnet18", "efficientnet_b0", "mobilenetv3_large_100", "regnety_002", "convnext_atto")


def _torchvision():
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import torchvision
    return torchvision


def builders(families):
    tv = _torchvision()
    names = tv.models.list_models(module=tv.models)
    return [n for n in names if any(n.startswith(f) for f in families)]


def reasons(lines) -> list:
    """The distinct reasons of refusal lines ('<who>: unsupported <kind>: <reason>')."""
    out = {}
    for line in lines:
        why = line.split(": unsupported ", 1)[-1].split(": ", 1)[-1]
        for part in why.split("; "):
            out[part] = out.get(part, 0) + 1
    return [f"{k} (x{v})" for k, v in out.items()]


def build(name, source="torchvision", groupnorm=False):
    """A model with random weights, float64: a torchvision builder or a timm model name."""
    import torch

    torch.manual_seed(0)
    if source == "timm":
        _torchvision()
        import timm
        return timm.create_model(name, pretrained=False).double()
    tv = _torchvision()
    kw = {"norm_layer": lambda c: torch.nn.GroupNorm(32, c)} if groupnorm else {}
    return tv.models.get_model(name, weights=None, **kw).double()


def self_noise(model, x, steps=1, seed=0) -> list[dict]:
    """The source against itself in channels_last memory format (the same float64 function,
    summed in another order) on the certificate's randomized copy of ``model``, in training
    mode with dropout and stochastic depth off: ``steps`` free-running steps of the sweep's
    optimizer (SGD, lr 0.01, momentum 0.9) on random batches of ``x``'s shape, each side from
    its own previous state, as the float64 certificate runs. Per step, the worst forward,
    gradient and parameter element at the certificate's comparison (``compare_trees``: floor
    1e-3 of the group's scale). It is the model's own float64 noise at that batch: where it
    nears or exceeds the exact tier (1e-10), no import can be sure to hold the tier on that
    model and batch, however exact."""
    import copy

    import numpy as np
    import torch

    from rosetta.conformance.compare import compare_trees
    from rosetta.importers.certificate import randomize
    from rosetta.importers.torch_graph import drop_path_rate

    m = copy.deepcopy(model).train()
    for mod in m.modules():   # dropout off (a draw on a channels_last tensor follows memory)
        if isinstance(mod, torch.nn.modules.dropout._DropoutNd) or drop_path_rate(mod):
            mod.eval()
    randomize(m, seed)
    twin = copy.deepcopy(m).to(memory_format=torch.channels_last)
    sides = [(m, lambda v: v), (twin, lambda v: v.contiguous(memory_format=torch.channels_last))]
    opts = [torch.optim.SGD(mod.parameters(), lr=0.01, momentum=0.9) for mod, _ in sides]
    rng = np.random.default_rng(seed)
    per_step = []
    for _ in range(steps):
        xb = torch.as_tensor(rng.standard_normal(tuple(x.shape)))
        y = torch.as_tensor(rng.integers(0, 10, len(x)))
        got = []
        for (mod, layout), opt in zip(sides, opts):
            opt.zero_grad()
            out = mod(layout(xb))
            torch.nn.functional.cross_entropy(out, y).backward()
            grads = {n: p.grad.detach().numpy().copy() for n, p in mod.named_parameters()}
            opt.step()
            got.append(({"y": out.detach().numpy()}, grads,
                        {n: p.detach().numpy().copy() for n, p in mod.named_parameters()}))
        per_step.append({key: compare_trees(got[1][k], got[0][k]).rel_err
                         for key, k in (("forward", 0), ("grads", 1), ("params", 2))})
    return per_step


def sweep_one(name, *, size, steps, backends, groupnorm=False, source="torchvision",
              max_params=100e6, certify_max_params=100e6, batch=2, selfnoise=False,
              isolate=False):
    import torch

    from rosetta.importers import ImportRefused, from_torch

    model = build(name, source, groupnorm)
    params = sum(p.numel() for p in model.parameters())
    label = ("timm/" if source == "timm" else "") + name + ("-GN" if groupnorm else "")
    row = {"model": label, "params": params}
    if params > max_params:
        row.update(result=f"skipped (over {max_params:,.0f} parameters)")
        return row
    x = torch.randn(batch, 3, size, size, dtype=torch.float64)
    if selfnoise:
        per_step = self_noise(model, x, steps)
        row["selfnoise"] = {k: max(w[k] for w in per_step) for k in per_step[0]}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    t = time.perf_counter()
    try:
        imp = from_torch(model, x, optimizer=opt, loss=torch.nn.CrossEntropyLoss(), name=name)
    except ImportRefused as e:
        row.update(result="refused", seconds_import=time.perf_counter() - t,
                   first=e.lines[0], lines=len(e.lines), reasons=reasons(e.lines))
        return row
    row["seconds_import"] = time.perf_counter() - t
    if params > certify_max_params:
        row.update(result=f"imported (not certified: over {certify_max_params:,.0f} parameters)")
        return row
    t = time.perf_counter()
    cert = imp.certify(tuple(backends), steps=steps, isolate=isolate)
    row.update(result="certified" if cert.passed else "certificate FAILS",
               seconds_certify=time.perf_counter() - t,
               worst={r["backend"]: r["worst"] for r in cert.results},
               blame=[r["blame"] for r in cert.results if r["blame"]],
               drift={r["backend"]: r["drift"] for r in cert.results if "drift" in r},
               noise={r["backend"]: r["noise"] for r in cert.results if "noise" in r},
               bound_used={r["backend"]: r["bound_used"] for r in cert.results
                           if "bound_used" in r})
    return row


def sweep_keras_one(name, *, size, steps, backends, batch=2):
    import keras
    import numpy as np

    from rosetta.importers import ImportRefused, from_keras

    keras.utils.set_random_seed(0)
    app, _, variant = name.partition("-")
    kw = {"include_preprocessing": False} if variant == "noprep" else {}
    model = getattr(keras.applications, app)(weights=None, input_shape=(size, size, 3),
                                             classes=10, classifier_activation=None, **kw)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    row = {"model": f"keras.applications.{name}", "params": int(model.count_params())}
    t = time.perf_counter()
    try:
        # an application that rescales its input itself takes pixel values in [0, 255]; the
        # others take preprocessed values (standard normal, the certificate's default)
        rescales = any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)
        pixels = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3))
        imp = from_keras(model, name=name.lower().replace("-", "_"), batch_size=batch,
                         example_inputs=pixels if rescales else None)
    except ImportRefused as e:
        row.update(result="refused", seconds_import=time.perf_counter() - t,
                   first=e.lines[0], lines=len(e.lines), reasons=reasons(e.lines))
        return row
    row["seconds_import"] = time.perf_counter() - t
    if not backends:   # --backends '': the import alone
        row["result"] = f"imported ({len(imp.spec.model.nodes)} spec nodes), not certified"
        return row
    t = time.perf_counter()
    cert = imp.certify(tuple(backends), steps=steps)
    row.update(result="certified" if cert.passed else "certificate FAILS",
               seconds_certify=time.perf_counter() - t,
               worst={r["backend"]: r["worst"] for r in cert.results},
               blame=[r["blame"] for r in cert.results if r["blame"]],
               drift={r["backend"]: r["drift"] for r in cert.results if "drift" in r},
               noise={r["backend"]: r["noise"] for r in cert.results if "noise" in r},
               bound_used={r["backend"]: r["bound_used"] for r in cert.results
                           if "bound_used" in r})
    return row


def export_checks(imp, formats) -> dict:
    """{format: worst relative error of its runs, or the line saying why it was not written}:
    ``imp`` saved as a neutral checkpoint, exported to each format and run by that format's own
    framework in processes without rosetta (``conformance.artifacts.check``: every Keras
    backend for keras), against the spec's NumPy forward."""
    import re
    import tempfile
    from pathlib import Path

    from rosetta import export as export_mod
    from rosetta.conformance.artifacts import check, environment_python, export_in

    out = {}
    with tempfile.TemporaryDirectory() as d:
        ckpt = imp.save(Path(d) / "ckpt")
        for fmt in formats:
            python = environment_python(export_mod.backend_of(fmt))
            if python is not None:   # MXNet: `rosetta export` (and its check) in .venv-mxnet
                returncode, checks, tail = export_in(python, ckpt, fmt, Path(d) / fmt)
                runs = [re.match(r"(PASS|FAIL) worst at .* rel ([0-9.e+-]+)", ln) for ln in checks]
                runs = [m.groups() for m in runs if m]
                if not runs:
                    out[fmt] = f"not exported (in {python.parent.parent.name}): {tail[:300]}"
                    continue
                worst = max(float(rel) for _, rel in runs)
                ok = returncode == 0 and all(v == "PASS" for v, _ in runs)
                out[fmt] = (f"{'PASS' if ok else 'FAIL'} {worst:.1e} ({len(runs)} run"
                            f"{'s' * (len(runs) > 1)}, in {python.parent.parent.name})")
                continue
            try:
                runs = check(export_mod.export(ckpt, fmt, Path(d) / fmt))
                worst = max(runs, key=lambda w: w.rel_err)
                out[fmt] = (f"{'PASS' if all(w.passed for w in runs) else 'FAIL'} "
                            f"{worst.rel_err:.1e} ({len(runs)} run{'s' * (len(runs) > 1)})")
            except Exception as e:  # the row says why this format was not written or run
                out[fmt] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return out


def sweep_hf_one(name, *, steps, backends, dtype=None, export_formats=()):
    """One row of ``--hf``: import and certify ``name`` in ``dtype`` (None: ``dtype_of(name)``,
    float32 for the models that compute part of a float64 forward in float32; their row also
    gives the float64 import's refusal line); then, with ``export_formats``, the certified
    import exported to each (``export_checks``)."""
    import torch

    from rosetta.conformance.hf_models import build, dtype_of
    from rosetta.importers import ImportRefused, from_torch

    dtype = dtype or dtype_of(name)
    model, x, loss = build(name, dtype=dtype)
    row = {"model": name, "params": sum(p.numel() for p in model.parameters()), "dtype": dtype}
    if dtype == "float32":
        try:
            m64, x64, loss64 = build(name)
            from_torch(m64, x64, loss=loss64)
            row["float64"] = "imports"
        except ImportRefused as e:
            row["float64"] = e.lines[0]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t = time.perf_counter()
    try:
        imp = from_torch(model, x, optimizer=opt, loss=loss, name=name.replace("/", "_"))
    except ImportRefused as e:
        row.update(result="refused", seconds_import=time.perf_counter() - t,
                   first=e.lines[0], lines=len(e.lines), reasons=reasons(e.lines))
        return row
    row["seconds_import"] = time.perf_counter() - t
    t = time.perf_counter()
    cert = imp.certify(tuple(backends), steps=steps, dropout="off")
    row.update(result="certified" if cert.passed else "certificate FAILS",
               seconds_certify=time.perf_counter() - t,
               worst={r["backend"]: r["worst"] for r in cert.results},
               blame=[r["blame"] for r in cert.results if r["blame"]],
               drift={r["backend"]: r["drift"] for r in cert.results if "drift" in r},
               noise={r["backend"]: r["noise"] for r in cert.results if "noise" in r},
               bound_used={r["backend"]: r["bound_used"] for r in cert.results
                           if "bound_used" in r})
    if export_formats:
        row["exports"] = export_checks(imp, export_formats)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--batch", type=int, default=2,
                   help="examples per certificate batch (torchvision and timm models)")
    p.add_argument("--backends", default="torch")
    p.add_argument("--families", default=",".join(FAMILIES), help="'' for none")
    p.add_argument("--timm", default=",".join(TIMM), help="timm model names ('' for none)")
    p.add_argument("--max-params", type=float, default=100e6)
    p.add_argument("--certify-max-params", type=float, default=100e6)
    p.add_argument("--groupnorm", action="store_true")
    p.add_argument("--selfnoise", action="store_true",
                   help="torchvision/timm rows: also the source against itself in channels_last "
                        "over the same steps (self_noise), the float64 noise no import can beat")
    p.add_argument("--keras", action="store_true",
                   help="sweep from_keras over Keras applications (KERAS_APPS) instead")
    p.add_argument("--apps", default=",".join(KERAS_APPS),
                   help="with --keras: the Keras applications (KERAS_APPS names)")
    p.add_argument("--hf", action="store_true",
                   help="sweep from_torch over small HuggingFace/timm transformers instead")
    p.add_argument("--hf-models", default="", help="comma-separated names of hf_models.HF_MODELS")
    p.add_argument("--hf-dtype", default=None, choices=("float64", "float32"),
                   help="with --hf: import every model in this dtype (default: hf_models.dtype_of)")
    p.add_argument("--export", default="",
                   help="with --hf: comma-separated export formats each import is written to "
                        "and checked in (rosetta.export.formats(); 'all' for every one)")
    p.add_argument("--isolate", action="store_true",
                   help="certify each backend in a process of its own (certify(isolate=True)): "
                        "a torchvision ConvNeXt-Small needs about 21 GB with three backends in "
                        "one process")
    p.add_argument("--out")
    a = p.parse_args(argv)
    if a.export == "all":
        from rosetta import export as export_mod

        a.export = ",".join(export_mod.formats())
    if a.hf:
        from rosetta.conformance.hf_models import HF_MODELS

        todo = [(n, False, "hf") for n in (a.hf_models.split(",") if a.hf_models
                                           else HF_MODELS)]
    elif a.keras:
        todo = [(n, False, "keras") for n in a.apps.split(",") if n]
    else:
        todo = [(n, False, "torchvision") for n in builders(a.families.split(","))
                if a.families]
    if a.groupnorm and not (a.keras or a.hf):
        todo += [(n, True, "torchvision") for n in GROUPNORM]
    todo += [(n, False, "timm") for n in a.timm.split(",") if n and not (a.keras or a.hf)]
    rows = []
    print("| model | parameters | result | import s | certify s | worst (fwd/grad/step) |")
    print("|---|---:|---|---:|---:|---|")
    for name, gn, source in todo:
        try:
            if source == "hf":
                r = sweep_hf_one(name, steps=a.steps, backends=a.backends.split(","),
                                 dtype=a.hf_dtype,
                                 export_formats=[f for f in a.export.split(",") if f])
            elif source == "keras":
                r = sweep_keras_one(name, size=a.size, steps=a.steps,
                                    backends=[b for b in a.backends.split(",") if b],
                                    batch=a.batch)
            else:
                r = sweep_one(name, size=a.size, steps=a.steps, backends=a.backends.split(","),
                              groupnorm=gn, source=source, max_params=a.max_params,
                              certify_max_params=a.certify_max_params, batch=a.batch,
                              selfnoise=a.selfnoise, isolate=a.isolate)
        except Exception as e:  # a sweep goes on: the row says what broke
            r = {"model": name, "params": 0, "result": f"error: {type(e).__name__}: {e}"[:300]}
        rows.append(r)
        if r["result"] == "refused":
            res = f"refused ({r['lines']} lines): {r['first'][:160]}; reasons: " \
                  f"{' | '.join(x[:90] for x in r['reasons'])}"
        elif "worst" in r:
            res = r["result"]
        else:
            res = r["result"]
        if r.get("drift"):
            res += " (teacher-forced on " + ", ".join(
                f"{b}: free-running drift {d.get('grads', 0):.0e}/{d.get('step', 0):.0e}"
                + (f", own noise {r['noise'][b].get('grads', 0):.0e}/"
                   f"{r['noise'][b].get('step', 0):.0e}" if b in r.get("noise", {}) else "")
                + f", {r['bound_used'][b]:.2f} of the bound"
                for b, d in r["drift"].items()) + ")"
        if "selfnoise" in r:
            n = r["selfnoise"]
            res += (f" (the source against itself: {n['forward']:.0e}/{n['grads']:.0e}/"
                    f"{n['params']:.0e})")
        if r.get("dtype") == "float32":
            res = f"float32: {res} (float64: {r.get('float64', '')[:160]})"
        worst = " ".join(f"{b}: {w.get('forward', 0):.0e}/{w.get('grads', 0):.0e}/"
                         f"{w.get('step', 0):.0e}" for b, w in r.get("worst", {}).items())
        exports = "".join(f"<br>{f}: {v}" for f, v in r.get("exports", {}).items())
        print(f"| {r['model']} | {r['params']:,} | {res}{exports} | "
              f"{r.get('seconds_import', 0):.1f} | {r.get('seconds_certify', 0):.1f} | "
              f"{worst} |", flush=True)
        if a.out:
            with open(a.out + ".tmp", "w") as f:
                json.dump(rows, f, indent=1, default=str)
            os.replace(a.out + ".tmp", a.out)


if __name__ == "__main__":
    main()
