"""Issue 29 (items 3 and 4): each Overview finding's link opens a view that shows its numbers
for its model, every page opens on the Overview's headline model unless the URL names one, and
the tables the pages show label their columns for readers, not with core's names."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from core.reports.findings import findings, headline_model, link
from core.store import open_store

REPO = Path(__file__).resolve().parents[1]
PAGE_FILES = {"filters": "pages/filters.py", "benchmark": "pages/benchmark.py",
              "finetune": "pages/finetune.py", "density": "pages/density.py",
              "saliency": "pages/saliency.py", "complement": "pages/complement.py"}
# the control that names a page's model, per page
MODEL_CONTROLS = {"density": ("selectbox", ("density_head_model", "density_model")),
                  "saliency": ("selectbox", ("saliency_model",)),
                  "complement": ("selectbox", ("complement_model",))}


def _open(page: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    for key, values in (query or {}).items():
        at.query_params[key] = values
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _open_link(finding) -> AppTest:
    """The app at the finding's link (multiselects keep a list, other controls one value)."""
    url = urlsplit(link(finding))
    query = {k: v if len(v) > 1 or k.endswith("models") or k.endswith("test_sets") else v[0]
             for k, v in parse_qs(url.query).items()}
    return _open(PAGE_FILES[url.path], query)


@pytest.fixture(scope="module")
def store(demo_store_path):
    return open_store(demo_store_path, read_only=True)


def _by_question(store, model=None) -> dict:
    return {f.question: f for f in findings(store, model=model)}


def test_models_link_shows_the_quoted_aucs_and_p(demo_env, store):
    f = _by_question(store)["models"]
    at = _open_link(f)
    model = f.params["bench_models"][0]
    shown = next(d.value for d in at.dataframe if "test_set_a" in d.value.columns)
    row = shown.set_index("model").loc[model]
    assert (f"{model} reaches AUC {row['auc_a']:.2f}" in f.sentence
            and f"against {row['auc_b']:.2f} on test-IDC" in f.sentence)
    assert f"unpaired DeLong p = {row['p']}" in f.sentence     # the page's "0.044" or "< 0.001"
    assert "image level as the study reports it" in f.sentence


def test_saliency_link_opens_the_tab_with_its_numbers(demo_env, store):
    f = _by_question(store)["saliency"]
    assert f.params.get("saliency_view") == "Test set"
    at = _open_link(f)
    assert at.session_state["saliency_view"] == "Test set"


def _shown_model(at: AppTest, page: str, finding) -> list[str]:
    if page == "benchmark":
        return list(at.multiselect(key="bench_models").value)
    _, keys = MODEL_CONTROLS[page]
    return [at.selectbox(key=k).value for k in keys]


@pytest.mark.parametrize("pick", ["headline", "gmic-demo"])
def test_every_finding_opens_on_its_model(demo_env, store, pick):
    model = headline_model(store) if pick == "headline" else pick
    for f in _by_question(store, model=None if pick == "headline" else model).values():
        page = urlsplit(link(f)).path
        if page not in ("benchmark", *MODEL_CONTROLS):
            continue                  # filters and fallbacks name no model
        at = _open_link(f)
        if page == "saliency" and model not in at.selectbox(key="saliency_model").options:
            continue                  # a model without maps (classical): the sentence says so
        shown = _shown_model(at, page, f)
        assert model in shown, (f.question, shown)
        if page != "benchmark":
            assert set(shown) == {model}, (f.question, shown)


def test_pages_open_on_the_headline_model(demo_env, store):
    model = headline_model(store)
    assert _open("pages/benchmark.py").multiselect(key="bench_models").value[0] == model
    for page, (_, keys) in MODEL_CONTROLS.items():
        at = _open(f"pages/{page}.py")
        if page == "saliency" and model not in at.selectbox(key="saliency_model").options:
            continue                  # the page lists GMIC models only (those with maps)
        assert {at.selectbox(key=k).value for k in keys} == {model}, page


def _labels(at: AppTest) -> list[tuple[str, str]]:
    """(column, label) of every column each shown table displays."""
    out = []
    for frame in at.dataframe:
        if "epochs_done" in frame.value.columns:
            continue                  # the run panel (ui/training.py): another change's
        config = json.loads(frame.proto.columns or "{}")
        order = list(frame.proto.column_order) or [str(c) for c in frame.value.columns]
        for column in order:
            entry = config.get(column) or config.get(f"col:{column}") or {}
            if entry.get("hidden"):
                continue
            out.append((column, entry.get("label") or column))
    return out


@pytest.mark.parametrize("page", ["pages/overview.py", "pages/benchmark.py",
                                  "pages/reader_study.py", "pages/finetune.py"])
def test_tables_show_readable_column_names(demo_env, page):
    at = _open(page, {"bench_models": ["gmic-demo", "classical-dog"],
                      "bench_test_sets": ["test-ILC", "test-IDC"]})
    labels = _labels(at)
    assert labels or page == "pages/finetune.py"
    assert not [(c, lab) for c, lab in labels if re.search(r"[a-z0-9]_[a-zA-Z0-9]", lab)]
    for frame in at.dataframe:
        if "epochs_done" in frame.value.columns:
            continue
        cells = frame.value.astype(object)
        assert not cells.isna().any().any(), list(cells.columns)   # missing: "—" or "NA"
