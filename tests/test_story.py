"""The default demo tells the study's story, and the Overview's findings equal their pages.

Issue 20: the first visit must show missed cancers, ILC below IDC and density at work. The
story test recomputes the counts by hand from the generated tables (pandas), so a generator
change that loses the story fails here; the findings tests open each finding's link with
AppTest and read the number the page itself shows.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from core.demo.build import DEMO_CANCER_FRACTION, DEMO_N_EXAMS, DEMO_TEST_FRACTION
from core.demo.cohort import generate_cohort
from core.reports.findings import QUESTIONS, best_model, findings, headline_model, link
from core.stats import delong_auc
from core.store import open_store
from models.demo.finetune import DEMO_RUN
from ui.text import md_escape

REPO = Path(__file__).resolve().parents[1]
PAGE_FILES = {"filters": "pages/filters.py", "benchmark": "pages/benchmark.py",
              "finetune": "pages/finetune.py", "density": "pages/density.py",
              "saliency": "pages/saliency.py", "complement": "pages/complement.py"}


def _test_cancers() -> "pd.DataFrame":  # noqa: F821  (pandas frame)
    """Test-split cancer breasts of the default demo with consensus recall and density."""
    t = generate_cohort(None, n_exams=DEMO_N_EXAMS, seed=0, metadata_only=True,
                        cancer_fraction=DEMO_CANCER_FRACTION,
                        test_fraction=DEMO_TEST_FRACTION).tables
    breasts = t["breasts"].merge(t["exams"][["exam_id", "split"]]).merge(
        t["density"][["exam_id", "category"]])
    breasts["case_id"] = breasts["exam_id"] + "/" + breasts["laterality"]
    reads = t["reads"]
    consensus = reads[(reads["reader"] == "consensus") & (reads["level"] == "breast")]
    breasts = breasts.merge(consensus[["case_id", "recall"]], on="case_id")
    return breasts[(breasts["split"] == "test") & (breasts["cancer"] == 1)]


def test_default_demo_keeps_its_story():
    cancers = _test_cancers()
    assert len(cancers) >= 30
    assert (cancers["histology"] == "ILC").sum() >= 10
    missed = ~cancers["recall"].astype(bool)
    assert missed.sum() >= 3                               # the complement page has work
    sens = cancers.groupby("histology")["recall"].mean()
    assert sens["ILC"] < sens["IDC"]                       # ILC is harder for readers
    dense = cancers["category"] >= 2
    assert cancers.loc[dense, "recall"].mean() < cancers.loc[~dense, "recall"].mean()


def test_default_demo_gmic_scores_ilc_below_idc(story_store_path):
    store = open_store(story_store_path, read_only=True)
    aucs = {}
    for name in ("test-ILC", "test-IDC"):
        cases = store.scores(models=["gmic-demo"], level="image", test_set=name)
        aucs[name] = delong_auc(cases["label"].to_numpy(int),
                                cases["score"].to_numpy(float)).auc
    assert aucs["test-ILC"] < aucs["test-IDC"]


@pytest.fixture(scope="module")
def story_findings(story_store_path):
    return {f.question: f for f in findings(open_store(story_store_path, read_only=True))}


def _open(finding) -> AppTest:
    """The app at the finding's link: its page, with its query parameters."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    url = urlsplit(link(finding))
    for key, values in parse_qs(url.query).items():
        at.query_params[key] = values if len(values) > 1 or key.endswith("models") else values[0]
    at.run()
    at.switch_page(PAGE_FILES[url.path])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _frame(at: AppTest, *columns: str):
    """The first table the page shows that has all these columns."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def test_every_question_is_answered(story_findings):
    assert list(story_findings) == list(QUESTIONS)
    assert all(f.sentence.startswith(f.question.capitalize()) for f in story_findings.values())


def test_models_finding_equals_benchmark(story_env, story_findings):
    f = story_findings["models"]
    at = _open(f)
    model = best_model(open_store(story_env, read_only=True), test_set="test-all")
    assert f.params["bench_models"] == [model] and model in f.sentence
    table = _frame(at, "test_set", "model", "auc", "ci_low")
    row = table[(table["test_set"] == "test-ILC") & (table["model"] == model)]
    assert row["auc"].iloc[0] == pytest.approx(f.value, abs=1e-12)
    assert f"AUC {f.value:.2f}" in f.sentence
    assert [m.value for m in at.multiselect if m.key == "bench_models"][0] == [model]


def test_density_finding_equals_density_page(story_env, story_findings):
    f = story_findings["density"]
    at = _open(f)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Dense (2-3)"] == f"{f.value:.3f}"
    assert f"{f.value:.2f} in dense" in f.sentence


def test_radiologists_finding_equals_complement_page(story_env, story_findings):
    f = story_findings["radiologists"]
    at = _open(f)
    shown = {m.label: m.value for m in at.metric}
    caught, of = shown["Missed cancers caught"].split(" of ")
    assert int(caught) == f.value
    assert f"caught {caught} of the {of} cancers" in f.sentence


def test_complement_default_view_shows_missed_cancers(story_env):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/complement.py")
    at.run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    assert int(shown["Missed cancers caught"].split(" of ")[1]) >= 1
    # every page opens on the Overview's headline model (issue 29)
    assert at.selectbox(key="complement_model").value == headline_model(
        open_store(story_env, read_only=True))


def test_filters_finding_says_nothing_is_stored(story_env, story_findings):
    f = story_findings["filters"]
    assert f.value is None and "no filter run is stored" in f.sentence
    at = _open(f)
    assert not [d for d in at.dataframe if "mean_auc" in d.value.columns]


def test_finetuning_finding_equals_benchmark(story_env, story_findings):
    """The demo ships a fine-tuned child (gmic-demo-ilc): its AUC and its parent's on test-ILC
    are the Benchmark page's, and the p-value is the page's paired DeLong test."""
    f = story_findings["fine-tuning"]
    models = open_store(story_env, read_only=True).models().set_index("model")
    assert models.at["gmic-demo-ilc", "parent"] == "gmic-demo"
    assert f.params["bench_models"] == ["gmic-demo-ilc", "gmic-demo"]
    at = _open(f)
    table = _frame(at, "test_set", "model", "auc", "ci_low")
    auc = table[table["test_set"] == "test-ILC"].set_index("model")["auc"]
    assert auc["gmic-demo-ilc"] == pytest.approx(f.value, abs=1e-12)
    assert (f"gmic-demo-ilc reaches AUC {f.value:.2f} on test-ILC against "
            f"{auc['gmic-demo']:.2f} for its parent gmic-demo") in f.sentence
    pair = _frame(at, "model_a", "model_b", "p").iloc[0]
    assert f"p = {pair['p']}" in f.sentence        # the page shows p as the sentence does


def test_finetuning_finding_says_when_no_child_is_scored(story_store_path, tmp_path):
    """Without the child's predictions the finding says what to do (the latest run named)."""
    path = tmp_path / "store.duckdb"
    shutil.copy(story_store_path, path)
    with duckdb.connect(str(path)) as con:
        con.execute("DELETE FROM predictions WHERE model = 'gmic-demo-ilc'")
    f = {g.question: g for g in findings(open_store(path, read_only=True))}["fine-tuning"]
    assert f.value is None and "no fine-tuned model has predictions yet" in f.sentence
    assert DEMO_RUN in f.sentence


def test_saliency_finding_opens_its_model(story_env, story_findings):
    f = story_findings["saliency"]
    at = _open(f)
    assert at.selectbox(key="saliency_model").value == f.params["saliency_model"]
    assert f.params["saliency_model"] == best_model(open_store(story_env, read_only=True),
                                                    test_set="test-all")


def test_nearest_missed_view_has_missed_cancers(story_store_path):
    from core.reports.complement import load_cases
    from core.reports.findings import nearest_missed_view

    store = open_store(story_store_path, read_only=True)
    view = nearest_missed_view(store, test_set="test-ILC", model="gmic-demo",
                               reader="consensus", level="exam")
    assert view is not None and (view["complement_level"], view["complement_reader"]) != (
        "exam", "consensus")
    frame = load_cases(store, test_set="test-ILC", model="gmic-demo",
                       reader=view["complement_reader"], level=view["complement_level"]).frame
    assert ((frame["label"] == 1) & (frame["reader_recall"] == 0)).sum() >= 1


def test_report_findings_cli_writes_one_offline_file(story_store_path, story_findings,
                                                     tmp_path, capsys):
    import html
    import json

    from cli import main

    out = tmp_path / "report.html"
    code = main(["report", "findings", "--db", str(story_store_path), "--out", str(out),
                 "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["out"] == str(out)
    assert [d["sentence"] for d in doc["findings"]] == [f.sentence for f in
                                                        story_findings.values()]
    text = out.read_text(encoding="utf-8")
    assert all(html.escape(f.sentence) in text for f in story_findings.values())
    assert "<script src" not in text and "<link" not in text      # nothing fetched
    code = main(["report", "findings", "--db", str(story_store_path), "--out",
                 str(tmp_path / "missing" / "r.html")])
    assert code == 2 and "--out" in capsys.readouterr().err


def test_overview_shows_every_finding_with_its_link(story_env, story_findings):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception
    shown = " ".join(m.value for m in at.markdown)
    for f in story_findings.values():
        assert f"{md_escape(f.sentence)} [Open :material/open_in_new:]({link(f)})" in shown
    assert at.get("download_button")
