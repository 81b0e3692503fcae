"""The synthetic cohort: schema, ids, determinism, masks, images, and the simulated readers.

Reader targets are typed here from the literature the study cites (not imported from the
module), and every rate is recomputed from the tables with plain pandas.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from core.errors import InputError
from core.store.schema import (HISTOLOGIES, PATHOLOGIES, PRESENTATIONS, PRIMARY_KEYS, TABLE_COLUMNS)
from core.demo.cohort import SyntheticCohort, generate_cohort
from core.demo.images import Geometry, LesionSpec, render_view

SMALL = dict(n_exams=20, seed=7, dataset="syn", image_shape=(128, 80))
TABLES = ("datasets", "exams", "images", "breasts", "lesions", "readers", "reads", "density")
# Screening sensitivity by density category (our 0..3), radiologist specificity: the study's.
LITERATURE_SENSITIVITY = {0: 0.877, 1: 0.776, 2: 0.695, 3: 0.610}
LITERATURE_SPECIFICITY = 0.98
CC_GEOMETRY = Geometry(depth=0.7, centre=0.5, up=0.38, down=0.38, power=2.1)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, SyntheticCohort]:
    root = tmp_path_factory.mktemp("small")
    return root, generate_cohort(root, **SMALL)


def _without_root(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {**tables, "datasets": tables["datasets"].drop(columns="root")}


def test_tables_have_exactly_the_schema_columns_and_keys(small):
    _, cohort = small
    assert set(cohort.tables) == set(TABLES)
    for name, frame in cohort.tables.items():
        assert tuple(frame.columns) == TABLE_COLUMNS[name], name
        assert not frame.duplicated(list(PRIMARY_KEYS[name])).any(), name


def test_ids_follow_the_store_conventions(small):
    _, c = small
    t = c.tables
    exams, images, breasts = t["exams"], t["images"], t["breasts"]
    assert (exams["exam_id"] == "syn/" + exams["exam_key"]).all()
    assert exams["patient"].str.fullmatch(r"synthetic-P\d{5}").all()
    assert exams["exam_key"].str.fullmatch(r"E\d{5}").all()
    expected = {f"{e}/{v}" for e in exams["exam_id"] for v in ("L-CC", "R-CC", "L-MLO", "R-MLO")}
    assert set(images["image_id"]) == expected and len(images) == 4 * len(exams)
    view_of_id = images["image_id"].str.rsplit("/", n=1).str[1]
    assert (view_of_id == images["laterality"] + "-" + images["view"]).all()
    assert (images["image_id"] == "syn/" + images["image_key"]).all()
    assert (images["path"] == images["image_key"] + ".png").all()
    assert sorted(breasts.groupby("exam_id")["laterality"].apply("".join)) == ["LR"] * len(exams)
    reads = t["reads"]
    exam_reads = reads[reads["level"] == "exam"]
    assert (exam_reads["case_id"] == exam_reads["exam_id"]).all()
    assert exam_reads["laterality"].isna().all() and reads["image_id"].isna().all()
    breast_reads = reads[reads["level"] == "breast"]
    assert (breast_reads["case_id"] == breast_reads["exam_id"] + "/"
            + breast_reads["laterality"]).all()
    assert set(reads["level"]) == {"exam", "breast"}
    assert len(reads) == 3 * 3 * len(exams)      # 3 readers x (1 exam + 2 breasts)
    density = t["density"]
    assert (density["case_id"] == density["exam_id"]).all()
    assert set(density["exam_id"]) == set(exams["exam_id"])
    lesions = t["lesions"].merge(images[["image_id", "exam_id", "laterality"]],
                                 on="image_id", suffixes=("", "_img"))
    assert len(lesions) == len(t["lesions"])
    assert (lesions["exam_id"] == lesions["exam_id_img"]).all()
    assert (lesions["laterality"] == lesions["laterality_img"]).all()
    assert (lesions["lesion_id"].str.rsplit("/", n=1).str[0] == lesions["image_id"]).all()


def test_values_are_in_the_schema_vocabularies_and_labelled_synthetic(small):
    _, c = small
    t = c.tables
    assert t["datasets"].loc[0, "kind"] == "synthetic"
    assert t["readers"]["synthetic"].all()
    assert dict(zip(t["readers"]["reader"], t["readers"]["kind"])) == {
        "R1": "radiologist", "R2": "radiologist", "consensus": "consensus"}
    images = t["images"]
    assert (images["manufacturer"] == "ILCscope synthetic").all()
    assert (images["laterality_source"] == "synthetic").all()
    assert (images["photometric"] == "MONOCHROME2").all() and images["display_path"].isna().all()
    for frame in (t["breasts"], t["lesions"]):
        assert frame["histology"].isin(HISTOLOGIES).all()
        assert frame["pathology"].isin(PATHOLOGIES).all()
        assert frame["presentation"].str.split(",").explode().isin(PRESENTATIONS).all()
    breasts = t["breasts"]
    assert ((breasts["cancer"] == 1) == (breasts["pathology"] == "malignant")).all()
    assert ((breasts["cancer"] == 1) == breasts["histology"].isin(["ILC", "IDC"])).all()
    exams = t["exams"]
    assert exams["split"].isin(["train", "test"]).all()
    assert exams["age"].between(40, 74).all()
    dates = pd.to_datetime(exams["exam_date"])
    assert (dates >= "2015-01-01").all() and (dates <= "2020-12-31").all()
    density = t["density"]
    assert density["category"].isin([0, 1, 2, 3]).all() and (density["source"] == "label").all()
    assert density[["p0", "p1", "p2", "p3"]].isna().all().all()


def test_files_are_12_bit_pngs_whose_hashes_match(small):
    root, c = small
    images = c.tables["images"]
    assert c.tables["datasets"].loc[0, "root"] == str(root.resolve())
    for row in images.itertuples():
        data = (root / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        with Image.open(root / row.path) as im:
            pixels = np.array(im)
        assert pixels.dtype == np.uint16 and pixels.shape == (row.height, row.width) == (128, 80)
        assert pixels.max() <= 2 ** row.bit_depth - 1 and row.bit_depth == 12
    assert images["spacing_mm"].iloc[0] == pytest.approx(240.0 / 128)


def test_masks_align_with_lesion_rows(small):
    _, c = small
    lesions, masks = c.tables["lesions"], c.masks
    assert set(masks) == set(lesions["image_id"])
    for image_id, group in lesions.groupby("image_id"):
        mask = masks[image_id]
        assert mask.dtype == bool and mask.shape == (128, 80)
        rr, cc = np.nonzero(mask)
        near = np.zeros(rr.size, bool)
        for les in group.itertuples():
            # The centre lies in the footprint; the footprint hugs the centre.
            assert mask[int(round(les.row_px)), int(round(les.col_px))], les.lesion_id
            near |= np.hypot(rr - les.row_px, cc - les.col_px) <= 3.5 * les.radius_px + 2
        assert near.all(), image_id
    # Each focus appears in both views of its breast, with the same radius.
    focus = lesions.assign(view=lesions["image_id"].str.rsplit("-", n=1).str[1],
                           focus=lesions["lesion_id"].str.rsplit("/", n=1).str[1])
    pairs = focus.pivot_table(index=["exam_id", "laterality", "focus"], columns="view",
                              values="radius_px", aggfunc="first")
    assert not pairs.isna().any().any()
    assert np.allclose(pairs["CC"], pairs["MLO"])
    # Lesions sit only in the breast the breasts table marks as having one.
    marked = c.tables["breasts"].query("pathology != 'none'").set_index(["exam_id", "laterality"])
    assert set(pairs.index.droplevel("focus")) == set(marked.index)


def test_same_seed_gives_identical_tables_and_bytes_whatever_the_threads(small, tmp_path):
    root, first = small
    second = generate_cohort(tmp_path, **SMALL, workers=1)
    for name in TABLES:
        pd.testing.assert_frame_equal(_without_root(first.tables)[name],
                                      _without_root(second.tables)[name], obj=name)
    for path in first.tables["images"]["path"]:
        assert (root / path).read_bytes() == (tmp_path / path).read_bytes()
    assert first.masks.keys() == second.masks.keys()
    assert all(np.array_equal(first.masks[k], second.masks[k]) for k in first.masks)
    other = generate_cohort(None, **{**SMALL, "seed": 8}, metadata_only=True)
    assert not other.tables["density"]["score"].equals(first.tables["density"]["score"])


def test_metadata_only_has_the_same_tables_without_pixels(small):
    _, full = small
    meta = generate_cohort(None, **SMALL, metadata_only=True)
    assert meta.masks == {}
    assert meta.tables["images"][["path", "sha256"]].isna().all().all()
    assert meta.tables["datasets"]["root"].isna().all()
    for name in TABLES:
        a, b = _without_root(full.tables)[name], _without_root(meta.tables)[name]
        if name == "images":
            a, b = a.drop(columns=["path", "sha256"]), b.drop(columns=["path", "sha256"])
        pd.testing.assert_frame_equal(a, b, obj=name)


def test_default_size_cohort_is_balanced_and_stratified():
    t = generate_cohort(None, metadata_only=True).tables
    assert len(t["exams"]) == 120 and len(t["images"]) == 480
    breasts = t["breasts"].merge(t["exams"][["exam_id", "split"]], on="exam_id")
    cancers = breasts[breasts["cancer"] == 1]
    assert cancers["exam_id"].is_unique and len(cancers) == 24               # 20 %
    assert cancers["histology"].value_counts().to_dict() == {"ILC": 12, "IDC": 12}
    assert (t["exams"]["split"] == "test").mean() == pytest.approx(0.4, abs=0.03)
    test_cancers = cancers[cancers["split"] == "test"]["histology"].value_counts()
    assert test_cancers.get("ILC", 0) >= 3 and test_cancers.get("IDC", 0) >= 3
    assert (breasts["pathology"] == "benign").sum() == 6
    density = t["density"].set_index("exam_id")["category"]
    assert density.value_counts().sort_index().tolist() == [12, 48, 48, 12]   # 10/40/40/10 %
    for histology in ("ILC", "IDC"):     # density-stratified analyses have cases in each stratum
        ids = cancers.loc[cancers["histology"] == histology, "exam_id"]
        assert set(density[ids]) == {0, 1, 2, 3}, histology
    percent = t["density"]["score"]
    lows, highs = np.array([0, 12, 30, 55]), np.array([12, 30, 55, 85])
    cats = t["density"]["category"].to_numpy()
    assert ((percent >= lows[cats]) & (percent <= highs[cats])).all()
    ilc = t["lesions"][t["lesions"]["histology"] == "ILC"]["presentation"]
    assert set(ilc) <= {"architectural distortion", "asymmetry", "ill-defined"}
    idc = t["lesions"][t["lesions"]["histology"] == "IDC"]["presentation"]
    assert set(idc) <= {"mass", "spiculated mass"}


def test_readers_meet_the_literature_targets_at_100k_exams():
    start = time.perf_counter()
    t = generate_cohort(None, n_exams=100_000, seed=0, metadata_only=True).tables
    elapsed = time.perf_counter() - start
    assert elapsed < 20.0, f"metadata-only 100k exams took {elapsed:.1f} s"
    assert len(t["images"]) == 400_000 and len(t["reads"]) == 900_000
    breasts = t["breasts"]
    truth = breasts.groupby("exam_id").agg(cancer=("cancer", "max"))
    histology = breasts[breasts["cancer"] == 1].set_index("exam_id")["histology"]
    truth = truth.join(histology).join(t["density"].set_index("exam_id")["category"])
    reads = t["reads"]
    exam = reads[reads["level"] == "exam"].set_index(["reader", "exam_id"])
    consensus = truth.join(exam.loc["consensus"]["recall"])
    cancers, healthy = consensus[consensus["cancer"] == 1], consensus[consensus["cancer"] == 0]
    sensitivity = cancers.groupby("category")["recall"].mean()
    specificity = 1.0 - healthy["recall"].mean()
    by_histology = cancers.groupby("histology")["recall"].mean()
    print(f"\n100k metadata-only build: {elapsed:.2f} s; consensus sensitivity by density "
          f"{sensitivity.round(3).to_dict()}, specificity {specificity:.4f}, "
          f"by histology {by_histology.round(3).to_dict()}")
    for category, target in LITERATURE_SENSITIVITY.items():
        assert sensitivity[category] == pytest.approx(target, abs=0.03), category
    assert specificity == pytest.approx(LITERATURE_SPECIFICITY, abs=0.005)
    assert by_histology["ILC"] < by_histology["IDC"] - 0.08
    # Each reader's exam read is the max score / any recall of its two breast reads,
    # and a radiologist recalls exactly when the score is above 50.
    breast = reads[reads["level"] == "breast"]
    rolled = breast.groupby(["reader", "exam_id"]).agg(score=("score", "max"),
                                                       recall=("recall", "any"))
    joined = exam[["score", "recall"]].join(rolled.add_suffix("_breasts"))
    assert (joined["recall"] == joined["recall_breasts"]).all()
    assert np.allclose(joined["score"], joined["score_breasts"])
    radiologists = reads[reads["reader"].isin(["R1", "R2"])]
    assert ((radiologists["score"] > 50) == radiologists["recall"]).all()
    # Consensus never recalls a breast that neither radiologist recalled.
    wide = breast.pivot(index="case_id", columns="reader", values="recall")
    assert not (wide["consensus"] & ~wide["R1"] & ~wide["R2"]).any()


def test_render_view_is_pure_and_oriented_by_the_display_convention():
    kwargs = dict(view="CC", density=1, shape=(256, 160), geometry=CC_GEOMETRY)
    a, mask_a = render_view(np.random.default_rng(3), laterality="L", **kwargs)
    b, _ = render_view(np.random.default_rng(3), laterality="L", **kwargs)
    assert a.dtype == np.uint16 and a.shape == (256, 160) and a.max() <= 4095
    assert np.array_equal(a, b) and not mask_a.any()
    right, _ = render_view(np.random.default_rng(3), laterality="R", **kwargs)
    middle = slice(100, 156)
    background = np.median(a[:5, :5])
    # L: chest wall (tissue) on the left edge, air on the right; R mirrored.
    assert a[middle, 0].mean() > background + 500 and a[middle, -1].mean() < background + 50
    assert right[middle, -1].mean() > background + 500 and right[middle, 0].mean() < background + 50
    mlo, _ = render_view(np.random.default_rng(4), laterality="L", view="MLO", density=0,
                         shape=(256, 160))
    breast = mlo[mlo > background + 200]
    assert mlo[:8, :8].mean() > np.median(breast)          # pectoral muscle, upper chest wall
    assert mlo[:8, -8:].mean() < background + 50           # air beside the axillary tail


def test_denser_categories_render_brighter():
    means = []
    for category in range(4):
        values = []
        for seed in range(3):
            image, _ = render_view(np.random.default_rng(seed), laterality="L", view="CC",
                                   density=category, shape=(256, 160), geometry=CC_GEOMETRY)
            values.append(image[image > 300].mean())
        means.append(np.mean(values))
    assert np.all(np.diff(means) > 0), means


def _lesion_auc(kind: str, seed: int) -> float:
    """Pixel AUC of the lesion's mask against a ring of healthy tissue around it."""
    spec = LesionSpec(kind, row=128, col=60, radius=9.0)
    image, mask = render_view(np.random.default_rng(seed), laterality="L", view="CC", density=1,
                              lesions=[spec], shape=(256, 160), geometry=CC_GEOMETRY,
                              percent_density=20.0)
    rr, cc = np.mgrid[:256, :160]
    r = np.hypot(rr - 128, cc - 60)
    ring = (r > 3.5 * 9) & (r < 5 * 9) & ~mask
    y = np.r_[np.ones(mask.sum()), np.zeros(ring.sum())]
    return roc_auc_score(y, np.r_[image[mask], image[ring]])


def test_idc_masses_are_more_conspicuous_than_ilc_lesions():
    idc = [_lesion_auc(k, s) for k in ("mass", "spiculated mass") for s in range(4)]
    ilc = [_lesion_auc(k, s) for k in ("architectural distortion", "asymmetry", "ill-defined")
           for s in range(4)]
    assert np.mean(idc) > 0.85
    assert np.mean(idc) > np.mean(ilc) + 0.1, (np.mean(idc), np.mean(ilc))


@pytest.mark.parametrize("kwargs, match", [
    (dict(laterality="X"), "laterality"),
    (dict(view="ML"), "view"),
    (dict(density=4), "density"),
    (dict(shape=(16, 16)), "shape"),
    (dict(lesions=[LesionSpec("cyst", 10, 10, 3)]), "lesion kind"),
])
def test_render_view_rejects_bad_input(kwargs, match):
    args = dict(laterality="L", view="CC", density=1, shape=(64, 40)) | kwargs
    with pytest.raises(InputError, match=match):
        render_view(np.random.default_rng(0), **args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_exams=0), "n_exams"),
    (dict(seed=-1), "seed"),
    (dict(dataset="a/b"), "dataset"),
    (dict(image_shape=(512,)), "image_shape"),
    (dict(cancer_fraction=1.5), "cancer_fraction"),
    (dict(workers=0), "workers"),
    (dict(metadata_only=False), "root is None"),
])
def test_generate_cohort_rejects_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        generate_cohort(None, **({"metadata_only": True} | kwargs))


@pytest.mark.slow
def test_default_build_timing(tmp_path):
    start = time.perf_counter()
    cohort = generate_cohort(tmp_path)
    elapsed = time.perf_counter() - start
    print(f"\ndefault demo build (120 exams, 480 images of 512 x 320): {elapsed:.1f} s")
    assert len(cohort.tables["images"]) == 480
    assert len(cohort.masks) == cohort.tables["lesions"]["image_id"].nunique()
    assert len(list(tmp_path.rglob("*.png"))) == 480
