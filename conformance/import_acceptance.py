"""The importer's acceptance runs (not run by CI; their numbers go in the report).

    .venv/bin/python -m rosetta.conformance.import_acceptance [selfnoise] [adam-tf]
        [resnet18-jax] [resnet50-import] [certify64] [certify224] [gpt2]

* ``selfnoise``: torch against itself in channels_last memory format on the certificate's
  randomized ResNet-18 (batch 2, 64x64, SGD; ``import_sweep.self_noise``): the worst forward,
  gradient and parameter element of each step at the certificate's comparison, the size of
  the model's own float64 noise free-running.
* ``adam-tf``: a model trained 5 steps by ``torch.optim.Adam`` (with a StepLR scheduler),
  imported with its optimizer state and scheduler position, moved to TensorFlow
  (``imp.backend = "tensorflow"``), 3 more steps there on the batches the torch run goes on
  with: every parameter against torch's (relative error printed; the exact tier is 1e-10).
* ``resnet18-jax``: torchvision ResNet-18 (random weights, float64, batch 2, 64x64) trained 3
  steps by ``torch.optim.SGD`` (momentum, weight decay) in torch and the imported spec 3 steps
  on JAX from the same weights and batches: the worst relative error over every parameter.
* ``resnet50-import``: seconds to import ResNet-50 (batch 2, 64x64).
* ``gpt2``: HuggingFace GPT-2 (``hf_models``: 2 layers, hidden 32, vocab 64, float64, dropout
  rates 0) imported with ``from_torch`` (its ``torch.optim.Adam`` and token cross-entropy),
  trained 3 steps on torch (``Imported.fit``), saved as a neutral checkpoint, resumed on JAX
  (``rosetta.load(ckpt, backend="jax")``) for 3 more: every parameter against the
  uninterrupted torch run of the import (6 steps) and against the HuggingFace model itself
  trained 6 steps by ``torch.optim.Adam`` on the same batch (exact tier, 1e-10); then the JAX
  checkpoint exported to every format of ``rosetta export`` (``rosetta.export.formats()``), each
  run by its own framework in a process without rosetta (``conformance.artifacts.check``)
  against the spec's NumPy forward and against the trained HuggingFace model's own forward
  (1e-10 for a float64 artifact, 1e-5 for float32); a format that cannot be written here is
  a line naming why.
* ``certify64`` / ``certify224``: the certificate of ResNet-18 at batch 2, 64x64 / 224x224,
  float64, on torch, JAX and TensorFlow (3 steps / 1 step), with its seconds.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import types

import numpy as np


def _tv():
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import torchvision
    return torchvision


def _rel(got, want):
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))


def adam_tf():
    import torch
    from torch import nn

    from rosetta.importers.imported import from_torch

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).double()
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    loss = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    batches = [(torch.as_tensor(rng.standard_normal((4, 3, 8, 8))),
                torch.as_tensor(rng.integers(0, 5, 4))) for _ in range(8)]

    def step(xb, yb):
        opt.zero_grad()
        loss(m(xb), yb).backward()
        opt.step()
        sched.step()

    for xb, yb in batches[:5]:
        step(xb, yb)
    imp = from_torch(m, batches[0][0], optimizer=opt, loss=loss, scheduler=sched)
    at = imp.step
    imp.backend = "tensorflow"
    t = time.perf_counter()
    prog = imp.program
    for xb, yb in batches[5:]:
        prog.train_step({"x": xb.numpy().transpose(0, 2, 3, 1)}, yb.numpy())
        step(xb, yb)
    got = prog.export_params()
    worst = max(_rel(got[imp.names[n]], imp.source.layouts[n].to_canonical(p.detach().numpy()))
                for n, p in m.named_parameters())
    print(f"adam-tf: Adam+StepLR 5 steps in torch, imported at update {at}, 3 more on "
          f"TensorFlow vs torch going on: worst parameter relative error {worst:.2e} "
          f"({time.perf_counter() - t:.1f} s)", flush=True)


def resnet18_jax():
    import torch

    from rosetta.importers.imported import from_torch

    torch.manual_seed(0)
    m = _tv().models.resnet18(weights=None).double()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    batches = [(torch.as_tensor(rng.standard_normal((2, 3, 64, 64))),
                torch.as_tensor(rng.integers(0, 1000, 2))) for _ in range(3)]
    imp = from_torch(m, batches[0][0], optimizer=opt, loss=loss)
    # torch against itself: the same model in channels_last memory format (another summation
    # order of every convolution): the size of the model's own float64 noise
    twin = copy.deepcopy(m).to(memory_format=torch.channels_last)
    opt2 = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    imp.backend = "jax"
    t = time.perf_counter()
    prog = imp.program
    worst, self_worst = [], []
    for xb, yb in batches:
        prog.train_step({"x": xb.numpy().transpose(0, 2, 3, 1)}, yb.numpy())
        for mod, o, xin in ((m, opt, xb), (twin, opt2,
                                           xb.contiguous(memory_format=torch.channels_last))):
            mod.train()
            o.zero_grad()
            loss(mod(xin), yb).backward()
            o.step()
        got = prog.export_params()
        worst.append(max(_rel(got[imp.names[n]],
                              imp.source.layouts[n].to_canonical(p.detach().numpy()))
                         for n, p in m.named_parameters()))
        tw = dict(twin.named_parameters())
        self_worst.append(max(_rel(tw[n].detach().numpy(), p.detach().numpy())
                              for n, p in m.named_parameters()))
    print(f"resnet18-jax: SGD 3 steps, torch vs the import on JAX: worst parameter relative "
          f"error per step {['%.1e' % w for w in worst]}; torch vs torch in channels_last: "
          f"{['%.1e' % w for w in self_worst]} ({time.perf_counter() - t:.1f} s)", flush=True)


def resnet50_import():
    import torch

    from rosetta.importers.imported import from_torch

    torch.manual_seed(0)
    m = _tv().models.resnet50(weights=None).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    t = time.perf_counter()
    from_torch(m, x, optimizer=torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    print(f"resnet50-import: {time.perf_counter() - t:.1f} s", flush=True)


def certify(size, steps):
    import torch

    from rosetta.importers.imported import from_torch

    torch.manual_seed(0)
    m = _tv().models.resnet18(weights=None).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    imp = from_torch(m, x, optimizer=torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
                     loss=torch.nn.CrossEntropyLoss())
    t = time.perf_counter()
    cert = imp.certify(("torch", "jax", "tensorflow"), steps=steps)
    print(cert.table())
    print(f"certify{size}: {time.perf_counter() - t:.1f} s", flush=True)


def selfnoise():
    """torch against itself in channels_last on the certificate's randomized ResNet-18 (batch 2,
    64x64, the sweep's SGD, ``import_sweep.self_noise``): the worst forward, gradient and
    parameter element at each of 3 free-running steps, at the certificate's comparison: the
    model's own float64 noise."""
    import torch

    from rosetta.conformance.import_sweep import self_noise

    torch.manual_seed(0)
    m = _tv().models.resnet18(weights=None).double()
    x = torch.zeros(2, 3, 64, 64, dtype=torch.float64)   # the shape; the batches are random
    for t, w in enumerate(self_noise(m, x, steps=3)):
        print(f"selfnoise step {t}: torch vs torch channels_last, worst forward "
              f"{w['forward']:.1e}, gradient {w['grads']:.1e}, parameter {w['params']:.1e}",
              flush=True)


def _params_rel(got: dict, imp, module) -> float:
    """The worst relative error of a program's canonical parameters against a torch module's."""
    return max(_rel(got[imp.names[n]], imp.source.layouts[n].to_canonical(p.detach().numpy()))
               for n, p in module.named_parameters())


def gpt2(n_torch=3, n_jax=3, out=None) -> dict:
    """See the module doc (``gpt2``); returns the numbers it prints."""
    import tempfile
    from pathlib import Path

    import torch

    import rosetta
    from rosetta import export as export_mod
    from rosetta.conformance.artifacts import TOLERANCE, check, environment_python, run_loader
    from rosetta.conformance.compare import compare_arrays
    from rosetta.conformance.hf_models import VOCAB, build
    from rosetta.errors import RosettaError
    from rosetta.importers.imported import from_torch

    model, x, loss = build("gpt2")
    for m in model.modules():   # dropout off: the HuggingFace run below draws no masks
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    y = torch.randint(0, VOCAB, tuple(x.shape), generator=torch.Generator().manual_seed(1))
    twin = copy.deepcopy(model)   # the HuggingFace model trained by torch itself
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    imp = from_torch(model, x, optimizer=opt, loss=loss, name="gpt2")
    data = (x.numpy(), y.numpy(), x.numpy(), y.numpy())
    res = {}
    tmp = Path(out) if out else Path(tempfile.mkdtemp(prefix="gpt2_acceptance_"))
    t = time.perf_counter()
    imp.backend = "torch"
    imp.fit(n_torch, data=data, progress=False)
    ck = imp.save(tmp / "ckpt_torch")
    imp.fit(n_jax, progress=False)                         # the uninterrupted torch run
    resumed = rosetta.load(ck, backend="jax")
    resumed.fit(n_jax, data=data, progress=False)
    ck_jax = resumed.save(tmp / "ckpt_jax")
    opt2 = torch.optim.Adam(twin.parameters(), lr=1e-3)
    twin.train()
    for _ in range(n_torch + n_jax):
        opt2.zero_grad()
        loss(twin(x), y).backward()
        opt2.step()
    got = resumed.params
    res["jax_vs_torch_run"] = max(_rel(got[k], v) for k, v in imp.params.items())
    res["jax_vs_huggingface"] = _params_rel(got, imp, twin)
    res["losses_torch_then_jax"] = [float(v) for v in resumed["losses"]]
    print(f"gpt2: {n_torch} Adam steps on torch, checkpoint {ck}, {n_jax} more on JAX: worst "
          f"parameter relative error against the uninterrupted torch run "
          f"{res['jax_vs_torch_run']:.2e}, against HuggingFace trained by torch.optim.Adam "
          f"{res['jax_vs_huggingface']:.2e} (exact tier 1e-10; "
          f"{time.perf_counter() - t:.1f} s)", flush=True)
    twin.eval()
    xs = np.random.default_rng(2).integers(0, VOCAB, (4, x.shape[1]))
    with torch.no_grad():
        hf_out = twin(torch.as_tensor(xs)).numpy()
    res["exports"] = {}
    for fmt in export_mod.formats():
        t = time.perf_counter()
        env_python = environment_python(export_mod.backend_of(fmt))
        if env_python is not None:
            line = _export_elsewhere(env_python, ck_jax, fmt, tmp / f"export_{fmt}", xs, hf_out)
            res["exports"][fmt] = line
            print(f"gpt2 export {fmt}: {line} ({time.perf_counter() - t:.1f} s)", flush=True)
            continue
        try:
            where = export_mod.export(ck_jax, fmt, tmp / f"export_{fmt}")
            meta = json.loads((where / export_mod.EXPORT_JSON).read_text())
            inputs = export_mod.cast_example(rosetta.load(ck_jax).spec, {"x": xs},
                                             meta["dtype"])
            ws = check(where, inputs)
            got = run_loader(where, inputs)
            w_hf = compare_arrays(got, hf_out, f"{fmt} vs HuggingFace", TOLERANCE[meta["dtype"]],
                                  floor_fraction=1.0)
            ok = all(w.passed for w in ws) and w_hf.passed
            line = (f"{'PASS' if ok else 'FAIL'} {meta['dtype']}: vs spec reference "
                    f"{max(w.rel_err for w in ws):.1e} ({len(ws)} run(s)), vs HuggingFace "
                    f"{w_hf.rel_err:.1e}")
        except (RosettaError, RuntimeError, ImportError) as e:
            line = f"not exported: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        res["exports"][fmt] = line
        print(f"gpt2 export {fmt}: {line} ({time.perf_counter() - t:.1f} s)", flush=True)
    return res


def _export_elsewhere(python, ckpt, fmt, out, xs, hf_out) -> str:
    """``rosetta export`` (with its check without rosetta) run by ``python`` (the format's own
    environment), then the artifact's loader run there on ``xs`` against the HuggingFace
    model's output ``hf_out``."""
    import subprocess
    import tempfile
    from pathlib import Path

    from rosetta import export as export_mod
    from rosetta.conformance.artifacts import TOLERANCE, WITHOUT_ROSETTA, export_in
    from rosetta.conformance.compare import compare_arrays

    returncode, checks, tail = export_in(python, ckpt, fmt, out)
    if returncode != 0 and not checks:
        return f"not exported ({python}): {tail[:300]}"
    meta = json.loads((Path(out) / export_mod.EXPORT_JSON).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        x, y = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(x, x=np.asarray(xs, np.int64))
        r2 = subprocess.run([str(python), "-c", WITHOUT_ROSETTA, str(Path(out) / "load.py"),
                             str(out), str(x), str(y)], capture_output=True, text=True,
                            timeout=600)
        if r2.returncode != 0:
            return f"FAIL: the loader failed: {r2.stderr.strip().splitlines()[-1:]}"
        with np.load(y) as z:
            got = np.array(z["y"])
    w = compare_arrays(got, hf_out, f"{fmt} vs HuggingFace", TOLERANCE[meta["dtype"]],
                       floor_fraction=1.0)
    ok = returncode == 0 and w.passed
    return (f"{'PASS' if ok else 'FAIL'} {meta['dtype']} (in {python.parent.parent.name}): "
            f"rosetta export's check: {'; '.join(checks)[:200]}; vs HuggingFace "
            f"{w.rel_err:.1e}")


RUNS = {"selfnoise": selfnoise, "adam-tf": adam_tf, "resnet18-jax": resnet18_jax, "resnet50-import": resnet50_import,
        "certify64": lambda: certify(64, 3), "certify224": lambda: certify(224, 1),
        "gpt2": gpt2}


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or list(RUNS)
    for n in names:
        RUNS[n]()


if __name__ == "__main__":
    main()
