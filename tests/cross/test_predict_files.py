"""Predict on raw files: the preprocessing a data source applied is recorded in the checkpoint
(``rosetta.preprocessing``) and applied again to new files on another backend. A model trained
on a folder of PNG images on one backend predicts a folder of new image files (another size,
sub-folders, JPEG) on another backend into a CSV with class names and probabilities; a model
trained on CSV rows predicts a new CSV file (columns in another order, no label, an extra
column) into JSON. Each is checked against the same checkpoint's outputs for the arrays the
test builds itself with Pillow and NumPy (float64, 1e-10)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import rosetta as rs

from cli_run import check_contract, run_cli
from selection import BACKENDS

A, B = BACKENDS[0], BACKENDS[-1]
CLASSES = ("cat", "dog")       # sub-folder names: class ids 0, 1


def _ok(*argv):
    o = run_cli([str(a) for a in argv])
    check_contract(o)
    assert o.status == 0, str(o)
    return o


def _png(path, rgb, rng, size=(10, 12)):
    from PIL import Image

    a = np.clip(np.asarray(rgb) * 255 + rng.normal(0, 30, size + (3,)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8), "RGB").save(path)


def _reference_images(files):
    """What the model must be fed: RGB, bilinear to 6x6, / 255 (built here, not by rosetta)."""
    from PIL import Image

    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB").resize((6, 6), Image.Resampling.BILINEAR)
            out.append(np.asarray(im, np.float64) / 255.0)
    return np.stack(out)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for k, cls in enumerate(CLASSES):
        for i in range(10):
            _png(d / "train" / cls / f"{i}.png", (0.8, 0.2, 0.2) if k == 0 else (0.2, 0.2, 0.8),
                 rng)
    model = rs.Sequential([rs.Flatten(), rs.Dense(2)], input_shape=(6, 6, 3), name="img")
    spec = rs.TrainSpec(model, rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.1),
                        rs.DataSpec(None, 4, path="train", source="path"), steps=10)
    (d / "spec.json").write_text(spec.dumps())          # "train" relative to the spec file
    _ok("train", d / "spec.json", "--backend", A, "--dtype", "float64", "--save", d / "run",
        "--quiet")
    _png(d / "new" / "a.png", (0.9, 0.1, 0.1), rng, (7, 5))
    _png(d / "new" / "more" / "b.png", (0.1, 0.1, 0.9), rng, (6, 6))
    from PIL import Image

    Image.open(d / "new" / "a.png").save(d / "new" / "c.jpg", quality=90)
    return d


def test_images_predicted_on_another_backend_into_a_csv_with_class_names(image_run):
    d = image_run
    _ok("predict", d / "run", "--backend", B, "--dtype", "float64", "--input", d / "new",
        "--output", d / "pred.csv")
    with open(d / "pred.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["input", "class", *CLASSES]
    names = [r[0] for r in rows[1:]]
    assert names == ["a.png", "c.jpg", "more/b.png"]
    probs = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    assert [r[1] for r in rows[1:]] == [CLASSES[i] for i in probs.argmax(axis=1)]
    # the reference: the same checkpoint on the training backend, fed arrays built here
    np.save(d / "x.npy", _reference_images([d / "new" / n for n in names]))
    _ok("predict", d / "run", "--backend", A, "--dtype", "float64", "--input", d / "x.npy",
        "--output", d / "ref.npy")
    np.testing.assert_allclose(probs, _softmax(np.load(d / "ref.npy")), rtol=0, atol=1e-10)
    assert [r[1] for r in rows[1:]] == ["cat", "cat", "dog"]   # it learned the colours


def test_a_checkpoint_without_the_record_still_predicts_by_class_id(image_run, tmp_path):
    import shutil

    d = image_run
    old = tmp_path / "old"
    shutil.copytree(sorted((d / "run").glob("step-*"))[-1], old)
    rec = json.loads((old / "record.json").read_text())
    del rec["preprocessing"]                              # as written before it was recorded
    (old / "record.json").write_text(json.dumps(rec))
    _ok("predict", old, "--backend", B, "--input", d / "new" / "a.png", "--output",
        tmp_path / "p.json")
    out = json.loads((tmp_path / "p.json").read_text())
    assert [o["input"] for o in out] == ["a.png"] and set(out[0]["probabilities"]) == {"0", "1"}


def test_eval_on_a_folder_with_some_classes_keeps_the_recorded_ids(image_run):
    d = image_run
    o = _ok("eval", d / "run", "--backend", B, "--data", d / "train", "--json")
    whole = json.loads(o.out.strip().splitlines()[-1])
    import shutil

    shutil.copytree(d / "train" / "dog", d / "only" / "dog")   # class id 1, its only folder
    o = _ok("eval", d / "run", "--backend", B, "--data", d / "only", "--json")
    only = json.loads(o.out.strip().splitlines()[-1])
    assert whole["metrics"]["accuracy"] == 1.0 and only["metrics"]["accuracy"] == 1.0


def test_csv_rows_predicted_by_column_name_into_json(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 3))
    y = (x[:, 0] - x[:, 2] > 0).astype(int)
    with open(tmp_path / "table.csv", "w") as f:
        f.write("b,target,a,c\n")   # feature columns b, a, c (file order); label "target"
        for r, t in zip(x, y):
            f.write(f"{float(r[0])!r},{t},{float(r[1])!r},{float(r[2])!r}\n")
    model = rs.Sequential([rs.Dense(2)], input_shape=(3,), name="tab")
    spec = rs.TrainSpec(model, rs.losses.SoftmaxCrossEntropy(), rs.optim.SGD(0.1),
                        rs.DataSpec(None, 8, path=str(tmp_path / "table.csv"), label="target",
                                    source="path"), steps=10)
    (tmp_path / "spec.json").write_text(spec.dumps())
    _ok("train", tmp_path / "spec.json", "--backend", A, "--dtype", "float64", "--save",
        tmp_path / "run", "--quiet")
    new = rng.standard_normal((5, 3))
    with open(tmp_path / "new.csv", "w") as f:
        f.write("note,c,a,b\n")      # another order, no label, an extra column
        for r in new:
            f.write(f"7,{float(r[2])!r},{float(r[1])!r},{float(r[0])!r}\n")
    _ok("predict", tmp_path / "run", "--backend", B, "--dtype", "float64", "--input",
        tmp_path / "new.csv", "--output", tmp_path / "pred.json")
    out = json.loads((tmp_path / "pred.json").read_text())
    assert [o["input"] for o in out] == [f"line {i}" for i in range(2, 7)]
    np.save(tmp_path / "x.npy", new)                  # columns b, a, c: the training order
    _ok("predict", tmp_path / "run", "--backend", A, "--dtype", "float64", "--input",
        tmp_path / "x.npy", "--output", tmp_path / "ref.npy")
    probs = np.array([[o["probabilities"][k] for k in ("0", "1")] for o in out])
    np.testing.assert_allclose(probs, _softmax(np.load(tmp_path / "ref.npy")), rtol=0,
                               atol=1e-10)
    # eval reads a labelled CSV the same way: recorded columns by name, the spec's label column
    labels = (new[:, 0] - new[:, 2] > 0).astype(int)
    with open(tmp_path / "labelled.csv", "w") as f:
        f.write("c,target,a,b\n")
        for r, t in zip(new, labels):
            f.write(f"{float(r[2])!r},{t},{float(r[1])!r},{float(r[0])!r}\n")
    o = _ok("eval", tmp_path / "run", "--backend", B, "--dtype", "float64", "--data",
            tmp_path / "labelled.csv", "--json")
    ev = json.loads(o.out.strip().splitlines()[-1])
    assert ev["examples"] == 5
    assert ev["metrics"]["accuracy"] == np.mean(probs.argmax(axis=1) == labels)
    with open(tmp_path / "bad.csv", "w") as f:
        f.write("a,b\n1,2\n")
    o = run_cli(["predict", str(tmp_path / "run"), "--backend", B, "--input",
                 str(tmp_path / "bad.csv"), "--output", str(tmp_path / "bad.json")])
    check_contract(o)
    assert o.status == 2 and "no column 'c'" in o.err, str(o)
