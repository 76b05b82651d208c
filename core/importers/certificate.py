"""The import certificate (docs/design.md section 12): the source model, run by torch as written, is one
more participant of the conformance suite.

1. A copy of the source has every parameter and buffer set to random non-default values
   (seeded), so an import that ignores one cannot pass.
2. The source trajectory is recorded once (``TorchNative`` on the copy, with a copy of the source's
   own optimizer, its state included): the forward output in training and in eval mode before any
   update, then K steps, each the loss and every gradient, then the parameters, model state and
   optimizer state after the update, and the eval output after the last one.
3. Each backend, alone, lowers the imported spec, loads the same canonical values (and the
   optimizer state), and is recorded on the same batches; its trajectory is compared with the
   source's at the tier of the dtype (float64: the exact tier, 1e-10). The steps run free;
   where a backend differs past the bound, each step is held again teacher-forced (from the
   source's state before it), as the exact tier holds a pair whose rounding compounds
   (``conformance/forced64.py``), each tensor at the bound the source's own float64 noise sets
   (``certificate_noise``: max(1e-10, 16 x noise), never above 1e-8). Float64 rounding that
   deep BatchNorm networks amplify from step to step (ResNet-50's source against itself in
   channels_last: 1e-6 in its gradients after 3 steps) is reported as drift, not held.
4. A failure is blamed: where the first divergence is the loss, a gradient or a forward output,
   every spec node's training-mode output (NumPy reference) is compared with the traced torch
   node it stands for, and the first that differs is named by spec node and source module;
   otherwise the first diverging tensor is named by canonical path and source name, with its step.

Dropout (``dropout="inject"``, the default): the keep-masks of every step come from the neutral
RNG of the conformance suite (``runner.dropout_masks``) and are injected on both sides: into
each backend as its ``masks``, and into the source by a forward hook on each ``nn.Dropout``
module (its own p set to 0, its output multiplied by the mask, turned to the source's layout,
over 1 - p). A dropout the source draws elsewhere (a functional call) cannot take a mask: such a
model is certified with ``dropout="off"`` (every rate 0 on both sides), which the table says.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rosetta.conformance.compare import compare_arrays
from rosetta.conformance.diagnose import first_divergence
from rosetta.conformance.noise import Start, eval_result
from rosetta.conformance.native import NativeError
from rosetta.conformance.runner import dropout_masks, without_dropout
from rosetta.conformance.suite import compare_trajectories
from rosetta.conformance.tiers import tier_for
from rosetta.conformance.trajectory import Trajectory, spec_hash
from rosetta.dropout import mask_draws
from rosetta.importers import certificate_noise
from rosetta.importers.torch_graph import drop_path_rate
from rosetta.errors import RosettaError


@dataclass
class Certificate:
    model: str
    dtype: str
    steps: int
    dropout: str
    results: list = field(default_factory=list)   # one dict per backend
    seconds: dict = field(default_factory=dict)
    source: str = ""        # the source's framework (its source info's ``framework``)
    reference: str = "float64"   # float32: the dtype the source's reference run computes in
    noise: str = ""         # how the source's own float64 noise was measured (certificate_noise)

    @property
    def passed(self) -> bool:
        rows = [r for r in self.results if not r.get("skipped")]   # said in the table
        return bool(rows) and all(r["passed"] for r in rows)

    def table(self) -> str:
        if self.source == "onnx":
            return self._forward_table()
        how = (f"teacher-forced against the source in {self.reference}; each column: the "
               f"largest fraction of the measured-noise bound used, 1 = at the bound"
               if self.dtype == "float32" else "relative errors; steps free-running, or "
               "where they differ teacher-forced at the bound the source's own noise sets")
        rows = [f"certificate of {self.model} ({self.dtype}, {self.steps} steps, dropout "
                f"{self.dropout}): source {self.source} vs each backend ({how})",
                f"{'backend':<11} {'result':<6} {'forward':>9} {'loss':>9} {'gradient':>9} "
                f"{'step':>9} {'seconds':>8}"]
        for r in self.results:
            w = r["worst"]
            rows.append(f"{r['backend']:<11} {'PASS' if r['passed'] else 'FAIL':<6} "
                        f"{w.get('forward', 0):9.1e} {w.get('loss', 0):9.1e} "
                        f"{w.get('grads', 0):9.1e} {w.get('step', 0):9.1e} "
                        f"{r['seconds']:8.1f}")
            if r.get("steps") == "teacher-forced":
                d = r.get("drift", {})
                rows.append(f"  steps teacher-forced: free-running they drift to gradient "
                            f"{d.get('grads', 0):.1e}, step {d.get('step', 0):.1e}, forward "
                            f"{d.get('forward', 0):.1e} (reported, not held)")
            if r.get("noise"):
                n = r["noise"]
                rows.append(f"  each tensor held to max(1e-10, 16 x the source's own float64 "
                            f"noise), at most 1e-8: the source with {self.noise} differs from "
                            f"itself by up to gradient {n.get('grads', 0):.1e}, step "
                            f"{n.get('step', 0):.1e}, forward {n.get('forward', 0):.1e}; "
                            f"{r.get('bound_used', 0):.2f} of the bound used")
            if not r["passed"]:
                rows.append(f"  {r['blame']}")
        return "\n".join(rows)

    def _forward_table(self) -> str:
        rows = [f"certificate of {self.model} (forward, eval mode): the ONNX graph run by "
                f"onnx.reference (float64) and onnxruntime (float32) vs each backend",
                f"{'backend':<11} {'result':<6} {'against':<38} {'error':>9} {'seconds':>8}"]
        for r in self.results:
            if r.get("skipped"):
                rows.append(f"{r['backend']:<11} {'SKIP':<6} {r['skipped']}")
                continue
            rows.append(f"{r['backend']:<11} {'PASS' if r['passed'] else 'FAIL':<6} "
                        f"{r.get('against', ''):<38} {r['worst'].get('forward', 0):9.1e} "
                        f"{r['seconds']:8.1f}")
            if not r["passed"]:
                rows.append(f"  {r['blame'] or r.get('note', '')}")
        return "\n".join(rows)

    @classmethod
    def load(cls, folder) -> "Certificate":
        """The certificate a folder's ``certificate.json`` holds (``to_json``)."""
        d = json.loads((Path(folder) / "certificate.json").read_text())
        return cls(d["model"], d["dtype"], d["steps"], d["dropout"], d.get("results", []),
                   d.get("seconds", {}), d.get("source", ""), d.get("reference", "float64"),
                   d.get("noise", ""))

    def to_json(self) -> dict:
        return {"model": self.model, "source": self.source, "dtype": self.dtype,
                "steps": self.steps, "reference": self.reference,
                "dropout": self.dropout, "noise": self.noise, "passed": self.passed,
                "results": self.results,
                "seconds": self.seconds}


def randomize(module, seed: int, keep=()) -> None:
    """Every floating parameter and buffer to random non-default values at the scale it has:
    a tensor with spread keeps its mean m and standard deviation s,
    p <- m + ((p - m) + 0.5 s N(0, 1)) / sqrt(1.25) (so a deep model without normalisation does
    not blow up); a constant tensor (zeros, ones) gets p + (0.1 |m| + 0.05) N(0, 1). A buffer
    named like a variance stays positive (its absolute value + 0.1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point() or t.numel() == 0 or name in keep:
                continue
            noise = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)
            mean = float(t.mean())
            std = float(t.std()) if t.numel() > 1 else 0.0
            if std > 0:
                t.copy_(mean + ((t - mean) + 0.5 * std * noise) / 1.25 ** 0.5)
            else:
                t.add_(noise * (0.1 * abs(mean) + 0.05))
            if "var" in name.rsplit(".", 1)[-1]:
                t.copy_(t.abs() + 0.1)


def _batches(imp, steps, seed, dtype):
    """``steps`` random (inputs in canonical layout, labels) of the example's batch size. Token
    ids: the first batch is the example's own ids (a padded batch where the user gave one, so
    an ``Embedding(padding_idx)`` and position ids computed from the pads are exercised), the
    others the example's rows with their positions shuffled, row by row (one id per example:
    uniform in [0, the largest]): every example keeps its count of each id (a model that needs,
    say, one eos token per example, as BART's classification head does, runs on every batch)
    while the ids move. Float inputs: normal, at the example's mean and standard deviation
    where it has spread (pixel values in [0, 255] for a model that rescales them itself, as
    Keras applications do), standard normal where it has none (a Keras import's zeros)."""
    rng = np.random.default_rng(seed)
    x0 = imp.source.example_inputs[0]
    mean, std = 0.0, 1.0
    if np.asarray(x0).dtype.kind == "f" and np.asarray(x0).size > 1:
        a = np.asarray(x0, np.float64)
        if float(a.std()) > 0 and np.isfinite(a).all():
            mean, std = float(a.mean()), float(a.std())
    shape = tuple(x0.shape)
    if imp.source.input_layout == "nchw":
        shape = (shape[0], shape[2], shape[3], shape[1])
    out = imp.spec.model.output_type.shape
    loss = imp.spec.loss
    batches = []
    for _ in range(steps):
        if np.asarray(x0).dtype.kind == "f":
            x = (mean + std * rng.standard_normal(shape)).astype(dtype)
        else:
            x = np.array(np.asarray(x0))
            if batches and x.ndim >= 2:
                flat = x.reshape(len(x), -1)
                x = np.stack([row[rng.permutation(len(row))] for row in flat]).reshape(x.shape)
            elif batches:       # one id per example: uniform in [0, the largest]
                x = rng.integers(0, int(x.max()) + 1, size=shape)
        n = shape[0]
        if loss.label_kind == "int":
            y = rng.integers(0, out[-1], size=(n, *out[:-1]))
        elif loss.kind == "binary_cross_entropy":
            y = (rng.random((n, *out)) < 0.5).astype(dtype)
        else:
            y = rng.standard_normal((n, *out)).astype(dtype)
        batches.append((x, y))
    return batches


def _to_source_layout(mask, layout, chw):
    """A canonical keep-mask in the layout of the source tensor it multiplies."""
    if layout == "merged":   # held (N, k, ...) in the order perm: the source's (N*k, ...)
        k, perm = chw
        m = mask.transpose(np.argsort(perm))
        return m.reshape(m.shape[0] * k, *m.shape[2:])
    if isinstance(layout, tuple):  # a source tensor held with its axes permuted
        return mask.transpose(np.argsort(layout))
    if layout == "nchw":
        return mask.transpose(0, 3, 1, 2)
    if layout == "flat":
        c, h, w = chw
        return mask.reshape(mask.shape[0], h, w, c).transpose(0, 3, 1, 2).reshape(
            mask.shape[0], -1)
    return mask


def _source_dropout(m) -> bool:
    """A source module whose output the certificate can multiply by a keep-mask: an
    ``nn.Dropout`` or a stochastic-depth module (``torch_graph.drop_path_rate``)."""
    import torch

    return (isinstance(m, torch.nn.modules.dropout._DropoutNd)
            or drop_path_rate(m) is not None)


def _inject_hooks(imp, spec, module):
    """Forward hooks that apply the current keep-mask to each source ``nn.Dropout`` standing for
    a spec node with dropout; returns the dict to put the step's masks in ({node: mask})."""
    import torch

    from rosetta.importers.builder import spec_name

    current = {}
    modules = dict(module.named_modules())
    for d in mask_draws(spec.model):
        label = imp.node_source.get(d.node, "")
        path = label.rsplit(" (", 1)[0]
        m = modules.get(path)
        if not _source_dropout(m) or spec_name(path) != d.node:
            raise RosettaError(f"dropout node {d.node} (source {label}) is not an nn.Dropout "
                               f"module the certificate can give a mask: certify with "
                               f"dropout='off' (--dropout off)")
        _, layout, chw = imp.source.fx_nodes[d.node]

        def hook(mod, inputs, out, node=d.node, layout=layout, chw=chw):
            if not mod.training or node not in current:
                return out
            mask = _to_source_layout(current[node], layout, chw)
            rate = mod.source_p   # the source's own rate scales its output, not the spec's
            return out * torch.as_tensor(np.ascontiguousarray(mask), dtype=out.dtype) / (1 - rate)

        m.register_forward_hook(hook)
    return current


def _exact_hardsigmoid(module):
    """Run each ``nn.Hardsigmoid`` of the (copied) source as relu6(x + 3) / 6 written out: the
    same function, but torch's own kernel's backward multiplies by the float32 constant
    1.0f / 6.0f even in float64 (relative error 3e-8), so the float64 source would not be float64
    end to end (MobileNetV3's squeeze-excite gates)."""
    import torch

    class ExactHardsigmoid(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.relu6(x + 3.0) / 6.0

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Hardsigmoid:
                setattr(parent, name, ExactHardsigmoid())


def _source_program(imp, spec, seed, dtype, inject=False, channels_last=False):
    """``TorchNative`` on a randomized copy of the source, with a copy of its optimizer (and the
    mask holder of ``_inject_hooks`` when ``inject``); ``channels_last``: the copy's 4-D
    tensors, and its 4-D inputs, in channels_last memory format (the same function, summed in
    another order: ``certificate_noise``)."""
    import torch

    from rosetta.conformance.native_torch import TorchNative

    src = imp.source
    module = copy.deepcopy(src.module)
    module.to(torch.float64 if dtype == "float64" else torch.float32)
    randomize(module, seed, getattr(src, "constant_buffers", ()))   # folded: the spec's
    if dtype == "float64":
        _exact_hardsigmoid(module)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.source_p, m.p = m.p, 0.0
        elif drop_path_rate(m) is not None:  # stochastic depth: its rate attribute
            attr, m.source_p, _ = drop_path_rate(m)
            setattr(m, attr, 0.0)
        elif isinstance(m, torch.nn.MultiheadAttention):   # its attention-weight dropout,
            m.source_p, m.dropout = m.dropout, 0.0            # drawn inside (dropout="off")
    if hasattr(module, "without_dropout"):   # a .pt2's program: its dropout calls (pt2.py)
        module.without_dropout()
    params = dict(module.named_parameters())
    if src.optimizer is None:
        opt = torch.optim.SGD(module.parameters(), lr=0.01)
    else:
        orig = dict(src.module.named_parameters())
        by_id = {id(p): n for n, p in orig.items()}
        groups = []
        for g in src.optimizer.param_groups:
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": [params[by_id[id(p)]] for p in g["params"]]})
        opt = type(src.optimizer)(groups)
        opt.load_state_dict(copy.deepcopy(src.optimizer.state_dict()))
    sched = None
    if src.scheduler is not None:   # a copy driving the copied optimizer, at the same position
        sched = copy.deepcopy(src.scheduler)
        for s in [sched, *getattr(sched, "_schedulers", [])]:
            s.optimizer = opt
    loss = src.loss if src.loss is not None else torch.nn.CrossEntropyLoss()
    names = {n: (imp.names[n], src.layouts[n]) for n in imp.names}
    class SourceProgram(TorchNative):
        """TorchNative, keeping integer inputs (token ids) integers."""

        def _to_native_batch(self, x, y):
            if np.asarray(x).dtype.kind in "iu":
                xt, yt = super()._to_native_batch(np.zeros(np.shape(x)), y)
                return torch.as_tensor(np.asarray(x), dtype=torch.int64), yt
            xt, yt = super()._to_native_batch(x, y)
            if channels_last and xt.dim() == 4:
                xt = xt.contiguous(memory_format=torch.channels_last)
            return xt, yt

        def _train_step(self, x, y):
            loss = super()._train_step(x, y)
            if sched is not None:
                with warnings.catch_warnings():   # torch's check of its own step wrapper,
                    warnings.simplefilter("ignore")   # which the copied optimizer lacks
                    sched.step()
            return loss

    prog = SourceProgram(module, opt, loss, names, slots=src.slots,
                         data_layout="NCHW" if src.input_layout == "nchw" else "NHWC")
    prog.bind(without_dropout(spec))
    holder = _inject_hooks(imp, spec, module) if inject else None
    return prog, module, holder


def _record(prog, spec, batches, label, framework, dtype, steps, seed, masks=None,
            holder=None) -> Trajectory:
    """``masks``: the keep-masks of each step (a list), given to ``prog`` as its ``masks``, or,
    with ``holder`` (the source), put in the hooks' holder."""
    def use(t):
        if masks is None:
            return {}
        if holder is not None:
            holder.clear()
            holder.update(masks[t])
            return {}
        return {"masks": masks[t]}

    x0 = batches[0][0]
    ev = {"train_output_start": np.asarray(prog.forward(x0, training=True, **use(0))),
          "eval_output_start": np.asarray(prog.forward(x0, training=False))}
    params = {k: [v] for k, v in prog.export_params().items()}
    state = {k: [v] for k, v in prog.export_state().items()}
    losses, grads, opt = [], {}, {}
    for t, (x, y) in enumerate(batches):
        loss, g = prog.gradients(x, y, **use(t))
        for k, v in g.items():
            grads.setdefault(k, []).append(v)
        prog.train_step(x, y, **use(t))
        losses.append(loss)
        for k, v in prog.export_params().items():
            params[k].append(v)
        for k, v in prog.export_state().items():
            state[k].append(v)
        for k, v in prog.export_optimizer_state().items():
            opt.setdefault(k, []).append(v)
    ev["output"] = np.asarray(prog.forward(x0, training=False))
    meta = {"model": spec.name, "backend": label, "framework": framework, "device": "cpu",
            "dtype": dtype, "steps": len(losses), "seed": seed, "spec_hash": spec_hash(spec),
            "dropout": "inject" if masks is not None else "off", "devices": 1}
    stack = lambda d: {k: np.stack(v) for k, v in d.items()}  # noqa: E731
    return Trajectory(meta, np.array(losses), stack(grads), stack(params), stack(state),
                      stack(opt), ev)


def _worsts(result) -> dict:
    pc = result.per_category
    out = {k: pc[k]["rel"] for k in ("loss", "grads") if k in pc}
    out["step"] = max([pc[k]["rel"] for k in ("params", "state", "opt") if k in pc] or [0.0])
    out["forward"] = pc.get("eval", {}).get("rel", 0.0)
    return out


def certify(imp, backends=None, *, dtype=None, steps=3, seed=0,
            out=None, progress=None, dropout="inject", isolate=False) -> Certificate:
    from rosetta.backend_registry import available_backends
    if backends is None:            # every backend installed in this environment
        backends = tuple(available_backends())
    if isolate:
        return _certify_isolated(imp, tuple(backends), dtype=dtype, steps=steps, seed=seed,
                                 out=out, progress=progress, dropout=dropout)

    log = progress or (lambda msg: None)
    framework = imp.source.framework
    # a source that runs float32 steps (certify32) is certified in its own dtype; another (a
    # Keras source, a float64 clone that keras_source.py checks really computes in float64)
    # in float64
    own32 = imp.source.float32_certificate
    dtype = _dtype(imp, dtype)
    if dtype == "float32" and not own32:
        raise RosettaError(f"certify: the float32 certificate does not run {framework} sources "
                           f"yet; certify this model with dtype='float64'")
    if dtype not in ("float64", "float32"):
        raise RosettaError(f"certificate dtype {dtype!r}: float64 (the exact tier) or float32 "
                           f"(teacher-forced at the measured noise bounds)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise RosettaError(f"certificate steps must be an integer >= 1, found {steps!r}")
    if dropout not in ("inject", "off"):
        raise RosettaError(f"dropout must be 'inject' or 'off', found {dropout!r}")
    dropout = dropout if mask_draws(imp.spec.model) else "none"
    spec = without_dropout(imp.spec) if dropout == "off" else imp.spec
    tier = tier_for(dtype)
    batches = _batches(imp, steps, seed, "float64")
    masks = ([dropout_masks(spec.model, seed, t, len(batches[t][1])) for t in range(steps)]
             if dropout == "inject" else None)
    cert = Certificate(spec.name, dtype, steps, dropout, source=framework)
    unsourced = _unsourced_parameters(imp, spec)
    if unsourced:   # nothing to run the source with: every backend's row fails, naming them
        for be in backends:
            cert.results.append({"backend": be, "passed": False, "worst": {}, "where": "",
                                 "note": "", "seconds": 0.0, "blame": unsourced})
        _write(cert, out)
        return cert
    if dtype == "float32":
        from rosetta.importers.certificate32 import certify32
        certify32(imp, backends, steps=steps, seed=seed, masks=masks, batches=batches,
                  spec=spec, cert=cert, log=log)
        _write(cert, out)
        return cert
    t0 = time.perf_counter()
    make = getattr(imp.source, "program", None) or _source_program
    try:
        prog, module, holder = make(imp, spec, seed, dtype, dropout == "inject")
    except NativeError as e:  # the spec's shapes no longer fit the source's tensors
        node = first_misshapen_node(imp, spec, batches[0][0])
        for be in backends:
            cert.results.append({"backend": be, "passed": False, "worst": {}, "where": "",
                                 "note": "", "seconds": 0.0,
                                 "blame": f"the spec does not fit the source: {e}"
                                          f"{f'; {node}' if node else ''}"})
        return cert
    # the randomized torch source before any update (for the blame's node comparison)
    start = copy.deepcopy(module) if module is not None else None
    params0, state0 = prog.export_params(), prog.export_state()
    slots0 = {}
    if imp.optimizer_state:
        slots0 = {k: v for k, v in prog.export_optimizer_state().items()}
    log(f"{spec.name}: recording the {framework} source ({steps} steps)")
    source = _record(prog, spec, batches, f"source-{framework}", prog.version(), dtype, steps,
                     seed,
                     masks, holder)
    if holder is not None:
        holder.clear()   # the blame runs the source without masks (and the spec without dropout)
    cert.seconds["source"] = time.perf_counter() - t0
    if out is not None:
        source.save(Path(out) / "source_trajectory.npz")
        _save_replay(Path(out), spec, params0, state0, slots0, imp, dtype, batches, masks)
    blame = lambda traj, r: _blame(  # noqa: E731
        imp, without_dropout(spec), start, source, traj, tier, params0, state0,
        batches[0][0], r, {d.node: d.rate for d in mask_draws(spec.model)},
        getattr(prog, "first_diverging_node", ""))
    measured = {}

    def noise():   # the source's own float64 noise, measured when first needed
        if certificate_noise.how(imp) is None:
            return None
        if "rows" not in measured:
            t2 = time.perf_counter()
            log(f"{spec.name}: measuring the source's own float64 noise (itself with "
                f"{certificate_noise.how(imp)}, teacher-forced)")
            starts = starts_along(source, steps, slots0, imp.step)
            measured["rows"] = certificate_noise.measure(
                imp, spec, seed, masks, lambda prog: _forced(
                    prog, params0, state0, source, batches, masks, starts, tier,
                    f"the source with {certificate_noise.how(imp)}"))
            cert.seconds["noise"] = time.perf_counter() - t2
            cert.noise = certificate_noise.how(imp)
        return measured["rows"]

    for be in backends:
        cert.results.append(_run_backend(be, spec, dtype, params0, state0, slots0, imp.step,
                                         batches, masks, source, tier, seed, blame, log,
                                         imp.source_name, noise))
    if out is not None and noise() is not None:   # for a backend certified from the saved run
        certificate_noise.save(noise(), out)
    _write(cert, out)
    return cert


def _dtype(imp, dtype) -> str:
    """The certificate's dtype: ``dtype``, else the source's own (``certify_dtype``, or the
    import's dtype where the source runs float32 steps), else float64."""
    own32 = imp.source.float32_certificate
    return dtype or getattr(imp.source, "certify_dtype", None) or (
        imp.dtype if own32 else "float64")


def _certify_isolated(imp, backends, *, dtype, steps, seed, out, progress, dropout):
    """``certify(..., isolate=True)``: the source run recorded and saved in this process (with
    the source's own noise, measured up front), then each backend certified from the saved run
    (``certify_saved``) in a process of its own, ``python -m rosetta certify FOLDER --backends
    BE``. A framework keeps the memory its compiled steps took after they are gone (TensorFlow's
    and XLA's allocators reuse it, they do not return it), so one process certifying three
    backends peaks at the sum of three frameworks' peaks: about 21 GB for a torchvision
    ConvNeXt-Small at batch 8, 64x64, where one framework takes 10. Apart from where each
    backend runs, the rule is the float64 certificate's; a failing row's blame is
    ``certify_saved``'s (the first diverging tensor by canonical path and source name, without
    the per-node comparison, which needs the source)."""
    import signal
    import subprocess
    import sys
    import tempfile

    if _dtype(imp, dtype) != "float64":
        raise RosettaError("certify(isolate=True) runs the float64 certificate only (the float32 "
                           "one measures every backend's noise together); certify this model "
                           "with dtype='float64' or without isolate")
    log = progress or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="rosetta-certificate-") as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        cert = certify(imp, (), dtype="float64", steps=steps, seed=seed, out=folder,
                       progress=progress, dropout=dropout)
        if not (folder / REPLAY).is_dir():   # the source could not run: nothing to replay
            return certify(imp, backends, dtype="float64", steps=steps, seed=seed, out=out,
                           progress=progress, dropout=dropout)
        _return_freed_memory()
        for be in backends:
            log(f"{cert.model}: certifying {be} in a process of its own")
            run = subprocess.run([sys.executable, "-m", "rosetta", "certify", str(folder),
                                  "--backends", be], capture_output=True, text=True)
            if run.returncode < 0:   # killed: SIGKILL is what the out-of-memory killer sends
                raise RosettaError(f"certify(isolate=True): the {be} process was killed by "
                                   f"{signal.Signals(-run.returncode).name} (out of memory, if "
                                   f"SIGKILL); its last line: "
                                   f"{(run.stdout.strip() or 'none').splitlines()[-1]}")
            if run.returncode not in (0, 1):   # 1: the row is written and fails
                last = (run.stderr.strip() or run.stdout.strip() or "no output").splitlines()[-1]
                raise RosettaError(f"certify(isolate=True): the {be} process exited with "
                                   f"{run.returncode}: {last}")
        return Certificate.load(folder)


def _return_freed_memory() -> None:
    """Give the memory the source's run freed back to the operating system before the backends'
    processes start. glibc's malloc keeps freed heap pages for reuse, so a process that recorded
    a large source keeps its peak resident (torchvision ConvNeXt-Tiny at batch 8, 64x64, float64:
    3.5 GB after the source run and its noise, 0.8 GB after ``malloc_trim(0)``), and the backend
    process beside it runs short (ConvNeXt-Base's TensorFlow process was killed at 14.9 GB beside a
    parent holding 8.2 GB on a 24 GB machine; GB: 2^30 bytes). Nothing where the C library has no
    ``malloc_trim`` (macOS, musl)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def starts_along(traj, steps, slots0, step0) -> list:
    """The source's state before each update t = 0..steps (update number ``step0 + t``): where
    each teacher-forced step starts."""
    out = []
    for t in range(steps + 1):
        opt = (dict(slots0) if t == 0 else {k: v[t - 1] for k, v in traj.opt.items()})
        out.append(Start({k: v[t] for k, v in traj.params.items()},
                         {k: v[t] for k, v in traj.state.items()}, opt, step0 + t))
    return out


def final_eval(traj) -> dict:
    """The eval-mode output after the last step (``_record`` keeps the start's outputs too)."""
    return {k: v for k, v in eval_result(traj).items() if not k.endswith("_start")}


def _run_backend(be, spec, dtype, params0, state0, slots0, step, batches, masks, source, tier,
                 seed, blame, log, name_of, noise=lambda: None) -> dict:
    """One backend, alone: lower ``spec``, load the source's starting values (and optimizer
    state, at update ``step``), record it on the same batches and masks, compare with the
    source's trajectory at ``tier``; the certificate's row, ``blame(traj, result)`` where it
    fails.

    Free-running first. Where that fails, the steps are held teacher-forced (``_forced``): each
    step from the source's state before it (the exact tier's own rule where rounding compounds,
    ``conformance/forced64.py``, docs/design.md section 12), every tensor at the bound
    ``certificate_noise.bound`` gives it from ``noise()`` (the source's own float64 noise,
    measured once per certificate when first needed; None: the tier's 1e-10). The free-running
    worst is kept in the row as drift. A failure in the forward pass or the first step without
    measured noise is the free-running one (both modes run the same arithmetic there)."""
    from rosetta.backend_registry import get_backend
    from rosetta.importers.certificate_noise import SEMANTIC, bound

    t1 = time.perf_counter()
    log(f"{spec.name}: recording {be}")
    backend = get_backend(be)
    p = backend.compile(spec, dtype=dtype, device="cpu")
    p.load(params0, state0)
    if slots0:
        p.load_optimizer_state(slots0, step)
    traj = _record(p, spec, batches, be, backend.version(), dtype, len(batches), seed, masks)
    del p
    r = compare_trajectories(source, traj, tier)
    row = {"backend": be, "passed": bool(r.passed), "worst": _worsts(r), "where": r.where,
           "note": r.note, "blame": "", "seconds": 0.0, "steps": "free-running"}
    d = None if r.passed else first_divergence(source, traj, tier)
    if d is not None and d.step == 0 and not d.worst.rel_err <= SEMANTIC:
        d = None    # the first step is the same teacher-forced, and no noise excuses this much
    measured = noise() if d is not None else None
    if d is not None and (d.step > 0 or d.category == "eval" or measured):
        log(f"{spec.name}: {be} differs free-running at step {d.step} ({d.worst.where}); "
            f"holding each step teacher-forced")
        p = backend.compile(spec, dtype=dtype, device="cpu")
        rows = _forced(p, params0, state0, source, batches, masks,
                       starts_along(source, len(batches), slots0, step), tier, be)
        del p
        used = 0.0
        fail = None
        for t, k, w in rows:
            w.tolerance = bound(measured, t, k, tier.tolerance)
            w.noise = (measured or {}).get((t, k))
            used = max(used, w.rel_err / w.tolerance)
            if fail is None and not w.rel_err <= w.tolerance:
                fail = (t, k, w)
        row.update(passed=fail is None, steps="teacher-forced", drift=row["worst"],
                   worst=_column_worsts((k, w.rel_err) for _, k, w in rows), bound_used=used)
        if measured:
            row["noise"] = _column_worsts((k, v) for (_, k), v in measured.items())
        if fail is not None and not (fail[0] == 0 and fail[1].split("/", 1)[0]
                                     in ("loss", "grads", "eval")):
            t, k, w = fail
            path = k.split("/", 1)[1] if "/" in k else ""
            name = name_of(path) if path else ""
            row["blame"] = (f"first failure at step {t} (teacher-forced): {k}"
                            f"{f' (source {name})' if name and name != path else ''}: {w}")
        elif fail is not None:
            row["blame"] = blame(traj, r)
        row["seconds"] = time.perf_counter() - t1
        return row
    if not row["passed"]:
        row["blame"] = blame(traj, r)
    row["seconds"] = time.perf_counter() - t1
    return row


def _forced(p, params0, state0, source, batches, masks, starts, tier, be) -> list:
    """[(step, key, Worst)]: program ``p`` teacher-forced along the source
    (``forced64.forced_rows``), after its forward outputs (training and eval mode) from the
    starting values, all at the tier's tolerance."""
    from rosetta.conformance.forced64 import forced_rows

    masks = masks or [None] * len(batches)
    p.load(params0, state0)
    x0 = batches[0][0]
    got = {"train_output_start": p.forward(x0, training=True,
                                           **({"masks": masks[0]} if masks[0] else {})),
           "eval_output_start": p.forward(x0, training=False)}
    rows = [(0, f"eval/{k}", compare_arrays(got[k], source.eval[k], f"eval/{k}",
                                            tier.tolerance, tier.floor_fraction))
            for k in got if k in source.eval]
    return rows + forced_rows(p, source, starts, batches, masks, tier.tolerance,
                              f"({be} from the source's state)", final_eval(source))


def _column_worsts(errors) -> dict:
    """The certificate's columns (forward, loss, gradient, step): the largest relative error
    of each over ``errors``, (key, relative error) pairs of teacher-forced rows or noise."""
    cat = {"params": "step", "state": "step", "opt": "step", "eval": "forward"}
    out = {"forward": 0.0, "loss": 0.0, "grads": 0.0, "step": 0.0}
    for k, err in errors:
        c = cat.get(k.split("/", 1)[0], k.split("/", 1)[0])
        out[c] = max(out[c], float(err))
    return out


REPLAY = "start"        # the randomized starting point, a neutral checkpoint
REPLAY_BATCHES = "batches.npz"


def _save_replay(out: Path, spec, params0, state0, slots0, imp, dtype, batches, masks) -> None:
    """Beside the source's trajectory, what certifies a backend without the source framework
    (``certify_saved``, e.g. MXNet in its own environment): the starting values as a neutral
    checkpoint (the spec as certified, the names map) and every step's batch and keep-masks."""
    from rosetta import checkpoint
    from rosetta.files import atomic_file

    checkpoint.save(out / REPLAY, spec, params=params0, state=state0, optimizer=slots0,
                    step=imp.step, dtype=dtype, backend="source",
                    record={"names": imp.names, "optimizer_state": bool(slots0),
                            "certificate_dropout": "inject" if masks is not None else "off"})
    arrays = {}
    for t, (x, y) in enumerate(batches):
        arrays[f"x/{t}"], arrays[f"y/{t}"] = np.asarray(x), np.asarray(y)
        for node, m in (masks[t] if masks is not None else {}).items():
            arrays[f"mask/{t}/{node}"] = m
    with atomic_file(out / REPLAY_BATCHES) as f:
        np.savez_compressed(f, **arrays)


def certify_saved(folder, backends, *, progress=None) -> Certificate:
    """Certify ``backends`` against a source run saved by ``certify(..., out=folder)`` (float64),
    without the source's framework: each backend starts from the saved starting values, runs the
    saved batches and masks, and is compared with the saved source trajectory at the exact tier
    (the blame names the first diverging tensor by canonical path and source name; the per-node
    comparison needs the source). Each backend's row replaces its earlier one in the folder's
    ``certificate.json``. This is how MXNet, in its own environment, is certified
    (``rosetta certify FOLDER --backends mxnet``)."""
    from rosetta import checkpoint
    from rosetta.errors import CheckpointError

    folder = Path(folder)
    log = progress or (lambda msg: None)
    try:
        cert = Certificate.load(folder)
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no certificate.json: give the folder a certificate "
                              f"wrote (rosetta import writes OUT.certificate)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder / 'certificate.json'}: not readable JSON ({e})") from None
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{folder / 'certificate.json'}: not a certificate rosetta wrote "
                              f"(a field is missing or malformed: {e}); certify again with "
                              f"rosetta import") from None
    if not (folder / REPLAY).is_dir():
        raise CheckpointError(f"{folder}: no saved source run ({REPLAY}/): only a float64 "
                              f"certificate of a torch or Keras source saves one; certify again "
                              f"with this rosetta")
    ck = checkpoint.load(folder / REPLAY)
    source = Trajectory.load(folder / "source_trajectory.npz")
    try:
        with np.load(folder / REPLAY_BATCHES, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / REPLAY_BATCHES}: not readable ({e})") from None
    steps = int(source.meta["steps"])
    batches = [(arrays[f"x/{t}"], arrays[f"y/{t}"]) for t in range(steps)]
    masks = None
    if ck.record.get("certificate_dropout") == "inject":
        masks = [{k.split("/", 2)[2]: v for k, v in arrays.items()
                  if k.startswith(f"mask/{t}/")} for t in range(steps)]
    slots0 = ck.optimizer if ck.record.get("optimizer_state") else {}
    tier = tier_for("float64")
    names = ck.record.get("names", {})

    def blame(traj, r):
        d = first_divergence(source, traj, tier)
        return _tensor_blame(d, names) if d is not None else (r.where or r.note)

    cert.results = [r for r in cert.results if r.get("backend") not in backends]
    for be in backends:
        cert.results.append(_run_backend(be, ck.spec, "float64", ck.params, ck.state, slots0,
                                         ck.step, batches, masks, source, tier,
                                         int(source.meta.get("seed", 0)), blame, log,
                                         lambda path: _source_name(names, path),
                                         lambda: certificate_noise.load(folder)))
    _write(cert, folder)
    return cert


def _source_name(names: dict, path: str) -> str:
    """The source name of a canonical path (``slot/path`` for optimizer state too), from the
    import's map {source name: canonical path}; the path itself where none maps to it."""
    rev = {v: k for k, v in names.items()}
    if path in rev:
        return rev[path]
    slot, _, rest = path.partition("/")
    return f"{slot} of {rev[rest]}" if rest in rev else path


def _unsourced_parameters(imp, spec) -> str:
    """A spec with parameters the import does not have (a changed attribute that adds a second
    bias): the one line naming them and their nodes, else ''. The source has no values for
    them, so such a spec cannot be run beside it. (A spec that lacks a source parameter runs:
    the comparison names the source parameter left without a canonical path.)"""
    op = {n.name: n.op for n in spec.model.nodes}
    new = sorted(set(spec.model.param_defs()) - set(imp.params))
    if not new:
        return ""
    return ("the spec has parameters the source does not hold: "
            + ", ".join(f"{p} ({op.get(p.rsplit('/', 1)[0], '?')})" for p in new))


def _tensor_blame(d, names: dict) -> str:
    """The first diverging tensor, by canonical path and source name, with its step."""
    name = _source_name(names, d.tensor) if d.tensor else ""
    name = "" if name == d.tensor else name
    return (f"first divergence at step {d.step}: {d.category}/{d.tensor}"
            f"{f' (source {name})' if name else ''}: {d.worst}")


def _write(cert, out):
    if out is not None:
        path = Path(out) / "certificate.json"
        from rosetta.files import atomic_file
        with atomic_file(path) as f:
            f.write(json.dumps(cert.to_json(), indent=1, default=str).encode())


def _blame(imp, spec, module, source, traj, tier, params0, state0, x, result,
           rates=None, node_found="") -> str:
    """``node_found``: a source program's own first diverging node (a Keras source's per-layer
    check, ``keras_source.check_layers``), named where the divergence is in the forward pass."""
    d = first_divergence(source, traj, tier)
    if d is None:
        return result.where or result.note
    forward = d.category in ("loss", "grads", "eval") and d.step == 0 or d.category == "eval"
    if forward and node_found:
        return node_found
    if forward and module is not None:
        node = (first_diverging_node(imp, spec, module, params0, state0, x, tier)
                or _dropout_mismatch(imp, module, rates or {}))
        if node:
            return node
    return _tensor_blame(d, imp.names)


def _dropout_mismatch(imp, module, rates) -> str:
    """The first spec dropout node whose rate is not its source ``nn.Dropout``'s p (the node
    comparison runs without dropout, so a rate shows only here)."""
    modules = dict(module.named_modules())
    for node, rate in rates.items():
        path = imp.node_source.get(node, "").rsplit(" (", 1)[0]
        p = getattr(modules.get(path), "source_p", None)
        if p is not None and p != rate:
            return (f"first diverging node: {node} (Dropout; source "
                    f"{imp.node_source.get(node, '?')}): rate {rate}, the source's p {p}")
    return ""


def _torch_node_values(module, x_native):
    """{fx node name: output} of the training-mode traced graph of ``module`` on ``x``."""
    import torch

    module.train()
    saved = {n: b.detach().clone() for n, b in module.named_buffers()}
    ep = torch.export.export(module, (x_native,))
    gm = ep.module()
    values = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):  # a copy: a later in-place call (relu_) changes it
                values[n.name] = out.detach().cpu().numpy().copy()
            return out

    with torch.no_grad():
        Recorder(gm).run(x_native)
    with torch.no_grad():
        for n, b in module.named_buffers():
            b.copy_(saved[n])
    return values


def _canonical(v, layout, chw):
    if layout == "merged":   # the source's (N*k, ...) held as (N, k, ...) in the order perm
        k, perm = chw
        return v.reshape(v.shape[0] // k, k, *v.shape[1:]).transpose(perm)
    if isinstance(layout, tuple):  # a source tensor held with its axes permuted
        return v.transpose(layout)
    if layout == "nchw" and v.ndim == 4:
        return v.transpose(0, 2, 3, 1)
    if layout == "flat":
        c, h, w = chw
        return v.reshape(v.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(v.shape[0], -1)
    return v


def first_diverging_node(imp, spec, module, params0, state0, x, tier) -> str:
    """The first spec node whose training-mode output (NumPy reference) differs from the traced
    torch node it stands for, named with its source module; '' when every node agrees."""
    import torch

    from rosetta.ops import RefContext

    xt = torch.as_tensor(x.transpose(0, 3, 1, 2) if imp.source.input_layout == "nchw" else x)
    if xt.is_floating_point():   # token ids stay int
        xt = xt.to(next(module.parameters()).dtype)
    theirs = _torch_node_values(module, xt.contiguous())
    g = spec.model
    values = {g.inputs[0].name: np.asarray(x, np.float64 if xt.is_floating_point() else None)}
    state = {k: np.array(v) for k, v in state0.items()}
    for n in g.nodes:
        p = {k: np.asarray(params0[f"{n.name}/{k}"], np.float64) for k in n.params}
        ctx = RefContext(training=True, state={k: state[f"{n.name}/{k}"] for k in n.state})
        values[n.name] = n.opdef.reference(n.attrs, p, [values[s] for s in n.inputs], ctx)
        if n.name not in imp.source.fx_nodes:
            continue
        fx, layout, chw = imp.source.fx_nodes[n.name]
        if fx not in theirs:
            continue
        t = _canonical(theirs[fx], layout, chw)
        if t.shape != values[n.name].shape:
            return (f"first diverging node: {n.name} ({n.op}; source "
                    f"{imp.node_source.get(n.name, '?')}): output shape "
                    f"{values[n.name].shape[1:]} where the source's is {t.shape[1:]}")
        w = compare_arrays(t, values[n.name], f"{n.name} output (training mode, step 0)",
                           tier.tolerance, tier.floor_fraction)
        if not w.passed:
            return (f"first diverging node: {n.name} ({n.op}; source "
                    f"{imp.node_source.get(n.name, '?')}) at step 0, training-mode forward: {w}")
    return ""


def first_misshapen_node(imp, spec, x) -> str:
    """The first spec node whose output shape (the spec's type inference) differs from the
    traced source node it stands for; '' when every shape agrees."""
    import torch

    module = copy.deepcopy(imp.source.module)
    xt = torch.as_tensor(x.transpose(0, 3, 1, 2) if imp.source.input_layout == "nchw" else x)
    xt = xt.to(next(module.parameters()).dtype)
    try:
        theirs = _torch_node_values(module, xt.contiguous())
    except Exception:  # noqa: BLE001  (the blame is best effort; the failure stands)
        return ""
    types = spec.model.types
    for n in spec.model.nodes:
        if n.name not in imp.source.fx_nodes or n.name not in types:
            continue
        fx, layout, chw = imp.source.fx_nodes[n.name]
        if fx not in theirs:
            continue
        shape = tuple(_canonical(theirs[fx], layout, chw).shape[1:])
        if tuple(types[n.name].shape) != shape:
            return (f"first misshapen node: {n.name} ({n.op}; source "
                    f"{imp.node_source.get(n.name, '?')}): output shape "
                    f"{tuple(types[n.name].shape)} where the source's is {shape}")
    return ""
