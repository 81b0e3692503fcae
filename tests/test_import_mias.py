"""mini-MIAS importer on the real 322 images (../shared/data/mias), a 4-image copy for the
laterality rules, corrections and malformed input, and the CLI."""
from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict

import numpy as np
import pytest

from cli import main
from core.errors import InputError
from core.importers.common import correct_laterality
from core.importers.mias import import_mias
from core.store import open_store
from tests.test_import_dicom import dump


def reference_counts(info_path) -> dict:
    """Counts straight from Info.txt, written independently of the importer's parser."""
    lines = [ln.split() for ln in info_path.read_text().splitlines() if ln.startswith("mdb")]
    by_ref = defaultdict(list)
    for tokens in lines:
        by_ref[tokens[0]].append(tokens)
    abnormal = [t for t in lines if t[2] != "NORM"]
    return {
        "images": len(by_ref),
        "exams": len({(int(r[3:]) + 1) // 2 for r in by_ref}),
        "lesions": len(abnormal),
        "no_coords": sum(len(t) < 7 for t in abnormal),
        "masks": len({t[0] for t in abnormal if len(t) >= 7}),
        "malignant": len({t[0] for t in abnormal if t[3] == "M"}),
        "benign_only": len({t[0] for t in abnormal} - {t[0] for t in abnormal if t[3] == "M"}),
        "background": {r: ts[0][1] for r, ts in by_ref.items()},
    }


@pytest.fixture(scope="module")
def mias(mias_dir, tmp_path_factory):
    store = open_store(tmp_path_factory.mktemp("mias") / "store.duckdb")
    start = time.perf_counter()
    report = import_mias(store, mias_dir)
    return store, report, time.perf_counter() - start


def test_counts_match_info_txt(mias, mias_dir):
    store, report, elapsed = mias
    ref = reference_counts(mias_dir / "Info.txt")
    assert (ref["images"], ref["exams"], ref["lesions"], ref["malignant"]) == (322, 161, 123, 52)
    assert report.counts() == {"imported": 323, "skipped": 0, "failed": 0}  # + Info.txt
    counts = store.counts()
    assert counts["images"] == ref["images"] and counts["exams"] == ref["exams"]
    assert counts["lesions"] == ref["lesions"] and counts["annotations"] == ref["masks"] == 111
    lesions = store.lesions()
    assert lesions["row_px"].isna().sum() == ref["no_coords"] == 4
    breasts = store.cases(level="breast")
    assert len(breasts) == 322 and breasts["label"].sum() == ref["malignant"]
    assert (breasts.loc[breasts["label"] == 1, "histology"] == "unknown").all()
    assert (breasts.loc[breasts["label"] == 0, "histology"] == "none").all()
    assert "4 without coordinates" in report.outcomes[0].reason
    assert set(store.testsets()["name"]) >= {"mias"}
    assert store.testsets().set_index("name").loc["mias", "n_exams"] == 161
    assert elapsed < 30, f"MIAS import took {elapsed:.1f} s"


def test_pairs_laterality_and_density(mias, mias_dir):
    store, _, _ = mias
    images = store.images(dataset="mias").set_index("image_key")
    assert images.loc["mdb001", "exam_id"] == images.loc["mdb002", "exam_id"] == \
        "mias/mdb001-002"
    assert images.loc["mdb003", "exam_id"] != images.loc["mdb002", "exam_id"]
    assert images.loc["mdb001", ["laterality", "laterality_source"]].tolist() == \
        ["L", "film-marker"]
    assert images.loc["mdb002", "laterality"] == "R"
    assert (images["laterality"] == "L").sum() == 161 and (images["view"] == "MLO").all()
    assert (images["spacing_mm"] == 0.2).all() and (images["bit_depth"] == 8).all()
    background = reference_counts(mias_dir / "Info.txt")["background"]
    letter_to_category = {"F": 0, "G": 1, "D": 2}
    density = store.density(source="label", level="image").set_index("image_id")
    for refnum, letter in background.items():
        assert density.loc[f"mias/{refnum}", "category"] == letter_to_category[letter]
    exams = store.density(source="label", level="exam").set_index("exam_id")
    for odd in range(1, 322, 2):
        pair = [f"mdb{odd:03d}", f"mdb{odd + 1:03d}"]
        expected = max(letter_to_category[background[r]] for r in pair)
        assert exams.loc[f"mias/{pair[0]}-{pair[1][3:]}", "category"] == expected


def test_known_lesion_mask_position(mias):
    store, _, _ = mias
    lesion = store.lesions(image_id="mias/mdb001").iloc[0]
    assert (lesion["row_px"], lesion["col_px"], lesion["radius_px"]) == (598, 535, 197)
    assert (lesion["presentation"], lesion["pathology"]) == ("mass", "benign")
    (row,) = store.latest_annotations().query("image_id == 'mias/mdb001'").itertuples()
    assert (row.source, row.author) == ("imported", "MIAS")
    mask = store.load_mask(row.mask_path)
    rows, cols = np.nonzero(mask)
    assert mask.shape == (1024, 1024)
    assert rows.mean() == pytest.approx(1023 - 425, abs=0.5)  # origin at the bottom-left
    assert cols.mean() == pytest.approx(535, abs=0.5)
    assert mask.sum() == pytest.approx(np.pi * 197 ** 2, rel=0.01)
    # two findings on one image: both circles in one mask (mdb005, 2 CIRC B)
    two = store.lesions(image_id="mias/mdb005")
    assert len(two) == 2
    (row5,) = store.latest_annotations().query("image_id == 'mias/mdb005'").itertuples()
    mask5 = store.load_mask(row5.mask_path)
    for lesion in two.itertuples():
        assert mask5[int(lesion.row_px), int(lesion.col_px)]
    # a spread calcification without coordinates: a lesion row, no mask
    assert store.lesions(image_id="mias/mdb216")["row_px"].isna().all()
    assert store.annotations("mias/mdb216").empty


def test_reimport_is_idempotent(mias, mias_dir):
    store, _, _ = mias
    before = dump(store)
    report = import_mias(store, mias_dir)
    assert report.counts() == {"imported": 1, "skipped": 322, "failed": 0}
    assert dump(store) == before


@pytest.fixture()
def four(mias_dir, tmp_path):
    """mdb001-004 and an Info.txt limited to them."""
    folder = tmp_path / "mini"
    folder.mkdir()
    lines = [ln for ln in (mias_dir / "Info.txt").read_text().splitlines()
             if not ln.startswith("mdb") or ln[:6] in ("mdb001", "mdb002", "mdb003", "mdb004")]
    (folder / "Info.txt").write_text("\n".join(lines) + "\n")
    for n in range(1, 5):
        shutil.copy(mias_dir / f"mdb{n:03d}.png", folder)
    return folder


def test_readme_rule_swaps_sides(four, tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    import_mias(store, four, laterality_rule="readme")
    images = store.images().set_index("image_key")
    assert images.loc["mdb001", ["laterality", "laterality_source"]].tolist() == \
        ["R", "info-note"]
    assert images.loc["mdb002", "laterality"] == "L"
    with pytest.raises(InputError, match="laterality rule"):
        import_mias(store, four, laterality_rule="odd-left")


def test_correct_laterality_moves_labels_and_survives_reimport(four, tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    import_mias(store, four)
    exam = "mias/mdb001-002"
    result = correct_laterality(store, "mias/mdb001", "R")
    assert result == {"image_id": "mias/mdb001", "from": "L", "to": "R", "breasts": "merged"}
    image = store.image("mias/mdb001")
    assert (image["laterality"], image["laterality_source"]) == ("R", "corrected")
    assert set(store.lesions(image_id="mias/mdb001")["laterality"]) == {"R"}
    breasts = store.cases(level="breast").set_index("case_id")
    assert f"{exam}/L" not in breasts.index  # no image is left on the left
    assert breasts.loc[f"{exam}/R", "presentation"] == "mass"
    assert store.density(source="label", level="image").set_index("image_id").loc[
        "mias/mdb001", "laterality"] == "R"
    # a re-import keeps the correction
    import_mias(store, four)
    assert store.image("mias/mdb001")["laterality"] == "R"
    # moving mdb002 away from a side that keeps mdb001 copies the labels
    assert correct_laterality(store, "mias/mdb002", "left")["breasts"] == "copied"
    breasts = store.cases(level="breast").set_index("case_id")
    assert {f"{exam}/L", f"{exam}/R"} <= set(breasts.index)
    with pytest.raises(InputError, match="not L or R"):
        correct_laterality(store, "mias/mdb002", "up")
    with pytest.raises(InputError, match="not in the store"):
        correct_laterality(store, "mias/mdb999", "L")


def test_malformed_info_changes_nothing(four, tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    import_mias(store, four)
    before = dump(store)
    info = four / "Info.txt"
    text = info.read_text()
    for bad, match in ((text.replace("mdb003 D NORM", "mdb003 D BLOB"), "class 'BLOB'"),
                       (text.replace("mdb003 D NORM", "mdb003 Q NORM"), "not F, G or D"),
                       (text.replace("mdb001 G CIRC B", "mdb001 G CIRC"), "severity"),
                       ("no table here\n", "no 'mdb")):
        info.write_text(bad)
        with pytest.raises(InputError, match=match):
            import_mias(store, four)
        assert dump(store) == before


def test_truncated_image_fails_alone(four, tmp_path):
    data = (four / "mdb002.png").read_bytes()
    (four / "mdb002.png").write_bytes(data[: len(data) // 2])
    (four / "mdb004.png").unlink()
    store = open_store(tmp_path / "s.duckdb")
    report = import_mias(store, four)
    status = {o.file: (o.status, o.reason) for o in report.outcomes}
    assert status["mdb002.png"][0] == "failed" and "unreadable" in status["mdb002.png"][1]
    assert status["mdb004.pgm"][0] == "failed" and "neither" in status["mdb004.pgm"][1]
    assert status["mdb001.png"][0] == "imported"
    assert set(store.images()["image_key"]) == {"mdb001", "mdb003"}
    assert store.lesions(image_id="mias/mdb002").empty and store.annotations("mias/mdb002").empty
    assert not (store.files_dir / "masks" / "mias_mdb002").exists()


def test_cli(four, tmp_path, capsys):
    db = tmp_path / "cli.duckdb"
    assert main(["import", "mias", str(four), "--db", str(db), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["counts"] == {"imported": 5, "skipped": 0, "failed": 0}
    assert open_store(db).counts()["images"] == 4
    assert main(["import", "mias", str(tmp_path / "nowhere"), "--db", str(db)]) == 2
    assert "error:" in capsys.readouterr().err
