"""``rosetta bench --imported gpt2 bert``: HuggingFace GPT-2 and BERT imported with
``rosetta.from_torch`` and trained one AdamW step at a time on torch, JAX and TensorFlow, each
beside that framework's own code for the same model, in one process:

* torch: the HuggingFace model itself (``GPT2LMHeadModel`` / ``BertForSequenceClassification``,
  its default attention, ``sdpa``) with ``torch.optim.AdamW`` and the textbook step;
* JAX: hand-written flax + optax (``baselines/hf_jax.py``);
* TensorFlow: hand-written ``tf.function`` code (``baselines/hf_tensorflow.py``).

The models (``SIZES``): 2 layers, hidden 128, 4 heads, feed-forward 512, vocabulary 1024,
sequence 64, batch 8, float32, dropout 0 (a dropout mask is random: with it on, the two sides
would not train to the same numbers, and the mask's cost is not what is measured here). The
import is of the ``eager`` attention model (the one whose float64 certificate the import sweep
holds); the torch baseline is the same weights in HuggingFace's default ``sdpa`` attention.

Timing is ``timing``'s rule: after warm-up, rosetta's and the baseline's steps alternate in
blocks of ``block`` steps, each step timed on its own and synchronised by the loss as a Python
float; ``ratio`` is the median over blocks of (rosetta block median / baseline block median).
Before timing, both sides' first loss (the same weights, the same batch) is recorded:
``loss_gap``, the relative gap (float32 noise, ~1e-6; a wrong port would show at 1e-2).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
import types

import numpy as np

from rosetta.backend_registry import get_backend
from rosetta.conformance.bench.timing import _quantiles, _timed

SIZES = {"vocab": 1024, "hidden": 128, "layers": 2, "heads": 4, "intermediate": 512,
         "positions": 64, "seq": 64, "batch": 8, "labels": 2}
ADAMW = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01}
NAMES = ("gpt2", "bert")
BACKENDS = ("torch", "jax", "tensorflow")   # the frameworks with a baseline of these models
DEFAULT_STEPS = 60
N_BATCHES = 4


def _transformers():
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import transformers
    return transformers


def hf_model(name: str, attention: str = "eager", seed: int = 0):
    """``(model, cfg)``: the HuggingFace model of ``name`` at ``SIZES`` (float32, dropout 0,
    random weights from ``seed``) and the plain ``cfg`` dict the baselines take."""
    import torch

    T = _transformers()
    s = SIZES
    torch.manual_seed(seed)
    if name == "gpt2":
        config = T.GPT2Config(vocab_size=s["vocab"], n_embd=s["hidden"], n_layer=s["layers"],
                              n_head=s["heads"], n_inner=s["intermediate"],
                              n_positions=s["positions"], resid_pdrop=0.0, embd_pdrop=0.0,
                              attn_pdrop=0.0, attn_implementation=attention, use_cache=False,
                              bos_token_id=0, eos_token_id=0)
        model, eps = T.GPT2LMHeadModel(config), config.layer_norm_epsilon
    elif name == "bert":
        config = T.BertConfig(vocab_size=s["vocab"], hidden_size=s["hidden"],
                              num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                              intermediate_size=s["intermediate"],
                              max_position_embeddings=s["positions"], num_labels=s["labels"],
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                              pad_token_id=None, attn_implementation=attention,
                              use_cache=False)
        model, eps = T.BertForSequenceClassification(config), config.layer_norm_eps
    else:
        raise ValueError(f"unknown imported bench model {name!r} (known: {', '.join(NAMES)})")
    cfg = dict(s, model=name, epsilon=eps)
    return model.float(), cfg


def batches(name: str, count: int = N_BATCHES, seed: int = 0) -> list:
    """``count`` (tokens (N, T) int64, labels) pairs: next-token-style labels (N, T) for GPT-2's
    language-model head, class labels (N,) for BERT's classifier."""
    rng = np.random.default_rng(seed)
    s = SIZES
    out = []
    for _ in range(count):
        x = rng.integers(0, s["vocab"], (s["batch"], s["seq"]))
        y = (rng.integers(0, s["vocab"], (s["batch"], s["seq"])) if name == "gpt2"
             else rng.integers(0, s["labels"], (s["batch"],)))
        out.append((x, y))
    return out


class HFTorch:
    """The torch baseline: the HuggingFace model itself (default ``sdpa`` attention, the same
    weights), ``torch.optim.AdamW`` with torch's defaults, zero_grad / forward / loss / backward
    / step, the loss synchronised with ``.item()``."""

    def __init__(self, model, loss):
        import torch

        self.torch, self.model, self.loss = torch, model, loss
        o = ADAMW
        self.opt = torch.optim.AdamW(model.parameters(), lr=o["lr"], betas=(o["beta1"],
                                     o["beta2"]), eps=o["eps"], weight_decay=o["weight_decay"])
        model.train()

    def put(self, x, y):
        return self.torch.from_numpy(x), self.torch.from_numpy(y)

    def step(self, batch):
        x, y = batch
        self.opt.zero_grad(set_to_none=True)
        value = self.loss(self.model(x)[0], y)
        value.backward()
        self.opt.step()
        return value.item()


def imported(name: str, dtype: str = "float32", import_: bool = True):
    """``(Imported, cfg, HuggingFace sdpa twin, loss module, parameter arrays)`` of ``name``
    in ``dtype`` (``import_=False``: no import, None in its place)."""
    import torch

    import rosetta
    from rosetta.importers.hf import Logits, TokenCrossEntropy

    model, cfg = hf_model(name, "eager")
    twin, _ = hf_model(name, _default_attention())
    if dtype == "float64":
        model, twin = model.double(), twin.double()
    twin.load_state_dict(model.state_dict())
    loss = TokenCrossEntropy() if name == "gpt2" else torch.nn.CrossEntropyLoss()
    wrapped = Logits(model)
    o = ADAMW
    opt = torch.optim.AdamW(wrapped.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]),
                            eps=o["eps"], weight_decay=o["weight_decay"])
    x = torch.from_numpy(batches(name, 1)[0][0])
    imp = rosetta.from_torch(wrapped, x, optimizer=opt, loss=loss, name=f"hf_{name}") \
        if import_ else None
    weights = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    return imp, cfg, twin, loss, weights


def _default_attention() -> str:
    """HuggingFace's default attention on this install (``sdpa`` where torch has it)."""
    return "sdpa"


def baseline(backend: str, cfg, twin, loss, weights, mode: str, dtype: str = "float32"):
    """The framework's own code for the model on ``backend``."""
    if backend == "torch":
        return HFTorch(copy.deepcopy(twin), loss)
    if backend == "jax":
        from rosetta.conformance.bench.baselines import hf_jax
        return hf_jax.build(cfg, weights, ADAMW, seq=SIZES["seq"], mode=mode, dtype=dtype)
    if backend == "tensorflow":
        from rosetta.conformance.bench.baselines import hf_tensorflow
        return hf_tensorflow.build(cfg, weights, ADAMW, seq=SIZES["seq"], mode=mode,
                                   dtype=dtype)
    raise ValueError(f"no hand-written baseline of the imported models on {backend!r}")


def run(name: str, backend: str, mode: str | None, *, steps: int, block: int, warmup: int,
        parts=None, log=lambda m: None) -> dict:
    """One row: ``name`` imported and stepped on ``backend``/``mode`` against the baseline."""
    from rosetta.trained import TrainedModel

    imp, cfg, twin, loss, weights = parts or imported(name)
    mode = mode or get_backend(backend).modes[0]
    host = batches(name)
    t0 = time.perf_counter()
    program = TrainedModel.from_state(imp.spec, imp.params, imp.state, backend=backend,
                                      dtype="float32", mode=mode)["program"]
    input_name = imp.spec.model.inputs[0].name
    rb = [program.prepare_batch({input_name: x}, y) for x, y in host]
    first = program.train_step(rb[0])
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer = baseline(backend, cfg, twin, loss, weights, mode)
    nb = [trainer.put(x, y) for x, y in host]
    native_first = trainer.step(nb[0])
    native_compile_s = time.perf_counter() - t0
    _timed(program.train_step, rb, warmup, 1, [])
    _timed(trainer.step, nb, warmup, 1, [])
    ours, theirs, ratios = [], [], []
    done, i, start = 0, 0, 1 + warmup
    while done < steps:
        n = min(block, steps - done)
        r, b = [], []
        order = [(program.train_step, rb, r), (trainer.step, nb, b)]
        for step, bs, out in (order if i % 2 == 0 else order[::-1]):
            _timed(step, bs, n, start, out)
        ours += r
        theirs += b
        ratios.append(statistics.median(r) / statistics.median(b))
        done, start, i = done + n, start + n, i + 1
    q, nq = _quantiles(ours), _quantiles(theirs)
    row = {"model": name, "backend": backend, "mode": mode, "steps": steps, "block": block,
           "warmup": warmup, "batch_size": SIZES["batch"], "seq": SIZES["seq"],
           "step_ms_median": q["median"], "step_ms_iqr": q["iqr"],
           "native_step_ms": nq["median"], "native_step_ms_iqr": nq["iqr"],
           "ratio": float(statistics.median(ratios)),
           "ratio_iqr": float(np.subtract(*np.percentile(ratios, [75, 25]))),
           "compile_seconds": compile_s, "native_compile_seconds": native_compile_s,
           "first_loss": first, "native_first_loss": native_first,
           "loss_gap": abs(first - native_first) / abs(native_first),
           "baseline": {"torch": "HuggingFace model (sdpa) + torch.optim.AdamW",
                        "jax": "hand-written flax + optax (hf_jax.py)",
                        "tensorflow": "hand-written tf.function (hf_tensorflow.py)"}[backend]}
    log(f"  {name} {backend}/{mode}: rosetta {q['median']:.2f} ms, baseline "
        f"{nq['median']:.2f} ms, ratio {row['ratio']:.3f}; first losses {first:.6f} / "
        f"{native_first:.6f}")
    return row


def compare_losses(name: str, backends=BACKENDS, steps: int = 3, rosetta: bool = True) -> dict:
    """The float64 proof that the baselines train the HuggingFace model: per-step losses from
    the same weights on the same batches of the HuggingFace torch model (``sdpa``, AdamW), of
    rosetta's import on each backend and of each hand-written baseline; returns
    ``{column: [losses]}`` and ``worst`` (each column's worst relative gap to the HuggingFace
    one). ``rosetta=False``: the baselines alone (the test's quick form)."""
    from rosetta.trained import TrainedModel

    imp, cfg, twin, loss, weights = imported(name, "float64", import_=rosetta)
    host = batches(name)
    cols = {}
    hf = HFTorch(copy.deepcopy(twin), loss)
    cols["huggingface/torch"] = [hf.step(hf.put(*host[i % len(host)])) for i in range(steps)]
    for backend in backends:
        if rosetta:
            input_name = imp.spec.model.inputs[0].name
            program = TrainedModel.from_state(imp.spec, imp.params, imp.state, backend=backend,
                                              dtype="float64")["program"]
            cols[f"rosetta/{backend}"] = [
                program.train_step(program.prepare_batch({input_name: host[i % len(host)][0]},
                                                         host[i % len(host)][1]))
                for i in range(steps)]
        if backend != "torch":
            trainer = baseline(backend, cfg, twin, loss, weights,
                               get_backend(backend).modes[0], "float64")
            cols[f"baseline/{backend}"] = [trainer.step(trainer.put(*host[i % len(host)]))
                                           for i in range(steps)]
    ref = np.asarray(cols["huggingface/torch"])
    worst = {k: float(np.max(np.abs(np.asarray(v) - ref) / np.abs(ref)))
             for k, v in cols.items() if k != "huggingface/torch"}
    return {"losses": cols, "worst": worst}


def run_all(names, backends, *, modes=None, steps=60, block=10, warmup=10,
            log=lambda m: None) -> list[dict]:
    rows = []
    for name in names:
        log(f"importing HuggingFace {name} ...")
        parts = imported(name)
        for backend in backends:
            ms = [m for m in get_backend(backend).modes if m in modes] if modes else [None]
            for mode in ms:
                rows.append(run(name, backend, mode, steps=steps, block=block, warmup=warmup,
                                parts=parts, log=log))
    return rows


def table(rows, load: str = "") -> str:
    """The Markdown table: ms per step (median) of rosetta and the baseline, and the ratio."""
    lines = ["| model | backend/mode | rosetta ms | baseline ms | ratio (IQR) | first-loss gap |"
             " baseline |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['backend']}/{r['mode']} | {r['step_ms_median']:.2f} "
                     f"| {r['native_step_ms']:.2f} | {r['ratio']:.3f} ({r['ratio_iqr']:.3f}) | "
                     f"{r['loss_gap']:.0e} | {r['baseline']} |")
    if load:
        lines.append(f"\n{load}")
    return "\n".join(lines)


def load_average() -> str:
    import os

    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min), " \
           f"{os.cpu_count()} cores"
