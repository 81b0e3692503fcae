"""Issue 29 on the Complement, Reader study, Density and Filters pages: each works on a store
holding mini-MIAS only (no readers, no models) and on the demo store with the dataset picker
set to mias, and says what is missing; each opens from a URL with non-default values and shows
them; the threshold slider has at most ~100 steps; the 89 % preset is explained; the
sample-size table writes NA; the pages stay thin and share no mutable cache."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.importers.mias import import_mias
from core.reports import complement as cr
from core.reports import density as dr
from core.reports import mrmc
from core.store import open_store
from tests.conftest import copy_store

REPO = Path(__file__).resolve().parents[1]
PAGES = ("complement", "reader_study", "density", "filters")


@pytest.fixture(scope="module")
def mias_only(mias_dir, tmp_path_factory) -> Path:
    """A store with mini-MIAS alone: density labels and masks, no readers, no models."""
    path = tmp_path_factory.mktemp("mias_only") / "ilcscope.duckdb"
    store = open_store(path)
    import_mias(store, mias_dir)
    store.checkpoint()
    return path


@pytest.fixture(scope="module")
def demo_with_mias(demo_store_path, mias_dir, tmp_path_factory) -> Path:
    """The small demo store (readers, models, a reader study) plus mini-MIAS."""
    path = copy_store(demo_store_path, tmp_path_factory.mktemp("demo_mias"))
    store = open_store(path)
    import_mias(store, mias_dir)
    store.checkpoint()
    return path


def _page(monkeypatch, db: Path, page: str, **query) -> AppTest:
    monkeypatch.setenv("ILCSCOPE_DB", str(db))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _said(at) -> str:
    return "\n".join(str(e.value) for kind in ("info", "caption", "error", "warning")
                     for e in getattr(at, kind))


# ------------------------------------------------------- a dataset without readers or models

def test_reader_by_density_on_a_test_set_nobody_read(demo_with_mias):
    """The KeyError 'reader': now an empty frame with every column."""
    store = open_store(demo_with_mias, read_only=True)
    frame = dr.reader_by_density(store, model="gmic-demo", test_set="mias")
    assert frame.empty and list(frame.columns) == dr.READER_COLUMNS
    # the demo's own test set still has its readers (rows: reader x {model, reader} x 5 strata)
    demo = dr.reader_by_density(store, model="gmic-demo", test_set="test-all")
    assert len(demo) == 2 * 5 * demo["reader"].nunique() > 0


def test_dense_vs_nondense_says_why_it_is_na():
    scores = pd.DataFrame({"test_set": "t", "model": "m", "label": [1, 0, 1, 0],
                           "score": np.nan, "density": [0, 1, 2, 3]})
    row = dr.dense_vs_nondense(scores).iloc[0]
    assert math.isnan(row["auc_dense"]) and "m has no scores on these 4 cases" in row["note"]
    row = dr.dense_vs_nondense(scores.assign(score=[0.9, 0.1, 0.8, 0.2],
                                             density=np.nan)).iloc[0]
    assert row["note"] == "n/a: no case has a density category in this source"


@pytest.mark.parametrize("page, missing", [
    ("complement", "No model has scores in this store"),
    ("reader_study", "No reader study in this store yet"),
    ("density", "No model has scores at exam level in this store"),
    ("filters", "No stored results for these settings"),
])
def test_pages_on_mias_alone_say_what_is_missing(mias_only, monkeypatch, page, missing):
    at = _page(monkeypatch, mias_only, page)
    assert missing in _said(at)
    if page == "density":          # the categories still show: mias has density labels
        assert "mias: 161 exams" in _said(at)
    if page == "filters":          # mias has outlines: one image can be filtered
        assert at.selectbox(key="filters_image").value.startswith("mias/")


@pytest.mark.parametrize("page, missing", [
    ("complement", "No radiologist read `mias` at exam level"),
    ("reader_study", None),        # the demo's study does not depend on the dataset picked
    ("density", "No radiologist has recall decisions at exam level in `mias`"),
    ("filters", "No stored results for these settings"),
])
def test_pages_on_the_demo_with_dataset_mias(demo_with_mias, monkeypatch, page, missing):
    at = _page(monkeypatch, demo_with_mias, page, dataset="mias")
    assert at.session_state["test_set"] == "mias"
    if missing:
        assert missing in _said(at)
    if page == "density":          # n/a with its reason, not bare
        assert [m.value for m in at.metric] == ["n/a"] * 3
        assert re.search(r"Why n/a: \S+ has no scores on these 161 cases", _said(at))


# ------------------------------------------------------------------- every control in the URL

def test_complement_opens_from_a_url(demo_env, monkeypatch):
    store = open_store(demo_env, read_only=True)
    readers = cr.reader_options(store, level="breast", test_set="test-all")
    reader = readers.loc[readers["kind"] != "consensus", "reader"].iloc[-1]
    at = _page(monkeypatch, demo_env, "complement", complement_level="breast",
               complement_reader=reader, complement_triage="0.3", complement_at="0.89",
               complement_model="gmic-demo-ilc")
    assert at.radio(key="complement_level").value == "breast"
    assert at.selectbox(key="complement_reader").value == reader
    assert at.selectbox(key="complement_model").value == "gmic-demo-ilc"
    assert at.number_input(key="complement_triage").value == pytest.approx(0.3)
    cases = cr.load_cases(store, test_set="test-all", model="gmic-demo-ilc", reader=reader,
                          level="breast")
    want = min(cr.threshold_for(cases, specificity=0.89), cr.threshold_bounds(cases)[1])
    assert at.slider(key="complement_threshold").value == want
    assert at.button(key="complement_preset_0.89").proto.type == "primary"
    # the workflows table is the CLI's at that triage threshold
    flows = cr.screening_workflows(cases, threshold=cr.threshold_for(cases, specificity=0.89),
                                   triage_threshold=0.3)
    page = next(d.value for d in at.dataframe if "workflow" in d.value.columns)
    pd.testing.assert_frame_equal(page.reset_index(drop=True), flows.reset_index(drop=True))


def test_reader_study_opens_from_a_url(demo_env, monkeypatch):
    study = "demo-reader-study"
    at = _page(monkeypatch, demo_env, "reader_study", mrmc_method="Dorfman-Berbaum-Metz",
               mrmc_analysis="Fixed cases", mrmc_effect="0.1", mrmc_power="0.9",
               **{f"mrmc_model_{study}": "none", f"mrmc_level_{study}": "exam"})
    assert at.segmented_control(key="mrmc_method").value == "dbm"
    assert at.segmented_control(key="mrmc_analysis").value == "rrfc"
    assert at.number_input(key="mrmc_effect").value == pytest.approx(0.1)
    assert at.number_input(key="mrmc_power").value == pytest.approx(0.9)
    assert at.selectbox(key=f"mrmc_model_{study}").value == "none"
    assert at.selectbox(key=f"mrmc_level_{study}").value == "exam"
    assert "Pick a model to compare" in _said(at)
    assert "fixed cases" in _said(at)                 # the sample-size caption follows


def test_density_opens_from_a_url(demo_env, monkeypatch):
    at = _page(monkeypatch, demo_env, "density", density_level="breast", density_how="mean",
               density_by="Test set", density_head_model="gmic-demo-ilc",
               density_model="gmic-demo-ilc")
    assert at.segmented_control(key="density_level").value == "breast"
    assert at.segmented_control(key="density_how").value == "mean"
    assert at.segmented_control(key="density_by").value == "test_set"
    assert at.selectbox(key="density_head_model").value == "gmic-demo-ilc"
    assert at.selectbox(key="density_model").value == "gmic-demo-ilc"
    assert any("**gmic-demo-ilc** on `test-all`, breast level" in m.value for m in at.markdown)


def test_filters_opens_from_a_url(demo_env, monkeypatch):
    at = _page(monkeypatch, demo_env, "filters", filters_histology="ILC",
               filters_layout="ILC | IDC", filters_benign="true", filters_zoom="false",
               filters_ring_in_mm="true", filters_ring_mm="6", filters_M6_amount="2",
               filters_methods=["M5 Sobel", "M6 unsharp mask"])
    assert at.segmented_control(key="filters_histology").value == "ILC"
    assert at.segmented_control(key="filters_layout").value == "facet"
    assert at.toggle(key="filters_benign").value is True
    assert at.toggle(key="filters_zoom").value is False
    assert at.toggle(key="filters_ring_in_mm").value is True
    assert at.number_input(key="filters_ring_mm").value == pytest.approx(6.0)
    assert at.number_input(key="filters_M6_amount").value == pytest.approx(2.0)
    assert at.pills(key="filters_methods").value == ["M5", "M6"]


# -------------------------------------------------------------- slider, preset, NA, thin pages

@pytest.mark.parametrize("low, high, step", [
    (0.01, 0.85, 0.01),      # the range: ~840 presses at 0.001, now 85
    (0.0, 1.0, 0.01), (0.2, 0.21, 0.0001), (0.0, 100.0, 1.0), (3.0, 4.3, 0.02)])
def test_threshold_step_is_one_two_five_with_at_most_100_positions(low, high, step):
    frame = pd.DataFrame({"score": [low, (low + high) / 2, high]})
    cases = cr.ReaderModelCases(frame, "t", "exam", "m", "r", "radiologist", "exam", "exam",
                                True, ())
    lo, hi, got = cr.threshold_bounds(cases)
    assert got == pytest.approx(step)
    assert lo <= low and hi > high and (hi - lo) / got <= cr.SLIDER_POSITIONS + 2


def test_the_89_percent_preset_is_explained(demo_env, monkeypatch):
    at = _page(monkeypatch, demo_env, "complement")
    help_ = at.button(key="complement_preset_0.89").help
    assert "Table 6.11" in help_ and "23 %" in help_ and "89 %" in help_
    assert any("89 % specificity" in c.value and "Table 6.11" in c.value for c in at.caption)
    cases = cr.load_cases(open_store(demo_env, read_only=True), test_set="test-all",
                          model=at.selectbox(key="complement_model").value,
                          reader=at.selectbox(key="complement_reader").value, level="exam")
    low, high, step = cr.threshold_bounds(cases)
    assert (high - low) / step <= cr.SLIDER_POSITIONS + 2
    assert at.slider(key="complement_threshold").step == pytest.approx(step)


def test_sample_size_table_writes_na(demo_env, monkeypatch):
    """A small difference at high power is out of reach for few readers: NA, never None."""
    at = _page(monkeypatch, demo_env, "reader_study", mrmc_effect="0.005")
    table = next(d.value for d in at.dataframe if "n_cases" in d.value.columns)
    report = mrmc.mrmc_report(open_store(demo_env, read_only=True), study="demo-reader-study",
                              modalities=("unaided", "aided-by-gmic-demo"), effect=0.005)
    want = report.sample_size["n_cases"]
    assert want.isna().any()                         # the case this test is about
    assert (table["n_cases"] == want.map(lambda v: "NA" if pd.isna(v) else str(v))).all()
    assert "None" not in table["n_cases"].tolist()


def test_pages_are_thin_and_share_no_mutable_cache():
    for page in PAGES:
        assert len((REPO / "pages" / f"{page}.py").read_text().splitlines()) <= 155, page
    for path in ("pages/filters.py", "ui/filters.py"):
        assert "@st.cache_resource" not in (REPO / path).read_text(), path
