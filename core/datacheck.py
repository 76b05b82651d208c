"""One check of a dataset against a training spec, before any framework is imported.

``check_data(spec, ds, batch_size)`` checks, for the training and the held-out examples: the
input names against the model's inputs; every input's per-example shape; dtypes (a float input
takes numbers, an ``int`` input integers); sequence lengths (1..T) and embedding ids
(0..vocab_size-1) of inputs read that way; labels against the loss (class ids: integers, shape,
range, through ``Loss.check_labels``; float targets: the model output's shape); NaN or Inf in
float features and targets; that inputs and labels have one row per example; that there are
training and held-out examples, and at least one batch of training examples.

Every failure is a ``DataError`` whose one-line message names the file, the key or column or row,
and the fix, e.g. ``digits.npz: key 'x' has shape (100, 63) but model 'mlp' input 'x' expects
(N, 64)``. Arrays read from a memory-mapped ``.npy`` file (``rosetta.data.Rows``) are scanned in
chunks of about 16 MiB, straight from the file: never loaded whole.
"""

from __future__ import annotations

import numpy as np

from rosetta.data import Dataset, Rows
from rosetta.errors import DataError

CHUNK_BYTES = 1 << 24


def _n(shape) -> str:
    """A batch shape as a message shows it: (N, 64); (N,) for one number per example."""
    shape = tuple(shape)
    return "(N,)" if not shape else f"({', '.join(['N', *map(str, shape)])})"


def _scan(a, bad_fn, chunk_bytes: int = CHUNK_BYTES):
    """(row, flat element index in the row, value) of the first element where ``bad_fn`` is
    true, or None. Row counts positions of ``a``; for a ``Rows`` it is the row of the file,
    whose whole array is read in chunks (the file order is the fast one)."""
    arr = a.array if isinstance(a, Rows) else a
    n = len(arr)
    per_row = int(np.prod(arr.shape[1:], dtype=np.int64))
    if n == 0 or per_row == 0:
        return None
    step = max(1, chunk_bytes // max(1, per_row * arr.dtype.itemsize))
    for s in range(0, n, step):
        chunk = np.asarray(arr[s:s + step]).reshape(-1, per_row)
        bad = bad_fn(chunk)
        if bad.any():
            i = int(np.argmax(bad.reshape(-1)))
            r, j = divmod(i, per_row)
            return s + r, j, chunk[r, j]
    return None


class _Where:
    """Names the places of one dataset in messages."""

    def __init__(self, ds: Dataset, model_name: str):
        self.ds = ds
        self.model = model_name
        self.builtin = not ds.where

    def x(self, part: str, key) -> str:
        loc = self.ds.locate(part, key)
        if loc is not None:
            return loc
        split = "held-out " if part.endswith("_test") else ""
        return f"dataset {self.ds.name!r} {split}input" + (f" {key!r}" if key else "")

    def y(self, part: str) -> str:
        loc = self.ds.locate(part)
        if loc is not None:
            return loc
        split = "held-out " if part.endswith("_test") else ""
        return f"dataset {self.ds.name!r} {split}labels"

    def source(self) -> str:
        return self.ds.origin or f"dataset {self.ds.name!r}"

    def row(self, a, part: str, r: int) -> str:
        # a Rows scan reports rows of its file; an array's positions map back through the split
        return f"row {r}" if isinstance(a, Rows) else self.ds.row_name(part, r)

    def stored_shape(self, a, part: str) -> tuple:
        """The shape of the array as the source stores it (before the held-out split)."""
        if isinstance(a, Rows):
            return tuple(a.array.shape)
        if self.ds.rows:
            return (sum(len(v) for v in self.ds.rows.values()),) + tuple(a.shape[1:])
        return tuple(a.shape)

    def element(self, a, j: int) -> str:
        shape = tuple(a.shape[1:])
        if self.ds.columns and len(self.ds.columns) == int(np.prod(shape, dtype=np.int64)):
            return f", column {self.ds.columns[j]!r}"
        if not shape:
            return ""
        return f" at {tuple(int(v) for v in np.unravel_index(j, shape))}"


def _check_finite(a, part: str, where: str, w: _Where, what: str) -> None:
    arr = a.array if isinstance(a, Rows) else a
    if not np.issubdtype(arr.dtype, np.floating):
        return
    hit = _scan(a, lambda c: ~np.isfinite(c))
    if hit is not None:
        r, j, v = hit
        raise DataError(f"{where}: {w.row(a, part, r)}{w.element(a, j)} is {v}; every {what} must "
                        f"be finite: drop or fill those rows (e.g. numpy.nan_to_num) and save "
                        f"the data again")


def _check_range(a, part: str, where: str, w: _Where, lo: int, hi: int, what: str,
                 fix: str) -> None:
    hit = _scan(a, lambda c: (c < lo) | (c > hi))
    if hit is not None:
        r, j, v = hit
        raise DataError(f"{where}: {w.row(a, part, r)}{w.element(a, j)} is {v}, but {what} must "
                        f"be in [{lo}, {hi}]; {fix}")


def embedding_vocab(g) -> dict:
    """{integer model input name: the smallest vocab_size of the Embeddings it feeds}, read
    directly or through integer-valued nodes (a Reshape of the ids); a Gather's int indices
    count the same way, with the size of the gathered axis as vocabulary. The one rule every
    backend's ``Program`` checks ids with (``check_embedding_ids``): a gather out of range is an error on
    torch, a clamped index under XLA and a silent zero on JAX."""
    origin = {i.name: i.name for i in g.inputs if i.kind == "int"}
    out: dict = {}
    for node in g.nodes:
        if node.op == "Gather" and len(node.inputs) == 2 and node.inputs[1] in origin:
            # the indices of a Gather: [0, size of the gathered axis) by the same rule
            rank = len(node.in_types[0].shape)
            v = int(node.in_types[0].shape[node.attrs["axis"] % rank])
            src = origin[node.inputs[1]]
            out[src] = min(out.get(src, v), v)
        src = origin.get(node.inputs[0]) if node.inputs else None
        if src is None:
            continue
        if node.op == "Embedding":
            v = int(node.attrs["vocab_size"])
            out[src] = min(out.get(src, v), v)
        elif node.out_type.kind == "int" and node.op in _KEEPS_IDS:
            origin[node.name] = src
    return out


# the ops whose int output holds the input's own values, moved or repeated (the ids still): an
# Embedding behind them reads the input's ids. Arithmetic on ids (RoBERTa's position ids:
# Equal, Subtract, Cumsum, Multiply, Add) computes other integers, which bound nothing here.
_KEEPS_IDS = frozenset({"Reshape", "Flatten", "Transpose", "Slice", "Squeeze", "Unsqueeze",
                        "Expand", "Gather", "Concatenate", "Cast", "Pad"})


def check_embedding_ids(vocab: dict, name: str, a) -> None:
    """Refuse a batch of ids of input ``name`` outside [0, vocab) (``vocab``: ``embedding_vocab``
    of the graph) with a ``DataError`` that names the input, the range and what was found."""
    limit = vocab.get(name)
    a = np.asarray(a)
    if limit is not None and a.size and (a.min() < 0 or a.max() >= limit):
        raise DataError(f"input {name!r}: Embedding ids must be in [0, {limit}), found "
                        f"{a.min()}..{a.max()}")


def check_input_ranges(g, arrays: dict, where: str) -> None:
    """The integer inputs of ``{input name: array}`` given directly (``rosetta predict``'s
    file), by ``check_data``'s rule: Embedding ids in [0, vocab_size - 1], sequence lengths in
    [1, T]. The core refuses them (``DataError``) so that no backend meets an index out of
    range, which each framework reports differently (or not at all)."""
    vocab, lengths = embedding_vocab(g), g.lengths_inputs()
    for name, a in arrays.items():
        for table, lo, what in ((vocab, 0, "Embedding ids"), (lengths, 1, "sequence lengths")):
            if name not in table or not a.size:
                continue
            hi = table[name] - 1 if table is vocab else table[name]
            flat = a.reshape(len(a), -1)
            bad = np.argwhere((flat < lo) | (flat > hi))
            if len(bad):
                r, j = (int(v) for v in bad[0])
                raise DataError(f"{where} array {name!r}: example {r} holds {flat[r, j]}, but "
                                f"the {what} of model {g.name!r} must be in [{lo}, {hi}]")


def _check_inputs(spec, ds: Dataset, part: str, w: _Where, later: list) -> None:
    """Names, shapes and dtypes now; the scans of the values (ranges, NaN) appended to
    ``later``, to run once the cheap checks have passed."""
    g = spec.model
    x = ds.x_train if part == "x" else ds.x_test
    y = ds.y_train if part == "x" else ds.y_test
    inputs = list(g.inputs)
    single = not isinstance(x, dict)
    want = [i.name for i in inputs]
    if single:
        if len(want) != 1:
            if w.builtin:
                raise DataError(f"dataset {ds.name!r} gives one input array; model {g.name!r} "
                                f"has inputs {want}")
            raise DataError(f"{w.x(part, None)} is one input array but model {g.name!r} has "
                            f"inputs {want}: give one array per input ({', '.join(want)})")
    elif set(x) != set(want):
        if w.builtin:
            raise DataError(f"dataset {ds.name!r} gives inputs {sorted(x)} but model "
                            f"{g.name!r} takes {sorted(want)}")
        missing = [k for k in want if k not in x]
        extra = sorted(k for k in x if k not in want)
        fix = []
        if missing:
            fix.append(f"add {', '.join(repr(k) for k in missing)}")
        if extra:
            fix.append(f"remove or rename {', '.join(repr(k) for k in extra)}")
        raise DataError(f"{w.source()}: inputs {sorted(x)} but model {g.name!r} takes "
                        f"{sorted(want)}: {' and '.join(fix)} (one array per model input)")
    lengths = g.lengths_inputs()
    vocab = embedding_vocab(g)
    for inp in inputs:
        key = None if single else inp.name
        a = x if single else x[inp.name]
        where = w.x(part, key)
        if getattr(a, "ndim", 0) < 1:
            raise DataError(f"{where} is a scalar; give one row per example, shape "
                            f"{_n(inp.shape)}")
        if len(a) != len(y):
            ypart = "y" if part == "x" else "y_test"
            raise DataError(f"{where} has {len(a)} examples but {w.y(ypart)} has {len(y)}; "
                            f"give one label per example")
        shape = tuple(a.shape[1:])
        if shape != tuple(inp.shape):
            if w.builtin:
                raise DataError(f"dataset {ds.name!r} gives input {inp.name!r} of shape {shape} "
                                f"but model {g.name!r} expects {tuple(inp.shape)} (set the "
                                f"dataset arguments, e.g. layout='image' for digits as images)")
            size = int(np.prod(inp.shape, dtype=np.int64))
            if ds.columns:
                raise DataError(f"{w.source()}: {len(ds.columns)} feature columns but model "
                                f"{g.name!r} input {inp.name!r} expects {_n(inp.shape)}, "
                                f"{size} values per example; give {size} feature columns "
                                f"besides the label")
            hint = (f"; reshape it to {_n(inp.shape)} (x.reshape(len(x), "
                    f"{', '.join(map(str, inp.shape))}))"
                    if int(np.prod(shape, dtype=np.int64)) == size and inp.shape else
                    f"; save it with shape {_n(inp.shape)} or change the model's input shape")
            raise DataError(f"{where} has shape {w.stored_shape(a, part)} but model {g.name!r} "
                            f"input {inp.name!r} expects {_n(inp.shape)}{hint}")
        dt = a.array.dtype if isinstance(a, Rows) else a.dtype
        if inp.kind == "int":
            if not np.issubdtype(dt, np.integer):
                raise DataError(f"{where} has dtype {dt} but model {g.name!r} input "
                                f"{inp.name!r} takes integers (kind 'int': ids or lengths); "
                                f"save it as integers (e.g. x.astype('int64'))")
        elif not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)
                  or dt == np.bool_):
            raise DataError(f"{where} has dtype {dt} but model {g.name!r} input {inp.name!r} "
                            f"takes numbers; convert it to floats (e.g. x.astype('float32'))")
        if inp.name in lengths:
            later.append((_check_range, a, part, where, w, 1, lengths[inp.name],
                          f"sequence lengths of model {g.name!r}",
                          "a length counts the real (unpadded) positions of its sequence"))
        if inp.name in vocab:
            later.append((_check_range, a, part, where, w, 0, vocab[inp.name] - 1,
                          f"the ids of the Embedding of model {g.name!r} (vocab_size "
                          f"{vocab[inp.name]})",
                          "renumber the ids or give the Embedding a larger vocab_size"))
        later.append((_check_finite, a, part, where, w, "feature"))


def _check_labels(spec, ds: Dataset, part: str, w: _Where) -> None:
    g = spec.model
    y = ds.y_train if part == "y" else ds.y_test
    where = w.y(part)
    out = tuple(g.output_type.shape)
    loss = spec.loss
    y = np.asarray(y)
    if y.ndim < 1:
        raise DataError(f"{where} is a scalar; give one label per example")
    if loss.label_kind == "int":
        want = out[:-1]
        classes = out[-1]
        if y.dtype.kind in "iub":
            ids = y
        elif y.dtype.kind == "f":
            hit = _scan(y, lambda c: ~np.isfinite(c) | (c != np.round(c)))
            if hit is not None:
                r, j, v = hit
                raise DataError(f"{where}: {w.row(y, part, r)}{w.element(y, j)} is {v}, not a "
                                f"class id; loss {loss.kind!r} takes integer class ids "
                                f"0..{classes - 1}")
            ids = y.astype(np.int64)
        else:
            raise DataError(f"{where} has dtype {y.dtype} but loss {loss.kind!r} takes integer "
                            f"class ids 0..{classes - 1}; map each class to an integer")
        if tuple(y.shape[1:]) != want:
            per = "one class id per example" if not want else \
                f"class ids of shape {want} per example (the model outputs {out})"
            raise DataError(f"{where} has shape {w.stored_shape(y, part)} but loss "
                            f"{loss.kind!r} with model {g.name!r} takes {per}: labels "
                            f"{_n(want)}")
        try:
            loss.check_labels(ids, classes)
        except DataError as e:
            real = loss.real(ids) if hasattr(loss, "real") else np.ones(ids.shape, bool)
            hit = _scan(np.where(real, ids, 0), lambda c: (c < 0) | (c >= classes))
            r, j, v = hit if hit is not None else (0, 0, None)
            top = int(ids[real].max()) if real.any() else classes - 1
            if ds.classes and len(ds.classes) > classes:
                names = ", ".join(ds.classes[:5]) + (", ..." if len(ds.classes) > 5 else "")
                raise DataError(f"{w.source()}: {len(ds.classes)} classes ({names}) "
                                f"but model {g.name!r} outputs {classes}; give the model's last "
                                f"layer {len(ds.classes)} outputs") from None
            raise DataError(f"{where}: {w.row(y, part, r)}{w.element(y, j)} is class id {v}; "
                            f"data does not fit model {g.name!r} ({classes} classes): {e}; "
                            f"relabel to 0..{classes - 1} or give the model's last layer "
                            f"{max(top + 1, classes)} outputs") from None
    else:
        if not (y.dtype.kind in "iubf"):
            raise DataError(f"{where} has dtype {y.dtype} but loss {loss.kind!r} takes numbers")
        if tuple(y.shape[1:]) != out:
            hint = " (y.reshape(-1, 1))" if out == (1,) and y.ndim == 1 else ""
            if w.builtin:
                raise DataError(f"dataset {ds.name!r} gives targets of shape {y.shape[1:]} but "
                                f"the model outputs {out}")
            raise DataError(f"{where} has shape {w.stored_shape(y, part)} but model "
                            f"{g.name!r} outputs {_n(out)} and loss {loss.kind!r} compares them "
                            f"element by element; give targets of shape {_n(out)}{hint}")
        _check_finite(y, part, where, w, "target")


def check_data(spec, ds: Dataset, batch_size: int | None = None) -> None:
    """Raise ``DataError`` unless dataset ``ds`` fits training spec ``spec``: its model's inputs
    (names, per-example shapes, dtypes, sequence lengths, embedding ids, finite features), its
    loss's labels, one row per example, training and held-out examples, and at least one batch
    of ``batch_size`` (default the spec's) training examples. Runs in NumPy only; memory-mapped
    inputs are scanned by chunk."""
    w = _Where(ds, spec.model.name)
    batch_size = spec.data.batch_size if batch_size is None else batch_size
    if len(ds.y_train) == 0:
        raise DataError(f"{w.source()}: no training examples (an empty file?); give at least "
                        f"one batch ({batch_size}) of examples")
    if len(ds.y_test) == 0:
        fix = ("give held-out arrays (x_test, y_test) with examples in them"
               if ds.held_out_given else
               "give more examples or a larger test_fraction, or give held-out arrays "
               "(x_test, y_test)")
        raise DataError(f"{w.source()}: no held-out examples to evaluate on; {fix}")
    later: list = []
    for part in ("x", "x_test"):
        _check_inputs(spec, ds, part, w, later)
    for part in ("y", "y_test"):
        _check_labels(spec, ds, part, w)
    if batch_size > ds.n_train:
        raise DataError(f"{w.source()}: {ds.n_train} training examples, fewer than one batch "
                        f"of {batch_size}; the batch size {batch_size} exceeds the training "
                        f"examples: use a smaller batch size (--batch-size, DataSpec "
                        f"batch_size) or give more data")
    scanned = set()   # the train and held-out Rows of one file share its array: scan it once
    for check, a, *args in later:
        key = (id(a.array) if isinstance(a, Rows) else id(a), check, *args[2:])
        if isinstance(a, Rows) and key in scanned:
            continue
        scanned.add(key)
        check(a, *args)
