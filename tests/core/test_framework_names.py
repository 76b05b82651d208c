"""No module of ``core/`` or ``conformance/`` knows a framework by name: the syntax tree of each
holds no framework name as a value (a string constant, either quote style) and no framework
import, outside docstrings and the allow-list below. What a framework is and does is declared by
its backend (``rosetta.backend.Backend``), never branched on here (docs/design.md section 1)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = {"torch", "tensorflow", "jax", "mxnet", "keras", "flax", "optax"}

# path (relative to the repository) or folder -> (names allowed there: "*" for any, why)
ALLOWED = {
    "conformance/bench/baselines/": ("*", "the hand-written native baselines: framework code "
                                          "by definition, timed against rosetta's lowering"),
    "conformance/native_": ("*", "the native-code comparison modules (native_torch.py, ...): "
                                 "each is one framework's own hand-written training code"),
    "conformance/bench/recurrent.py": ("*", "the recurrent bench's hand-written native "
                                            "baselines (torch nn.LSTM/GRU, flax nn.RNN), "
                                            "the same kind of code as baselines/"),
    "conformance/parallel_traps.py": ("*", "faults planted inside each engine's framework part "
                                           "(a DDP comm hook, a jax sharding) to prove the "
                                           "parallel suite catches them: framework code"),
    "conformance/bench/keras.py": ({"keras"}, "the Keras 3 reference column: 'keras' names "
                                              "Keras's own package and the column's fields, "
                                              "not a rosetta backend"),
    "conformance/bench/command.py": ({"keras"}, "the --keras column's setting in the report"),
    "core/importers/keras_source.py": ({"keras", "tensorflow", "jax", "torch"},
                                       "the Keras source of the certificate takes its "
                                       "gradients the way each KERAS_BACKEND allows"),
    "core/importers/": ({"torch", "keras"}, "the importers read a model in its source "
                                            "framework and run "
                                   "it as the certificate's reference participant: the source "
                                   "side, as conformance/native_*.py is for native code"),
    "conformance/import_sweep.py": ("*", "the torchvision sweep builds its source models in "
                                         "torch"),
    "conformance/import_fuzz.py": ({"torch"}, "the fuzz builds its source model in torch"),
    "conformance/import_acceptance.py": ("*", "the importer's acceptance runs train their "
                                              "sources in torch and name the backends they "
                                              "continue on"),
    "conformance/hf_models.py": ("*", "the HuggingFace sweep's source models are torch modules "
                                 "built from transformers configs"),
    "conformance/onnx_sweep.py": ("*", "the ONNX sweep builds its source models in torch and "
                                       "exports them with torch's ONNX exporters"),
    "conformance/bench/imported.py": ("*", "the imported-model bench builds HuggingFace torch "
                                           "models, steps the HuggingFace model itself as "
                                           "torch's baseline and picks each framework's "
                                           "hand-written baseline (baselines/hf_*.py)"),
}


def _allowed(rel: str) -> tuple[set | str, str] | None:
    for prefix, rule in ALLOWED.items():
        if rel == prefix or (prefix.endswith(("/", "_")) and rel.startswith(prefix)):
            return rule
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.add(id(body[0].value))
    return out


def framework_uses(source: str) -> list[tuple[int, str, str]]:
    """(line, what, framework) for every framework name used as a value or imported."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value in FRAMEWORKS and id(node) not in docs:
            found.append((node.lineno, "name", node.value))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, "import", a.name.split(".")[0]) for a in node.names
                      if a.name.split(".")[0] in FRAMEWORKS]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in FRAMEWORKS:
            found.append((node.lineno, "import", node.module.split(".")[0]))
    return found


def test_the_scan_finds_names_and_imports_but_not_docstrings():
    source = ('"""torch"""\nimport jax.numpy\nfrom optax import sgd\n'
              "def f():\n    'keras'\n    return {'mxnet': 1, \"tensorflow\": 'flax'}\n"
              "x = 'torchvision'\n")
    assert sorted(framework_uses(source)) == [
        (2, "import", "jax"), (3, "import", "optax"), (6, "name", "flax"),
        (6, "name", "mxnet"), (6, "name", "tensorflow")]


def _modules():
    for folder in ("core", "conformance"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_framework_is_named_outside_backends():
    bad = []
    for path in _modules():
        rel = str(path.relative_to(ROOT))
        rule = _allowed(rel)
        allowed = rule[0] if rule else set()
        if allowed != "*":
            bad += [f"{rel}:{line}: {what} {fw!r}"
                    for line, what, fw in framework_uses(path.read_text()) if fw not in allowed]
    assert not bad, ("framework knowledge outside backends/ (declare it on the backend: "
                     "rosetta.backend.Backend):\n" + "\n".join(bad))


def test_every_allowance_is_used():
    """An allow-list entry that nothing needs any more is taken out."""
    for prefix, (names, why) in ALLOWED.items():
        paths = [p for p in _modules() if _allowed(str(p.relative_to(ROOT))) == (names, why)]
        assert paths, f"{prefix}: matches no module"
        if names != "*":
            used = {fw for p in paths for _, _, fw in framework_uses(p.read_text())}
            assert names <= used, f"{prefix}: {names - used} no longer used"
