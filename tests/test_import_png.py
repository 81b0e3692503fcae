"""PNG folder + manifest importer: labels, 16-bit geometry, the metarepository's data.pkl,
idempotence, and malformed manifests (missing columns, wrong types, path traversal)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, strategies as st
from PIL import Image

from cli import main
from core.errors import InputError
from core.importers.common import safe_relative
from core.importers.png import import_png
from core.store import open_store
from tests.test_import_dicom import dump


def write_png(path: Path, shape=(48, 40), top=4095, seed=0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, top + 1, shape).astype(
        np.uint16 if top > 255 else np.uint8)
    pixels.flat[0] = top  # the maximum sets the bit depth
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "nyu"
    for seed, name in enumerate(["0_L_CC", "0_L_MLO", "0_R-CC", "0_R-MLO", "1_L_CC", "1_R_CC"]):
        write_png(root / f"{name}.png", seed=seed)
    write_png(root / "extra" / "2_L_MLO.png", top=255)
    manifest = pd.DataFrame({
        "exam": [0, 0, 1, 1, 2], "laterality": ["L", "R", "left", "right", "L"],
        "cancer": [0, 1, 0, 0, 1], "histology": ["none", "ILC", "none", "none", "ductal"],
        "split": ["test", "test", "train", "train", "validation"],
        "density": ["b", "b", "3", "3", None], "age": [51, 51, 62, 62, None]})
    manifest.to_csv(tmp_path / "labels.csv", index=False)
    return root, tmp_path / "labels.csv"


def test_import_labels_and_geometry(folder, tmp_path):
    root, manifest = folder
    store = open_store(tmp_path / "s.duckdb")
    report = import_png(store, root, manifest)
    assert report.counts() == {"imported": 7, "skipped": 0, "failed": 0}
    images = store.images(dataset="nyu").set_index("image_key")
    assert images.loc["0_R-CC", ["image_id", "laterality", "view", "laterality_source"]].tolist() \
        == ["nyu/0/R-CC", "R", "CC", "file-name"]
    assert images.loc["2_L_MLO", "path"] == "extra/2_L_MLO.png"
    assert images.loc["0_L_CC", "bit_depth"] == 12 and images.loc["2_L_MLO", "bit_depth"] == 8
    assert (images.loc["0_L_CC", "height"], images.loc["0_L_CC", "width"]) == (48, 40)
    breasts = store.cases(level="breast").set_index("case_id")
    assert breasts.loc["nyu/0/R", ["label", "histology"]].tolist() == [1, "ILC"]
    assert breasts.loc["nyu/2/L", ["label", "histology"]].tolist() == [1, "IDC"]
    exams = store.exams(dataset="nyu").set_index("exam_key")
    assert exams.loc["2", "split"] == "val" and exams.loc["1", "age"] == 62
    density = store.density(source="label").set_index("exam_id")["category"]
    assert density["nyu/0"] == 1 and density["nyu/1"] == 3
    assert store.testsets().set_index("name").loc["nyu", "n_exams"] == 3
    before = dump(store)
    again = import_png(store, root, manifest)
    assert again.counts() == {"imported": 0, "skipped": 7, "failed": 0}
    assert dump(store) == before


def test_relabelling_updates_without_duplicates(folder, tmp_path):
    root, manifest = folder
    store = open_store(tmp_path / "s.duckdb")
    import_png(store, root, manifest)
    table = pd.read_csv(manifest)
    table.loc[1, "histology"] = "IDC"
    table.to_csv(manifest, index=False)
    report = import_png(store, root, manifest)
    assert report.counts()["imported"] == 4  # the images of exam 0
    assert store.counts()["breasts"] == 5
    assert store.cases(level="breast").set_index("case_id").loc["nyu/0/R", "histology"] == "IDC"


def test_per_image_manifest_with_file_column(tmp_path):
    root = tmp_path / "site"
    for seed, name in enumerate(["a/img1.png", "a/img2.png", "b/img3.png"]):
        write_png(root / name, seed=seed)
    pd.DataFrame({"file": ["a/img1.png", "a/img2.png", "b/img3.png"],
                  "exam": ["e1", "e1", "e2"], "laterality": ["R", "R", "L"],
                  "view": ["CC", "MLO", "cc"], "cancer": [1, 1, 0],
                  "patient": ["MRN-1", "MRN-1", "MRN-2"]}).to_csv(tmp_path / "m.csv", index=False)
    store = open_store(tmp_path / "s.duckdb")
    report = import_png(store, root, tmp_path / "m.csv")
    assert report.counts() == {"imported": 3, "skipped": 0, "failed": 0}
    images = store.images().set_index("path")
    assert images.loc["a/img2.png", ["image_id", "laterality_source"]].tolist() == \
        ["site/e1/R-MLO", "manifest"]
    assert images.loc["b/img3.png", "view"] == "CC"
    exams = store.exams().set_index("exam_key")
    assert exams.loc["e1", "patient"] == store.pseudonym("MRN-1") != "MRN-1"
    labels = store.cases(level="breast").set_index("case_id")["label"]
    assert labels.to_dict() == {"site/e1/R": 1, "site/e2/L": 0}


def test_metarepository_pickle_manifest(tmp_path):
    root = tmp_path / "sample"
    names = {"L-CC": ["0_L_CC"], "R-CC": ["0_R_CC"], "L-MLO": ["0_L_MLO"], "R-MLO": ["0_R_MLO"]}
    for seed, (view, files) in enumerate(names.items()):
        write_png(root / f"{files[0]}.png", seed=seed)
    exam_list = [dict(names, cancer_label={"left_malignant": 0, "right_malignant": 1},
                      horizontal_flip="NO")]
    with open(tmp_path / "data.pkl", "wb") as f:
        pickle.dump(exam_list, f, protocol=4)
    store = open_store(tmp_path / "s.duckdb")
    report = import_png(store, root, tmp_path / "data.pkl")
    assert report.counts()["imported"] == 4
    labels = store.cases(level="image").set_index("image_id")["label"]
    assert labels["sample/0/R-MLO"] == 1 and labels["sample/0/L-CC"] == 0


@pytest.mark.parametrize("change, match", [
    (lambda t: t.drop(columns=["exam"]), "no exam column"),
    (lambda t: t.rename(columns={"laterality": "sidez"}), "no laterality column"),
    (lambda t: t.assign(cancer=["0", "1", "maybe", "0", "1"]), "'maybe'"),
    (lambda t: t.assign(histology=["none", "ILC", "ILC", "none", "IDC"]), "needs cancer 1"),
    (lambda t: t.assign(split=["test", "test", "train", "train", "holdout"]), "split 'holdout'"),
    (lambda t: t.assign(age=[51, 51, 62, 62, "old"]), "non-numeric"),
    (lambda t: t.assign(laterality=["L", "R", "L", "X", "L"]), "'X' is not L/R"),
    (lambda t: pd.concat([t, t.iloc[[1]].assign(cancer=0, histology="none")]), "earlier row"),
    (lambda t: t.assign(file=["0_L_CC.png", "../outside.png", "1_L_CC.png", "1_R_CC.png",
                              "extra/2_L_MLO.png"]), "climbs out"),
    (lambda t: t.assign(file=["/etc/passwd", "0_R-CC.png", "1_L_CC.png", "1_R_CC.png",
                              "extra/2_L_MLO.png"]), "absolute"),
])
def test_bad_manifest_is_refused_and_changes_nothing(folder, tmp_path, change, match):
    root, manifest = folder
    store = open_store(tmp_path / "s.duckdb")
    before = dump(store)
    change(pd.read_csv(manifest)).to_csv(manifest, index=False)
    with pytest.raises(InputError, match=match):
        import_png(store, root, manifest)
    assert dump(store) == before


@pytest.mark.parametrize("problem, match", [
    ("truncated", "unreadable"), ("dimensions", "impossible image size"),
    ("magic", "not a PNG"), ("colour", "colour image")])
def test_bad_image_fails_alone(folder, tmp_path, problem, match):
    root, manifest = folder
    bad = root / "1_R_CC.png"
    if problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:200])
    elif problem == "dimensions":
        write_png(bad, shape=(4, 4))
    elif problem == "magic":
        bad.write_bytes(b"GIF89a" + bytes(100))
    else:
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(bad)
    store = open_store(tmp_path / "s.duckdb")
    report = import_png(store, root, manifest)
    outcome = {o.file: o for o in report.outcomes}["1_R_CC.png"]
    assert outcome.status == "failed" and match in outcome.reason
    assert "nyu/1/R-CC" not in set(store.images()["image_id"])
    assert store.counts()["images"] == 6


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "c.png", "", "/", "\\"]), min_size=1,
                max_size=6))
def test_safe_relative_never_leaves_the_root(parts):
    root = Path("/tmp/ilcscope-root-never-created")
    rel = "/".join(parts)
    try:
        path = safe_relative(root, rel)
    except InputError:
        return
    assert ".." not in Path(rel.replace("\\", "/")).parts
    assert path.resolve().is_relative_to(root.resolve())


def test_cli(folder, tmp_path, capsys):
    root, manifest = folder
    db = tmp_path / "cli.duckdb"
    argv = ["import", "png", str(root), "--manifest", str(manifest), "--db", str(db), "--json"]
    assert main(argv + ["--dataset", "site"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["imported"] == 7
    assert open_store(db).images(dataset="site").shape[0] == 7
    assert main(["import", "png", str(root), "--manifest", str(tmp_path / "none.csv"),
                 "--db", str(db)]) == 2
    assert "is not a file" in capsys.readouterr().err
