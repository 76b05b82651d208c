"""The ONNX import sweep: small torch models exported by both torch exporters (``dynamo=True``
and the TorchScript one), imported with ``rosetta.from_onnx`` and certified (forward against
``onnx.reference`` in float64 on each backend, onnxruntime in float32 within the measured bound),
or refused with their lines. Prints one row per model and exporter with the worst error.

    .venv/bin/python -m rosetta.conformance.onnx_sweep [--backends torch jax tensorflow]
        [--models mlp attention ...] [--out sweep.json]
    .venv/bin/python -m rosetta.conformance.onnx_sweep --hf [--models gpt2 bert ...]
        [--exporters torchscript dynamo] [--torch-source]

``--hf``: the HuggingFace and timm models of ``conformance/hf_models.py`` (small configs, random
weights) instead, exported in float32 (the certificate casts the graph to double for
``onnx.reference``; onnxruntime runs it as written). ``--torch-source`` also gives ``from_onnx``
the torch model the graph came from (``torch_module=``, its Adam and loss), so the certificate
adds gradients and 3 optimizer steps against it (each torch parameter paired with the
initializer that holds it: ``importers/onnx_pairing.py``) in float64, or at the measured float32
bounds (``--torch-dtype float32``; always for a model of ``hf_models.FLOAT32``, which computes
part of its float64 forward in float32 and cannot meet the float64 tier). A float32 graph holds
its constants rounded to float32 (GPT-2's gelu_new 0.044715 and sqrt(2/pi)): where the torch
model computes them in float64, only the float32 certificate can pass, and the float64 row names
the difference.

    .venv/bin/python -m rosetta.conformance.onnx_sweep --hf --torch-source [--torch-dtype float32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _models():
    import torch
    from torch import nn

    class Attention(nn.Module):
        """One pre-norm transformer block written with tensor ops (view, transpose, matmul,
        softmax, a causal mask from shapes, GELU)."""

        def __init__(self, d=16, heads=2, t=6):
            super().__init__()
            self.h, self.t = heads, t
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.head = nn.Linear(d, 5)

        def forward(self, x):
            n, t, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
            q, k, v = (z.view(n, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
            a = q @ k.transpose(-1, -2) / (d // self.h) ** 0.5
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
            a = a.masked_fill(mask, float("-inf")).softmax(-1)
            x = x + self.proj((a @ v).transpose(1, 2).reshape(n, t, d))
            x = x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))
            return self.head(x.mean(1))

    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x * s, 1), 1))

    def cnn():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, stride=2, groups=2),
                             nn.Hardswish(), nn.Flatten(), nn.Linear(8, 10))

    torch.manual_seed(0)
    out = {
        "mlp": (nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 8),
                              nn.LeakyReLU(0.2), nn.Linear(8, 3)), (2, 12)),
        "cnn": (cnn(), (2, 3, 8, 8)),
        "squeeze_excite": (SE(), (2, 3, 8, 8)),
        "attention": (Attention(), (2, 6, 16)),
    }
    out.update(_transformers())
    return out


def _transformers() -> dict:
    """HuggingFace GPT-2 and BERT from small configs (2 layers, hidden size 32, random
    weights), taking token ids; empty where transformers is not installed."""
    import types

    import torch

    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    try:
        from transformers import (BertConfig, BertForSequenceClassification, GPT2Config,
                                  GPT2LMHeadModel)
    except Exception:
        return {}

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            return self.m(input_ids=ids).logits

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50,
                                      n_positions=16, use_cache=False, bos_token_id=0,
                                      eos_token_id=0))
    bert = BertForSequenceClassification(BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
        vocab_size=50, max_position_embeddings=16, num_labels=3))
    return {"hf_gpt2": (Logits(gpt2), (2, 8), 50), "hf_bert": (Logits(bert), (2, 8), 50)}


def _hf_models(names=None) -> dict:
    """{name: (build, kind)} of ``hf_models.HF_MODELS`` (``names``: some of them); ``build()``
    returns ``(float32 module in eval mode, example input, loss)``."""
    from rosetta.conformance.hf_models import HF_MODELS, build

    picked = [n for n in HF_MODELS if not names or n in names]
    return {n: (lambda n=n: build(n, dtype="float32")) for n in picked}


def _small(names=None) -> dict:
    """{name: build} of the small torch models of ``_models``: ``(module, input, None)``."""
    import torch

    out = {}
    for name, (model, shape, *vocab) in _models().items():
        if names and name not in names:
            continue
        x = torch.randint(0, vocab[0], shape) if vocab else torch.randn(*shape)
        out[name] = lambda m=model, x=x: (m, x, None)
    return out


def _torchscript_diff():
    """Give the TorchScript exporter the ``aten::diff`` it lacks (transformers' mask code calls
    ``torch.diff`` on the position ids when tracing: GPT-2, Llama, Mistral): diff(x, 1, dim,
    prepend, append) = Slice(y, 1:) - Slice(y, :-1) along dim, y = Concat(prepend, x, append),
    its definition (n > 1 is refused by the exporter). And ``aten::cumsum`` of a bool tensor
    (the same code's ``(diff != 1).cumsum(-1)``) as torch computes it, in int64: the exporter
    writes ONNX CumSum of the bool itself, a type ONNX CumSum does not take (onnxruntime
    refuses the graph)."""
    import torch
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx._internal.torchscript_exporter import _type_utils
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as sh

    def diff(g, x, n, dim, prepend, append):
        if sh._maybe_get_const(n, "i") != 1:
            return sh._unimplemented("diff", "n > 1")
        d = sh._maybe_get_const(dim, "i")
        parts = [t for t in (prepend, x, append) if not sh._is_none(t)]
        y = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis_i=d)

        def cut(lo, hi):
            c = [g.op("Constant", value_t=torch.tensor([v])) for v in (lo, hi, d)]
            return g.op("Slice", y, *c)

        return g.op("Sub", cut(1, 2 ** 62), cut(0, -1))

    def cumsum(g, x, dim, dtype=None):
        if dtype is not None and not sh._is_none(dtype):
            to = _type_utils.JitScalarType(sh._get_const(dtype, "i", "dtype")).onnx_type()
            x = g.op("Cast", x, to_i=to)
        elif sh._is_bool(x):
            x = g.op("Cast", x, to_i=_type_utils.JitScalarType.INT64.onnx_type())
        axis = g.op("Constant", value_t=torch.tensor(sh._maybe_get_const(dim, "i")))
        return g.op("CumSum", x, axis)

    register_custom_op_symbolic("aten::diff", diff, 13)
    register_custom_op_symbolic("aten::cumsum", cumsum, 13)


def run(backends, names=None, progress=print, *, hf=False, exporters=("torchscript", "dynamo"),
        torch_source=False, torch_dtype="float64") -> list:
    import torch

    import rosetta
    from rosetta.importers import ImportRefused

    rows = []
    models = _hf_models(names) if hf else _small(names)
    _torchscript_diff()
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in models.items():
            try:
                model, x, loss = make()
            except Exception as e:
                row = {"model": name, "exporter": "-", "status": "build failed",
                       "detail": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
                rows.append(row)
                progress(_line(row))
                continue
            model.eval()
            torch.manual_seed(0)
            with torch.no_grad():   # trained-like weights: no two initializers alike (an
                for prm in model.parameters():   # exporter merges equal ones into one)
                    prm.add_(0.1 * torch.randn_like(prm))
            for exporter in exporters:
                dynamo = exporter == "dynamo"
                path = Path(tmp) / f"{name.replace('/', '_')}_{exporter}.onnx"
                row = {"model": name, "exporter": exporter}
                t0 = time.perf_counter()
                failed = _export(model, x, path, dynamo, dynamic=True)
                if failed:   # the exporter cannot keep the batch dynamic: a fixed batch, said
                    if _export(model, x, path, dynamo, dynamic=False):
                        row.update(status="export failed", detail=failed)
                        rows.append(row)
                        progress(_line(row))
                        continue
                    row["static_batch"] = f"dynamic batch not exported: {failed}"
                # the certificate runs the example batch (BART's holds one eos per example)
                kw = dict(example_inputs=(x,))
                if torch_source:
                    kw.update(torch_module=model, loss=loss,
                              optimizer=torch.optim.Adam(model.parameters(), lr=1e-3))
                try:
                    imp = rosetta.from_onnx(path, **kw)
                except ImportRefused as e:
                    row.update(status="refused", detail=" | ".join(e.lines))
                    rows.append(row)
                    progress(_line(row))
                    continue
                dtype = None
                if torch_source:
                    from rosetta.conformance.hf_models import FLOAT32
                    dtype = "float32" if hf and name in FLOAT32 else torch_dtype
                cert = imp.certify(tuple(backends), dtype=dtype)
                worst = {}
                for r in cert.results:
                    if r.get("skipped"):
                        continue
                    if "torch source" in r.get("against", ""):   # forward, gradient, step
                        tag = f"{r['backend']} src{'32' if dtype == 'float32' else ''}"
                        for k, label in (("output", "forward"), ("grads", "gradient"),
                                         ("step", "step")):
                            if k in r["worst"]:
                                worst[f"{tag} {label}"] = r["worst"][k]
                        continue
                    worst[r["backend"]] = r["worst"].get("forward")
                    if r["backend"] == "onnxruntime" and r["worst"].get("bound"):
                        worst["onnxruntime share"] = r["worst"]["bound"] and (
                            r["worst"]["forward"] / r["worst"]["bound"])
                row.update(status="PASS" if cert.passed else "FAIL", worst=worst,
                           inference_only=bool(imp.inference_only),
                           seconds=round(time.perf_counter() - t0, 1),
                           detail="; ".join(dict.fromkeys(   # one line said once
                               r["blame"] or r.get("skipped", "") for r in cert.results
                               if not r["passed"] or r.get("skipped"))))
                rows.append(row)
                progress(_line(row))
    return rows


def _export(model, x, path, dynamo: bool, dynamic: bool) -> str:
    """Export ``model`` on ``x`` to ``path`` with torch's exporter (``dynamo``), the batch axis
    dynamic or not; "" or the exporter's root error in one line."""
    import torch

    kw = {}
    if dynamic:
        kw = ({"dynamic_shapes": ({0: torch.export.Dim("N")},)} if dynamo
              else {"dynamic_axes": {"x": {0: "N"}}})
    try:
        torch.onnx.export(model, (x,), str(path), input_names=["x"], dynamo=dynamo, **kw)
    except Exception as e:
        while e.__cause__ is not None:   # the exporter's root cause
            e = e.__cause__
        return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    return ""


def _line(row) -> str:
    w = row.get("worst") or {}
    nums = " ".join(f"{k} {v:.1e}" for k, v in w.items() if v is not None)
    extra = " (inference only)" if row.get("inference_only") else ""
    if row.get("static_batch"):
        extra += f" (batch fixed at export; {row['static_batch']})"
    return (f"{row['model']:<28} {row['exporter']:<12} {row['status']:<8} {nums}{extra}"
            f"{'  ' + row['detail'] if row.get('detail') else ''}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", nargs="+", default=["torch", "jax", "tensorflow"])
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--hf", action="store_true",
                   help="the HuggingFace/timm models of conformance/hf_models.py")
    p.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"],
                   choices=["torchscript", "dynamo"])
    p.add_argument("--torch-source", action="store_true",
                   help="certify gradients and steps against the torch model too")
    p.add_argument("--torch-dtype", default="float64", choices=["float64", "float32"],
                   help="the dtype of the rows against the torch source (float32: at the "
                        "measured float32 bounds)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = run(args.backends, args.models, hf=args.hf, exporters=tuple(args.exporters),
               torch_source=args.torch_source, torch_dtype=args.torch_dtype)
    if args.out:
        from rosetta.files import atomic_file
        with atomic_file(Path(args.out)) as f:
            f.write(json.dumps(rows, indent=1).encode())
    return 0 if all(r["status"] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
