"""core.reports.complement, its CLI and its page: a hand-worked tiny store, agreement with
core.complement / core.stats, invariants, and the page's numbers equal to the CLI's."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from core import complement as cp
from core.reports import complement as cr
from cli import main
from core.errors import InputError
from core.stats import confusion_at, threshold_for_specificity
from core.store import open_store
from tests.conftest import REPO
from ui.text import md_escape

# ---------------------------------------------------------------------------- the tiny store
# 8 exams; the left breast of E1-E3 has a cancer, everything else is healthy.
#              E1   E2   E3   E4   E5    E6   E7   E8
EXAM_SCORE = [.9, .8, .3, .2, .85, .1, .4, .5]       # model "mx", stored at exam level
R_RECALL = [1, 0, 0, 1, 0, 0, 0, 0]                  # reader R (E4: its right breast)
S_SCORE = [80, 60, 20, 70, 10, 30, 40, 5]            # reader S: scores only, no recall
# Model "mi" scores images: the left CC gets EXAM_SCORE, left MLO 0.05 less, right views 0.05,
# so its image max per exam equals mx's exam score.
# At threshold 0.5, exam level, reader R:
#   reader: tp 1 (E1), fn 2 (E2 E3), fp 1 (E4), tn 4         -> sens 1/3, spec 4/5
#   model:  flags E1 E2 E5 E8: tp 2, fn 1, fp 2, tn 3         -> sens 2/3, spec 3/5
#   reader-negatives E2 E3 E5-E8: cancers 2, caught 1 (E2); healthy 4, flagged 2 -> 500 / 1,000
#   reader or model: tp 2, fp 3 (E4 E5 E8)                     -> sens 2/3, spec 2/5
# Matched to the reader's specificity 4/5: at most one healthy score >= t, so t = 0.8 (E2's):
#   model flags E1 E2 E5; caught 1 of 2, extra 1 of 4 (250 / 1,000); combined fp 2 -> spec 3/5.
# 98 % and 90 % specificity both need no healthy flag (1 of 5 is 80 %): t = 0.9, only E1.
EXAMS = [f"t/E{i}" for i in range(1, 9)]


def _tiny_tables() -> dict[str, pd.DataFrame]:
    exams = pd.DataFrame({"exam_id": EXAMS, "dataset": "t", "exam_key": [e[2:] for e in EXAMS],
                          "split": "test"})
    breasts = pd.DataFrame([
        dict(exam_id=e, laterality=lat, cancer=int(lat == "L" and i < 3),
             histology=("ILC" if i != 1 else "IDC") if lat == "L" and i < 3 else "none")
        for i, e in enumerate(EXAMS) for lat in "LR"])
    images, preds = [], []
    for i, e in enumerate(EXAMS):
        for lat in "LR":
            for view in ("CC", "MLO"):
                image_id = f"{e}/{lat}-{view}"
                images.append(dict(image_id=image_id, exam_id=e, dataset="t",
                                   image_key=image_id, laterality=lat,
                                   laterality_source="synthetic", view=view))
                score = (EXAM_SCORE[i] - (view == "MLO") * 0.05) if lat == "L" else 0.05
                preds.append(dict(model="mi", level="image", case_id=image_id, exam_id=e,
                                  laterality=lat, image_id=image_id, malignant=score))
        preds.append(dict(model="mx", level="exam", case_id=e, exam_id=e, malignant=EXAM_SCORE[i]))
    reads = []
    for i, e in enumerate(EXAMS):
        for reader in ("R", "C"):
            reads.append(dict(reader=reader, level="exam", case_id=e, exam_id=e,
                              recall=bool(R_RECALL[i])))
        reads.append(dict(reader="S", level="exam", case_id=e, exam_id=e,
                          score=float(S_SCORE[i]), recall=None))
        for lat in "LR":    # R's breast reads: E1's left, E4's right
            hit = R_RECALL[i] and (lat == "L") == (i == 0)
            reads.append(dict(reader="R", level="breast", case_id=f"{e}/{lat}", exam_id=e,
                              laterality=lat, recall=bool(hit)))
    return {
        "datasets": pd.DataFrame([dict(dataset="t", kind="synthetic")]),
        "exams": exams, "breasts": breasts, "images": pd.DataFrame(images),
        "readers": pd.DataFrame({"reader": ["R", "S", "C"],
                                 "kind": ["radiologist", "radiologist", "consensus"]}),
        "reads": pd.DataFrame(reads),
        "models": pd.DataFrame({"model": ["mx", "mi"], "kind": "external"}),
        "predictions": pd.DataFrame(preds),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.duckdb"
    store = open_store(path)
    store.write_tables(_tiny_tables())
    store.create_testset("all", "dataset=t")
    store.checkpoint()
    return open_store(path, read_only=True)


def counts(c) -> tuple:
    return c.tp, c.fn, c.fp, c.tn


# ---------------------------------------------------------------------------- hand-computed

def test_hand_example_at_threshold(tiny):
    rep = cr.complement_report(tiny, test_set="all", model="mx", reader="R", threshold=0.5)
    res = rep.result
    assert (res.n_cases, res.n_excluded, res.cancers, res.healthy) == (8, 0, 3, 5)
    assert counts(res.reader) == (1, 2, 1, 4)
    assert counts(res.model) == (2, 1, 2, 3)
    assert counts(res.combined) == (2, 1, 3, 2)
    neg = res.among_reader_negative
    assert (neg.cancers, neg.caught, neg.healthy, neg.flagged_healthy) == (2, 1, 4, 2)
    assert neg.flagged_per_1000_healthy == pytest.approx(500)
    s = cr.summary(rep)
    assert s["threshold"] == 0.5 and s["method"] == "threshold"
    assert s["model"]["sensitivity"] == pytest.approx(2 / 3)
    assert s["reader"]["specificity"] == pytest.approx(4 / 5)
    assert s["reader_negatives"] == pytest.approx(dict(
        cancers=2, caught=1, sensitivity=0.5, healthy=4, flagged=2, specificity=0.5,
        extra_recalls_per_1000=500.0))
    assert (s["combined"]["sensitivity"], s["combined"]["specificity"]) == \
        pytest.approx((2 / 3, 2 / 5))


def test_hand_example_tables(tiny):
    rep = cr.complement_report(tiny, test_set="all", model="mx", reader="R", threshold=0.5)
    m = rep.confusion.set_index(["matrix", "truth"])
    assert m.loc[("reader", "cancer")].tolist() == [1, 2, 3]
    assert m.loc[("model", "healthy")].tolist() == [2, 3, 5]
    assert m.loc[("reader or model", "total")].tolist() == [5, 3, 8]
    assert m.loc[("model among reader-negatives", "cancer")].tolist() == [1, 1, 2]
    assert m.loc[("model among reader-positives", "healthy")].tolist() == [0, 1, 1]
    g = rep.group_means.set_index("group")
    assert g["cases"].tolist() == [1, 2, 1, 4]                   # TP FN FP TN
    assert g["mean_score"].tolist() == pytest.approx([.9, .55, .2, .4625])
    assert g["flagged"].tolist() == [1, 1, 0, 2]
    assert rep.tradeoff["threshold"].tolist() == [.85, .8, .5, .4, .3, .1]
    assert rep.tradeoff["caught"].tolist() == [0, 1, 1, 1, 2, 2]
    assert rep.tradeoff["extra_recalls"].tolist() == [1, 1, 2, 3, 3, 4]
    pts = rep.operating_points.set_index("operating_point")
    assert pts["threshold"].tolist() == [0.9, 0.9, 0.9]          # 98 %, 90 % and 89 %
    assert pts["detected"].tolist() == [1, 1, 1]
    neg = rep.reader_negatives.set_index("operating_point")
    assert neg.loc["this threshold", ["caught", "flagged"]].tolist() == [1, 2]
    assert neg.loc["98% specificity", ["caught", "flagged"]].tolist() == [0, 0]
    flows = rep.workflows.set_index("workflow")
    assert flows.loc["reader or model", "cancers_gained"] == 1
    assert flows.loc["reader and model", "cancers_lost"] == 0    # E1 flagged by both
    assert flows.loc["reader", "reads_per_case"] == 1.0


def test_match_reader_is_the_default(tiny):
    rep = cr.complement_report(tiny, test_set="all", model="mx", reader="R")
    res = rep.result
    assert (res.method, res.threshold, res.target_specificity) == ("match_reader", 0.8, 0.8)
    assert counts(res.model) == (2, 1, 1, 4)
    assert (res.caught, res.extra_recalls, res.extra_recalls_per_1000) == (1, 1, 250.0)
    assert counts(res.combined) == (2, 1, 2, 3)
    cases = cr.load_cases(tiny, test_set="all", model="mx", reader="R")
    assert cr.threshold_for(cases) == 0.8
    assert cr.threshold_for(cases, specificity=0.98) == 0.9
    assert "would have flagged 1 of the 2 cancers" in " ".join(rep.sentences)
    assert "healthy women" in " ".join(rep.sentences)


def test_scores_only_reader_needs_a_threshold(tiny):
    with pytest.raises(InputError, match="scores but no recall"):
        cr.complement_report(tiny, test_set="all", model="mx", reader="S", threshold=0.5)
    rep = cr.complement_report(tiny, test_set="all", model="mx", reader="S", threshold=0.5,
                               reader_threshold=50)
    assert counts(rep.result.reader) == (2, 1, 1, 4)                # recalls E1 E2 E4
    assert (rep.result.caught, rep.result.reader_missed, rep.result.extra_recalls) == (0, 1, 2)
    assert rep.reader_threshold == 50.0


def test_image_level_takes_the_breast_read(tiny):
    cases = cr.load_cases(tiny, test_set="all", model="mi", reader="R", level="image")
    assert cases.read_level == "breast" and len(cases.frame) == 32
    assert any("breast's read" in n for n in cases.notes)
    recalled = cases.frame.loc[cases.frame["reader_recall"] == 1, "case_id"]
    assert sorted(recalled) == ["t/E1/L-CC", "t/E1/L-MLO", "t/E4/R-CC", "t/E4/R-MLO"]
    res = cr.build_report(cases, threshold=0.5).result
    # Cancers: 6 images (E1-E3 left); the model flags E1 L x2, E2 L x2 (tp 4) and E5 L x2, E8 CC.
    assert (res.cancers, res.healthy) == (6, 26)
    assert counts(res.reader) == (2, 4, 2, 24)
    assert counts(res.model) == (4, 2, 3, 23)
    assert (res.caught, res.reader_missed, res.extra_recalls) == (2, 4, 3)
    assert res.extra_recalls_per_1000 == pytest.approx(125.0)


def test_aggregated_scores_equal_stored_ones(tiny):
    """mi's image max per exam equals mx's stored exam score, so the reports agree."""
    a = cr.complement_report(tiny, test_set="all", model="mi", reader="R", threshold=0.5)
    b = cr.complement_report(tiny, test_set="all", model="mx", reader="R", threshold=0.5)
    assert a.cases.score_source == "image max" and b.cases.score_source == "stored"
    assert any("image max" in n for n in a.cases.notes)
    pd.testing.assert_frame_equal(a.confusion, b.confusion)
    pd.testing.assert_frame_equal(a.tradeoff, b.tradeoff)


def test_unlabelled_cases_are_left_out_and_said(tmp_path):
    tables = _tiny_tables()
    tables["exams"] = pd.concat([tables["exams"], pd.DataFrame([dict(
        exam_id="t/E9", dataset="t", exam_key="E9", split="test")])])
    tables["breasts"] = pd.concat([tables["breasts"], pd.DataFrame([dict(
        exam_id="t/E9", laterality=lat, cancer=None, histology="unknown") for lat in "LR"])])
    tables["predictions"] = pd.concat([tables["predictions"], pd.DataFrame([dict(
        model="mx", level="exam", case_id="t/E9", exam_id="t/E9", malignant=0.99)])])
    store = open_store(tmp_path / "unlabelled.duckdb")
    store.write_tables(tables)
    store.create_testset("all", "dataset=t")
    cases = cr.load_cases(store, test_set="all", model="mx", reader="R")
    assert len(cases.frame) == 8 and "1 cases without a cancer label" in cases.notes[0]
    assert counts(cr.build_report(cases, threshold=0.5).result.model) == (2, 1, 2, 3)


def test_reader_options(tiny):
    exam = cr.reader_options(tiny, level="exam", test_set="all")
    assert exam["reader"].tolist() == ["C", "R", "S"]                # consensus first
    assert exam.set_index("reader")["has_recall"].to_dict() == {"C": True, "R": True, "S": False}
    image = cr.reader_options(tiny, level="image")
    assert image[["reader", "read_level", "n_reads"]].values.tolist() == [["R", "breast", 16]]


def test_consensus_reader_counts_double_reads(tiny):
    rep = cr.complement_report(tiny, test_set="all", model="mx", reader="C", threshold=0.5,
                               triage_threshold=0.35)
    flows = rep.workflows.set_index("workflow")
    assert flows.loc["reader", "reads_per_case"] == 2.0
    # Triage: E3 (0.3), E4 (0.2), E6 (0.1) are not read: 5 of 8 read, E4's false recall gone.
    assert flows.loc["triage", "reads_per_case"] == pytest.approx(2 * 5 / 8)
    assert flows.loc["triage", "recalls"] == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(reader="nobody"), "reader 'nobody' is not in the store"),
    (dict(model="nomodel"), "model 'nomodel' has no predictions"),
    (dict(reader="S", level="breast", model="mi"), "has no reads at breast level"),
    (dict(level="ward"), "level 'ward' is not one of"),
    (dict(test_set="nope"), "test set 'nope' does not exist"),
])
def test_bad_input(tiny, kwargs, match):
    args = dict(test_set="all", model="mx", reader="R", level="exam") | kwargs
    with pytest.raises(InputError, match=match):
        cr.load_cases(tiny, **args)


def test_threshold_and_specificity_exclude_each_other(tiny):
    cases = cr.load_cases(tiny, test_set="all", model="mx", reader="R")
    with pytest.raises(InputError, match="not both"):
        cr.build_report(cases, threshold=0.5, specificity=0.9)


# ---------------------------------------------------------------------------- references

def test_agrees_with_core_on_independently_aligned_arrays(tiny):
    """Align scores and reads by hand (dicts), then call core.complement and core.stats."""
    truth = tiny.cases(test_set="all", level="breast").set_index("case_id")["label"]
    scores = tiny.scores(models=["mi"], level="image", test_set="all")
    breast_score = scores.groupby(scores["exam_id"] + "/" + scores["laterality"])["score"].max()
    reads = tiny.reads(level="breast", readers=["R"]).set_index("case_id")["recall"]
    ids = sorted(truth.index)
    y = np.array([truth[i] for i in ids], dtype=int)
    s = np.array([breast_score[i] for i in ids])
    r = np.array([reads[i] for i in ids], dtype=float)
    rep = cr.complement_report(tiny, test_set="all", model="mi", reader="R", level="breast",
                               specificity=0.9)
    ref = cp.complement(y, s, r, specificity=0.9)
    assert rep.result.threshold == ref.threshold == threshold_for_specificity(y, s, 0.9)
    assert counts(rep.result.model) == counts(confusion_at(y, s, ref.threshold))
    assert rep.result.among_reader_negative == ref.among_reader_negative
    assert counts(rep.result.combined) == counts(ref.combined)
    pd.testing.assert_frame_equal(rep.tradeoff, cp.tradeoff_curve(y, s, r))
    pd.testing.assert_frame_equal(rep.workflows, cp.workflows(y, s, r, threshold=ref.threshold))
    for row in rep.operating_points.itertuples():
        at = cp.complement(y, s, r, specificity=row.target_specificity)
        assert (row.threshold, row.detected) == (at.threshold, at.model.tp)
        assert (row.sensitivity_ci_low, row.sensitivity_ci_high) == \
            pytest.approx(cp.wilson_ci(at.model.tp, at.cancers))


@st.composite
def case_frames(draw):
    n = draw(st.integers(4, 40))
    y = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    y[0], y[1] = 0, 1
    s = draw(st.lists(st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, np.nan]), min_size=n,
                      max_size=n))
    r = draw(st.lists(st.sampled_from([0.0, 1.0, np.nan]), min_size=n, max_size=n))
    s[0], s[1], r[0], r[1] = 0.3, 0.5, 0.0, 1.0         # both classes survive the exclusions
    frame = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "exam_id": "e",
                          "laterality": None, "image_id": None, "label": y, "histology": "none",
                          "score": s, "reader_score": np.nan, "reader_recall": r})
    t = draw(st.sampled_from([0.1, 0.3, 0.5, 0.8, 1.0]))
    return cr.ReaderModelCases(frame, None, "exam", "m", "r", "radiologist", "exam", "stored",
                               True, ()), t


@settings(max_examples=40, deadline=None)
@given(case_frames())
def test_report_invariants(case):
    cases, t = case
    rep = cr.build_report(cases, threshold=t, n_boot=50)
    m = rep.confusion.set_index(["matrix", "truth"])[["recall", "no_recall"]]
    split = m.loc["model among reader-negatives"] + m.loc["model among reader-positives"]
    pd.testing.assert_frame_equal(split, m.loc["model"])             # the strata partition
    reader = m.loc["reader"]
    g = rep.group_means.set_index("group")["cases"]
    assert (g["TP"], g["FN"], g["FP"], g["TN"]) == (
        reader.loc["cancer", "recall"], reader.loc["cancer", "no_recall"],
        reader.loc["healthy", "recall"], reader.loc["healthy", "no_recall"])
    assert rep.groups["flagged"].sum() == m.loc["model"].loc["total", "recall"]
    res = rep.result
    assert res.n_cases + res.n_excluded == len(cases.frame)
    flows = rep.workflows.set_index("workflow")
    assert flows.loc["reader or model", "cancers_detected"] == res.combined.tp
    curve = rep.tradeoff[rep.tradeoff["threshold"] >= t]
    if len(curve):     # the curve's last row at or above t is the current point
        assert curve["caught"].iloc[-1] == res.caught
        assert curve["extra_recalls"].iloc[-1] == res.extra_recalls
    else:
        assert res.caught == res.extra_recalls == 0
    lo, hi, step = cr.threshold_bounds(cases)
    finite = cases.frame["score"].dropna()
    assert lo <= finite.min() and hi > finite.max() and step > 0


# ---------------------------------------------------------------------------- CLI

def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main(["report", "complement", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and out.strip() else None), err


def test_cli_hand_example(tiny, capsys):
    code, doc, err = run_cli(capsys, "--db", str(tiny.path), "--test-set", "all", "--model", "mx",
                             "--reader", "R", "--threshold", "0.5", "--json")
    assert code == 0 and err == ""
    assert doc["threshold"] == 0.5
    model, reader = doc["model"], doc["reader"]
    assert (model["sensitivity"], model["specificity"]) == pytest.approx((2 / 3, 3 / 5))
    assert (reader["sensitivity"], reader["specificity"]) == pytest.approx((1 / 3, 4 / 5))
    neg = doc["reader_negatives"]
    assert (neg["cancers"], neg["caught"], neg["sensitivity"], neg["specificity"]) == (2, 1, .5, .5)
    combined = doc["combined"]
    assert (combined["sensitivity"], combined["specificity"]) == pytest.approx((2 / 3, .4))
    assert [w["workflow"] for w in doc["workflows"]] == [
        "reader", "model alone", "reader or model", "reader and model"]


def test_cli_default_matches_reader_and_presets(tiny, capsys):
    base = ["--db", str(tiny.path), "--test-set", "all", "--model", "mx", "--reader", "R", "--json"]
    code, doc, _ = run_cli(capsys, *base)
    assert code == 0 and (doc["method"], doc["threshold"]) == ("match_reader", 0.8)
    code, doc, _ = run_cli(capsys, *base, "--specificity", "0.98", "--triage-threshold", "0.35")
    assert code == 0 and (doc["method"], doc["threshold"]) == ("specificity", 0.9)
    assert doc["workflows"][-1]["workflow"] == "triage"
    code, doc, _ = run_cli(capsys, *base[:-1], "--reader", "S", "--reader-threshold", "50",
                           "--threshold", "0.5", "--json")
    assert code == 0 and doc["reader"]["tp"] == 2 and doc["reader"]["threshold"] == 50


@pytest.mark.parametrize("extra, match", [
    (["--reader", "nobody"], "error: reader 'nobody' is not in the store"),
    (["--reader", "S"], "error: reader 'S' has scores but no recall"),
    (["--specificity", "98"], "error: specificity must lie in (0, 1]"),
    (["--specificity", "0.9", "--threshold", "0.5"], "error: pass --specificity or --threshold"),
    (["--level", "breast", "--reader", "S", "--model", "mi"], "error: reader 'S' has no reads"),
    (["--level", "breast"], "error: model 'mx' has predictions at exam level only"),
])
def test_cli_bad_input_is_one_line_exit_2(tiny, capsys, extra, match):
    code, _, err = run_cli(capsys, "--db", str(tiny.path), "--test-set", "all", "--model", "mx",
                           "--reader", "R", *extra, "--json")
    assert code == 2
    assert err.startswith(match) and err.count("\n") == 1


def test_cli_help_ends_with_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["report", "complement", "--help"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.strip().startswith("python -m core report complement --test-set")


# ---------------------------------------------------------------------------- charts

def _line_points(spec: dict) -> list[dict]:
    """The trade-off line's rows: the dataset that starts at threshold 'none' (0 flagged)."""
    return next(d for d in spec["datasets"].values() if d and d[0].get("threshold") == "none")


def test_charts_mark_the_threshold_and_thin_long_curves(tiny):
    from ui.charts import complement as cc

    rep = cr.complement_report(tiny, test_set="all", model="mx", reader="R", threshold=0.5)
    spec = cc.score_groups_chart(rep.groups, rep.group_means, threshold=0.5).to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["circle", "tick", "rule"]
    spec = cc.score_groups_chart(rep.groups, rep.group_means, threshold=math.inf).to_dict()
    assert "rule" not in [layer["mark"]["type"] for layer in spec["layer"]]   # nothing flagged
    spec = cc.tradeoff_chart(rep.tradeoff, rep.reader_negatives, missed=2, unit="women").to_dict()
    line = _line_points(spec)
    assert [(p["caught"], p["extra_recalls_per_1000"]) for p in line] == \
        [(0, 0)] + list(zip(rep.tradeoff["caught"], rep.tradeoff["extra_recalls_per_1000"]))
    n = 50_000                  # a long curve: every step up survives the thinning
    curve = pd.DataFrame({"threshold": np.linspace(1, 0, n), "caught": np.arange(n) // 9_000,
                          "extra_recalls_per_1000": np.linspace(0, 1000, n)})
    spec = cc.tradeoff_chart(curve, rep.reader_negatives, missed=5, unit="women").to_dict()
    kept = pd.DataFrame(_line_points(spec))
    assert len(kept) <= cc.MAX_POINTS + 10
    assert set(kept["caught"]) == set(curve["caught"])
    first_up = kept.groupby("caught")["extra_recalls_per_1000"].min().iloc[1:]
    assert first_up.tolist() == pytest.approx(
        curve.groupby("caught")["extra_recalls_per_1000"].min().iloc[1:].tolist())


# ---------------------------------------------------------------------------- the page

def _page_numbers(at) -> tuple[dict, dict]:
    metrics = {m.label: m.value for m in at.metric}
    frames = {}
    for df in at.dataframe:
        cols = set(df.value.columns)
        name = ("workflows" if "workflow" in cols else "points" if "combined_sensitivity" in cols
                else "negatives" if "extra_recalls_per_1000" in cols else None)
        if name:
            frames[name] = df.value
    return metrics, frames


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _assert_page_equals_cli(at, doc):
    metrics, frames = _page_numbers(at)
    neg = doc["reader_negatives"]
    assert metrics["Missed cancers caught"] == f"{neg['caught']} of {neg['cancers']}"
    assert metrics["Extra recalls per 1,000"] == f"{neg['extra_recalls_per_1000']:,.0f}"
    assert metrics["Model sensitivity"] == _pct(doc["model"]["sensitivity"])
    assert metrics["Model specificity"] == _pct(doc["model"]["specificity"])
    assert metrics["Reader sensitivity"] == _pct(doc["reader"]["sensitivity"])
    assert metrics["Reader specificity"] == _pct(doc["reader"]["specificity"])
    assert metrics["Sensitivity, reader or model"] == _pct(doc["combined"]["sensitivity"])
    assert metrics["Specificity, reader or model"] == _pct(doc["combined"]["specificity"])
    cli_flows = pd.DataFrame(doc["workflows"])
    pd.testing.assert_frame_equal(frames["workflows"].reset_index(drop=True), cli_flows,
                                  check_dtype=False)
    points = frames["points"].replace([np.inf], np.nan)
    pd.testing.assert_frame_equal(points.reset_index(drop=True),
                                  pd.DataFrame(doc["operating_points"]).astype(
                                      {"threshold": float}), check_dtype=False)
    here = frames["negatives"].iloc[0]
    assert (here["cancers"], here["caught"]) == (neg["cancers"], neg["caught"])
    if doc["threshold"] is not None:
        assert at.slider(key="complement_threshold").value == doc["threshold"]
    assert any(md_escape(s) in md.value for md in at.markdown for s in doc["sentences"][:1])


def _triage(at) -> list[str]:
    return ["--triage-threshold", repr(at.number_input(key="complement_triage").value)]


def test_page_numbers_equal_the_cli(demo_env, capsys):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/complement.py")
    at.run()
    assert not at.exception
    # The default view: the sidebar's test set, exam level, the consensus reader, matched.
    assert at.selectbox(key="complement_reader").value == "consensus"
    test_set = at.session_state["test_set"]      # the sidebar's picker (kept across pages)
    # The default model is the best one at the level (issue 20), no longer the first stored.
    from core.reports.findings import best_model
    model = at.selectbox(key="complement_model").value
    assert model == best_model(open_store(demo_env, read_only=True), test_set=test_set,
                               level="exam")
    code, doc, _ = run_cli(capsys, "--test-set", test_set, "--model", model,
                           "--reader", "consensus", "--json", *_triage(at))
    assert code == 0
    _assert_page_equals_cli(at, doc)
    if doc["threshold"] is None:        # nothing reaches the reader's specificity: said so
        assert at.warning and math.isfinite(at.slider(key="complement_threshold").value)

    at.session_state["test_set"] = "demo"
    at.selectbox(key="complement_reader").set_value("R1")
    at.run()
    assert not at.exception
    base = ["--test-set", "demo", "--model", at.selectbox(key="complement_model").value,
            "--reader", "R1", "--json"]
    code, doc, _ = run_cli(capsys, *base, *_triage(at))
    assert code == 0 and doc["method"] == "match_reader"
    _assert_page_equals_cli(at, doc)

    at.button(key="complement_preset_0.9").click()                  # a preset: 90 % specificity
    at.run()
    assert not at.exception
    code, doc, _ = run_cli(capsys, *base, "--specificity", "0.9", *_triage(at))
    assert code == 0 and doc["threshold"] == at.slider(key="complement_threshold").value
    _assert_page_equals_cli(at, doc)

    at.radio(key="complement_level").set_value("image")             # breast reads per image
    at.slider(key="complement_threshold").set_value(0.95)
    at.run()
    assert not at.exception
    assert any("breast's read" in c.value for c in at.caption)
    code, doc, _ = run_cli(capsys, *base, "--level", "image", "--threshold",
                           repr(at.slider(key="complement_threshold").value), *_triage(at))
    assert code == 0 and doc["method"] == "threshold" and doc["threshold"] == 0.95
    _assert_page_equals_cli(at, doc)


def _tiny_page(reader: str, **query):
    """The complement page on the tiny store's test set ``all``, model mx and ``reader``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.query_params.update(query)
    at.run()
    at.switch_page("pages/complement.py")
    at.session_state["test_set"] = "all"
    at.run()
    at.selectbox(key="complement_model").set_value("mx")
    at.selectbox(key="complement_reader").set_value(reader)
    at.run()
    assert not at.exception
    return at


def test_page_operating_point_travels_in_the_url(tiny, monkeypatch):
    """A preset or a dragged threshold is written to ?complement_at=, and a link opens at it."""
    monkeypatch.setenv("ILCSCOPE_DB", str(tiny.path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)

    def opened(at_value=None):
        return _tiny_page("R", **({"complement_at": at_value} if at_value else {}))

    at = opened()
    assert at.query_params["complement_at"] in ("match", ["match"])
    at.button(key="complement_preset_0.89").click()
    at.run()
    assert at.query_params["complement_at"] in ("0.89", ["0.89"])
    assert at.slider(key="complement_threshold").value == 0.9        # as in the report test
    linked = opened("0.89")
    assert linked.button(key="complement_preset_0.89").proto.type == "primary"
    dragged = opened("t0.45")
    assert dragged.slider(key="complement_threshold").value == pytest.approx(0.45)
    assert all(b.proto.type == "secondary" for b in dragged.button
               if b.key and b.key.startswith("complement_preset_"))
    assert opened("nonsense").query_params["complement_at"] in ("match", ["match"])


def test_page_scores_only_reader_gets_a_threshold_input(tiny, monkeypatch, capsys):
    monkeypatch.setenv("ILCSCOPE_DB", str(tiny.path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = _tiny_page("S")
    at.number_input(key="complement_reader_threshold").set_value(50.0)
    at.run()
    assert not at.exception
    code, doc, _ = run_cli(capsys, "--db", str(tiny.path), "--test-set", "all", "--model", "mx",
                           "--reader", "S", "--reader-threshold", "50", "--json", *_triage(at))
    assert code == 0 and doc["reader"]["tp"] == 2
    _assert_page_equals_cli(at, doc)
