"""core.density.calibration, core.jobs.density, core.reports.density, models.inference.density, the
density CLI and the Density page.

Independent references: core.density.percent_density / estimate_exam (the fast threshold path),
scikit-learn's roc_auc_score and cohen_kappa_score, brute-force counts over the store's reads,
and the NYU fixture's reference probabilities (shared/data/nyu_density/expected.json).
Writes go to copies of the session demo store, never to the store itself.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image
from scipy.stats import norm
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from streamlit.testing.v1 import AppTest

from tests.conftest import copy_store, wait_for_job
from core.jobs.detached import latest_job
from core.density import estimator as dens
from core.density import calibration as dcal
from core.jobs import density as djob
from core.reports import density as dr
from core.stats.kappa import weighted_kappa
from cli import main
from core.errors import InputError
from core.io.images import read_pixels
from core.stats import delong_auc
from core.store import open_store
from tests.conftest import REPO


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in argv and code == 0 else None), err


@pytest.fixture(scope="module")
def estimated(demo_store_path, tmp_path_factory, nyu_dir):
    """A copy of the demo store after: classical with defaults, then (CLI) calibrated on
    'label', then nyu-histogram; with what each run printed or returned."""
    db = copy_store(demo_store_path, tmp_path_factory.mktemp("dens"))
    store = open_store(db)
    default = djob.estimate_classical(store, test_set="test-all")
    default_rows = store.density(source="classical", level="image", test_set="test-all")
    code = main(["density", "estimate", "--db", str(db), "--test-set", "test-all", "--method",
                 "classical", "--calibrate-on", "label", "--json"])
    assert code == 0
    from models.inference.density import estimate_nyu

    nyu = estimate_nyu(store, test_set="test-all", weights=nyu_dir / "histogram_model.p")
    return {"db": db, "store": store, "default": default, "default_rows": default_rows, "nyu": nyu}


@pytest.fixture(scope="module")
def cli_doc(estimated):
    """The calibrated run's JSON, rerun through the CLI (re-running must replace, not add)."""
    import contextlib
    import io

    before = estimated["store"].counts()["density"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["density", "estimate", "--db", str(estimated["db"]), "--test-set", "test-all",
                     "--method", "classical", "--calibrate-on", "label", "--json"])
    assert code == 0
    return json.loads(out.getvalue()), before, estimated["store"].counts()["density"]


# ---------------------------------------------------------------------------- the fast path

def test_threshold_fast_path_equals_core_density(demo_store_path):
    store = open_store(demo_store_path, read_only=True)
    images = store.images(test_set="test-all").head(8)
    for row in images.itertuples():
        pixels = read_pixels(row.abs_path)
        values, top = dcal._breast_values(pixels, row.view, dens.DEFAULT_MAX_SIDE)
        for t in (0.3, 0.46, 0.5, 0.7):
            assert dcal.percent_dense(values, top, t) == dens.percent_density(pixels, view=row.view, threshold=t)


def test_exam_rows_equal_estimate_exam(estimated, demo_store_path):
    store = estimated["store"]
    cal = djob.last_run(store, "classical")["calibration"]
    exams = store.density(source="classical", level="exam", test_set="test-all").set_index("exam_id")
    images = store.images(test_set="test-all")
    for exam_id, group in list(images.groupby("exam_id"))[:3]:
        views = {f"{r.laterality}-{r.view}": read_pixels(r.abs_path) for r in group.itertuples()}
        ref = dens.estimate_exam(views, threshold=cal["threshold"], cut_points=cal["cut_points"],
                                 soft_width=cal["soft_width"])
        row = exams.loc[exam_id]
        assert row["score"] == pytest.approx(ref.score, abs=1e-12)
        assert row["category"] == ref.category
        assert [row[f"p{k}"] for k in range(4)] == pytest.approx(list(ref.probabilities), abs=1e-12)


# ---------------------------------------------------------------------------- store round trip

def test_estimates_land_with_levels_sources_and_probabilities(estimated):
    store = estimated["store"]
    images = store.images(test_set="test-all")
    assert {"label", "classical", "nyu-histogram"} <= set(store.density_sources())
    img = store.density(source="classical", level="image", test_set="test-all")
    exam = store.density(source="classical", level="exam", test_set="test-all")
    assert sorted(img["case_id"]) == sorted(images["image_id"]) == sorted(img["image_id"])
    assert sorted(exam["case_id"]) == sorted(images["exam_id"].unique())
    assert exam["image_id"].isna().all() and exam["laterality"].isna().all()
    assert (img.set_index("image_id")["laterality"] == images.set_index("image_id")["laterality"]).all()
    for frame in (img, exam):
        p = frame[["p0", "p1", "p2", "p3"]].to_numpy()
        assert np.allclose(p.sum(axis=1), 1) and frame["category"].between(0, 3).all()
    means = img.groupby("exam_id")["score"].mean()
    assert np.allclose(exam.set_index("exam_id")["score"].loc[means.index], means)
    nyu = store.density(source="nyu-histogram", level="exam", test_set="test-all")
    assert len(nyu) == len(exam) and store.density(source="nyu-histogram", level="image").empty
    assert (nyu["category"] == nyu[["p0", "p1", "p2", "p3"]].to_numpy().argmax(axis=1)).all()
    assert np.allclose(nyu["score"], nyu[["p0", "p1", "p2", "p3"]].to_numpy() @ np.arange(4))
    assert estimated["nyu"].skipped == {} and estimated["nyu"].n_exams == len(exam)


def test_rerun_replaces_never_duplicates(estimated, cli_doc):
    doc, before, after = cli_doc
    assert before == after
    store = estimated["store"]
    rows = store.density(source="classical", level="image", test_set="test-all")
    assert len(rows) == len(estimated["default_rows"])           # replaced the defaults' rows
    assert not np.allclose(rows["score"], estimated["default_rows"]["score"])
    assert rows["case_id"].is_unique


def test_calibration_is_recorded_and_changes_the_demo_categories(estimated, cli_doc):
    doc, _, _ = cli_doc
    default = estimated["default"]
    assert default.info["calibration"]["kind"] == "mias-default"
    assert default.counts["exams"].iloc[0] == default.n_exams          # ~0 % dense: all fatty
    assert default.notes and "--calibrate-on label" in default.notes[0]
    cal = doc["run"]["calibration"]
    assert cal["kind"] == "calibrated" and cal["calibrated_on"] == "label"
    assert 0.2 <= cal["threshold"] < 0.7 and cal["kappa"] > 0.6
    assert doc["counts"][0]["category"] == 0 and sum(c["exams"] for c in doc["counts"]) == doc["n_exams"]
    assert (doc["counts"][1]["exams"] > 0) and (doc["counts"][2]["exams"] > 0)
    assert djob.last_run(estimated["store"], "classical")["calibration"]["threshold"] == cal["threshold"]


def test_cli_agreement_equals_sklearn(estimated, cli_doc):
    doc, _, _ = cli_doc
    store = estimated["store"]
    lab = store.density(source="label", test_set="test-all").set_index("exam_id")["category"]
    est = store.density(source="classical", test_set="test-all").set_index("exam_id")["category"]
    y, e = lab.to_numpy(int), est.loc[lab.index].to_numpy(int)
    a = doc["agreement"]
    assert a["n"] == len(lab) and a["classes"] == 4
    assert np.array_equal(np.array(a["confusion"]), pd.crosstab(y, e).reindex(
        index=range(4), columns=range(4), fill_value=0).to_numpy())
    assert a["kappa_linear"] == pytest.approx(cohen_kappa_score(y, e, weights="linear", labels=range(4)))
    assert a["kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(y, e, weights="quadratic", labels=range(4)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=2, max_size=80),
       st.sampled_from(["linear", "quadratic"]))
def test_weighted_kappa_equals_sklearn(pairs, weights):
    a, b = np.array(pairs).T
    cm = np.zeros((4, 4))
    np.add.at(cm, (a, b), 1)
    ours = weighted_kappa(cm, weights)
    ref = cohen_kappa_score(a, b, weights=weights, labels=range(4))
    assert (math.isnan(ours) and math.isnan(ref)) or ours == pytest.approx(ref, abs=1e-12)


def test_calibration_errors_are_one_line(estimated):
    store = estimated["store"]
    with pytest.raises(InputError, match="'nope' is not in the store; present:"):
        dcal.calibrate_classical(store, source="nope", test_set="test-all")
    with pytest.raises(InputError, match="fractions of full scale"):
        dcal.calibrate_classical(store, source="label", test_set="test-all", thresholds=(1.5,))


# ---------------------------------------------------------------------------- reports

@pytest.mark.parametrize("level", ["exam", "image"])
def test_stratified_auc_equals_sklearn_on_hand_filtered_subsets(demo_store_path, level):
    store = open_store(demo_store_path, read_only=True)
    scores = dr.stratified_scores(store, models=["classical-dog"], test_sets=["demo"], level=level)
    table = dr.stratified_auc(scores).set_index("stratum")
    cats = {"all": None, "non-dense (0-1)": {0, 1}, "dense (2-3)": {2, 3},
            "without extremely dense (0-2)": {0, 1, 2}}
    for stratum, keep in cats.items():
        sub = scores if keep is None else scores[scores["density"].fillna(-1).isin(keep).to_numpy()]
        y, s = sub["label"].to_numpy(int), sub["score"].to_numpy(float)
        row = table.loc[stratum]
        assert (row["n_pos"], row["n_neg"]) == (y.sum(), (1 - y).sum())
        if 0 < y.sum() < len(y):
            assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            ref = delong_auc(y, s)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((ref.ci_low, ref.ci_high), nan_ok=True)
    test = dr.dense_vs_nondense(scores).iloc[0]
    d = scores[scores["density"].fillna(-1).isin([2, 3]).to_numpy()]
    n = scores[scores["density"].fillna(-1).isin([0, 1]).to_numpy()]
    rd = delong_auc(d["label"].to_numpy(int), d["score"])
    rn = delong_auc(n["label"].to_numpy(int), n["score"])
    assert test["auc_dense"] == pytest.approx(roc_auc_score(d["label"].astype(int), d["score"]))
    if np.isfinite(rd.var + rn.var):
        z = (rd.auc - rn.auc) / math.sqrt(rd.var + rn.var)
        assert test["p"] == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)


def test_reader_by_density_against_a_hand_count(demo_store_path):
    store = open_store(demo_store_path, read_only=True)
    table = dr.reader_by_density(store, model="classical-dog", test_set="demo", readers=["consensus"])
    cases = store.cases(test_set="demo", level="exam").set_index("case_id")
    reads = store.reads(level="exam", readers=["consensus"], test_set="demo").set_index("case_id")
    images = store.scores(models=["classical-dog"], level="image", test_set="demo")
    score = images.groupby("exam_id")["score"].max()
    y = cases["label"].astype(int)
    r = reads["recall"].loc[y.index].astype(bool)
    s = score.loc[y.index]
    target = ((~r) & (y == 0)).sum() / (y == 0).sum()
    # brute force: the lowest observed score (or +inf) whose specificity reaches the reader's
    t = min([c for c in [*s.unique(), np.inf] if ((s < c) & (y == 0)).sum() / (y == 0).sum() >= target])
    for cat in ["all", 0, 1, 2, 3]:
        dens_cat = cases["density"].loc[y.index].fillna(-1)
        m = np.ones(len(y), bool) if cat == "all" else (dens_cat == cat).to_numpy(bool)
        for role, d in (("reader", r.to_numpy()), ("model", (s >= t).to_numpy())):
            row = table[(table["role"] == role) & (table["density"] == str(cat))].iloc[0]
            yy, dd = y.to_numpy()[m] == 1, d[m]
            assert (row["cancers"], row["detected"]) == (yy.sum(), (dd & yy).sum())
            assert (row["healthy"], row["cleared"]) == ((~yy).sum(), (~dd & ~yy).sum())
            if yy.sum():
                assert row["sensitivity"] == pytest.approx((dd & yy).sum() / yy.sum())
                assert row["sensitivity_ci_low"] <= row["sensitivity"] <= row["sensitivity_ci_high"]
    assert (table.loc[table["role"] == "model", "threshold"] == t).all()


def test_category_counts_by_test_set(estimated):
    store = estimated["store"]
    counts = dr.category_counts(store, source="classical", by="test_set", test_sets=["test-all"])
    exam = store.density(source="classical", level="exam", test_set="test-all")
    assert counts["exams"].tolist() == [int((exam["category"] == k).sum()) for k in range(4)]
    assert counts["share"].sum() == pytest.approx(1)


# ---------------------------------------------------------------------------- NYU CLI

def test_cli_nyu_histogram_reproduces_the_fixture(nyu_dir, capsys):
    expected = json.loads((nyu_dir / "expected.json").read_text())
    want = expected["histogram"]["probabilities_list"]["reference"]
    code, doc, err = run_cli(capsys, "density", "nyu-histogram", "--weights",
                             str(nyu_dir / "histogram_model.p"), "--images", str(nyu_dir), "--json")
    assert code == 0, err
    assert doc["recipe"] == "reference"           # the recipe that reproduces the published numbers
    assert doc["p"] == pytest.approx(want, abs=1e-4)
    assert doc["category"] == 1 and sum(doc["p"]) == pytest.approx(1)


def test_cli_nyu_histogram_missing_view_and_weights(nyu_dir, tmp_path, capsys):
    for view in ("L-CC", "R-CC", "L-MLO"):        # our own small images: R-MLO is missing
        pixels = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(64, 48)
        Image.fromarray(pixels).save(tmp_path / f"{view}.png")
    code, _, err = run_cli(capsys, "density", "nyu-histogram", "--weights",
                           str(nyu_dir / "histogram_model.p"), "--images", str(tmp_path), "--json")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and "R-MLO" in err
    code, _, err = run_cli(capsys, "density", "nyu-histogram", "--weights", str(tmp_path / "none.p"),
                           "--images", str(nyu_dir), "--json")
    assert code == 2 and err.count("\n") == 1 and "none.p do not exist" in err


def test_nyu_store_exams_need_all_four_views():
    from models.inference.density import _exam_views

    rows = [(f"d/E{e}", f"d/E{e}/{lat}-{view}", lat, view, f"/x/E{e}/{lat}-{view}.png")
            for e in (1, 2, 3) for lat in "LR" for view in ("CC", "MLO")
            if not (e == 2 and (lat, view) == ("R", "MLO"))]
    rows.append(("d/E3", "d/E3/L-CC-2", "L", "CC", "/x/E3/L-CC-2.png"))      # a view twice
    images = pd.DataFrame(rows, columns=["exam_id", "image_id", "laterality", "view", "abs_path"])
    exams, skipped = _exam_views(images)
    assert sorted(exams) == ["d/E1", "d/E3"] and exams["d/E3"]["L-CC"] == "/x/E3/L-CC.png"
    assert skipped == {"exams without all four views (missing R-MLO)": 1,
                       "exams with a view twice (first image_id used)": 1}


def test_cli_estimate_errors(demo_store_path, capsys):
    code, _, err = run_cli(capsys, "density", "estimate", "--db", str(demo_store_path), "--test-set",
                           "test-all", "--method", "nyu-histogram", "--json")
    assert code == 2 and "--weights" in err and err.count("\n") == 1


def test_help_texts_end_with_an_example(capsys):
    for argv in (["density", "estimate"], ["density", "nyu-histogram"], ["report", "density"]):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out = capsys.readouterr().out.rstrip()
        assert "example" in out and out.splitlines()[-1].strip().endswith("--json")


# ---------------------------------------------------------------------------- the page

def _page(env_db=None):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/density.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_opens_on_the_demo_store_and_matches_the_cli(demo_env, capsys):
    at = _page()
    code, doc, err = run_cli(capsys, "report", "density", "--db", str(demo_env), "--test-set",
                             "test-all", "--models", "classical-dog", "--json")
    assert code == 0, err
    test = doc["dense_vs_nondense"][0]
    metrics = {m.label: m.value for m in at.metric}
    for label, key in (("Non-dense (0-1)", "auc_nondense"), ("Dense (2-3)", "auc_dense")):
        assert metrics[label] == (f"{test[key]:.3f}" if test[key] is not None else "n/a")
    assert not at.button(key="density_estimate").disabled


def test_page_estimate_now_writes_and_other_sources_render(demo_store_path, tmp_path, monkeypatch):
    db = copy_store(demo_store_path, tmp_path)
    monkeypatch.setenv("ILCSCOPE_DB", str(db))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = _page()
    at.button(key="density_estimate").click().run()      # a worker process, not this script
    assert not at.exception, [e.value for e in at.exception]
    run = latest_job(open_store(db), "density", source="classical", test_set="test-all")
    assert run is not None and run.status in ("queued", "running", "done")
    assert wait_for_job(db, run.run_id).status == "done"
    at = _page()                                           # another session sees the result
    assert any(run.run_id in c.value and "done" in c.value for c in at.caption)
    assert "classical" in open_store(db, read_only=True).density_sources()
    at.selectbox(key="density_source").select("classical").run()
    at.segmented_control(key="density_level").set_value("image").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("calibrated on 'label'" in c.value for c in at.caption)


def test_page_in_demo_mode_disables_estimation(demo_env, monkeypatch):
    monkeypatch.setenv("ILCSCOPE_MODE", "demo")
    at = _page()
    assert at.button(key="density_estimate").disabled
    assert any("disabled in the hosted demo" in i.value for i in at.info)
