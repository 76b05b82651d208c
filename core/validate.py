"""The one validation layer every command goes through before any framework is imported.

Bad input is refused here with one clear line (a ``RosettaError``, exit status 2), the same on
every backend, instead of reaching a framework that would raise its own error, silently accept it,
or fail late. The rules:

* **raw JSON** (``check_json``): nested at most ``MAX_DEPTH`` levels; every name position (a
  loss, optimizer, schedule, dataset, source, op, node, input or output name) holds a string.
* **numbers** (``check_spec``): every number in a spec is finite (a NaN or infinite learning
  rate, clipping value, weight decay, epsilon, initializer scale or dataset argument is refused
  up front), and within the float32 range for a float32 run (``check_dtype_range``: 1e308 is
  refused there, not in float64); every integer fits a signed 64-bit integer (seeds included:
  ``0 <= seed < 2**63``, the range every framework's RNG accepts); ``steps <= MAX_STEPS``.
* **dataset arguments** (``check_dataset_args``): integer sizes are integers in their range
  (``DATASET_INTS``), scales are >= 0, and the whole dataset is at most ``MAX_DATASET_ELEMENTS``
  numbers, so a typo cannot ask for terabytes.
* **memory** (``check_memory``): parameters, gradients, optimizer slots and the activations of
  one batch, estimated from shape inference, must fit in the memory available now; else the run
  is refused with the estimate (``--ignore-memory`` overrides).
* **output paths** (``check_output``): a ``--report``, ``--plot`` or ``--save`` destination
  has the right suffix and a folder that can be made and written (probed), checked before any
  work starts.
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from rosetta.errors import DataError, SpecError

MAX_DEPTH = 32
INT64 = 2 ** 63
MAX_STEPS = 10 ** 9
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_DATASET_ELEMENTS = 2 ** 28          # 2 GiB of float64
# integer dataset arguments: (lowest, highest); every other numeric argument must be >= 0
DATASET_INTS = {"n": (2, 10 ** 7), "height": (1, 4096), "width": (1, 4096),
                "channels": (1, 256), "size": (1, 4096), "classes": (2, 10 ** 5),
                "features": (1, 10 ** 6), "length": (2, 10 ** 5), "min_length": (1, 10 ** 5),
                "symbols": (2, 10 ** 4), "seed": (0, INT64 - 1)}
# the arguments whose product is the number of features per example
_SHAPE_ARGS = ("height", "width", "channels", "size", "features", "length")

# name positions of the raw JSON: (path of keys from the root, key) -> what it names
_NAME_KEYS = {("loss",): "name", ("optimizer",): "name", ("optimizer", "learning_rate"):
              "schedule", ("data",): ("source", "dataset", "path", "label"),
              ("model",): "name"}


def _fail(message, where):
    raise SpecError(message, where=where)


def check_depth(value, where: str = "$") -> None:
    """Refuse JSON nested deeper than ``MAX_DEPTH`` (walked without recursion)."""
    todo = [(value, 0)]
    while todo:
        v, depth = todo.pop()
        if depth > MAX_DEPTH:
            _fail(f"nested deeper than {MAX_DEPTH} levels; a rosetta spec is a few levels deep",
                  where)
        if isinstance(v, dict):
            todo.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            todo.extend((x, depth + 1) for x in v)


def _string_at(d, key, where):
    if isinstance(d, dict) and key in d and not isinstance(d[key], str):
        _fail(f"{key!r} must be a string, found {type(d[key]).__name__} {d[key]!r}"[:160],
              f"{where}.{key}")


def _names_list(v, where):
    if isinstance(v, list):
        for i, x in enumerate(v):
            if not isinstance(x, str):
                _fail(f"expected a name (a string), found {type(x).__name__} {x!r}"[:160],
                      f"{where}[{i}]")


def check_json(d) -> None:
    """The raw JSON of a spec: depth and the type of every name position (before any lookup,
    so a list where a name belongs is a clear error, never an unhashable-type traceback)."""
    check_depth(d)
    if not isinstance(d, dict):
        return
    for path, keys in _NAME_KEYS.items():
        node, where = d, "$"
        for k in path:
            node = node.get(k) if isinstance(node, dict) else None
            where += f".{k}"
        for key in (keys if isinstance(keys, tuple) else (keys,)):
            _string_at(node, key, where)
    model = d.get("model")
    if not isinstance(model, dict):
        return
    _names_list(model.get("outputs"), "$.model.outputs")
    for part in ("inputs", "nodes"):
        items = model.get(part)
        for i, item in enumerate(items if isinstance(items, list) else []):
            where = f"$.model.{part}[{i}]"
            for key in ("name", "op", "kind"):
                _string_at(item, key, where)
            if part == "nodes" and isinstance(item, dict):
                _names_list(item.get("inputs"), f"{where}.inputs")


def check_numbers(value, where: str = "$", limit: float | None = None) -> None:
    """Every number in (the JSON of) a spec is finite (and at most ``limit`` in magnitude) and
    every integer fits 64 bits."""
    todo = [(value, where)]
    while todo:
        v, w = todo.pop()
        if isinstance(v, bool):
            continue
        if isinstance(v, (float, np.floating)) and not math.isfinite(v):
            _fail(f"must be a finite number, found {v}", w)
        if limit is not None and isinstance(v, (float, np.floating)) and abs(v) > limit:
            _fail(f"{v} exceeds the float32 range (+-{limit:.3g}) of a float32 run", w)
        if isinstance(v, (int, np.integer)) and not -INT64 <= int(v) < INT64:
            _fail(f"{v} does not fit a signed 64-bit integer", w)
        if isinstance(v, dict):
            todo.extend((x, f"{w}.{k}") for k, x in v.items())
        elif isinstance(v, (list, tuple)):
            todo.extend((x, f"{w}[{i}]") for i, x in enumerate(v))


def check_dataset_args(name: str, args: dict, where: str = "$.data.args") -> None:
    """Ranges of a built-in dataset's arguments (the function's signature gives the defaults)."""
    from rosetta.data import DATASETS

    fn = DATASETS.get(name)
    if fn is None:
        return
    params = inspect.signature(fn).parameters
    full = {k: p.default for k, p in params.items()}
    for k, v in args.items():
        if k not in params:
            _fail(f"dataset {name!r} takes {sorted(params)}, found {k!r}", where)
        default = params[k].default
        if isinstance(default, bool) or isinstance(default, str):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            _fail(f"{k} must be a number, found {v!r}", f"{where}.{k}")
        if k in DATASET_INTS:
            lo, hi = DATASET_INTS[k]
            if not isinstance(v, int) or not lo <= v <= hi:
                _fail(f"{k} must be an integer in [{lo}, {hi}], found {v!r}", f"{where}.{k}")
        elif not math.isfinite(v) or v < 0:
            _fail(f"{k} must be a finite number >= 0, found {v!r}", f"{where}.{k}")
        full[k] = v
    per_example = math.prod(int(full[k]) for k in _SHAPE_ARGS if k in full)
    total = int(full.get("n", 1)) * per_example
    if total > MAX_DATASET_ELEMENTS:
        _fail(f"dataset {name!r} with these arguments holds {total:,} numbers, more than "
              f"{MAX_DATASET_ELEMENTS:,}; give smaller sizes, or the data as a file (--data)",
              where)


def check_spec(spec) -> None:
    """Every number of a whole ``TrainSpec`` finite and within 64 bits (the ranges of single
    fields are checked where the field is: ``TrainSpec``, ``DataSpec``, optimizers...)."""
    check_numbers(spec.to_json())


def check_dtype_range(spec, dtype: str) -> None:
    """A float32 run holds every number of the spec (learning rate, epsilon...) in float32: a
    number beyond its range (1e308) is refused, where a backend would raise its own overflow
    error or compute with infinity. A float64 run takes any finite number."""
    if dtype == "float32":
        check_numbers(spec.to_json(), limit=FLOAT32_MAX)


def check_seed(seed, flag: str = "--seed") -> None:
    if seed is not None and not 0 <= seed < INT64:
        _fail(f"a seed is an integer in [0, 2**63), found {seed}", flag)


# --- memory ---------------------------------------------------------------------------------------

_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2}


def memory_estimate(spec, batch_size: int, dtype: str = "float32") -> dict:
    """Bytes one training step needs, from shape inference:

    * parameters P (trainable and model state), their gradients (P again) and the optimizer's
      slots (k x P for k slots per parameter: 0 for SGD without momentum, 2 for Adam);
    * activations: every node's output for the batch, kept for the backward pass, and as much
      again for their gradients (2 x batch x sum of output sizes).

    Framework workspaces, the data and compiled code come on top: this is a lower bound, which
    is what a refusal needs."""
    size = _BYTES.get(dtype, 4)
    g = spec.model
    n_params = sum(int(np.prod(d.shape)) for d in g.param_defs().values())
    n_state = sum(int(np.prod(d.shape)) for d in g.state_defs().values())
    # slots per trainable parameter (frozen parameters have none)
    slots = len(spec.optimizer.with_frozen([]).state_names(["p"]))
    n_trained = sum(int(np.prod(d.shape)) for p, d in g.param_defs().items()
                    if not spec.optimizer.is_frozen(p))
    n_act = sum(int(np.prod(n.out_type.shape)) for n in g.nodes)
    parts = {"parameters": (n_params + n_state) * size, "gradients": n_params * size,
             "optimizer slots": slots * n_trained * size,
             "activations": 2 * batch_size * n_act * size}
    return {**parts, "total": sum(parts.values())}


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``; else the physical total)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(b: int) -> str:
    return f"{b / 2 ** 30:.2f} GiB"


def check_memory(spec, batch_size: int, dtype: str = "float32", *, ignore: bool = False,
                 copies: int = 1) -> dict:
    """Refuse (``DataError``) a run whose ``memory_estimate`` (times ``copies``: one per
    backend run side by side) exceeds the memory available; ``ignore`` (``--ignore-memory``)
    only returns the estimate."""
    est = memory_estimate(spec, batch_size, dtype)
    avail = available_memory()
    need = est["total"] * copies
    if not ignore and avail is not None and need > avail:
        parts = ", ".join(f"{k} {_gib(v)}" for k, v in est.items() if k != "total")
        raise DataError(f"{spec.name} needs at least {_gib(need)} ({parts}"
                        f"{f', x{copies} runs' if copies > 1 else ''}) at batch size "
                        f"{batch_size} in {dtype}, more than the {_gib(avail)} available: use "
                        f"a smaller model or batch, or --ignore-memory to try anyway")
    return est


def memory_argument(parser) -> None:
    parser.add_argument("--ignore-memory", action="store_true",
                        help="run even when the estimated memory (parameters, gradients, "
                             "optimizer slots, activations) exceeds the memory available")


# --- output paths ---------------------------------------------------------------------------------

def check_output(path, flag: str, suffixes: tuple = ()) -> Path:
    """An output file checked before any work: the right suffix (case-insensitive), not a
    folder, and a folder to write it in that can be written (made if missing, and probed with
    a temporary file: the only test root and read-only mounts cannot fool)."""
    if not str(path):
        raise DataError(f"{flag}: an empty path")
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise DataError(f"{flag} {path}: expected a path ending in {' or '.join(suffixes)}")
    if p.is_dir():
        raise DataError(f"{flag} {path}: is a folder, expected a file")
    parent = p.parent
    for up in [parent, *parent.parents]:
        if up.exists():
            if not up.is_dir():
                raise DataError(f"{flag} {path}: {up} is not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise DataError(f"{flag} {path}: cannot write in {parent} ({e.strerror or e})") \
            from None
    return p


def distinct_outputs(files: dict, folders: dict | None = None) -> None:
    """One command's output ``files`` and ``folders`` (``{flag: path}``, None: not given) name
    different paths, and no file is where another output goes (a ``--plot`` file that is also
    the ``--save`` folder, or above it): checked before any of them is made. A file inside an
    output folder is fine."""
    given = [(flag, Path(p).resolve(), True) for flag, p in files.items() if p]
    given += [(flag, Path(p).resolve(), False) for flag, p in (folders or {}).items() if p]
    for i, (fa, a, a_file) in enumerate(given):
        for fb, b, b_file in given[i + 1:]:
            if a == b or (a_file and a in b.parents) or (b_file and b in a.parents):
                raise DataError(f"{fa} {a} and {fb} {b} overlap: give each output its own path")


def check_output_folder(path, flag: str) -> Path:
    """An output folder checked before any work: not a file, under a writable folder."""
    if not str(path):
        raise DataError(f"{flag}: an empty path")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(f"{flag} {path}: exists and is not a folder")
    return check_output(p / "x", flag).parent


def require_device(backends, device: str) -> str:
    """``device`` (``cuda`` read as ``gpu``), after checking every backend in ``backends`` has
    it here (a ``BackendUnavailable`` naming the devices it has): asked before any work, so a
    run on a missing GPU is one clear line, not a framework's error halfway through."""
    from rosetta.backend import normalize_device
    from rosetta.backend_registry import get_backend
    from rosetta.errors import BackendUnavailable

    device = normalize_device(device)
    for b in backends:
        have = get_backend(b).devices()
        if device not in have:
            raise BackendUnavailable(f"{b} has no {device} device on this machine (devices: "
                                     f"{', '.join(have) or 'none'})")
    return device
