"""What the walkthrough tripped on: caveats beside numbers, labels, one shared state, downloads
that say what they hold, import templates, placeholders marked (issue 20)."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.importers import png, reshape
from core.importers.csaw import _validated
from core.importers.templates import FOLDER_KINDS, template
from core.reports.caveats import FEW_POSITIVES, auc_caveats, clipped_ci, few_positives, prevalence
from ui.charts import PALETTE, model_colour, model_colours
from ui.charts.filters import auc_boxplot
from ui.downloads import context_stem, with_context
from ui.errors import form_words
from ui.text import md_escape
from ui.session import is_planned

REPO = Path(__file__).resolve().parents[1]


def _app(page: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    for key, value in state.items():
        at.session_state[key] = value
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# --- the rules, in one place -------------------------------------------------------------------

def test_few_positives_and_clipped_ci_follow_the_threshold():
    assert few_positives(FEW_POSITIVES) is None and few_positives(0) is None
    assert "only 5 positive cases" in few_positives(5, "test-ILC")
    assert few_positives(1).startswith("only 1 positive case ")
    assert clipped_ci(1.0) and clipped_ci(0.999) is None and clipped_ci(float("nan")) is None
    table = pd.DataFrame({"model": ["a", "b", "c"], "test_set": "t", "n_pos": [2, 30, 9],
                          "auc": [0.967, 0.8, float("nan")], "ci_low": [0.874, 0.7, None],
                          "ci_high": [1.0, 0.9, None]})
    notes = auc_caveats(table, names=("model", "test_set"))
    assert len(notes) == 2
    assert "a · t (2)" in notes[0] and "b ·" not in notes[0] and "c ·" not in notes[0]
    assert "clipped at 1.0" in notes[1] and "a · t" in notes[1]


def test_prevalence_says_when_a_test_set_is_enriched():
    assert "32 cancers in 120 exams (26.7%)" in prevalence(32, 120, "exams")
    assert "enriched" in prevalence(32, 120, "exams")
    assert "enriched" not in prevalence(6, 1000, "exams")


# --- one colour per model ----------------------------------------------------------------------

def test_model_colour_is_stable_when_a_model_is_removed():
    models = ["gmic-demo", "classical-dog", "gmic-ilc-ft", "scratch"]
    full = dict(zip(models, model_colours(models).range))
    assert len(set(full.values())) == len(models)          # no two alike in one chart
    for gone in models:
        rest = [m for m in models if m != gone]
        fewer = dict(zip(rest, model_colours(rest).range))
        # a model keeps its colour unless it had been moved off a clash with the removed one
        for m in rest:
            if full[m] == model_colour(m):
                assert fewer[m] == full[m], (gone, m)
    assert all(c in PALETTE for c in full.values())


# --- downloads ---------------------------------------------------------------------------------

def test_download_names_and_columns_carry_their_context():
    a = context_stem("roc", {"test_set": "test-ILC", "models": ["m1", "m2"], "level": "exam"})
    b = context_stem("roc", {"test_set": "test-all", "models": ["m1", "m2"], "level": "exam"})
    assert a != b and a == "roc_test-ILC_m1+m2_exam"
    long = [context_stem("roc", {"models": [f"model-{i}" for i in range(n)]}) for n in (40, 41)]
    assert long[0] != long[1] and all(len(s) <= 120 for s in long)
    assert context_stem("x", {"test_set": "../../etc"}) == "x_..-..-etc"
    frame = with_context(pd.DataFrame({"auc": [0.7], "level": ["image"]}),
                         {"test_set": "t", "level": "exam", "reader": None})
    assert list(frame.columns) == ["test_set", "auc", "level"] and frame["level"][0] == "image"


def _popover_stems(at: AppTest) -> list[str]:
    return [m.group(1) for c in at.caption if (m := re.fullmatch(r"`([^`]+)`", c.value))]


def test_benchmark_downloads_never_share_a_name(demo_env):
    at = _app("pages/benchmark.py")
    stems = _popover_stems(at)
    assert len(stems) >= 3 and len(stems) == len(set(stems))
    assert all("test-all" in s or "benchmark_auc" in s for s in stems)
    at.segmented_control(key="bench_level").set_value("exam").run()
    exam = _popover_stems(at)
    assert not set(exam) & set(stems)      # another level: other file names


# --- caveats on the pages ----------------------------------------------------------------------

def test_benchmark_warns_where_an_auc_rests_on_few_cancers(demo_env):
    at = _app("pages/benchmark.py")
    at.segmented_control(key="bench_level").set_value("exam").run()
    table = at.dataframe[1].value                       # full precision
    few = table[table["n_pos"] < FEW_POSITIVES]
    assert not few.empty                                 # the small demo has few cancers per set
    text = " ".join(w.value for w in at.warning)
    for row in few.itertuples():
        assert md_escape(f"{row.model} · {row.test_set} ({row.n_pos})") in text
    assert not any("independent case" in c.value for c in at.caption)
    at.segmented_control(key="bench_level").set_value("image").run()
    assert any("independent case" in c.value for c in at.caption)


def test_complement_shows_the_prevalence_beside_per_1000(demo_env):
    at = _app("pages/complement.py")
    assert any("Prevalence here:" in c.value and "enriched" in c.value for c in at.caption)


def test_overview_says_the_data_is_synthetic_whatever_is_picked(demo_env):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180).run()
    assert at.sidebar.selectbox(key="dataset").value == "All datasets"
    assert any("synthetic" in i.value for i in at.info)


# --- one state ---------------------------------------------------------------------------------

def test_density_follows_the_sidebar_test_set(demo_env):
    at = _app("pages/density.py")
    assert at.multiselect(key="density_auc_sets_test-all").value == ["test-all"]
    at.session_state["test_set"] = "test-ILC"      # the sidebar's picker (bound to the URL)
    at.run()
    assert not at.exception
    assert at.multiselect(key="density_auc_sets_test-ILC").value == ["test-ILC"]
    headline = next(m.value for m in at.markdown if "exam level: AUC" in m.value)
    model = at.selectbox(key="density_head_model").value
    assert f"**{model}** on `test-ILC`" in headline


# --- labels ------------------------------------------------------------------------------------

def test_filter_boxplots_name_every_method_on_the_axis():
    results = pd.DataFrame({"method": ["original", "M1", "M7", "M1"], "auc": [0.6, 0.4, 0.7, 0.5],
                            "histology": ["ILC", "ILC", "IDC", "IDC"], "image_id": list("abcd")})
    for facet in (False, True):
        spec = auc_boxplot(results, facet=facet).to_dict()
        text = str(spec)
        assert "M1 CLAHE" in text and "M7 wavelet" in text
        if facet:
            assert spec["resolve"]["axis"] == {"x": "independent", "y": "independent"}


# --- import ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["predictions", "readers"])
def test_score_templates_read_as_the_importer_reads_them(kind):
    table = template(kind)
    long = reshape.to_long(table, kind, reshape.TableOptions(label_column="label"), Path("t.csv"))
    assert long.level == "breast" and long.has_label and len(long.rows) == len(table)
    rows, _ = reshape.parse_values(long.rows, kind, "t.csv")   # every value checked
    assert len(rows) == len(table)


def test_png_and_csaw_templates_read_as_the_importers_read_them(tmp_path):
    manifest = png._manifest_table(template("png"), "manifest.csv", tmp_path)
    assert manifest is not None
    out = _validated(template("csaw"), "csaw.csv")
    assert len(out) == 2 and set(out["imagelaterality"]) == {"L", "R"}
    assert template("dicom") is None and set(FOLDER_KINDS) == {"dicom", "mias"}


def test_import_page_offers_the_template_of_the_chosen_kind(demo_env):
    at = _app("pages/import_data.py")
    at.selectbox(key="import_kind").set_value("predictions").run()
    expected = ", ".join(f"`{c}`" for c in template("predictions").columns)
    assert any(expected in c.value for c in at.caption)
    assert "`template_predictions`" in [c.value for c in at.caption]
    helps = {t.label: t.help for t in at.text_input}
    assert helps["Id column"] and helps["Side column"]


def test_errors_use_the_forms_words_not_flags():
    labels = {"id_column": "Id column", "level": "Level"}
    message = ("t.csv: no id column (looked for id, case_id); columns are x, y; "
               "name it with id_column")
    out = form_words(message, labels)
    assert out.endswith('name it with the "Id column" field') and "id_column" not in out
    assert form_words("level must be one of image", labels).startswith('the "Level" field')
    assert form_words("322 images, level ok", labels) == "322 images, level ok"


# --- placeholders ------------------------------------------------------------------------------

def test_placeholder_pages_are_found_by_what_they_call(tmp_path):
    pages = {p.stem: is_planned(p) for p in (REPO / "pages").glob("*.py") if p.stem != "__init__"}
    assert not pages["benchmark"] and not pages["overview"]
    body = (REPO / "pages" / "finetune.py").read_text()
    assert pages["finetune"] == ("planned(" in body)
    fake = tmp_path / "later.py"
    fake.write_text('"""Later."""\nimport ui\n\nui.planned("Later", "soon")\n')
    assert is_planned(fake)
