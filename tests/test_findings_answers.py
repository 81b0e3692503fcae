"""The findings' answers (issue 29): filters against the unfiltered image, saliency from the
stored maps and outlines, one headline model named in every sentence, links that carry the
view. Each number meets a hand-computed case or an independent path (sklearn, the saliency
CLI, SQL over the stored filter AUCs)."""
from __future__ import annotations

import json

import duckdb
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cli import main
from core.errors import InputError
from core.image.filters import METHODS
from core.reports.findings import (HEADLINE_RULE, QUESTIONS, filters_finding, findings,
                                   headline_model, link)
from core.store import open_store
from tests.conftest import copy_store

MODEL_QUESTIONS = ("models", "fine-tuning", "density", "saliency", "radiologists")


def _results(aucs: dict[str, list[float]]) -> pd.DataFrame:
    """`stored_results` rows by hand: one row per (image, method)."""
    rows = [{"image_id": f"img{i}", "method": m, "name": METHODS[m].name, "auc": a}
            for m, values in aucs.items() for i, a in enumerate(values)]
    return pd.DataFrame(rows)


def test_filters_compare_with_the_unfiltered_image_not_m1():
    # the case: M2 beats M1 (CLAHE) but not the image as acquired
    f = filters_finding(_results({"original": [0.73, 0.75], "M1": [0.70, 0.72],
                                  "M2": [0.72, 0.74]}))
    assert "no filter beats the unfiltered image (best: M2" in f.sentence
    assert "mean pixel AUC 0.73 against 0.74 for the unfiltered image" in f.sentence
    assert "0.71" not in f.sentence and "original (M1)" not in f.sentence
    assert f.value == pytest.approx(0.73)
    assert "on 2 annotated cancer images" in f.sentence


def test_filters_name_the_best_filter_when_it_beats_the_image():
    f = filters_finding(_results({"original": [0.60, 0.70], "M1": [0.66, 0.70],
                                  "M4": [0.80, 0.90], "M6": [0.70, 0.74]}))
    assert f"M4 ({METHODS['M4'].name}) is best, mean pixel AUC 0.85 against 0.65" in f.sentence
    assert f.value == pytest.approx(0.85)
    assert f.params == {"test_set": "test-all"} and f.page == "filters"


def test_filters_say_what_is_missing():
    no_raw = filters_finding(_results({"M1": [0.7], "M2": [0.8]}))
    assert no_raw.value is None and "lacks the unfiltered image" in no_raw.sentence
    only_raw = filters_finding(_results({"original": [0.7]}))
    assert only_raw.value is None and "lacks any filter" in only_raw.sentence
    empty = filters_finding(_results({}).reindex(columns=["image_id", "method", "name", "auc"]))
    assert empty.value is None and "no filter run is stored for test-all" in empty.sentence


@pytest.fixture(scope="module")
def filtered_store(demo_store_path, tmp_path_factory):
    """The small demo store after a filter run (unfiltered, M1, M2) on test-all."""
    from core.jobs.filters import run_filters

    path = copy_store(demo_store_path, tmp_path_factory.mktemp("filtered"))
    run_filters(open_store(path), test_set="test-all", methods=["original", "M1", "M2"],
                workers=1)
    return open_store(path, read_only=True)


def test_filters_finding_on_a_stored_run_equals_sql(filtered_store):
    with duckdb.connect(str(filtered_store.path), read_only=True) as con:
        mean = dict(con.execute("SELECT method, avg(auc) FROM filter_results "
                                "WHERE NOT isnan(auc) GROUP BY 1").fetchall())
    f = {g.question: g for g in findings(filtered_store)}["filters"]
    best = max(("M1", "M2"), key=mean.get)
    assert f.value == pytest.approx(mean[best], abs=1e-12)
    assert f"against {mean['original']:.2f} for the unfiltered image" in f.sentence


def _image_aucs(store, test_set: str = "test-all") -> dict[str, float]:
    levels = store.prediction_levels()
    out = {}
    for model in sorted(set(levels.loc[levels["level"] == "image", "model"])):
        cases = store.scores(models=[model], level="image", test_set=test_set)
        cases = cases[cases["score"].notna()]
        out[model] = roc_auc_score(cases["label"].astype(int), cases["score"])
    return out


def test_headline_model_is_the_best_image_auc_and_named_everywhere(demo_store_path):
    store = open_store(demo_store_path, read_only=True)
    aucs = _image_aucs(store)
    assert headline_model(store) == max(aucs, key=aucs.get)
    assert "highest image-level AUC on test-all" in HEADLINE_RULE
    for model in aucs:
        items = {f.question: f for f in findings(store, model=model)}
        assert list(items) == list(QUESTIONS)
        for q in MODEL_QUESTIONS:
            assert model in items[q].sentence, (model, q, items[q].sentence)
        assert items["models"].params["bench_models"] == [model]
    with pytest.raises(InputError, match="no image-level scores"):
        findings(store, model="no-such-model")


def test_models_link_carries_its_test_sets(demo_store_path):
    f = {g.question: g for g in findings(open_store(demo_store_path, read_only=True))}["models"]
    assert f.params["bench_test_sets"] == ["test-ILC", "test-IDC"]
    assert "bench_test_sets=test-ILC&bench_test_sets=test-IDC" in link(f)


def test_saliency_finding_equals_report_saliency(demo_store_path, capsys):
    store = open_store(demo_store_path, read_only=True)
    model = "gmic-demo"   # a model that writes maps (the small store's headline may not)
    f = {g.question: g for g in findings(store, model=model)}["saliency"]
    assert main(["report", "saliency", "--db", str(demo_store_path), "--test-set", "test-all",
                 "--model", model, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["summary"][model]
    assert f.value == pytest.approx(s["hit_rate"], abs=1e-12)
    assert (f"on {s['n_images']} outlined images of test-all, {model}'s malignant map reaches "
            f"a median best Dice of {s['median_best_dice']:.2f} (IQR {s['q1_best_dice']:.2f}-"
            f"{s['q3_best_dice']:.2f})") in f.sentence
    assert (f"inside the tumour on {s['n_hits']} of {s['n_images']} (hit rate "
            f"{s['hit_rate']:.0%}, 95 % CI {s['hit_ci_low']:.0%}-{s['hit_ci_high']:.0%})"
            ) in f.sentence
    assert f.params == {"test_set": "test-all", "saliency_model": model,
                        "saliency_which": "malignant", "saliency_view": "Test set"}


def test_saliency_says_when_maps_or_outlines_are_missing(demo_store_path, tmp_path):
    store = open_store(demo_store_path, read_only=True)
    no_maps = {g.question: g for g in findings(store, model="classical-dog")}["saliency"]
    assert no_maps.value is None and "classical-dog stored no saliency map" in no_maps.sentence
    path = copy_store(demo_store_path, tmp_path)
    with duckdb.connect(str(path)) as con:
        con.execute("DELETE FROM annotations")
    bare = open_store(path, read_only=True)
    f = {g.question: g for g in findings(bare)}["saliency"]
    assert f.value is None and "no image of test-all has a tumour outline" in f.sentence


def test_cli_model_flag(demo_store_path, capsys):
    assert main(["report", "findings", "--db", str(demo_store_path), "--model", "gmic-demo",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = findings(open_store(demo_store_path, read_only=True), model="gmic-demo")
    assert doc["model"] == "gmic-demo"
    assert [d["sentence"] for d in doc["findings"]] == [f.sentence for f in expected]
    assert main(["report", "findings", "--db", str(demo_store_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == headline_model(
        open_store(demo_store_path, read_only=True))
    assert main(["report", "findings", "--db", str(demo_store_path), "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope' has no image-level scores" in err
