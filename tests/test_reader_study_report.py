"""core.reports.mrmc, ``report mrmc`` and the Reader-study page: the report equals
`core.stats.mrmc_test` on the array built by hand from the store's rows, reader AUCs and ROC
points meet brute force, subgroups and levels pick the right cases, the page's numbers equal
the CLI's JSON, and bad input is one line."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cli import main
from core.errors import InputError
from core.importers.reader_study import import_reader_study
from core.reports import mrmc
from core.reports.scores import model_scores
from core.stats import model_vs_readers, mrmc_test, sample_size
from core.store import open_store
from tests.conftest import REPO, copy_store
from ui.tables import P_COLUMNS, p_text
from ui.text import md_escape

PILOT = "pilot"                        # image level, the demo's 128 images, store cases
READERS = ("p1", "p2", "p3", "p4")
MODALITIES = ("unaided", "aided-by-gmic-demo", "second-opinion")
OWN = "own-cases"                      # an iMRMC-like study of cases the store does not hold
SOLO = "solo"                          # one reader: fixed readers only
SKIPPED = 9                            # p4 did not read the first 9 images in second-opinion


def brute_auc(y, s):
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return ((pos > neg) + 0.5 * (pos == neg)).mean()


def _ratings(truth: np.ndarray, rng) -> dict[tuple[str, str], np.ndarray]:
    """BI-RADS-like 1-5 ratings (many ties): a shared case effect, reader skill, aid helps."""
    case = rng.normal(size=truth.size)
    out = {}
    for i, reader in enumerate(READERS):
        for j, modality in enumerate(MODALITIES):
            z = (0.8 + 0.3 * i + 0.5 * (j > 0)) * truth + 0.6 * case + rng.normal(size=truth.size)
            out[reader, modality] = np.digitize(z, [-0.5, 0.3, 1.0, 1.8]) + 1.0
    return out


@pytest.fixture(scope="module")
def study_store(demo_store_path, tmp_path_factory):
    """The demo store plus ``pilot`` (gmic-demo added as a fixed reader, p4 missing reads in
    second-opinion) and ``own-cases`` (its own case ids); returns (path, the pilot's rows)."""
    tmp = tmp_path_factory.mktemp("mrmc")
    path = copy_store(demo_store_path, tmp / "store")
    store = open_store(path)
    images = store.cases(level="image")
    truth = images["label"].to_numpy()
    rows = [dict(reader=r, modality=m, case=c, rating=x, truth=t)
            for (r, m), values in _ratings(truth, np.random.default_rng(5)).items()
            for k, (c, x, t) in enumerate(zip(images["case_id"], values, truth))
            if not (r == "p4" and m == MODALITIES[2] and k < SKIPPED)]
    pd.DataFrame(rows).to_csv(tmp / "pilot.csv", index=False)
    import_reader_study(store, tmp / "pilot.csv", study=PILOT, level="image",
                        models=["gmic-demo"], model_modality="unaided")
    rng = np.random.default_rng(9)
    own_truth = (np.arange(40) % 4 == 0).astype(int)
    own = [dict(reader=r, modality=m, case=f"c{k:02d}", rating=float(rng.normal() + t * (1 + j)),
                truth=t) for r in ("a", "b", "c") for j, m in enumerate(("unaided", "aided"))
           for k, t in enumerate(own_truth)]
    pd.DataFrame(own).to_csv(tmp / "own.csv", index=False)
    import_reader_study(store, tmp / "own.csv", study=OWN, store_cases=False)
    pd.DataFrame(own).query("reader == 'a'").to_csv(tmp / "solo.csv", index=False)
    import_reader_study(store, tmp / "solo.csv", study=SOLO, store_cases=False)
    store.checkpoint()
    return path, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def store(study_store):
    return open_store(study_store[0], read_only=True)


def hand_array(rows: pd.DataFrame, modalities) -> tuple[np.ndarray, np.ndarray, list, list]:
    """(ratings (r, t, c), truth, readers, cases) by loops over the store's long rows."""
    rad = rows[(rows["reader_kind"] == "radiologist") & rows["modality"].isin(modalities)]
    readers, cases = sorted(set(rad["reader"])), sorted(set(rad["case_id"]))
    ratings = np.full((len(readers), len(modalities), len(cases)), np.nan)
    truth = {}
    for r in rad.itertuples():
        ratings[readers.index(r.reader), list(modalities).index(r.modality),
                cases.index(r.case_id)] = r.rating
        truth[r.case_id] = r.truth
    return ratings, np.array([truth[c] for c in cases]), readers, cases


# ---------------------------------------------------------------------------- the report

@pytest.mark.parametrize("method,cov,analysis", [
    ("or", "jackknife", "rrrc"), ("or", "delong", "frrc"), ("or", "bootstrap", "rrfc"),
    ("dbm", "jackknife", "rrrc")])
def test_report_equals_mrmc_test_on_the_hand_built_array(store, study_store, method, cov,
                                                          analysis):
    pair = MODALITIES[:2]
    report = mrmc.mrmc_report(store, study=PILOT, modalities=pair, method=method, cov=cov,
                              analysis=analysis, n_boot=200, seed=4)
    ratings, truth, readers, cases = hand_array(store.study_reads(PILOT), pair)
    assert report.data.case_ids == tuple(cases) and report.data.readers == tuple(readers)
    assert len(cases) == 128 and readers == list(READERS)      # gmic-demo is a fixed reader
    np.testing.assert_array_equal(report.data.ratings, ratings)
    np.testing.assert_array_equal(report.data.truth, truth)
    ref = mrmc_test(ratings, truth, modalities=pair, readers=readers, method=method, cov=cov,
                    analysis=analysis, n_boot=200, seed=4)
    res = report.result
    assert (res.statistic, res.df1, res.df2, res.p) == (ref.statistic, ref.df1, ref.df2, ref.p)
    assert (res.components, res.mean_squares) == (ref.components, ref.mean_squares)
    pd.testing.assert_frame_equal(res.differences, ref.differences)
    pd.testing.assert_frame_equal(res.modality_auc, ref.modality_auc)
    assert report.sentence == ref.summary()
    pd.testing.assert_frame_equal(report.sample_size, sample_size(
        ref, effect=0.05, power=0.8, analysis=analysis, n_readers=mrmc.PLAN_READERS))
    # each reader's AUC against brute force on the CSV's rows (not the store's)
    csv = study_store[1]
    table = report.reader_auc.set_index("reader")
    for (reader, modality), part in csv[csv["modality"].isin(pair)].groupby(["reader",
                                                                           "modality"]):
        assert table.loc[reader, modality] == pytest.approx(
            brute_auc(part["truth"].to_numpy(), part["rating"].to_numpy()), abs=1e-12)
    np.testing.assert_array_equal(table["change"], table[pair[1]] - table[pair[0]])


def test_missing_reads_are_nan_and_delong_allows_them(store, study_store):
    report = mrmc.mrmc_report(store, study=PILOT, cov="delong")
    data = report.data
    assert data.modalities == ("unaided", "aided-by-gmic-demo", "second-opinion")
    ratings, truth, readers, cases = hand_array(store.study_reads(PILOT), data.modalities)
    np.testing.assert_array_equal(data.ratings, ratings)
    assert data.n_missing == SKIPPED and np.isnan(data.ratings[3, 2, :SKIPPED]).all()
    assert any(f"{SKIPPED} of" in n for n in data.notes)
    ref = mrmc_test(ratings, truth, modalities=data.modalities, readers=readers, cov="delong")
    assert (report.result.statistic, report.result.p) == (ref.statistic, ref.p)
    read = ~np.isnan(ratings[3, 2])                 # p4's AUC on the cases p4 read
    assert report.reader_auc.set_index("reader").loc["p4", "second-opinion"] == pytest.approx(
        brute_auc(truth[read], ratings[3, 2, read]), abs=1e-12)
    assert "change" not in report.reader_auc          # three modalities: no single change
    with pytest.raises(InputError, match="missing reads"):   # the jackknife needs them all
        mrmc.mrmc_report(store, study=PILOT)


def test_roc_points_trace_each_readers_auc(store):
    report = mrmc.mrmc_report(store, study=PILOT, modalities=MODALITIES[:2])
    auc = report.reader_auc.set_index("reader")
    for (reader, modality), curve in report.roc.groupby(["reader", "modality"]):
        fpr, tpr = curve["fpr"].to_numpy(), curve["tpr"].to_numpy()
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
        area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)    # trapezoids = Mann-Whitney
        assert area == pytest.approx(auc.loc[reader, modality], abs=1e-12)
    assert len(report.roc.groupby(["reader", "modality"])) == 8


def test_coarser_level_takes_each_breasts_highest_rating(store, study_store):
    data = mrmc.load_study(store, PILOT, level="breast", modalities=MODALITIES[:2])
    csv = study_store[1]
    csv = csv[csv["modality"].isin(MODALITIES[:2])].copy()
    images = store.cases(level="image").set_index("case_id")
    csv["breast"] = csv["case"].map(images["exam_id"] + "/" + images["laterality"])
    top = csv.groupby(["reader", "modality", "breast"])["rating"].max()
    assert data.case_ids == tuple(sorted(csv["breast"].unique())) and len(data.case_ids) == 64
    for (reader, modality, breast), value in top.items():
        assert data.ratings[data.readers.index(reader), data.modalities.index(modality),
                            data.case_ids.index(breast)] == value
    labels = store.cases(level="breast").set_index("case_id")["label"]
    np.testing.assert_array_equal(data.truth, labels.loc[list(data.case_ids)].to_numpy())
    assert any("highest" in n for n in data.notes)
    assert mrmc.study_levels(store, PILOT) == ["image", "breast", "exam"]
    assert mrmc.study_levels(store, OWN) == ["exam"]


@pytest.mark.parametrize("subgroup", ["ILC", "dense"])
def test_subgroups_keep_the_right_cases(store, subgroup):
    data = mrmc.load_study(store, PILOT, modalities=MODALITIES[:2], subgroup=subgroup)
    cases = store.cases(level="image")
    if subgroup == "ILC":        # ILC cancers against every healthy image (as test-ILC)
        keep = cases[(cases["label"] == 0) | (cases["histology"] == "ILC")]
        assert set(keep["histology"]) == {"ILC", "none"}
    else:                        # heterogeneously or extremely dense
        keep = cases[cases["density"].isin([2, 3])]
    assert data.case_ids == tuple(sorted(keep["case_id"]))
    assert 0 < len(data.case_ids) < 128 and data.truth.sum() >= 2
    full = mrmc.load_study(store, PILOT, modalities=MODALITIES[:2])
    at = [full.case_ids.index(c) for c in data.case_ids]
    np.testing.assert_array_equal(data.ratings, full.ratings[:, :, at])
    assert any(f"{128 - len(at)} cases left out" in n for n in data.notes)


def test_model_against_readers(store):
    pair = MODALITIES[:2]
    report = mrmc.mrmc_report(store, study=PILOT, modalities=pair, model="gmic-demo",
                              model_modality="unaided")
    data = report.data
    # gmic-demo is a fixed reader of the study: its reads are its image scores
    scores = model_scores(store, models=["gmic-demo"], level="image").set_index("case_id")
    mine = scores["score"].loc[list(data.case_ids)].to_numpy()
    np.testing.assert_allclose(data.fixed["gmic-demo"].to_numpy(), mine)
    ref = model_vs_readers(data.ratings[:, 0], mine, data.truth, readers=data.readers,
                           model="gmic-demo")
    got = report.comparison
    assert (got.model_auc, got.diff, got.se, got.df, got.p) == pytest.approx(
        (ref.model_auc, ref.diff, ref.se, ref.df, ref.p), abs=1e-12)
    assert got.model_auc == pytest.approx(brute_auc(data.truth, mine), abs=1e-12)
    # a store model that is not a reader of the study: its scores joined by case id
    other = mrmc.mrmc_report(store, study=PILOT, modalities=pair, model="classical-dog",
                             model_modality="aided-by-gmic-demo").comparison
    dog = model_scores(store, models=["classical-dog"], level="image").set_index("case_id")
    ref = model_vs_readers(data.ratings[:, 1], dog["score"].loc[list(data.case_ids)],
                           data.truth, readers=data.readers, model="classical-dog")
    assert (other.model_auc, other.diff, other.p) == pytest.approx(
        (ref.model_auc, ref.diff, ref.p), abs=1e-12)
    # fixed readers first, then the model that aided, then the rest
    assert mrmc.model_options(store, PILOT) == ["gmic-demo", "classical-dog", "gmic-demo-ilc"]
    assert mrmc.model_options(store, "demo-reader-study") == [
        "gmic-demo", "classical-dog", "gmic-demo-ilc"]
    assert store.prediction_levels()["model"].tolist()[0] == "classical-dog"   # not by name
    assert mrmc.model_options(store, OWN) == []


def test_own_cases_study(store):
    report = mrmc.mrmc_report(store, study=OWN)
    assert report.data.modalities == ("unaided", "aided")          # unaided first
    assert (report.result.n_pos, report.result.n_neg) == (10, 30)
    assert report.data.readers == ("a", "b", "c")
    flipped = mrmc.mrmc_report(store, study=OWN, modalities=["aided", "unaided"])
    assert flipped.result.diff == pytest.approx(-report.result.diff, abs=1e-15)
    assert flipped.result.p == pytest.approx(report.result.p, abs=1e-12)


def test_one_reader_takes_fixed_readers_and_plans_nothing(store):
    report = mrmc.mrmc_report(store, study=SOLO, analysis="frrc")
    ratings, truth, readers, _ = hand_array(store.study_reads(SOLO), ("unaided", "aided"))
    ref = mrmc_test(ratings, truth, modalities=("unaided", "aided"), readers=readers,
                    analysis="frrc")
    assert (report.result.statistic, report.result.p) == (ref.statistic, ref.p)
    assert report.sample_size.empty and list(report.sample_size) == ["n_readers", "n_cases",
                                                                      "power"]
    with pytest.raises(InputError, match="1 reader"):
        mrmc.mrmc_report(store, study=SOLO)


def test_bad_input_is_one_line(store):
    cases = [
        (dict(study="nope"), "reader study 'nope' does not exist; known: demo-reader-study"),
        (dict(study=PILOT, modalities=["unaided", "x"]), "modality 'x' is not in reader study"),
        (dict(study=PILOT, modalities=["unaided"]), "at least 2 different modalities"),
        (dict(study=PILOT, modalities=["unaided", "unaided"]), "at least 2 different"),
        (dict(study=PILOT, modalities=MODALITIES[:2], subgroup="IDC"), "subgroup 'IDC'"),
        (dict(study=OWN, subgroup="ILC"), "reads cases of its own"),
        (dict(study=OWN, level="image"), "level"),
        (dict(study=PILOT, modalities=MODALITIES[:2], model="nope"), "model 'nope'"),
        (dict(study=OWN, model="gmic-demo"), "not a fixed reader"),
        (dict(study=PILOT, modalities=MODALITIES[:2], model="gmic-demo",
              model_modality="second-opinion"), "not among the analysed modalities"),
        (dict(study=PILOT, modalities=MODALITIES[:2], method="dbm", cov="delong"), "cov"),
        (dict(study=PILOT, modalities=MODALITIES[:2], effect=2.0), "effect"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(InputError, match=None) as info:
            mrmc.mrmc_report(store, **kwargs)
        message = str(info.value)
        assert needle in message and "\n" not in message, (kwargs, message)


# ---------------------------------------------------------------------------- CLI

def _cli(capsys, *argv):
    code = main(["report", "mrmc", *argv])
    return code, capsys.readouterr()


def test_cli_json_equals_the_report(study_store, store, capsys):
    code, out = _cli(capsys, "--db", str(study_store[0]), "--study", PILOT, "--modalities",
                     "unaided,aided-by-gmic-demo", "--level", "breast", "--model", "gmic-demo",
                     "--json")
    assert code == 0 and out.err == ""
    doc = json.loads(out.out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    report = mrmc.mrmc_report(store, study=PILOT, modalities=MODALITIES[:2], level="breast",
                              model="gmic-demo")
    res = report.result
    assert doc["sentence"] == report.sentence
    assert (doc["level"], doc["modalities"], doc["readers"]) == (
        "breast", list(MODALITIES[:2]), list(READERS))
    assert doc["test"] == dict(statistic_name=res.statistic_name, statistic=res.statistic,
                               df1=res.df1, df2=res.df2, p=res.p)
    assert doc["components"] == res.components
    pd.testing.assert_frame_equal(pd.DataFrame(doc["reader_auc"]), report.reader_auc)
    pd.testing.assert_frame_equal(pd.DataFrame(doc["differences"]), res.differences)
    assert doc["model_vs_readers"]["p"] == report.comparison.p
    assert doc["model_vs_readers"]["sentence"] == report.comparison.summary()
    table = pd.DataFrame(doc["sample_size"]["table"])
    pd.testing.assert_frame_equal(table.astype(float), report.sample_size.astype(float))


def test_cli_errors_and_help(study_store, capsys):
    db = str(study_store[0])
    for argv, needle in ((["--study", "nope"], "reader study 'nope' does not exist"),
                         (["--study", PILOT, "--modalities", "unaided"],
                          "--modalities must name at least 2"),
                         (["--study", OWN, "--subgroup", "dense"], "cases of its own"),
                         (["--study", PILOT, "--modalities", "unaided,aided-by-gmic-demo",
                           "--power", "1.5"], "--power"),
                         (["--study", PILOT], "missing reads")):
        code, out = _cli(capsys, "--db", db, *argv, "--json")
        assert code == 2 and out.out == "", out
        assert out.err.count("\n") == 1 and out.err.startswith("error: ") and needle in out.err
    with pytest.raises(SystemExit):
        main(["report", "mrmc", "--help"])
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[lines.index("example:") + 1].strip().startswith("python -m core report mrmc")
    assert lines[-1].endswith("--json")


# ---------------------------------------------------------------------------- page

def _page(**state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/reader_study.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _frames(at) -> dict[str, pd.DataFrame]:
    """The page's tables, by their columns."""
    names = {"change": "reader_auc", "readers_mean": "model_vs_readers",
             "modality_a": "differences", "ci_low": "modalities", "df1": "test",
             "component": "components", "n_readers": "sample_size"}
    out = {}
    for df in at.dataframe:
        name = next(v for k, v in names.items() if k in df.value.columns)
        out.setdefault(name, df.value)
    return out


def test_page_numbers_equal_the_cli(study_store, monkeypatch, capsys):
    monkeypatch.setenv("ILCSCOPE_DB", str(study_store[0]))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = _page(mrmc_study="demo-reader-study")
    frames = _frames(at)
    assert main(["report", "mrmc", "--study", "demo-reader-study", "--model", "gmic-demo",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert at.markdown[0].value == f"**{md_escape(doc['sentence'])}**"
    pd.testing.assert_frame_equal(frames["reader_auc"], pd.DataFrame(doc["reader_auc"]))
    for name in ("modality_auc", "differences"):
        page = frames["modalities" if name == "modality_auc" else name]
        cli = pd.DataFrame(doc[name])
        for col in cli.columns:    # exact, to the digit; p as the page writes it (< 0.001, 0.241)
            want = cli[col].map(p_text) if col in P_COLUMNS else cli[col]
            np.testing.assert_array_equal(page[col], want, f"{name}.{col}")
    test = frames["test"].iloc[0]
    assert (test["value"], test["df2"], test["p"]) == (
        doc["test"]["statistic"], doc["test"]["df2"], p_text(doc["test"]["p"]))
    assert dict(zip(frames["components"]["component"], frames["components"]["estimate"])) == \
        doc["components"]
    plan = pd.DataFrame(doc["sample_size"]["table"])
    np.testing.assert_array_equal(frames["sample_size"]["power"], plan["power"])
    mvr = frames["model_vs_readers"].iloc[0]
    assert (mvr["model"], mvr["model_auc"], mvr["p"]) == (
        "gmic-demo", doc["model_vs_readers"]["model_auc"], p_text(doc["model_vs_readers"]["p"]))


def test_page_shows_an_input_error_in_one_line(study_store, monkeypatch):
    monkeypatch.setenv("ILCSCOPE_DB", str(study_store[0]))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = _page(mrmc_study=PILOT, **{f"mrmc_modalities_{PILOT}": list(MODALITIES)})
    assert len(at.error) == 1 and "missing reads" in at.error[0].value    # the jackknife's
    assert "\n" not in at.error[0].value and not at.dataframe
    at.segmented_control(key="mrmc_cov").set_value("delong").run()
    assert not at.exception and not at.error
    assert "mean AUC" in at.markdown[0].value


def test_page_without_studies(demo_store_path, tmp_path, monkeypatch):
    path = copy_store(demo_store_path, tmp_path)
    from core.store import study_delete_plan

    open_store(path).write_tables({}, delete=study_delete_plan("demo-reader-study"))
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = _page()
    assert any("No reader study" in i.value for i in at.info) and not at.dataframe


# ---------------------------------------------------------------------------- charts

def test_chart_builders_on_hand_made_frames():
    from ui.charts import mrmc as charts

    long = pd.DataFrame({"reader": ["r1", "r1", "r2", "r2"], "modality": ["u", "a", "u", "a"],
                         "auc": [0.7, 0.8, 0.9, 0.85]})
    spec = charts.slope_chart(long, modalities=["u", "a"]).to_dict()      # validates the schema
    data = spec["datasets"]
    mean = next(rows for rows in data.values() if rows[0]["reader"] == charts.MEAN)
    assert [(r["modality"], r["auc"]) for r in mean] == [("u", pytest.approx(0.8)),
                                                         ("a", pytest.approx(0.825))]
    assert spec["layer"][0]["encoding"]["x"]["sort"] == ["u", "a"]
    roc = pd.DataFrame({"reader": "r1", "modality": ["u"] * 3 + ["a"] * 3,
                        "fpr": [0, 0.5, 1] * 2, "tpr": [0, 1, 1] * 2,
                        "threshold": [np.inf, 2, 1] * 2})
    spec = charts.roc_chart(roc, readers=["r1"], modalities=["u", "a"]).to_dict()
    assert [p["title"] for p in spec["hconcat"]] == ["u", "a"]
    assert all(r["threshold"] is None or math.isfinite(r["threshold"])   # JSON has no inf
               for rows in spec["datasets"].values() for r in rows if "threshold" in r)
    spec = charts.model_vs_readers_chart(long[long["modality"] == "u"], model="m",
                                         model_auc=0.95, readers_mean=0.8).to_dict()
    rules = next(rows for rows in spec["datasets"].values() if "what" in rows[0])
    assert [(r["what"], r["auc"]) for r in rules] == [("model: m", 0.95), (charts.MEAN, 0.8)]
