"""Overview, Benchmark and the sidebar (issue 29): every control opens from the URL, a
finding's link reproduces its view, the sidebar lists an import at once, demo mode says
synthetic only of synthetic data, and a store of images alone says what it lacks."""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from core.importers.mias import import_mias
from core.reports.benchmark import default_test_sets
from core.reports.findings import findings, link
from core.store import open_store
from tests.conftest import copy_store
from ui.text import md_escape

REPO = Path(__file__).resolve().parents[1]


def _app(query: dict | None = None, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _widget(at: AppTest, key: str):
    return next(w for w in at.main + at.sidebar if getattr(w, "key", None) == key)


@pytest.fixture(scope="module")
def four_mias(mias_dir, tmp_path_factory) -> Path:
    """mdb001-004 and an Info.txt limited to them (images and outlines; no reads, models or
    density)."""
    folder = tmp_path_factory.mktemp("mini")
    lines = [ln for ln in (mias_dir / "Info.txt").read_text().splitlines()
             if not ln.startswith("mdb") or ln[:6] in ("mdb001", "mdb002", "mdb003", "mdb004")]
    (folder / "Info.txt").write_text("\n".join(lines) + "\n")
    for n in range(1, 5):
        shutil.copy(mias_dir / f"mdb{n:03d}.png", folder)
    return folder


@pytest.fixture(scope="module")
def mias_store(four_mias, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mias") / "store.duckdb"
    import_mias(open_store(path), four_mias)
    return path


def test_overview_opens_from_the_url(demo_env):
    at = _app({"overview_scope": "Active test set", "overview_model": "gmic-demo",
               "test_set": "test-ILC"})
    assert at.segmented_control(key="overview_scope").value == "Active test set"
    assert at.selectbox(key="overview_model").value == "gmic-demo"
    assert at.sidebar.selectbox(key="test_set").value == "test-ILC"
    store = open_store(demo_env, read_only=True)
    assert {m.label: m.value for m in at.metric}["Exams"] == \
        f"{len(store.exams(test_set='test-ILC')):,}"
    shown = " ".join(m.value for m in at.markdown)
    for f in findings(store, model="gmic-demo"):
        assert f"{md_escape(f.sentence)} [Open :material/open_in_new:]({link(f)})" in shown
    assert any("highest image-level AUC on test-all" in c.value for c in at.caption)


def test_benchmark_opens_from_the_url(demo_env):
    query = {"test_set": "test-all", "bench_models": ["gmic-demo", "classical-dog"],
             "bench_level": "breast", "bench_how": "mean", "bench_ci": "Bootstrap",
             "bench_test_sets": ["test-IDC"], "bench_specificities": ["95%"],
             "bench_holm": "false", "bench_hist_y": "Count"}   # options as the widgets label them
    at = _app(query, "pages/benchmark.py")
    assert at.multiselect(key="bench_models").value == ["gmic-demo", "classical-dog"]
    assert at.segmented_control(key="bench_level").value == "breast"
    assert at.segmented_control(key="bench_how").value == "mean"
    assert at.segmented_control(key="bench_ci").value == "bootstrap"
    assert at.multiselect(key="bench_test_sets").value == ["test-IDC"]
    assert at.multiselect(key="bench_specificities").value == [0.95]
    assert at.toggle(key="bench_holm").value is False
    assert at.segmented_control(key="bench_hist_y").value == "count"
    auc = next(d.value for d in at.dataframe if {"n_excluded", "auc"} <= set(d.value.columns))
    assert set(auc["test_set"]) == {"test-IDC"}
    assert set(auc["model"]) == {"gmic-demo", "classical-dog"}
    ops = next(d.value for d in at.dataframe if "target_specificity" in d.value.columns)
    assert set(ops["target_specificity"]) == {0.95}
    assert any("Stratified bootstrap" in c.value for c in at.caption)


def test_models_finding_link_opens_its_test_sets(demo_env):
    f = {g.question: g for g in findings(open_store(demo_env, read_only=True))}["models"]
    query = {k: v if len(v) > 1 or k.startswith("bench_") and k != "bench_level" else v[0]
             for k, v in parse_qs(urlsplit(link(f)).query).items()}
    at = _app(query, "pages/benchmark.py")
    auc = next(d.value for d in at.dataframe if {"n_excluded", "auc"} <= set(d.value.columns))
    model = f.params["bench_models"][0]
    row = auc[(auc["model"] == model) & (auc["test_set"] == "test-IDC")]
    assert len(row) == 1 and f"{row['auc'].iloc[0]:.2f} on test-IDC" in f.sentence
    ilc = auc[(auc["model"] == model) & (auc["test_set"] == "test-ILC")]
    assert ilc["auc"].iloc[0] == pytest.approx(f.value, abs=1e-12)


def test_benchmark_test_sets_follow_the_sidebar(demo_env):
    at = _app({"test_set": "test-all"}, "pages/benchmark.py")
    known = open_store(demo_env, read_only=True).testset_names()
    assert at.multiselect(key="bench_test_sets").value == default_test_sets("test-all", known)
    at.session_state["test_set"] = "test-IDC"    # the sidebar's picker (AppTest drops the
    at.run()                                     # sidebar's tree after switch_page)
    assert not at.exception
    assert at.multiselect(key="bench_test_sets").value == default_test_sets("test-IDC", known)


def _writes_a_test_set_after_the_sidebar(refresh: bool):
    """An app whose page writes a test set on its first run, after the sidebar is drawn."""
    import streamlit as st

    import ui
    from ui.sidebar import refresh_sidebar

    shown = ui.sidebar()
    if not st.session_state.get("written"):
        st.session_state["written"] = True
        ui.store().create_testset("made-here", "split=test")
    if refresh:
        refresh_sidebar(shown)


@pytest.mark.parametrize("refresh", [True, False])
def test_sidebar_lists_what_the_page_just_wrote(refresh, demo_store_path, tmp_path,
                                                monkeypatch):
    monkeypatch.setenv("ILCSCOPE_DB", str(copy_store(demo_store_path, tmp_path)))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = AppTest.from_function(_writes_a_test_set_after_the_sidebar, kwargs={"refresh": refresh},
                               default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # without the refresh the list is stale until the next interaction: the bug of issue 29
    assert ("made-here" in at.sidebar.selectbox(key="test_set").options) is refresh


def test_import_page_keeps_its_result_after_the_refresh(four_mias, tmp_path, monkeypatch):
    db = tmp_path / "fresh.duckdb"
    open_store(db)
    monkeypatch.setenv("ILCSCOPE_DB", str(db))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = _app(page="pages/import_data.py")
    at.selectbox(key="import_kind").set_value("mias").run()
    at.text_input(key="import_path").set_value(str(four_mias)).run()
    next(b for b in at.button if b.label == "Import from the server path").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.subheader[0].value.startswith("Last import: mias")   # survives the rerun
    assert {m.label: m.value for m in at.metric}["Imported"] == "5"  # 4 images + Info.txt


def test_store_of_images_alone_says_what_it_lacks(mias_store, monkeypatch):
    monkeypatch.setenv("ILCSCOPE_DB", str(mias_store))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = _app()
    lacks = " ".join(i.value for i in at.info)
    for what in ("No model predictions", "No reader reads"):
        assert what in lacks
    assert "No lesion masks" not in lacks          # mini-MIAS brings masks and density
    assert "No density" not in lacks
    assert any("needs the test sets" in m.value for m in at.markdown)
    assert not at.get("selectbox") or "overview_model" not in [s.key for s in at.selectbox]
    at.switch_page("pages/benchmark.py")
    at.run()
    assert not at.exception
    assert any("No model predictions" in i.value for i in at.info)


@pytest.mark.parametrize("synthetic", [True, False])
def test_demo_mode_says_synthetic_only_of_synthetic_data(synthetic, demo_store_path,
                                                         mias_store, tmp_path, monkeypatch):
    path = copy_store(demo_store_path if synthetic else mias_store, tmp_path)
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    monkeypatch.setenv("ILCSCOPE_MODE", "demo")
    at = _app()
    notice = " ".join(i.value for i in at.sidebar.info)
    assert "read-only" in notice and "synthetic" not in notice.lower()
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert ("Synthetic" in captions) is synthetic
