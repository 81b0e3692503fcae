"""Published AUCs (issue 30): the numbers against the study's Table 6.1, the mapping of stored
models to papers (hand-written expectations), and the Benchmark and Import pages and the CLI
showing them, labelled as published."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cli import main
from core.reports.published import (CONTAINER_ONLY, METAREPOSITORY_COMMAND, PUBLISHED,
                                     published_auc_for, published_table, with_published)

REPO = Path(__file__).resolve().parents[1]
# the study's Table 6.1: each model's row label, first number = the "Original paper" column
TABLE_ROWS = {"nyu-image": r"NYU - image", "nyu-image-heatmaps": r"NYU - image \+ heatmap",
              "gmic": r"GMIC", "glam": r"GLAM", "end2end": r"End2end"}


# ---------------------------------------------------------------------------- the numbers

@pytest.fixture(scope="module")
def table_6_1(shared_dir) -> str:
    """Table 6.1's text: from its announcement to its caption."""
    text = (shared_dir / "study" / "ilc-thesis.txt").read_text(encoding="utf-8")
    start = text.index("Table 6.1 shows the results of the pre-trained models")
    end = text.index("Table 6.1: Resulting AUC values", start)
    return text[start:end]


def test_the_numbers_are_the_thesis_table(table_6_1):
    assert set(PUBLISHED) == {*TABLE_ROWS, "frcnn"}
    for family, label in TABLE_ROWS.items():
        row = re.search(rf"^{label} (\d\.\d\d) \d\.\d\d \d\.\d\d \d\.\d\d$", table_6_1, re.M)
        assert row, f"no Table 6.1 row for {label}"
        assert PUBLISHED[family].auc == float(row.group(1)), family
    # Faster R-CNN's cell spans lines: "0.95 (on test set)", "0.85 (on challenge set)"
    test_set = re.search(r"^Faster-rcnn\s+(\d\.\d\d) \(on test set\)\s+(\d\.\d\d) \(on challenge",
                         table_6_1, re.M)
    assert test_set and PUBLISHED["frcnn"].auc == float(test_set.group(1)) == 0.95
    assert test_set.group(2) in PUBLISHED["frcnn"].measured_on   # the challenge set's 0.85


def test_hand_written_values_and_sources():
    assert {k: p.auc for k, p in PUBLISHED.items()} == {
        "nyu-image": 0.83, "nyu-image-heatmaps": 0.89, "gmic": 0.89, "glam": 0.88,
        "end2end": 0.88, "frcnn": 0.95}
    for family, p in PUBLISHED.items():
        assert p.family == family and p.title and p.citation and p.measured_on
    assert PUBLISHED["end2end"].measured_on.startswith("CBIS-DDSM")
    assert PUBLISHED["frcnn"].measured_on.startswith("INbreast")
    assert CONTAINER_ONLY == ("end2end", "frcnn")


# ---------------------------------------------------------------------------- the mapping

@pytest.mark.parametrize("row, family", [
    # ILCscope's own runs: kind is the family
    ({"model": "gmic-demo", "kind": "gmic"}, "gmic"),
    ({"model": "my-glam", "kind": "glam"}, "glam"),
    ({"model": "dmv", "kind": "nyu-image"}, "nyu-image"),
    ({"model": "dmv-h", "kind": "nyu-image-heatmaps"}, "nyu-image-heatmaps"),
    # imported: the metarepository's folder in the name (run.sh's file name or --model)
    ({"model": "end2end", "kind": "external"}, "end2end"),
    ({"model": "end2end_ilc01_predictions", "kind": "external"}, "end2end"),
    ({"model": "frcnn_cad", "kind": "external"}, "frcnn"),
    ({"model": "frcnn_cad_ilc01_predictions", "kind": "external"}, "frcnn"),
    ({"model": "nyu_gmic_exp_predictions", "kind": "external"}, "gmic"),
    ({"model": "nyu_glam", "kind": "external"}, "glam"),
    ({"model": "nyu_model_exp_predictions", "kind": "external"}, "nyu-image"),
    ({"model": "nyu_model_single", "kind": "external"}, "nyu-image"),
    ({"model": "NYU-Model-heatmaps", "kind": "external"}, "nyu-image-heatmaps"),  # USE_HEATMAPS
    ({"model": "metarepo-end2end", "kind": "external"}, "end2end"),
    # no paper applies
    ({"model": "classical-dog", "kind": "classical"}, None),
    ({"model": "gmic", "kind": "external"}, None),          # not a metarepository folder
    ({"model": "myend2endnet", "kind": "external"}, None),  # folder name inside a word
    ({"model": "end2end", "kind": "classical"}, None),      # names count for imports only
    ({"model": "x", "kind": "external"}, None),
])
def test_family_of_each_kind_and_name(row, family):
    match = published_auc_for(row)
    assert (match.published.family if match else None) == family
    if match:
        assert match.model == row["model"] and match.fine_tuned_from is None
        assert "fine-tuned" not in match.label


def test_single_image_variant_is_labelled():
    match = published_auc_for({"model": "nyu_model_single_x", "kind": "external"})
    assert match.variant and "single-image" in match.label
    assert published_auc_for({"model": "nyu_model_x", "kind": "external"}).variant is None


def test_a_synthetic_demo_model_is_not_the_published_one():
    match = published_auc_for({"model": "gmic-demo", "kind": "gmic", "synthetic": True})
    assert match.published.auc == 0.89 and "not the published weights" in match.label
    assert published_auc_for({"model": "g", "kind": "gmic", "synthetic": False}).variant is None


def test_a_fine_tuned_child_gets_its_parents_paper_labelled_as_such():
    models = pd.DataFrame([
        {"model": "gmic-demo", "kind": "gmic", "parent": None},
        {"model": "gmic-demo-ilc", "kind": "gmic", "parent": "gmic-demo"},
        {"model": "ext-child", "kind": "external", "parent": "gmic-demo-ilc"},  # grandchild
        {"model": "loop-a", "kind": "external", "parent": "loop-b"},
        {"model": "loop-b", "kind": "external", "parent": "loop-a"},
        {"model": "orphan", "kind": "external", "parent": "gone"},
    ])
    rows = models.set_index("model", drop=False)
    child = published_auc_for(rows.loc["gmic-demo-ilc"])           # a Series works
    assert child.published.family == "gmic" and child.fine_tuned_from == "gmic-demo"
    assert child.label.endswith("fine-tuned from gmic-demo, not the published model")
    grandchild = published_auc_for(rows.loc["ext-child"], models=models)
    assert grandchild.published.auc == 0.89 and grandchild.fine_tuned_from == "gmic-demo-ilc"
    assert published_auc_for(rows.loc["ext-child"]) is None        # no frame: no way up
    assert published_auc_for(rows.loc["loop-a"], models=models) is None   # a cycle ends
    assert published_auc_for(rows.loc["orphan"], models=models) is None
    assert published_auc_for(rows.loc["gmic-demo"]).fine_tuned_from is None
    # itertuples rows, with a NaN parent (a DuckDB NULL in a frame), work too
    row = next(pd.DataFrame([{"model": "g", "kind": "gmic", "parent": math.nan}]).itertuples())
    assert published_auc_for(row).fine_tuned_from is None


def test_published_table_and_the_wide_table():
    models = pd.DataFrame([
        {"model": "classical-dog", "kind": "classical", "parent": math.nan},
        {"model": "gmic-demo", "kind": "gmic", "parent": math.nan},
        {"model": "gmic-demo-ilc", "kind": "gmic", "parent": "gmic-demo"},
        {"model": "frcnn_cad", "kind": "external", "parent": math.nan},
    ])
    table = published_table(models, ["frcnn_cad", "gmic-demo-ilc", "classical-dog", "absent"])
    assert table["model"].tolist() == ["frcnn_cad", "gmic-demo-ilc", "classical-dog", "absent"]
    assert table["family"].iloc[:2].tolist() == ["frcnn", "gmic"]
    assert table["family"].iloc[2:].isna().all()
    assert table["published_auc"].tolist()[:2] == [0.95, 0.89]
    assert table["published_auc"].iloc[2:].isna().all()
    assert table["fine_tuned"].tolist() == [False, True, False, False]
    wide = pd.DataFrame({"model": ["gmic-demo", "classical-dog"], "t AUC [95% CI]": ["a", "b"]})
    out = with_published(wide, models)
    assert out.columns.tolist() == ["model", "Published AUC", "Published in", "t AUC [95% CI]"]
    assert out["Published AUC"].iloc[0] == 0.89 and math.isnan(out["Published AUC"].iloc[1])
    assert out["Published in"].tolist()[1] == ""
    assert wide.columns.tolist() == ["model", "t AUC [95% CI]"]   # the input is left alone


def test_the_command_is_the_metarepositorys():
    # run.sh <model_name> <experiment_name> <img_path> <prepr_img_path> <label_path>
    #        <result_path> <device> <gpu_number> <bootstrap_flag>; it writes
    #        <result_path>/<model>_<experiment>_predictions.csv
    runs = [ln.split() for ln in METAREPOSITORY_COMMAND.splitlines() if ln.startswith("bash")]
    assert [r[2] for r in runs] == ["end2end", "frcnn_cad"]
    assert all(len(r) == 11 and r[:2] == ["bash", "run.sh"] and r[8] == "gpu" for r in runs)
    for model, experiment, result in ((r[2], r[3], r[7]) for r in runs):
        assert f"{result}{model}_{experiment}_predictions.csv --model {model}" in \
            METAREPOSITORY_COMMAND.replace(" \\\n    ", " ")
        assert published_auc_for({"model": model, "kind": "external"}) is not None


# ---------------------------------------------------------------------------- CLI and pages

def test_cli_json_includes_published(demo_env, capsys):
    code = main(["report", "benchmark", "--test-set", "test-ILC", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    published = {r["model"]: r for r in doc["published"]}
    assert set(published) == {m["model"] for m in doc["models"]}
    assert published["gmic-demo"]["published_auc"] == 0.89
    assert published["gmic-demo"]["fine_tuned"] is False
    assert published["gmic-demo-ilc"]["fine_tuned"] is True
    assert published["classical-dog"]["published_auc"] is None


def _page(path: str, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(path)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_benchmark_page_shows_the_published_column(demo_env):
    at = _page("pages/benchmark.py", bench_models=["gmic-demo", "gmic-demo-ilc", "classical-dog"])
    [frame] = [d for d in at.dataframe if "Published AUC" in d.value.columns]
    wide = frame.value.set_index("model")      # as shown: two decimals, a gap as "—"
    assert wide.loc["gmic-demo", "Published AUC"] == "0.89"
    assert wide.loc["gmic-demo", "Published in"].startswith("GMIC: Y. Shen et al.")
    assert "synthetic demo model" in wide.loc["gmic-demo", "Published in"]
    assert wide.loc["gmic-demo-ilc", "Published AUC"] == "0.89"
    assert "fine-tuned from gmic-demo, not the published model" in \
        wide.loc["gmic-demo-ilc", "Published in"]
    assert wide.loc["classical-dog", "Published AUC"] == "—"
    config = json.loads(frame.proto.columns)          # the column's help says what it is
    assert config["Published AUC"]["help"] == ("as published in the model's paper, on its own "
                                               "test data (thesis Table 6.1); not measured here")
    captions = " ".join(c.value for c in at.caption)
    assert "End2end" in captions and "Faster R-CNN" in captions and "imported" in captions
    assert any("bash run.sh frcnn_cad" in c.value for c in at.code)


def test_import_page_says_how_end2end_and_frcnn_come_in(demo_env):
    at = _page("pages/import_data.py", import_kind="predictions")
    assert any("metarepository" in c.value and "Faster R-CNN" in c.value for c in at.caption)
    [code] = [c for c in at.code if "run.sh" in c.value]
    assert code.value == METAREPOSITORY_COMMAND
