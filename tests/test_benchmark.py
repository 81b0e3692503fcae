"""core.reports.benchmark against scikit-learn and brute force, the `report benchmark` CLI, and the
Benchmark page (AppTest), whose numbers must equal the CLI's to the digit."""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from core.reports import benchmark as benchmark

from core import stats as metrics
from cli import main
from core.errors import InputError
from core.store import open_store, write_result
from ui.tables import P_COLUMNS, p_text

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- fixtures

def _ingest(store, frames: dict[str, pd.DataFrame]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store.ingest(write_result(tmp, frames))


@pytest.fixture(scope="module")
def bench_store_path(demo_store_path, tmp_path_factory) -> Path:
    """A copy of the demo store with more models, a one-class test set and a
    prediction-only dataset (labels, no pixels):

    * sim-strong: image level with signal; ~10 % of images unscored (missing is counted);
    * sim-breast: breast level only (so image level cannot use it);
    * extpred: 30 exams without images, breast labels and 'ext-breast' predictions.
    """
    path = tmp_path_factory.mktemp("bench") / "ilcscope.duckdb"
    shutil.copy(demo_store_path, path)
    store = open_store(path)
    rng = np.random.default_rng(7)
    img, br = store.cases(level="image"), store.cases(level="breast")
    keep = rng.random(len(img)) > 0.1
    lab = img["label"].to_numpy(float)
    strong = pd.DataFrame({
        "model": "sim-strong", "level": "image", "case_id": img["case_id"],
        "exam_id": img["exam_id"], "laterality": img["laterality"], "image_id": img["image_id"],
        "malignant": np.round(rng.normal(size=len(img)) + 1.5 * lab, 1)})[keep]   # ties
    breast = pd.DataFrame({
        "model": "sim-breast", "level": "breast", "case_id": br["case_id"],
        "exam_id": br["exam_id"], "laterality": br["laterality"], "image_id": None,
        "malignant": rng.normal(size=len(br)) + 1.0 * br["label"].to_numpy(float)})
    exams = [f"extpred/e{i:02d}" for i in range(30)]
    ext_breasts = pd.DataFrame({
        "exam_id": np.repeat(exams, 2), "laterality": ["L", "R"] * 30,
        "cancer": (np.arange(60) % 6 == 0).astype(int)})
    ext_breasts["histology"] = np.where(ext_breasts["cancer"] == 1, "ILC", "none")
    ext_pred = pd.DataFrame({
        "model": "ext-breast", "level": "breast",
        "case_id": ext_breasts["exam_id"] + "/" + ext_breasts["laterality"],
        "exam_id": ext_breasts["exam_id"], "laterality": ext_breasts["laterality"],
        "image_id": None,
        "malignant": rng.random(60) + 0.5 * ext_breasts["cancer"].to_numpy()})
    _ingest(store, {
        "models": pd.DataFrame({"model": ["sim-strong", "sim-breast", "ext-breast"],
                                "kind": "external"}),
        "predictions": pd.concat([strong, breast, ext_pred], ignore_index=True),
        "datasets": pd.DataFrame([{"dataset": "extpred", "kind": "predictions-only",
                                   "source": "predictions"}]),
        "exams": pd.DataFrame({"exam_id": exams, "dataset": "extpred",
                               "exam_key": [e.split("/")[1] for e in exams], "split": "test"}),
        "breasts": ext_breasts})
    store.refresh_testsets()
    store.create_testset("healthy-only", "dataset=demo split=test cancer=0")
    store.checkpoint()
    return path


@pytest.fixture(scope="module")
def bstore(bench_store_path):
    return open_store(bench_store_path, read_only=True)


@pytest.fixture
def bench_env(bench_store_path, monkeypatch) -> Path:
    monkeypatch.setenv("ILCSCOPE_DB", str(bench_store_path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    return bench_store_path


def brute_auc(y, s):
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return ((pos > neg) + 0.5 * (pos == neg)).mean()


# ---------------------------------------------------------------------------- choices

def test_usable_models_and_defaults(bstore):
    levels = bstore.prediction_levels()
    assert benchmark.usable_models(levels, "image") == [
        "classical-dog", "gmic-demo", "gmic-demo-ilc", "sim-strong"]
    assert benchmark.usable_models(levels, "breast") == [
        "classical-dog", "ext-breast", "gmic-demo", "gmic-demo-ilc", "sim-breast", "sim-strong"]
    assert benchmark.usable_models(levels, "exam") == [
        "classical-dog", "gmic-demo", "gmic-demo-ilc", "sim-strong"]
    known = ["demo", "test-IDC", "test-ILC", "test-all", "train"]
    assert benchmark.default_test_sets("test-IDC", known) == ["test-IDC", "test-ILC", "test-all"]
    assert benchmark.default_test_sets("test-all", known) == ["test-all", "test-ILC"]
    assert benchmark.default_test_sets(None, ["demo"]) == []
    with pytest.raises(InputError, match="level"):
        benchmark.usable_models(levels, "patient")


def test_parse_specificities():
    assert benchmark.parse_specificities("0.90,0.98") == (0.98, 0.9)
    assert benchmark.parse_specificities(["95%", 0.8, "0.8"]) == (0.95, 0.8)
    with pytest.raises(InputError, match="not 90"):
        benchmark.parse_specificities("90")
    with pytest.raises(InputError, match="not a number"):
        benchmark.parse_specificities("0.9,high")
    with pytest.raises(InputError, match="no specificities"):
        benchmark.parse_specificities("")


# ---------------------------------------------------------------------------- pieces

def test_auc_summary_matches_sklearn_and_delong(bstore):
    scores = benchmark.load_scores(bstore, models=["classical-dog", "sim-strong"],
                                   test_sets=["test-all", "test-ILC"], level="image")
    table = benchmark.auc_summary(scores, ci="delong")
    assert list(zip(table["test_set"], table["model"])) == [
        ("test-all", "classical-dog"), ("test-all", "sim-strong"),
        ("test-ILC", "classical-dog"), ("test-ILC", "sim-strong")]
    cases = {t: bstore.cases(test_set=t, level="image") for t in ("test-all", "test-ILC")}
    for row in table.itertuples():
        part = scores[(scores["test_set"] == row.test_set) & (scores["model"] == row.model)]
        assert len(part) == len(cases[row.test_set])          # every case, scored or not
        ok = part["score"].notna()
        y, s = part.loc[ok, "label"].to_numpy(), part.loc[ok, "score"].to_numpy()
        assert row.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert row.auc == pytest.approx(brute_auc(y, s), abs=1e-12)
        assert (row.n_pos, row.n_neg, row.n_excluded) == (y.sum(), (y == 0).sum(), (~ok).sum())
        ref = metrics.delong_auc(y, s)
        assert (row.ci_low, row.ci_high) == pytest.approx((ref.ci_low, ref.ci_high), abs=1e-12)
        assert row.scores == "stored"
    assert table.loc[table["model"] == "sim-strong", "n_excluded"].gt(0).all()
    boot = benchmark.auc_summary(scores, ci="bootstrap", n_boot=200, seed=3)
    part = scores[(scores["test_set"] == "test-all") & (scores["model"] == "sim-strong")]
    ref = metrics.bootstrap_auc(part["label"], part["score"].to_numpy(), n_boot=200, seed=3)
    assert boot.iloc[1][["ci_low", "ci_high"]].tolist() == pytest.approx([ref.ci_low, ref.ci_high])


@pytest.mark.parametrize("how", ["max", "mean"])
def test_breast_level_aggregates_image_scores(bstore, how):
    scores = benchmark.load_scores(bstore, models=["sim-strong", "sim-breast"],
                                   test_sets=["test-all"], level="breast", how=how)
    images = bstore.scores(models=["sim-strong"], level="image", test_set="test-all")
    images["breast"] = images["exam_id"] + "/" + images["laterality"]
    expected = images.groupby("breast")["score"].agg(how)
    got = scores[scores["model"] == "sim-strong"].set_index("case_id")["score"]
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)
    assert set(scores.loc[scores["model"] == "sim-strong", "score_source"]) == {f"image {how}"}
    assert set(scores.loc[scores["model"] == "sim-breast", "score_source"]) == {"stored"}


def test_pairwise_tests_matches_paired_delong_and_holm_by_hand(bstore):
    one = benchmark.load_scores(bstore, models=["classical-dog", "sim-strong", "sim-breast"],
                                test_sets=["test-all"], level="breast")
    pairs = benchmark.pairwise_tests(one)
    assert list(zip(pairs["model_a"], pairs["model_b"])) == [
        ("classical-dog", "sim-strong"), ("classical-dog", "sim-breast"),
        ("sim-strong", "sim-breast")]
    wide = one.pivot(index="case_id", columns="model", values="score")
    y = one.drop_duplicates("case_id").set_index("case_id")["label"].reindex(wide.index)
    complete = wide.notna().all(axis=1)
    for r in pairs.itertuples():
        ref = metrics.delong_paired_test(y[complete], wide.loc[complete, r.model_a],
                                         wide.loc[complete, r.model_b])
        assert (r.z, r.p) == pytest.approx((ref.z, ref.p), abs=1e-12)
        assert r.auc_a == pytest.approx(roc_auc_score(y[complete], wide.loc[complete, r.model_a]))
        assert r.n_excluded == (~complete).sum()
    p = pairs["p"].to_numpy()                                    # Holm: 3, 2, 1 x sorted p
    order = np.argsort(p)
    holm = np.minimum(np.maximum.accumulate(p[order] * [3, 2, 1]), 1)
    assert pairs["p_holm"].to_numpy()[order] == pytest.approx(holm)
    assert benchmark.pairwise_tests(one[one["model"] == "sim-breast"]).empty
    unscored = one[one["model"] == "sim-breast"].assign(model="not-run", score=np.nan)
    pd.testing.assert_frame_equal(benchmark.pairwise_tests(pd.concat([one, unscored])), pairs)


def test_sensitivity_at_specificity_brute_force(bstore):
    one = benchmark.load_scores(bstore, models=["sim-strong", "sim-breast"],
                                test_sets=["test-all"], level="breast")
    ops = benchmark.sensitivity_at_specificity(one, specificities=(0.9, 0.75, 0.5))
    assert ops["target_specificity"].tolist() == [0.9, 0.75, 0.5] * 2
    for r in ops.itertuples():
        part = one[(one["model"] == r.model) & one["score"].notna()]
        y, s = part["label"].to_numpy(), part["score"].to_numpy()
        neg, pos = s[y == 0], s[y == 1]
        candidates = [t for t in np.r_[np.unique(s), np.inf]
                      if (neg < t).mean() >= r.target_specificity]
        best = min(candidates)                          # lowest threshold reaching the target
        assert r.threshold == best
        assert r.sensitivity == pytest.approx((pos >= best).mean())
        assert r.specificity == pytest.approx((neg < best).mean())
        assert (r.tp, r.fn, r.fp, r.tn) == ((pos >= best).sum(), (pos < best).sum(),
                                            (neg >= best).sum(), (neg < best).sum())


def test_roc_points_equal_the_curve_when_small_and_thin_when_large():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    s = np.round(rng.normal(size=200) + y, 1)
    frame = pd.DataFrame({"test_set": "t", "model": "m", "case_id": np.arange(200).astype(str),
                          "label": y.astype(np.int8), "histology": "none", "score": s,
                          "score_source": "stored"})
    roc = benchmark.roc_points(frame)
    fpr, tpr, thr = metrics.roc_curve(y, s, drop_intermediate=True)
    np.testing.assert_array_equal(roc["fpr"], fpr)
    np.testing.assert_array_equal(roc["threshold"], thr)
    # 60k distinct scores: thinned to <= 1000 + 2 points, all on the full curve, ends kept
    n = 60_000
    y = rng.random(n) < 0.2
    big = frame.iloc[:0].reindex(range(n)).assign(
        test_set="t", model="m", case_id=np.arange(n).astype(str), label=y.astype(np.int8),
        histology="none", score=rng.normal(size=n) + y, score_source="stored")
    roc = benchmark.roc_points(big, max_points=1000)
    full_fpr, full_tpr, full_thr = metrics.roc_curve(y, big["score"].to_numpy())
    assert len(roc) <= 1002
    assert (roc["fpr"].iloc[0], roc["tpr"].iloc[0]) == (0, 0)
    assert (roc["fpr"].iloc[-1], roc["tpr"].iloc[-1]) == (1, 1)
    at = np.searchsorted(-full_thr, -roc["threshold"].to_numpy())     # thresholds decrease
    np.testing.assert_array_equal(full_fpr[at], roc["fpr"])
    np.testing.assert_array_equal(full_tpr[at], roc["tpr"])
    gaps = np.hypot(np.diff(roc["fpr"]), np.diff(roc["tpr"]))
    assert gaps.max() < 0.01   # within ~1/max_points of the full curve


@st.composite
def frames(draw):
    """One test set, 1-3 models, 2-80 cases with both classes, coarse scores (many ties) and
    some missing."""
    n = draw(st.integers(2, 80))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    y[:2] = [0, 1]
    k = draw(st.integers(1, 3))
    parts = []
    for m in range(k):
        s = np.array(draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), float)
        s[np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))) & (np.arange(n) > 1)
          & (m == 1)] = np.nan
        parts.append(pd.DataFrame({"test_set": "t", "model": f"m{m}",
                                   "case_id": [f"c{i:03d}" for i in range(n)],
                                   "label": y.astype(np.int8), "histology": "ILC", "score": s,
                                   "score_source": "stored"}))
    return pd.concat(parts, ignore_index=True)


@settings(max_examples=60, deadline=None)
@given(frames(), st.floats(0, 1))
def test_pieces_against_brute_force(frame, target):
    table = benchmark.auc_summary(frame)
    ops = benchmark.sensitivity_at_specificity(frame, specificities=[target])
    roc = benchmark.roc_points(frame, max_points=5)
    for row, op in zip(table.itertuples(), ops.itertuples()):
        part = frame[(frame["model"] == row.model) & frame["score"].notna()]
        y, s = part["label"].to_numpy(), part["score"].to_numpy()
        if y.all() or not y.any():
            assert math.isnan(row.auc) and row.note.startswith("n/a")
            continue
        assert row.auc == pytest.approx(brute_auc(y, s), abs=1e-12)
        neg = s[y == 0]
        best = min(t for t in np.r_[np.unique(s), np.inf] if (neg < t).mean() >= target)
        assert op.threshold == best and op.sensitivity == (s[y == 1] >= best).mean()
        curve = roc[roc["model"] == row.model]          # thinned: still points of the curve
        fpr, tpr, thr = metrics.roc_curve(y, s)
        at = np.searchsorted(-thr, -curve["threshold"].to_numpy())
        assert (fpr[at] == curve["fpr"]).all() and (tpr[at] == curve["tpr"]).all()
        assert (curve[["fpr", "tpr"]].iloc[[0, -1]].to_numpy() == [[0, 0], [1, 1]]).all()
    pairs = benchmark.pairwise_tests(frame)
    assert len(pairs) in (0, table["auc"].notna().sum() * (table["auc"].notna().sum() - 1) // 2)
    tested = pairs["p"].notna()   # NaN with < 2 positives or negatives (no DeLong variance)
    assert (pairs.loc[tested, "p_holm"] >= pairs.loc[tested, "p"] - 1e-15).all()


def test_score_histograms_count_every_scored_case_in_its_group(bstore):
    one = benchmark.load_scores(bstore, models=["classical-dog", "sim-strong"],
                                test_sets=["test-all"], level="image")
    hist = benchmark.score_histograms(one, bins=12)
    scored = one[one["score"].notna()]
    groups = np.where(scored["label"] == 0, "healthy",
                      np.where(scored["histology"].isin(["ILC", "IDC"]), scored["histology"],
                               "other"))
    expected = scored.assign(group=groups).groupby(["model", "group"]).size()
    got = hist.groupby(["model", "group"])["count"].sum()
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False,
                                   check_dtype=False)
    assert hist.groupby(["model", "group"])["share"].sum().to_numpy() == pytest.approx(1)
    assert (hist.groupby(["model", "group"]).size() == 12).all()
    for model, part in scored.groupby("model"):                 # same edges as numpy
        counts, edges = np.histogram(part["score"], bins=12)
        h = hist[hist["model"] == model]
        assert h.groupby("bin_start")["count"].sum().to_numpy().tolist() == counts.tolist()
        assert sorted(h["bin_start"].unique()) == pytest.approx(edges[:-1])


def test_case_groups():
    got = benchmark.case_groups([0, 1, 1, 1, 1, 0],
                                ["none", "ILC", "IDC", "other", "unknown", "ILC"])
    assert got.tolist() == ["healthy", "ILC", "IDC", "other", "other", "healthy"]


def test_one_class_test_set_says_so_per_row(bstore):
    scores = benchmark.load_scores(bstore, models=["classical-dog", "sim-strong"],
                                   test_sets=["test-all", "healthy-only"], level="image")
    table = benchmark.auc_summary(scores)
    bad = table[table["test_set"] == "healthy-only"]
    assert bad["note"].eq("n/a: no positives").all() and bad["auc"].isna().all()
    assert table.loc[table["test_set"] == "test-all", "auc"].notna().all()
    wide = benchmark.auc_wide(table)
    assert wide["healthy-only AUC [95% CI]"].eq("n/a: no positives").all()
    assert wide["healthy-only n+ / n-"].str.startswith("0 / ").all()
    one = scores[scores["test_set"] == "healthy-only"]
    assert "one class only" in benchmark.class_note(one)
    assert benchmark.class_note(scores[scores["test_set"] == "test-all"]) is None
    assert benchmark.pairwise_tests(one).empty and benchmark.roc_points(one).empty
    ops = benchmark.sensitivity_at_specificity(one)
    assert ops["note"].eq("n/a: no positives").all() and ops["sensitivity"].isna().all()
    assert (ops["specificity"] >= ops["target_specificity"]).all()


def test_prediction_only_dataset(bstore):
    report = benchmark.benchmark_report(bstore, test_set="extpred", test_sets=["extpred"],
                                        models=["ext-breast"], level="breast")
    row = report.auc.iloc[0]
    assert (row.n_pos, row.n_neg) == (10, 50)
    cases = bstore.cases(test_set="extpred", level="breast")
    preds = bstore.predictions(models=["ext-breast"], level="breast", test_set="extpred")
    merged = cases.merge(preds, on="case_id")
    assert row.auc == pytest.approx(roc_auc_score(merged["label"], merged["score"]))
    with pytest.raises(InputError, match="image-level predictions"):
        benchmark.benchmark_report(bstore, test_set="extpred", models=["ext-breast"],
                                   level="exam")


def test_bad_input_raises_one_line(bstore):
    with pytest.raises(InputError, match="test set 'nope' does not exist"):
        benchmark.benchmark_report(bstore, test_set="nope")
    with pytest.raises(InputError, match="model 'gmic' has no predictions"):
        benchmark.benchmark_report(bstore, test_set="test-all", models=["gmic"])
    with pytest.raises(InputError, match="ci must be"):
        benchmark.benchmark_report(bstore, test_set="test-all", ci="wald")
    scores = benchmark.load_scores(bstore, models=["sim-strong"],
                                   test_sets=["test-all", "test-ILC"])
    with pytest.raises(InputError, match="one test set"):
        benchmark.pairwise_tests(scores)


# ---------------------------------------------------------------------------- CLI

def _cli(capsys, *argv):
    code = main(["report", "benchmark", *argv])
    out = capsys.readouterr()
    return code, out


def test_cli_json_equals_core(bench_store_path, bstore, capsys):
    code, out = _cli(capsys, "--db", str(bench_store_path), "--test-set", "test-all",
                     "--level", "breast", "--specificities", "0.98,0.9", "--json")
    assert code == 0 and out.err == ""
    doc = json.loads(out.out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert {k: doc[k] for k in ("test_set", "level", "how", "ci")} == {
        "test_set": "test-all", "level": "breast", "how": "max", "ci": "delong"}
    assert doc["test_sets"] == ["test-all", "test-ILC"]
    report = benchmark.benchmark_report(bstore, test_set="test-all", level="breast")
    assert [m["model"] for m in doc["models"]] == report.auc["model"].tolist()
    assert {"model", "test_set", "n_pos", "n_neg", "auc", "ci_low", "ci_high"} <= set(
        doc["models"][0])
    for got, want in zip(doc["models"], report.auc.to_dict("records")):
        for key in ("n_pos", "n_neg", "auc", "ci_low", "ci_high"):
            assert got[key] == want[key] or (got[key] is None and math.isnan(want[key]))
    assert [(p["model_a"], p["model_b"], p["z"], p["p"], p["p_holm"]) for p in doc["pairwise"]] \
        == list(report.pairwise[["model_a", "model_b", "z", "p", "p_holm"]].itertuples(
            index=False, name=None))
    assert len(doc["sensitivity_at_specificity"]) == 2 * len(report.models)


def test_cli_errors_and_help(bench_store_path, capsys):
    for argv, needle in ((["--test-set", "nope"], "test set 'nope' does not exist"),
                         (["--test-set", "test-all", "--models", "x"], "model 'x'"),
                         (["--test-set", "test-all", "--specificities", "90"], "not 90")):
        code, out = _cli(capsys, "--db", str(bench_store_path), *argv, "--json")
        assert code == 2 and out.out == ""
        assert out.err.count("\n") == 1 and out.err.startswith("error: ") and needle in out.err
    with pytest.raises(SystemExit):
        main(["report", "benchmark", "--help"])
    lines = capsys.readouterr().out.rstrip().splitlines()
    example = lines.index("example:")
    assert lines[example + 1].strip().startswith("python -m core report benchmark")
    assert lines[-1].endswith("--json")


def test_cli_one_class_and_infinite_threshold_are_valid_json(bench_store_path, capsys):
    code, out = _cli(capsys, "--db", str(bench_store_path), "--test-set", "healthy-only",
                     "--test-sets", "healthy-only", "--specificities", "1.0", "--json")
    assert code == 0
    doc = json.loads(out.out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert all(m["note"] == "n/a: no positives" and m["auc"] is None for m in doc["models"])
    assert doc["pairwise"] == []


# ---------------------------------------------------------------------------- page

def _page(**state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/benchmark.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _frames(at) -> dict[str, pd.DataFrame]:
    """The page's tables, recognised by their columns."""
    out = {}
    for df in at.dataframe:
        value = df.value
        if "n_excluded" in value.columns and "auc" in value.columns:
            out["auc"] = value
        elif "model_a" in value.columns:
            out["pairs"] = value
        elif "target_specificity" in value.columns:
            out["ops"] = value
        elif "model" in value.columns and len(value.columns) > 1:
            out.setdefault("wide", value)        # the first: the AUC table (then the unpaired)
    return out


def test_page_runs_on_the_demo_store(demo_env):
    at = _page()
    frames = _frames(at)
    # the demo store's three models (the classical baseline, the shipped demo GMIC and its ILC
    # child), each scored
    assert set(frames["auc"]["model"]) == {"classical-dog", "gmic-demo", "gmic-demo-ilc"}
    assert frames["auc"]["auc"].notna().all()
    assert len(frames["pairs"]) == 3  # three pairs of models: three paired DeLong tests


def test_page_numbers_equal_the_cli(bench_env, capsys):
    at = _page(test_set="test-all")
    at.segmented_control(key="bench_level").set_value("breast").run()
    assert not at.exception
    frames = _frames(at)
    code = main(["report", "benchmark", "--test-set", "test-all", "--level", "breast", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    cli_auc = pd.DataFrame(doc["models"])
    page_auc = frames["auc"]
    assert page_auc["model"].tolist() == cli_auc["model"].tolist()
    assert page_auc["test_set"].tolist() == cli_auc["test_set"].tolist()
    for col in ("n_pos", "n_neg", "n_excluded", "auc", "ci_low", "ci_high"):
        np.testing.assert_array_equal(page_auc[col], cli_auc[col].astype(float), col)  # exact
    assert page_auc["note"].tolist() == cli_auc["note"].tolist()
    wide = frames["wide"].set_index("model")
    for r in cli_auc[cli_auc["auc"].notna()].itertuples():
        ci = "CI n/a" if math.isnan(r.ci_low) else f"{r.ci_low:.3f}, {r.ci_high:.3f}"
        assert wide.loc[r.model, f"{r.test_set} AUC [95% CI]"] == f"{r.auc:.3f} [{ci}]"
        assert wide.loc[r.model, f"{r.test_set} n+ / n-"] == f"{r.n_pos} / {r.n_neg}"
    cli_pairs = pd.DataFrame(doc["pairwise"])
    # 6 models at breast level, ext-breast not run on test-all: 5 scored models, 10 pairs
    assert len(cli_pairs) == 10
    for col in ("model_a", "model_b", "z", "p", "p_holm"):     # p as shown: < 0.001, 0.426
        want = cli_pairs[col].map(p_text) if col in P_COLUMNS else cli_pairs[col]
        np.testing.assert_array_equal(frames["pairs"][col], want, col)
    cli_ops = pd.DataFrame(doc["sensitivity_at_specificity"])
    page_ops = frames["ops"]
    for col in ("model", "target_specificity", "sensitivity", "specificity", "tp", "fp", "note"):
        np.testing.assert_array_equal(page_ops[col], cli_ops[col], col)
    finite = np.isfinite(page_ops["threshold"])
    assert page_ops.loc[finite, "threshold"].tolist() == cli_ops.loc[finite, "threshold"].tolist()
    assert cli_ops.loc[~finite, "threshold"].isna().all()


def test_page_one_class_test_set(bench_env):
    at = _page(test_set="healthy-only")
    assert any("one class only" in i.value for i in at.info)
    assert "n/a: no positives" in set(_frames(at)["auc"]["note"])


def test_page_without_predictions(bench_store_path, tmp_path, monkeypatch):
    path = tmp_path / "empty.duckdb"
    shutil.copy(bench_store_path, path)
    open_store(path).write_tables({}, delete=[{"table": "predictions",
                                               "match": {"level": ["image", "breast", "exam"]}}])
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    at = _page()
    assert any("No model predictions" in i.value for i in at.info)
    assert not at.dataframe
