"""The Exam view: hanging order and orientation, the store's own scores and reads, the model's
input as `preprocess_image` makes it, the Exam page and the complement page's links to it."""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.demo.images import render_view
from core.errors import InputError
from core.importers.mias import import_mias
from core.io.images import read_pixels
from core.io.pixels import to_display, write_png
from core.reports import complement as cr
from core.reports.exam import (
    HANGING_ORDER,
    exam_id_of,
    exam_images,
    exam_report,
    hanging_image,
)
from core.reports.scores import model_scores
from core.store import open_store
from models.networks.gmic import CONFIGS
from models.inference.preprocess import preprocess_image
from tests.conftest import copy_store
from ui.exam_view import exam_url
from ui.images import outline_box
from ui.model_input import model_input

REPO = Path(__file__).resolve().parents[1]
EXAM = "demo/E00003"


def _block(img: np.ndarray, f: int) -> np.ndarray:
    """Brute-force block means: the reference for the tiles' downscaling."""
    h, w = img.shape[0] // f, img.shape[1] // f
    out = np.empty((h, w))
    for r in range(h):
        for c in range(w):
            out[r, c] = img[r * f:(r + 1) * f, c * f:(c + 1) * f].astype(float).mean()
    return out


def _heavier_side(tile: np.ndarray) -> str:
    """The tile edge with more bright tissue in its outer third: the chest wall's side."""
    third = tile.shape[1] // 3
    left, right = tile[:, :third].astype(float).sum(), tile[:, -third:].astype(float).sum()
    return "left" if left > right else "right"


@pytest.fixture(scope="module")
def demo(demo_store_path):
    return open_store(demo_store_path, read_only=True)


@pytest.fixture(scope="module")
def mias_store(mias_dir, tmp_path_factory):
    """mini-MIAS exams mdb001-002 and mdb003-004 (Info.txt cut to their lines)."""
    folder = tmp_path_factory.mktemp("mias4")
    lines = (mias_dir / "Info.txt").read_text().splitlines()
    keep = [ln for ln in lines if ln[:6] in ("mdb001", "mdb002", "mdb003", "mdb004")]
    (folder / "Info.txt").write_text("\n".join(keep) + "\n")
    for n in ("mdb001", "mdb002", "mdb003", "mdb004"):
        shutil.copy(mias_dir / f"{n}.png", folder)
    store = open_store(tmp_path_factory.mktemp("miasstore") / "s.duckdb")
    import_mias(store, folder)
    return store


# ------------------------------------------------------------------ hanging order, orientation

def test_demo_tiles_hang_in_order_with_chest_walls_facing(demo):
    report = exam_report(demo, EXAM)
    tiles = report.tiles
    assert list(zip(tiles["laterality"], tiles["view"])) == list(HANGING_ORDER)
    assert list(tiles["image_id"]) == [f"{EXAM}/{lat}-{view}" for lat, view in HANGING_ORDER]
    assert list(tiles["screen_chest_wall"]) == ["right", "left", "right", "left"]
    images = exam_images(demo, EXAM)
    for (lat, _), row, image in zip(HANGING_ORDER, tiles.itertuples(), images):
        # the demo draws R mirrored (chest wall on the right edge), so nothing is flipped and
        # the tile is the file windowed as core.io.pixels.to_display does (512 x 320: factor 1)
        raw = read_pixels(row.abs_path)
        assert not image.flipped and image.factor == 1 and image.source == "percentile window"
        np.testing.assert_array_equal(image.pixels, to_display(raw))
        assert _heavier_side(image.pixels) == ("right" if lat == "R" else "left")
        assert image.chest_wall == ("right" if lat == "R" else "left")


def test_mias_exam_is_mirrored_to_hang(mias_store):
    """mini-MIAS: odd refnums have the chest wall on the right edge, even on the left
    (SOURCE.md); the film-marker rule stores odd = L, even = R, so both must be mirrored."""
    report = exam_report(mias_store, "mias/mdb001")   # an image id opens its exam
    assert report.exam_id == "mias/mdb001-002"
    assert list(report.tiles["image_id"]) == [None, None, "mias/mdb002", "mias/mdb001"]
    assert report.notes[:2] == ("No R-CC image in this exam.", "No L-CC image in this exam.")
    images = exam_images(mias_store, report.exam_id)
    assert images[:2] == [None, None]
    for image, ref, lat in ((images[2], "mdb002", "R"), (images[3], "mdb001", "L")):
        raw = read_pixels(mias_store.image(f"mias/{ref}")["abs_path"])
        assert image.flipped and image.factor == 2 and image.original_shape == (1024, 1024)
        expected = to_display(_block(raw, 2).astype(np.float32))[:, ::-1]
        np.testing.assert_array_equal(image.pixels, expected)
        assert image.chest_wall == ("right" if int(ref[3:]) % 2 else "left")
        assert _heavier_side(image.pixels) == ("right" if lat == "R" else "left")


def test_sixteen_bit_file_and_its_display_copy(tmp_path):
    raw, _ = render_view(np.random.default_rng(3), laterality="R", view="CC", density=2,
                         shape=(1040, 650))
    raw16 = (raw.astype(np.uint32) * 16).astype(np.uint16)     # 12 -> 16 bits
    write_png(tmp_path / "r.png", raw16)
    tile = hanging_image(tmp_path / "r.png", laterality="R", long_side=512)
    assert tile.factor == 3 and tile.pixels.shape == (346, 216) and not tile.flipped
    np.testing.assert_array_equal(tile.pixels, to_display(_block(raw16, 3).astype(np.float32)))
    as_left = hanging_image(tmp_path / "r.png", laterality="L", long_side=512)
    assert as_left.flipped   # a laterality that contradicts the pixels is mirrored, and says so
    np.testing.assert_array_equal(as_left.pixels, tile.pixels[:, ::-1])
    copy = np.full(raw.shape, 7, np.uint8)
    copy[:, -300:] = 200    # the display copy's tissue on the right: no flip for R
    write_png(tmp_path / "r_display.png", copy)
    shown = hanging_image(tmp_path / "r.png", laterality="R", display_path=tmp_path / "r_display.png")
    assert shown.source == "display copy" and not shown.flipped
    np.testing.assert_array_equal(shown.pixels, np.rint(_block(copy, 3)).astype(np.uint8))
    with pytest.raises(InputError, match="laterality"):
        hanging_image(tmp_path / "r.png", laterality="X")


# ------------------------------------------------------------------ the store's own numbers

def test_scores_equal_the_store_and_the_benchmark(demo):
    report = exam_report(demo, EXAM)
    models = ["classical-dog", "gmic-demo", "gmic-demo-ilc"]   # the child scores the test split
    assert sorted(report.scores["model"].unique()) == models
    for level in ("image", "breast", "exam"):
        ref = model_scores(demo, models=models, level=level, test_set="test-all")
        ref = ref[ref["exam_id"] == EXAM].set_index(["model", "case_id"])
        got = report.scores[report.scores["level"] == level].set_index(["model", "case_id"])
        assert set(got.index) == set(ref.index)
        np.testing.assert_allclose(got["score"], ref.loc[got.index, "score"], rtol=0, atol=0)
        assert list(got["score_source"]) == list(ref.loc[got.index, "score_source"])
    images = demo.scores(models=models, level="image", test_set="test-all")
    images = images[images["exam_id"] == EXAM].set_index(["model", "case_id"])
    got = report.scores[report.scores["level"] == "image"].set_index(["model", "case_id"])
    np.testing.assert_array_equal(got["benign"].fillna(-1),
                                  images.loc[got.index, "benign"].fillna(-1))
    for model in models:   # by hand: a breast (exam) takes the max of its (all) views
        mine = images.loc[model]
        for case, lat in ((f"{EXAM}/L", "L"), (f"{EXAM}/R", "R"), (EXAM, None)):
            views = mine["score"] if lat is None else mine.loc[mine["laterality"] == lat, "score"]
            row = report.scores[(report.scores["model"] == model)
                                & (report.scores["case_id"] == case)]
            assert row["score"].iat[0] == views.max()


def test_stored_breast_scores_win_and_missing_ones_stay_missing(demo_store_path, tmp_path):
    store = open_store(copy_store(demo_store_path, tmp_path))
    store.write_tables({"predictions": pd.DataFrame([{
        "model": "gmic-demo", "level": "breast", "case_id": f"{EXAM}/L", "exam_id": EXAM,
        "laterality": "L", "malignant": 0.625, "benign": 0.125}])})
    scores = exam_report(store, EXAM, models=["gmic-demo"]).scores.set_index("case_id")
    assert scores.loc[f"{EXAM}/L", "score"] == 0.625
    assert scores.loc[f"{EXAM}/L", "score_source"] == "stored"
    assert np.isnan(scores.loc[f"{EXAM}/R", "score"])     # the model has breast rows, not this one
    ref = model_scores(store, models=["gmic-demo"], level="breast", test_set="test-all")
    ref = ref.set_index("case_id")
    for case in (f"{EXAM}/L", f"{EXAM}/R"):
        assert scores.loc[case, "score"] == pytest.approx(ref.loc[case, "score"], nan_ok=True)
    with pytest.raises(InputError, match="no predictions"):
        exam_report(store, EXAM, models=["nobody"])


def test_reads_and_truth_equal_the_store(demo):
    report = exam_report(demo, EXAM)
    ref = pd.concat([demo.reads(level=lv) for lv in ("image", "breast", "exam")])
    ref = ref[ref["exam_id"] == EXAM]
    key = ["reader", "case_id"]
    got = report.reads.sort_values(key).reset_index(drop=True)
    ref = ref.sort_values(key).reset_index(drop=True)
    assert list(got["case_id"]) == list(ref["case_id"]) and len(got) == 9
    np.testing.assert_array_equal(got["score"], ref["score"])
    assert list(got["recall"]) == list(ref["recall"])
    assert list(report.reads["reader"].unique()) == demo.reader_names()
    exam = demo.cases(level="exam").set_index("case_id").loc[EXAM]
    assert (report.exam["label"], report.exam["histology"]) == (exam["label"], exam["histology"])
    breasts = demo.cases(level="breast").set_index("case_id")
    for row in report.breasts.itertuples():
        truth = breasts.loc[f"{EXAM}/{row.laterality}"]
        assert (row.label, row.histology) == (truth["label"], truth["histology"])


def test_any_case_id_opens_its_exam(demo):
    for case in (EXAM, f"{EXAM}/L", f"{EXAM}/R-MLO"):
        assert exam_id_of(demo, case) == EXAM
    with pytest.raises(InputError, match="not in the store"):
        exam_id_of(demo, "demo/E99999")
    with pytest.raises(InputError, match="empty"):
        exam_id_of(demo, "  ")


# ------------------------------------------------------------------ as the model received it

def test_model_input_is_preprocess_image_as_predict_ran_it(demo):
    image_id = f"{EXAM}/R-CC"
    got = model_input(demo, "gmic-demo", image_id)
    assert got.config == "demo" and got.config_source.startswith("predict run")
    row = demo.image(image_id)
    ref = preprocess_image(read_pixels(row["abs_path"]), CONFIGS["demo"].input_shape,
                           laterality="R")
    assert np.array_equal(got.preprocessed.image.numpy(), ref.image.numpy())
    assert (got.preprocessed.crop_box, got.preprocessed.flipped) == (ref.crop_box, ref.flipped)
    assert got.preprocessed.flipped          # R: mirrored so the chest wall is at column 0
    assert got.matches_record is True        # the geometry predict stored in the saliency file
    assert got.display.shape == (512, 320) and got.display.dtype == np.uint8
    with pytest.raises(InputError, match="not a GMIC model"):
        model_input(demo, "classical-dog", image_id)


def test_a_wrong_laterality_shows_as_a_mismatch(demo_store_path, tmp_path):
    """A laterality corrected after prediction: the re-run flips differently from the record."""
    store = open_store(copy_store(demo_store_path, tmp_path))
    image_id = f"{EXAM}/R-CC"
    row = store.select("images", image_id=image_id)
    store.write_tables({"images": row.assign(laterality="L", laterality_source="corrected")})
    got = model_input(store, "gmic-demo", image_id)
    assert not got.preprocessed.flipped and got.recorded.flipped
    assert got.matches_record is False


def test_outline_box_by_hand():
    rgb = outline_box(np.zeros((6, 8), np.uint8), (1, 2, 3, 4), colour=(9, 8, 7), width=1)
    red = rgb[..., 0] == 9
    expected = np.zeros((6, 8), bool)
    expected[1, 2:6] = expected[3, 2:6] = expected[1:4, 2] = expected[1:4, 5] = True
    np.testing.assert_array_equal(red, expected)
    assert rgb.shape == (6, 8, 3) and (rgb[~red] == 0).all()


# ------------------------------------------------------------------ pages

def test_exam_page_opens_from_a_case_id_in_the_url(demo_env):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    at.query_params["exam"] = f"{EXAM}/L-CC"
    at.switch_page("pages/exam.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.subheader] == [f"Exam {EXAM}"]
    assert len(at.get("image")) == 4
    at.toggle(key="exam_model_input").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Same crop box" in c.value for c in at.caption)
    at.text_input(key="exam").set_value("demo/E99999").run()
    assert not at.exception
    assert any("not in the store" in e.value for e in at.error)


def test_complement_page_links_each_cancer_to_its_exam(demo_env):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/complement.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "link" in d.value.columns)
    assert len(table) and (table["link"].str.startswith("exam?")).all()
    for case, link in zip(table["case_id"], table["link"]):
        assert parse_qs(urlparse(link).query)["exam"] == [case]
        assert urlparse(link).path == "exam"                    # the Exam page's URL path
    assert "exam" in [Path(p).stem for p in
                      __import__("re").findall(r'(?:st\.Page|page)\("(pages/[a-z_]+\.py)"',
                                               (REPO / "app.py").read_text())]
    link = at.get("page_link")[0].proto
    assert link.page == "exam" and parse_qs(link.query_string)["exam"] == [table["case_id"][0]]


def test_cancer_cases_agree_with_the_complement_result(demo):
    report = cr.complement_report(demo, test_set="test-all", model="gmic-demo",
                                  reader="consensus", level="breast", n_boot=10)
    cancers = cr.cancer_cases(report)
    res = report.result
    outcome = cancers["outcome"].value_counts()
    assert len(cancers) == res.cancers
    assert outcome.get("missed by the reader, caught by the model", 0) == \
        res.among_reader_negative.caught
    assert (outcome.get("missed by both", 0)
            == res.among_reader_negative.cancers - res.among_reader_negative.caught)
    assert (cancers["reader"] == "recall").sum() == res.reader.tp
    assert (cancers["model"] == "flagged").sum() == res.model.tp
    missed_first = (cancers["reader"] == "no recall").to_numpy()
    assert (np.diff(missed_first.astype(int)) <= 0).all()


def test_exam_url_round_trips():
    url = exam_url("a b/E&1/L", test_set="test-all")
    assert parse_qs(urlparse(url).query) == {"exam": ["a b/E&1/L"], "test_set": ["test-all"]}
