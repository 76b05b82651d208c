"""The ONNX import certificate (docs/design.md section 12): the ONNX graph, run by ONNX's own
evaluators, is one more participant.

1. Every initializer the spec holds (parameters and BatchNorm statistics) is set to random
   non-default values (seeded, ``certificate.randomize``'s rule, variances kept positive) and
   rounded to the model's float type, so an import that ignores or misplaces one cannot pass.
   The same values go into the ONNX model and, through each initializer's layout, into the spec.
2. float64, exact tier: the model with every float initializer, constant, input and output cast
   to double is run by ``onnx.reference.ReferenceEvaluator`` on a random batch; each backend
   runs the spec in float64 (eval mode) on the same batch in canonical layout; they agree to
   1e-10 (``tiers.EXACT``) or the first spec node whose NumPy reference output differs from the
   ONNX tensor it stands for is named, with its ONNX node.
   ONNX defines HardSwish as x max(0, min(1, x / 6 + 1/2)) and Gelu as 0.5 x (1 + erf(x /
   sqrt 2)) (tanh: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))); the reference evaluator
   expands their function bodies, whose constants are float32 (alpha 0.16666667, sqrt(2 / pi)
   to 7 digits), and its Erf rounds every value to float32: the certificate gives the evaluator
   the definitions themselves, in float64.
3. float32: onnxruntime runs the float32 model (it has no float64 Conv, AveragePool or Erf on
   CPU); its output is held to the float64 reference within the measured float32 bound
   (``conformance/noise.py``): the first backend's float32 output of the spec is re-run
   ``NOISE_RUNS`` times from parameters, state and batch moved by one ulp (the float32 noise of
   the function; one backend keeps the certificate's time down), and onnxruntime's output must
   lie within
   ``16 spread + U (128 |ref| + 4 scale)`` of the float64 reference, element by element.

ONNX has no training semantics of its own (no loss, no optimizer, no gradient), so this
certificate is a forward certificate; where the torch model the graph came from is given
(``from_onnx(torch_module=...)``), its gradients and optimizer steps are certified against it
too (``certificate.certify``, every torch parameter paired with the initializer that holds it:
``onnx_pairing``), or those rows fail with the line naming the parameters no initializer pairs
with.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rosetta.conformance.compare import compare_arrays
from rosetta.conformance.tiers import tier_for
from rosetta.importers.certificate import Certificate
from rosetta.importers.onnx_graph import to_double


def randomized_initializers(imp, seed: int) -> dict:
    """{initializer name: random array} for every initializer the spec holds, rounded to the
    model's float type (see the module doc)."""
    from rosetta.initializers import rng_for

    model = imp.source.model
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for name in sorted(imp.names):
        t = inits[name]
        rng = rng_for(seed, f"onnx-certificate/{name}")
        noise = rng.standard_normal(t.shape)
        a = t.astype(np.float64)
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        if std > 0:
            a = mean + ((a - mean) + 0.5 * std * noise) / 1.25 ** 0.5
        else:
            a = a + noise * (0.1 * abs(mean) + 0.05)
        if imp.names[name].rsplit("/", 1)[-1] == "var":
            a = np.abs(a) + 0.1
        out[name] = a.astype(t.dtype)
    # an initializer the exporter folded from parameters (``onnx_pairing``: gathered,
    # concatenated) holds what they compute, with their new values
    for name, d in (getattr(imp.source, "derivations", None) or {}).items():
        if all(p in out for p in d.params):
            out[name] = d.compute(out, inits[name].dtype)
    return out


def with_initializers(model, values: dict):
    """A copy of ``model`` with the initializers named in ``values`` replaced."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i, t in enumerate(m.graph.initializer):
        if t.name in values:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(values[t.name], t.name))
    return m


def without_dropout(model):
    """A copy of ``model`` whose Dropout nodes have ratio 0 (a training-mode graph's dropout is
    a random draw no other participant can repeat; the spec's rates go to 0 alike)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    zero = "rosetta_certificate_zero_ratio"
    used = False
    for node in m.graph.node:
        if node.op_type == "Dropout":
            while len(node.input) < 2:
                node.input.append("")
            node.input[1] = zero
            used = True
    if used:
        m.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), zero))
    return m


def _exact_function_ops():
    """ONNX function ops evaluated by their definitions (see the module doc)."""
    from math import erf, pi, sqrt

    from onnx.reference.op_run import OpRun

    verf = np.vectorize(erf, otypes=[np.float64])

    class HardSwish(OpRun):
        """x max(0, min(1, x / 6 + 1/2)), 1/6 exact."""

        op_domain = ""

        def _run(self, x):
            return (x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)).astype(x.dtype),

    class Gelu(OpRun):
        """0.5 x (1 + erf(x / sqrt 2)), or with approximate='tanh' 0.5 x (1 + tanh(sqrt(2 / pi)
        (x + 0.044715 x^3)))."""

        op_domain = ""

        def _run(self, x, approximate="none"):
            x64 = np.asarray(x, np.float64)
            if approximate == "tanh":
                y = 0.5 * x64 * (1.0 + np.tanh(sqrt(2.0 / pi) * (x64 + 0.044715 * x64 ** 3)))
            else:
                y = 0.5 * x64 * (1.0 + verf(x64 / sqrt(2.0)))
            return y.astype(x.dtype),

    class Erf(OpRun):
        """erf in float64 (onnx.reference's Erf rounds every value to float32:
        ``np.vectorize(erf, otypes=["f"])``)."""

        op_domain = ""

        def _run(self, x):
            return verf(np.asarray(x, np.float64)).astype(x.dtype),

    return [HardSwish, Gelu, Erf]


def reference_run(model, x, outputs=None) -> dict:
    """{name: array} of ``onnx.reference`` on ``model`` (``outputs``: extra tensor names)."""
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [o.name for o in m.graph.output]
    for extra in outputs or ():
        if extra not in names:
            m.graph.output.append(helper.make_empty_tensor_value_info(extra))
            names.append(extra)
    inp = _input_name(m)
    ev = ReferenceEvaluator(m, new_ops=_exact_function_ops())
    return dict(zip(names, (np.asarray(v) for v in ev.run(names, {inp: x}))))


def _input_name(model) -> str:
    inits = {i.name for i in model.graph.initializer}
    return next(vi.name for vi in model.graph.input if vi.name not in inits)


def to_canonical(v, layout, chw=None):
    """A source (ONNX) array in the layout the spec holds it."""
    v = np.asarray(v)
    if layout == "merged":   # the source's (N*k, ...) held as (N, k, ...) in the order perm
        k, perm = chw
        return v.reshape(v.shape[0] // k, k, *v.shape[1:]).transpose(perm)
    if layout == "nchw" and v.ndim == 4:
        return v.transpose(0, 2, 3, 1)
    if isinstance(layout, tuple) and v.ndim == len(layout):   # held in another axis order
        return v.transpose(layout)
    if layout == "flat":
        c, h, w = chw
        return v.reshape(v.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(v.shape[0], -1)
    return v


def _canonical_values(imp, values: dict) -> tuple[dict, dict]:
    """(params, state) of the spec from initializer values, through their layouts, in float64
    (the values themselves are the model's: float32 values exactly)."""
    params, state = {}, {}
    state_paths = set(imp.state)
    for name, path in imp.names.items():
        arr = np.array(imp.source.layouts[name].to_canonical(values[name]), np.float64)
        (state if path in state_paths else params)[path] = arr
    return params, state


def batch(imp, seed: int, dtype) -> np.ndarray:
    """A random batch in the ONNX model's layout (the example batch size); the user's example
    batch where ``from_onnx`` was given one (``example_inputs``)."""
    from rosetta.initializers import rng_for

    cap = imp.source.captured
    example = getattr(imp.source, "example", None)
    if example is not None:
        return np.asarray(example, np.int64 if cap.input_kind == "int" else dtype)
    rng = rng_for(seed, "onnx-certificate/batch")
    if cap.input_kind == "int":   # token ids: below every Embedding's vocabulary size (a
        nodes = {n.name: n for n in imp.spec.model.nodes}   # tied table: its Gather's rows)
        high = min([n.attrs["vocab_size"] for n in nodes.values() if n.op == "Embedding"]
                   + [nodes[n.inputs[0]].attrs["shape"][0] for n in nodes.values()
                      if n.op == "Gather" and len(n.inputs) == 2
                      and getattr(nodes.get(n.inputs[0]), "op", "") == "Parameter"]
                   or [8])
        return rng.integers(0, high, size=cap.input_shape).astype(np.int64)
    return rng.standard_normal(cap.input_shape).astype(dtype)


def first_diverging_node(imp, spec, model64, params, state, x, tier, training=False,
                         worst=None) -> str:
    """The first spec node whose NumPy reference output (eval mode, or training mode for a
    training-mode graph) differs from the ONNX tensor it stands for (``onnx.reference``,
    float64), named with its ONNX node; '' if none."""
    from rosetta.ops import RefContext

    cap = imp.source.captured
    theirs = reference_run(model64, x, [t for t, _, _ in cap.onnx_nodes.values()])
    g = spec.model
    values = {g.inputs[0].name: np.asarray(to_canonical(x, cap.input_layout), np.float64)
              if cap.input_kind == "float" else to_canonical(x, cap.input_layout)}
    for n in g.nodes:
        p = {k: np.asarray(params[f"{n.name}/{k}"], np.float64) for k in n.params}
        ctx = RefContext(training=training, batch=len(x),
                         state={k: np.array(state[f"{n.name}/{k}"]) for k in n.state})
        values[n.name] = n.opdef.reference(n.attrs, p, [values[s] for s in n.inputs], ctx)
        if n.name not in cap.onnx_nodes:
            continue
        tensor, layout, chw = cap.onnx_nodes[n.name]
        t = to_canonical(theirs[tensor], layout, chw)
        label = f"{n.name} ({n.op}; ONNX {imp.node_source.get(n.name, '?')})"
        if t.shape != values[n.name].shape:
            return (f"first diverging node: {label}: output shape {values[n.name].shape[1:]} "
                    f"where ONNX's is {t.shape[1:]}")
        w = compare_arrays(values[n.name], t, f"{n.name} output", tier.tolerance,
                           tier.floor_fraction)
        if worst is not None:
            worst.append(w.rel_err)
        if not w.passed:
            return f"first diverging node: {label}: {w}"
    return ""


def graph_spec(imp):
    """The spec as the graph defines it: with the graph's own attributes where the import took
    the torch model's (``OnnxSource.graph_model``)."""
    if getattr(imp.source, "graph_model", None) is None:
        return imp.spec
    import dataclasses
    return dataclasses.replace(imp.spec, model=imp.source.graph_model)


def reference_agreement(imp, seed: int = 0) -> tuple[float, str]:
    """(worst relative error, blame) of the spec's NumPy float64 reference against
    ``onnx.reference`` in float64, every mapped node's output compared, from the certificate's
    random initializers and batch: the certificate's float64 row without a framework (fast;
    the tests use it for each op family). ``blame`` is '' where every node agrees at 1e-10."""
    from rosetta.conformance.runner import without_dropout as spec_without_dropout

    cap = imp.source.captured
    tier = tier_for("float64")
    values = randomized_initializers(imp, seed)
    model = with_initializers(imp.source.model, values)
    spec = graph_spec(imp)
    if cap.training_graph:
        model, spec = without_dropout(model), spec_without_dropout(spec)
    params, state = _canonical_values(imp, values)
    x = batch(imp, seed, np.float64)
    worst = []
    blame = first_diverging_node(imp, spec, to_double(model), params, state, x, tier,
                                 cap.training_graph, worst)
    return max(worst, default=0.0), blame


def measure_forward(prog32, params, state, x, ref: dict, training: bool, seed: str):
    """The spread of a float32 forward (``noise.measure_eval``, in training mode too): the
    output re-run ``NOISE_RUNS`` times from parameters, state and batch moved by one ulp."""
    from rosetta.conformance.noise import NOISE_RUNS, _spread, perturb
    from rosetta.initializers import rng_for

    rng = rng_for(0, f"noise/{seed}/forward")

    def run(a):
        prog32.load(a[0], a[1])
        return {"eval/output": np.asarray(prog32.forward(a[2], training=training), np.float64)}

    args = [(perturb(params, rng), perturb(state, rng), perturb(x, rng))
            for _ in range(NOISE_RUNS)]
    return _spread(ref, [run(a) for a in args], run(args[0]))


def certify_onnx(imp, backends=None, *, seed=0, out=None, progress=None, steps=3,
                 torch_dtype=None) -> Certificate:
    """The certificate of an ONNX import (see the module doc); returns a ``Certificate`` whose
    rows are each backend against ``onnx.reference`` in float64 and onnxruntime against the
    float64 reference within the measured float32 bound; where the torch model the graph came
    from was given (``from_onnx(torch_module=...)``), then each backend against it: forward,
    loss, every gradient and ``steps`` optimizer steps (``certificate.certify``, dropout off;
    ``torch_dtype``: its dtype, default float64, "float32" at the measured float32 bounds).
    The rows against ONNX's evaluators run the spec with the graph's own attributes where the
    import took the torch model's (``OnnxSource.graph_model``: LayerNorm's epsilon in float64,
    which the graph holds rounded to float32)."""
    from rosetta.backend_registry import available_backends, get_backend
    from rosetta.conformance.noise import Measured, compare_noisy, noise_spread, use

    if backends is None:
        backends = tuple(available_backends())
    log = progress or (lambda msg: None)
    spec = graph_spec(imp)
    cap = imp.source.captured
    tier = tier_for("float64")
    cert = Certificate(spec.name, "float64", 0, "none", source="onnx")
    training = cap.training_graph
    if training:   # the graph's function is the training-mode forward: without dropout
        from rosetta.conformance.runner import without_dropout as spec_without_dropout
        spec = spec_without_dropout(spec)
    values = randomized_initializers(imp, seed)
    model = with_initializers(imp.source.model, values)
    if training:
        model = without_dropout(model)
    model64 = to_double(model)
    params, state = _canonical_values(imp, values)
    x = batch(imp, seed, np.float64)
    t0 = time.perf_counter()
    log(f"{spec.name}: running onnx.reference (float64)")
    ref = to_canonical(reference_run(model64, x)[cap.output_name], cap.output_layout)
    cert.seconds["source"] = time.perf_counter() - t0
    xc = to_canonical(x, cap.input_layout)
    mode = "training-mode" if training else "eval"
    runs = {}
    for be in backends:
        t1 = time.perf_counter()
        log(f"{spec.name}: {be} against onnx.reference")
        backend = get_backend(be)
        p = backend.compile(spec, dtype="float64", device="cpu")
        p.load(params, state)
        got = np.asarray(p.forward(xc, training=training))
        w = compare_arrays(got, ref, f"{mode} output", tier.tolerance, tier.floor_fraction)
        row = {"backend": be, "passed": bool(w.passed),
               "against": f"onnx.reference float64{', training mode' if training else ''}",
               "worst": {"forward": w.rel_err}, "where": str(w), "note": "", "blame": ""}
        if not w.passed:
            row["blame"] = (first_diverging_node(imp, spec, model64, params, state, x, tier,
                                                 training) or str(w))
        if cap.dtype == "float32" and not runs:   # the float32 noise, on the first backend
            p32 = backend.compile(spec, dtype="float32", device="cpu")
            runs[be] = measure_forward(p32, params, state, xc, {"eval/output": ref}, training,
                                       seed=f"onnx/{be}")
        row["seconds"] = time.perf_counter() - t1
        cert.results.append(row)
    if cap.dtype == "float32":
        import onnxruntime as ort

        t1 = time.perf_counter()
        log(f"{spec.name}: onnxruntime (float32) against the float64 reference")
        x32 = x.astype(np.float32) if x.dtype.kind == "f" else x
        try:
            sess = ort.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
            got = to_canonical(sess.run(None, {cap.input_name: x32})[0], cap.output_layout)
        except Exception as e:   # onnxruntime's own limits: the row says so, it is not failed
            msg = " ".join(str(e).split())[:200]
            cert.results.append({"backend": "onnxruntime", "passed": False, "worst": {},
                                 "skipped": f"onnxruntime cannot run this model: {msg}",
                                 "seconds": time.perf_counter() - t1, "blame": ""})
            got = None
    if cap.dtype == "float32" and got is not None:
        ref_d = {"eval/output": ref}
        spread = noise_spread(ref_d, runs, held="onnxruntime")
        (_, w), = compare_noisy({"eval/output": np.asarray(got, np.float64)},
                                Measured(ref_d, spread), "onnxruntime float32")
        ok = bool(runs) and use(w) <= 1.0
        cert.results.append({
            "backend": "onnxruntime", "against": "onnx.reference float64, float32 bound",
            "passed": ok, "worst": {"forward": w.rel_err, "bound": w.tolerance or 0.0},
            "where": str(w), "note": "" if runs else "no backend measured the float32 noise",
            "blame": "" if ok else str(w), "seconds": time.perf_counter() - t1})
    if imp.source.torch is not None and imp.source.unpaired:   # not certifiable: said
        for be in backends:
            cert.results.append({"backend": be, "passed": False, "worst": {}, "where": "",
                                 "against": f"torch source: gradients, {steps} steps",
                                 "note": "", "seconds": 0.0, "blame": imp.source.unpaired})
    elif imp.source.torch is not None:
        import copy

        from rosetta.importers.certificate import certify as certify_torch

        imp.refuse_training()
        as_torch = copy.copy(imp)           # the same import, its torch source certified
        as_torch.source = imp.source.torch
        tc = certify_torch(as_torch, backends, dtype=torch_dtype or "float64",
                           steps=steps, seed=seed, progress=progress, dropout="off")
        for r in tc.results:
            if not r["passed"] and tc.dtype == "float64" and cap.dtype == "float32":
                r["blame"] = (f"{r['blame']}; note: the graph is float32, its float constants "
                              f"are the torch model's rounded to float32 (certify(dtype="
                              f"'float32') holds it to the measured float32 bounds)")
            r["against"] = (f"torch source: gradients, {steps} steps"
                            + ("" if tc.dtype == "float64" else f", {tc.dtype} bounds"))
            # "forward": the worst of the row (the table's one column); "output": its own
            r["worst"]["output"] = r["worst"].get("forward", 0.0)
            r["worst"]["forward"] = max(r["worst"].values(), default=0.0)
            cert.results.append(r)
        cert.seconds["torch source"] = tc.seconds.get("source", 0.0)
    if out is not None:
        from rosetta.files import atomic_file
        path = Path(out) / "certificate.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            f.write(json.dumps(cert.to_json(), indent=1, default=str).encode())
    return cert
