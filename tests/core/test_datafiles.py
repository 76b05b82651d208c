"""A user's own data: DataSpec sources (arrays, .npz, a .npy folder, .csv, an image folder), their
JSON forms, the writers, and the one data check (every malformed input is a DataError naming the
file and the key, column or row). Core only: no framework is imported."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import rosetta as rs
from rosetta import data, datacheck
from rosetta.data import Rows, batches, cast_inputs, take
from rosetta.datacheck import check_data
from rosetta.errors import DataError

from helpers import imported_after

N = 50


def mlp(features=4, classes=3):
    return rs.Sequential([rs.Dense(8, activation="relu"), rs.Dense(classes)],
                         input_shape=(features,), name="mlp")


def seq_model(length=6, vocab=5):
    t = rs.Input((length,), name="tokens", kind="int")
    n = rs.Input((), name="lengths", kind="int")
    h = rs.SequencePool("mean", name="pool")([rs.Embedding(vocab, 3, name="emb")(t), n])
    return rs.Model([t, n], rs.Dense(3, name="head")(h), name="seq")


def image_model(h=6, w=6, c=3, classes=2):
    return rs.Sequential([rs.Flatten(), rs.Dense(classes)], input_shape=(h, w, c), name="img")


def reg_model():
    return rs.Sequential([rs.Dense(1)], input_shape=(2,), name="reg")


def train_spec(model, data_spec, loss=None):
    return rs.TrainSpec(model, loss or rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.1),
                        data_spec)


def arrays(n=N, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features)), rng.integers(0, classes, n)


def seq_arrays(n=N, length=6, vocab=5, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, n)
    tokens = rng.integers(1, vocab, (n, length)) * (np.arange(length) < lengths[:, None])
    return {"tokens": tokens.astype(np.int64), "lengths": lengths.astype(np.int64)}, \
        rng.integers(0, 3, n)


def load_checked(path, model=None, loss=None, batch_size=8, **kwargs):
    spec = train_spec(model or mlp(), rs.DataSpec.from_path(path, batch_size=batch_size, **kwargs),
                      loss)
    ds = spec.data.load(spec.model)
    check_data(spec, ds, batch_size)
    return spec, ds


def raises(words, fn, *args, **kwargs):
    """fn raises a DataError whose one-line message contains every one of ``words``."""
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


# --- in-memory arrays ---------------------------------------------------------------------------

def test_from_arrays_splits_like_the_builtin_datasets():
    x, y = arrays()
    spec = train_spec(mlp(), rs.DataSpec.from_arrays(x, y, batch_size=8))
    ds = spec.data.load(spec.model)
    check_data(spec, ds, 8)
    ref = data._split("arrays", x, y, 0.2, 0, "")
    assert (ds.n_train, len(ds.y_test)) == (40, 10)
    np.testing.assert_array_equal(ds.x_train, ref.x_train)
    np.testing.assert_array_equal(ds.y_test, ref.y_test)
    assert not ds.held_out_given
    np.testing.assert_array_equal(ds.x_train_all, x)
    np.testing.assert_array_equal(ds.y_train_all, y)
    other = rs.DataSpec.from_arrays(x, y, test_fraction=0.5, seed=3).load()
    assert other.n_train == 25 and not np.array_equal(other.y_train, ds.y_train[:25])


def test_from_arrays_with_held_out_and_named_inputs():
    x, y = seq_arrays()
    xt, yt = seq_arrays(10, seed=1)
    spec = train_spec(seq_model(), rs.DataSpec.from_arrays(x, y, xt, yt, batch_size=8))
    ds = spec.data.load(spec.model)
    check_data(spec, ds)
    assert ds.held_out_given and ds.n_train == N and len(ds.y_test) == 10
    assert set(ds.x_train) == {"tokens", "lengths"}


def test_from_arrays_json_says_where_the_data_went():
    x, y = arrays()
    spec = train_spec(mlp(), rs.DataSpec.from_arrays(x, y, batch_size=16, test_fraction=0.25))
    d = spec.to_json()
    assert d["data"] == {"source": "arrays", "batch_size": 16, "test_fraction": 0.25, "seed": 0}
    back = rs.TrainSpec.from_json(json.loads(json.dumps(d)))
    assert back == spec and back.to_json() == d
    raises(["lived in memory", "--data PATH", "DataSpec.from_arrays"], back.data.load,
           back.model)


def test_from_arrays_bad_input_fails_at_once():
    x, y = arrays()
    raises(["arrays: x has 49 examples", "arrays: y has 50"], rs.DataSpec.from_arrays, x[:49], y)
    raises(["x_test given without y_test"], rs.DataSpec.from_arrays, x, y, x[:5])
    raises(["ragged"], rs.DataSpec.from_arrays, [[1.0, 2.0], [3.0]], [0, 1])


def test_builtin_json_form_is_unchanged():
    d = rs.DataSpec("digits", 16, {"layout": "image"})
    assert d.to_json() == {"dataset": "digits", "batch_size": 16, "args": {"layout": "image"}}
    assert rs.DataSpec.from_json(d.to_json()) == d
    assert d.source == "dataset"


# --- .npz -----------------------------------------------------------------------------------------

def test_npz_single_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = arrays()
    np.savez("d.npz", x=x, y=y)
    spec, ds = load_checked("d.npz")
    assert spec.data.to_json() == {"path": "d.npz", "label": "label", "batch_size": 8,
                                   "test_fraction": 0.2, "seed": 0}
    ref = data._split("d", x, y, 0.2, 0, "")
    np.testing.assert_array_equal(ds.x_train, ref.x_train)
    np.testing.assert_array_equal(ds.y_train, ref.y_train)
    assert ds.origin == "d.npz" and ds.locate("x") == "d.npz: key 'x'"


def test_npz_held_out_multi_input_and_classes(tmp_path):
    x, y = seq_arrays()
    xt, yt = seq_arrays(10, seed=1)
    np.savez(tmp_path / "s.npz", tokens=x["tokens"], lengths=x["lengths"], y=y,
             tokens_test=xt["tokens"], lengths_test=xt["lengths"], y_test=yt,
             classes=np.array(["a", "b", "c"]))
    _, ds = load_checked(tmp_path / "s.npz", seq_model())
    assert ds.held_out_given and ds.classes == ("a", "b", "c")
    np.testing.assert_array_equal(ds.x_test["lengths"], xt["lengths"])
    np.testing.assert_array_equal(ds.y_train, y)


def test_save_npz_round_trip_is_atomic(tmp_path, monkeypatch):
    x, y = arrays()
    ds = data.from_arrays(x, y)
    out = data.save_npz(ds, tmp_path / "sub" / "d.npz")
    assert sorted(p.name for p in out.parent.iterdir()) == ["d.npz"]
    back = rs.DataSpec.from_path(out).load()
    assert back.held_out_given
    for a, b in ((back.x_train, ds.x_train), (back.y_test, ds.y_test)):
        np.testing.assert_array_equal(a, b)
    before = out.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        data.save_npz(data.from_arrays(x[:20], y[:20]), out)
    assert out.read_bytes() == before                      # the old file is whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["d.npz"]   # no temporary left
    raises(["give a path ending in .npz"], data.save_npz, ds, tmp_path / "d.bin")


def test_save_npz_of_a_multi_input_dataset(tmp_path):
    x, y = seq_arrays()
    ds = data.from_arrays(x, y)
    data.save_npz(ds, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as f:
        assert sorted(f.files) == ["lengths", "lengths_test", "tokens", "tokens_test", "y",
                                   "y_test"]
    raises(["input named 'y'"], data.save_npz, data.from_arrays({"y": x["tokens"]}, y),
           tmp_path / "t.npz")


# --- a folder of .npy files -----------------------------------------------------------------------

def test_npy_folder_is_memory_mapped_and_batches_like_npz(tmp_path):
    x, y = arrays(features=4)
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "m" / "y.npy", y)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    _, lazy = load_checked(tmp_path / "m")
    _, full = load_checked(tmp_path / "d.npz")
    assert isinstance(lazy.x_train, Rows) and isinstance(lazy.x_train.array, np.memmap)
    assert lazy.x_train.shape == (40, 4) and lazy.input_shapes == {None: (4,)}
    xl = cast_inputs({"x": lazy.x_train}, "float64")
    xf = cast_inputs({"x": full.x_train}, "float64")
    assert isinstance(xl["x"], Rows) and xl["x"].dtype == np.float64   # cast lazily
    for _, idx in batches(lazy.n_train, 8, 0, 12):
        a, b = take(xl, idx)["x"], take(xf, idx)["x"]
        assert type(a) is np.ndarray and a.dtype == np.float64
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(take(xl, slice(0, 512))["x"], xf["x"])
    np.testing.assert_array_equal(np.asarray(lazy.x_train_all), x.astype(np.float32))


def test_save_npy_dir_round_trip_and_replace(tmp_path):
    x, y = seq_arrays()
    ds = data.from_arrays(x, y, name="seq")
    out = data.save_npy_dir(ds, tmp_path / "seq")
    assert sorted(p.name for p in out.iterdir()) == [
        "lengths.npy", "lengths_test.npy", "tokens.npy", "tokens_test.npy", "y.npy",
        "y_test.npy"]
    _, back = load_checked(out, seq_model())
    assert isinstance(back.x_train["tokens"], Rows) and back.held_out_given
    np.testing.assert_array_equal(back.x_test["tokens"][:], ds.x_test["tokens"])
    again = data.save_npy_dir(back, out)        # a lazy dataset copied by chunks, in place
    np.testing.assert_array_equal(np.load(again / "tokens.npy"), ds.x_train["tokens"])
    assert [p.name for p in tmp_path.iterdir()] == ["seq"]   # no temporary folder left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    raises(["mine", "notes.txt", "new folder"], data.save_npy_dir, ds, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_rows_reads_only_what_is_asked(tmp_path):
    a = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "a.npy", a)
    r = Rows(np.load(tmp_path / "a.npy", mmap_mode="r"))
    idx = np.array([7, 2, 2, 9, 0])
    np.testing.assert_array_equal(r[idx], a[idx])
    np.testing.assert_array_equal(r[2:8:3], a[2:8:3])
    np.testing.assert_array_equal(r[-1], a[-1])
    np.testing.assert_array_equal(r[a[:, 0] > 15], a[a[:, 0] > 15])
    np.testing.assert_array_equal(r[idx, 1], a[idx, 1])
    sub = r.subset(np.array([5, 3, 1]))
    assert sub.shape == (3, 4) and len(sub) == 3
    np.testing.assert_array_equal(sub[np.array([2, 0])], a[[1, 5]])
    np.testing.assert_array_equal(sub[1:], a[[3, 1]])
    np.testing.assert_array_equal(sub.file_rows(slice(None)), [5, 3, 1])
    f64 = sub.astype(np.float64)
    assert isinstance(f64, Rows) and f64[0].dtype == np.float64
    np.testing.assert_array_equal(np.asarray(f64), a[[5, 3, 1]])
    assert r[np.array([], np.int64)].shape == (0, 4)
    with pytest.raises(IndexError):
        r[np.array([10])]
    with pytest.raises(IndexError):
        r[10]


def test_npy_split_keeps_rows_lazy(tmp_path):
    x, y = arrays()
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "x.npy", x)
    np.save(tmp_path / "m" / "y.npy", y)
    ds = rs.DataSpec.from_path(tmp_path / "m").load()
    ref = data._split("m", x, y, 0.2, 0, "")
    assert isinstance(ds.x_test, Rows) and ds.x_test.array is ds.x_train.array
    np.testing.assert_array_equal(ds.x_test[:], ref.x_test)
    np.testing.assert_array_equal(ds.y_train, ref.y_train)


# --- .csv -----------------------------------------------------------------------------------------

def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n"
                                                      for r in rows))
    return path


def test_csv_classification_reshaped_to_the_model_input(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((N, 4)).round(3)
    y = rng.integers(0, 3, N)
    p = write_csv(tmp_path / "d.csv", ["a", "b", "c", "d", "target"],
                  [[*x[i], y[i]] for i in range(N)])
    model = rs.Sequential([rs.Flatten(), rs.Dense(3)], input_shape=(2, 2, 1), name="tiny")
    spec, ds = load_checked(p, model, label="target")
    assert ds.x_train.shape == (40, 2, 2, 1) and ds.y_train.dtype == np.int64
    assert ds.columns == ("a", "b", "c", "d")
    np.testing.assert_array_equal(ds.x_train_all.reshape(N, 4), x)
    assert spec.data.to_json()["label"] == "target"
    flat = rs.DataSpec.from_path(p, label="target").load()      # no model: feature vectors
    assert flat.x_train.shape == (40, 4)


def test_csv_regression_targets_take_the_output_shape(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((N, 2)).round(4)
    p = write_csv(tmp_path / "r.csv", ["label", "u", "v"],
                  [[round(x[i, 0] * 2 - x[i, 1], 4), *x[i]] for i in range(N)])
    _, ds = load_checked(p, reg_model(), rs.losses.MeanSquaredError())
    assert ds.y_train.shape == (40, 1) and ds.y_train.dtype == np.float64


@pytest.mark.parametrize("text,words", [
    ("", ["e.csv: an empty file", "header"]),
    ("a,b,c,d,label\n", ["e.csv: a header and no examples"]),
    ("a,b,c,d,y\n1,2,3,4,0\n", ["e.csv: no column 'label'", "--label"]),
    ("a,b,c,d,label\n1,2,3,4,0\n1,2,x,4,1\n", ["e.csv: line 3, column 'c' is 'x'",
                                               "not a number"]),
    ("a,b,c,d,label\n1,2,3,4,0\n1,2,,4,1\n", ["e.csv: line 3, column 'c' is empty"]),
    ("a,b,c,d,label\n1,2,3,4,0\n1,2,3,1\n", ["e.csv: line 3 has 4 fields", "header has 5"]),
    ("a,b,c,d,label\n1,2,3,4,zero\n", ["e.csv: line 2, column 'label' is 'zero'"]),
    ("a,a,c,d,label\n1,2,3,4,0\n", ["e.csv: line 1 names column 'a' twice"]),
])
def test_csv_errors_name_the_line_and_column(tmp_path, monkeypatch, text, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.csv").write_text(text)
    raises(words, load_checked, "e.csv")


def test_csv_checks_name_line_and_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [[1, 2, 3, 4, i % 3] for i in range(20)]
    rows[11][2] = "nan"
    write_csv(tmp_path / "n.csv", ["a", "b", "c", "d", "label"], rows)
    raises(["n.csv: line 13, column 'c' is nan", "finite"], load_checked, "n.csv", batch_size=2)
    rows[11][2] = 3
    rows[4][4] = 7
    write_csv(tmp_path / "n.csv", ["a", "b", "c", "d", "label"], rows)
    raises(["n.csv: column 'label': line 6 is class id 7", "3 classes"], load_checked, "n.csv",
           batch_size=2)
    write_csv(tmp_path / "w.csv", ["a", "b", "c", "label"], [[1, 2, 3, 0]] * 10)
    raises(["w.csv: 3 feature columns", "input 'x' expects (N, 4)"], load_checked, "w.csv",
           batch_size=2)


# --- a folder of images ---------------------------------------------------------------------------

def write_images(root, spec):
    from PIL import Image

    for cls, items in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, (mode, size, colour) in enumerate(items):
            Image.new(mode, size, colour).save(root / cls / f"{i}.png")
    return root


def test_image_folder_classes_resize_and_scale(tmp_path):
    root = write_images(tmp_path / "pics", {
        "b_dog": [("RGB", (12, 10), (255, 0, 0))] * 6,
        "a_cat": [("RGB", (6, 6), (0, 0, 255))] * 5 + [("L", (3, 9), 51)] * 5,
    })
    (root / "README.txt").write_text("not an image")               # skipped
    (root / "a_cat" / ".DS_Store").write_text("junk")              # skipped
    spec, ds = load_checked(root, image_model(), test_fraction=0.25, batch_size=4)
    assert ds.classes == ("a_cat", "b_dog")
    x, y = ds.x_train_all, ds.y_train_all
    assert x.shape == (16, 6, 6, 3) and x.dtype == np.float64
    assert list(y) == [0] * 10 + [1] * 6                           # sorted folders, sorted files
    np.testing.assert_allclose(x[0], np.broadcast_to([0, 0, 1.0], (6, 6, 3)))
    np.testing.assert_allclose(x[9], 0.2)                          # grey L image as RGB
    np.testing.assert_allclose(x[12], np.broadcast_to([1.0, 0, 0], (6, 6, 3)))  # resized 12x10
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert (ds.n_train, len(ds.y_test)) == (12, 4)


def test_image_folder_grayscale_model_and_bilinear_resize(tmp_path):
    from PIL import Image

    (tmp_path / "g" / "only").mkdir(parents=True)
    (tmp_path / "g" / "zero").mkdir(parents=True)
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))        # 4 x 16
    for cls in ("only", "zero"):
        for i in range(5):
            Image.fromarray(ramp).convert("RGB").save(tmp_path / "g" / cls / f"{i}.png")
    ds = rs.DataSpec.from_path(tmp_path / "g").load(image_model(2, 8, 1))
    x = ds.x_train_all
    assert x.shape == (10, 2, 8, 1)
    expect = np.asarray(Image.fromarray(ramp).resize((8, 2), Image.Resampling.BILINEAR),
                        np.float64) / 255.0
    np.testing.assert_allclose(x[0, ..., 0], expect)
    assert np.all(np.diff(x[0, 0, :, 0]) > 0)                            # still a ramp


def test_image_folder_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_images(tmp_path / "p", {"cat": [("RGB", (4, 4), (1, 2, 3))] * 4,
                                         "dog": [("RGB", (4, 4), (1, 2, 3))] * 4})
    raises(["p: images are resized to the model's input shape", "DataSpec.load(model)"],
           rs.DataSpec.from_path("p").load)
    raises(["p: a folder of images feeds a model with one (H, W, C) input"],
           rs.DataSpec.from_path("p").load, mlp())
    (root / "cow").mkdir()
    raises(["p/cow: a class folder with no images", "class id 1"], load_checked, "p",
           image_model())
    (root / "cow" / "0.png").write_bytes(b"not a png at all")
    raises(["p/cow/0.png: not a readable image", "PNG or JPEG"], load_checked, "p",
           image_model())
    monkeypatch.setitem(sys.modules, "PIL", None)
    raises(["Pillow", "pip install 'rosetta-ml[images]'"], load_checked, "p", image_model())


def test_image_folder_with_more_classes_than_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "p", {k: [("RGB", (6, 6), (9, 9, 9))] * 4
                                  for k in ("ant", "bee", "cat")})
    raises(["p: 3 classes (ant, bee, cat) but model 'img' outputs 2",
            "last layer 3 outputs"], load_checked, "p", image_model(), batch_size=2)


# --- JSON, relative paths -------------------------------------------------------------------------

def test_relative_path_in_a_json_spec_is_relative_to_the_spec_file(tmp_path, monkeypatch):
    (tmp_path / "proj" / "data").mkdir(parents=True)
    x, y = arrays()
    np.savez(tmp_path / "proj" / "data" / "d.npz", x=x, y=y)
    spec = train_spec(mlp(), rs.DataSpec.from_path("data/d.npz", batch_size=8))
    assert rs.TrainSpec.from_json(spec.to_json()) == spec
    assert spec.to_json()["data"] == {"path": "data/d.npz", "label": "label", "batch_size": 8,
                                      "test_fraction": 0.2, "seed": 0}
    (tmp_path / "proj" / "spec.json").write_text(spec.dumps())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = rs.TrainSpec.load_json(tmp_path / "proj" / "spec.json")
    assert loaded == spec
    ds = loaded.data.load(loaded.model)
    check_data(loaded, ds)
    np.testing.assert_array_equal(ds.y_train_all, y)
    assert loaded.data.resolved().path == str((tmp_path / "proj" / "data" / "d.npz").resolve())
    # the Python API resolves from the current folder (where the spec was made)
    raises(["no such file"], rs.DataSpec.from_path("data/d.npz").load)
    monkeypatch.chdir(tmp_path / "proj")
    here = rs.DataSpec.from_path("data/d.npz")
    monkeypatch.chdir(elsewhere)
    assert here.load().n_train == 40


def test_json_errors_are_spec_errors():
    good = train_spec(mlp(), rs.DataSpec.from_path("d.npz")).to_json()
    for mutate, words in [
        (lambda d: d["data"].__setitem__("args", {}), "unknown key"),
        (lambda d: d["data"].__setitem__("test_fraction", 1.5), "test_fraction"),
        (lambda d: d["data"].__setitem__("path", ""), "path"),
        (lambda d: d["data"].__setitem__("source", "ftp"), "source"),
        (lambda d: d.__setitem__("data", {"batch_size": 3}), 'give "dataset"'),
        (lambda d: d.__setitem__("data", {"source": "arrays", "path": "x"}), "unknown key"),
    ]:
        d = json.loads(json.dumps(good))
        mutate(d)
        with pytest.raises(rs.SpecError, match=words):
            rs.TrainSpec.from_json(d)
    with pytest.raises(rs.SpecError, match="built-in dataset takes test_fraction"):
        rs.DataSpec("digits", test_fraction=0.5).validate()


# --- every malformed input: one DataError naming file and key/row ---------------------------------

def _npz(**arrays_):
    def make(tmp):
        np.savez(tmp / "d.npz", **arrays_)
        return "d.npz"
    return make


def _npy(**arrays_):
    def make(tmp):
        (tmp / "m").mkdir()
        for k, v in arrays_.items():
            np.save(tmp / "m" / f"{k}.npy", v)
        return "m"
    return make


def _raw(name, content):
    def make(tmp):
        (tmp / name).write_bytes(content)
        return name
    return make


X, Y = arrays()
XN = X.copy()
XN[7, 2] = np.nan
XI = X.copy()
XI[33, 1] = np.inf
YB = Y.copy()
YB[9] = 5
SEQ, SY = seq_arrays()
LEN0 = dict(SEQ, lengths=np.where(np.arange(N) == 3, 0, SEQ["lengths"]))
IDS9 = dict(SEQ, tokens=np.where(np.arange(6) == 2, 9, SEQ["tokens"]))


def _npy_then(edit, **arrays_):
    base = _npy(**arrays_)

    def make(tmp):
        name = base(tmp)
        edit(tmp / name)
        return name
    return make


MALFORMED = [
    ("shape", _npz(x=X[:, :3], y=Y), {},
     ["d.npz: key 'x' has shape (50, 3)", "model 'mlp' input 'x' expects (N, 4)"]),
    ("reshape hint", _npz(x=X.reshape(N, 2, 2), y=Y), {},
     ["d.npz: key 'x' has shape (50, 2, 2)", "reshape it to (N, 4)"]),
    ("missing file", lambda tmp: "gone.npz", {}, ["gone.npz: no such file"]),
    ("corrupt npz", _raw("d.npz", b"PK\x03\x04 this is not a zip"), {},
     ["d.npz: not a readable .npz file", "numpy.savez"]),
    ("empty npz", _raw("d.npz", b""), {}, ["d.npz: not a readable .npz file"]),
    ("pickled objects", _npz(x=np.array([object(), 1], dtype=object), y=Y[:2]), {},
     ["d.npz: key 'x' cannot be read", "Python objects"]),
    ("npy named npz", lambda tmp: (np.save(tmp / "a.npy", X), (tmp / "a.npy").rename(
        tmp / "a.npz"), "a.npz")[-1], {}, ["a.npz: holds one array"]),
    ("missing y", _npz(x=X), {}, ["d.npz: no key 'y'", "'x'"]),
    ("missing x", _npz(y=Y), {}, ["d.npz: no inputs besides the labels"]),
    ("half held-out", _npz(x=X, y=Y, x_test=X[:5]), {},
     ["d.npz: held-out keys 'x_test' but no 'y_test'"]),
    ("suffix", _raw("d.txt", b"1,2"), {}, ["d.txt: unknown kind of data file '.txt'",
                                           "accepted: a .npz file, a .csv file"]),
    ("one npy", lambda tmp: (np.save(tmp / "x.npy", X), "x.npy")[-1], {},
     ["x.npy: one .npy file holds no labels", "folder"]),
    ("empty folder", lambda tmp: ((tmp / "e").mkdir(), "e")[-1], {},
     ["e: a folder with no .npy files and no class sub-folders"]),
    ("corrupt npy", _npy_then(lambda d: (d / "x.npy").write_bytes(b"garbage"), x=X, y=Y), {},
     ["m/x.npy: not a readable .npy file"]),
    ("truncated npy", _npy_then(lambda d: (d / "x.npy").write_bytes(
        (d / "x.npy").read_bytes()[:300]), x=X, y=Y), {}, ["m/x.npy: not a readable .npy file"]),
    ("empty npy", _npy_then(lambda d: (d / "x.npy").write_bytes(b""), x=X, y=Y), {},
     ["m/x.npy: not a readable .npy file", "empty"]),
    ("object npy", _npy_then(lambda d: np.save(d / "x.npy", np.array([None] * N), True),
                             x=X, y=Y), {}, ["m/x.npy: not a readable .npy file",
                                             "Python objects"]),
    ("corrupt labels", _npy_then(lambda d: (d / "y.npy").write_bytes(b"garbage"), x=X, y=Y), {},
     ["m/y.npy: not a readable .npy file"]),
    ("text features", _npz(x=X.astype(str), y=Y), {},
     ["d.npz: key 'x' has dtype <U", "takes numbers", "astype('float32')"]),
    ("float ids", _npz(tokens=SEQ["tokens"].astype(float), lengths=SEQ["lengths"], y=SY),
     {"model": seq_model()}, ["d.npz: key 'tokens' has dtype float64", "takes integers"]),
    ("nan features", _npz(x=XN, y=Y), {}, ["d.npz: key 'x': row 7 at (2,) is nan", "finite"]),
    ("inf in npy", _npy(x=XI, y=Y), {}, ["m/x.npy: row 33 at (1,) is inf"]),
    ("nan held-out", _npz(x=X, y=Y, x_test=XN[:10], y_test=Y[:10]), {},
     ["d.npz: key 'x_test': row 7 at (2,) is nan"]),
    ("nan targets", _npz(x=X[:, :2], y=np.where(np.arange(N) == 4, np.nan, 1.0)[:, None]),
     {"model": reg_model(), "loss": rs.losses.MeanSquaredError()},
     ["d.npz: key 'y': row 4 at (0,) is nan", "target"]),
    ("target shape", _npz(x=X[:, :2], y=Y.astype(float)),
     {"model": reg_model(), "loss": rs.losses.MeanSquaredError()},
     ["d.npz: key 'y' has shape (50,)", "outputs (N, 1)", "y.reshape(-1, 1)"]),
    ("label range", _npz(x=X, y=YB), {},
     ["d.npz: key 'y': row 9 is class id 5", "(3 classes)", "relabel to 0..2"]),
    ("label shape", _npz(x=X, y=Y[:, None]), {},
     ["d.npz: key 'y' has shape (50, 1)", "one class id per example"]),
    ("label not integral", _npz(x=X, y=np.where(np.arange(N) == 6, 0.5, 1.0)), {},
     ["d.npz: key 'y': row 6 is 0.5, not a class id"]),
    ("text labels", _npz(x=X, y=np.array(["a"] * N)), {},
     ["d.npz: key 'y' has dtype <U1", "integer class ids"]),
    ("lengths differ", _npz(x=X[:49], y=Y), {},
     ["d.npz: key 'x' has 49 examples but d.npz: key 'y' has 50"]),
    ("held-out lengths differ", _npy(x=X, y=Y, x_test=X[:9], y_test=Y[:10]), {},
     ["m/x_test.npy has 9 examples but m/y_test.npy has 10"]),
    ("zero examples", _npz(x=X[:0], y=Y[:0]), {}, ["d.npz: key 'y': no examples"]),
    ("zero in npy", _npy(x=X[:0], y=Y[:0], x_test=X, y_test=Y), {},
     ["m: no training examples"]),
    ("one batch", _npz(x=X, y=Y), {"batch_size": 64},
     ["d.npz: 40 training examples, fewer than one batch of 64", "--batch-size"]),
    ("no held-out", _npz(x=X[:2], y=Y[:2]), {"batch_size": 1},
     ["d.npz: no held-out examples", "test_fraction"]),
    ("input names", _npz(tokens=SEQ["tokens"], y=SY), {"model": seq_model()},
     ["d.npz: inputs ['tokens'] but model 'seq' takes ['lengths', 'tokens']", "add 'lengths'"]),
    ("one array for many", _npz(x=SEQ["tokens"], y=SY), {"model": seq_model()},
     ["d.npz: key 'x' is one input array but model 'seq' has inputs", "one array per input"]),
    ("bad lengths", _npz(**LEN0, y=SY), {"model": seq_model()},
     ["d.npz: key 'lengths': row 3 is 0", "sequence lengths", "[1, 6]"]),
    ("bad ids", _npy(**IDS9, y=SY), {"model": seq_model()},
     ["m/tokens.npy: row 0 at (2,) is 9", "vocab_size 5"]),
]


@pytest.mark.parametrize("make,kwargs,words", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_data_is_one_clear_data_error(tmp_path, monkeypatch, make, kwargs, words):
    monkeypatch.chdir(tmp_path)
    kwargs = dict(kwargs)
    model = kwargs.pop("model", None)
    loss = kwargs.pop("loss", None)
    raises(words, load_checked, make(tmp_path), model, loss, **kwargs)


def test_check_data_lives_in_datacheck_and_train_re_exports_it():
    from rosetta import training

    assert training.check_data is datacheck.check_data


def test_reading_user_data_imports_no_framework(tmp_path):
    x, y = arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code = ("import rosetta as rs\nfrom rosetta.datacheck import check_data\n"
            f"d = rs.DataSpec.from_path({str(tmp_path / 'd.npz')!r}, batch_size=8)\n"
            "m = rs.Sequential([rs.Dense(3)], input_shape=(4,))\n"
            "s = rs.TrainSpec(m, rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.1), d)\n"
            "check_data(s, d.load(m))\n")
    assert imported_after(code) == set()
