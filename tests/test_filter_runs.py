"""Filter batches: stored AUCs equal direct `filter_aucs` calls, the cache key, the process
pool, the summaries, the viewer's regions, the CLI and the Filters page."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from streamlit.testing.v1 import AppTest

from tests.conftest import copy_store, wait_for_job
from core.jobs.detached import latest_job
from core.jobs import filters as fr
from core.reports import filters as frep
from cli import main
from core.errors import InputError
from core.image.filters import METHODS, params_hash
from core.io.pixels import read_mask
from core.io.images import read_pixels
from core.image.regions import filter_aucs, healthy_region, pixel_auc
from core.store import open_store

REPO = Path(__file__).resolve().parents[1]
RING_IMAGE = "demo/E00005/R-MLO"     # its contralateral image is removed: a ring case
KEY = ["image_id", "method"]


@pytest.fixture(scope="module")
def base_path(tmp_path_factory) -> Path:
    """A 8-exam demo store (4 annotated cancer images) with one contralateral image removed."""
    from core.demo.build import build_demo
    from tests.conftest import SMALL_MIX

    path = tmp_path_factory.mktemp("filters") / "ilc.duckdb"
    store = open_store(path)
    build_demo(store, n_exams=8, seed=0, **SMALL_MIX)
    store.write_tables({}, delete=[{"table": "images", "match": {"image_id": "demo/E00005/L-MLO"}}])
    store.checkpoint()
    return path


@pytest.fixture
def fresh(base_path, tmp_path):
    return open_store(copy_store(base_path, tmp_path))


@pytest.fixture(scope="module")
def computed_path(base_path, tmp_path_factory) -> Path:
    """The base store after one serial run (all methods, defaults); read it, never write."""
    path = copy_store(base_path, tmp_path_factory.mktemp("computed"))
    fr.run_filters(open_store(path), test_set="demo", workers=1)
    open_store(path).checkpoint()
    return path


def direct(store, image_id: str) -> pd.DataFrame:
    """filter_aucs called by hand on the files the store names."""
    images = store.images(test_set="demo").set_index("image_id")
    row = images.loc[image_id]
    ann = store.annotations(image_id).iloc[-1]
    pixels = read_pixels(row.abs_path)
    tumour = read_mask(store.files_dir / ann.mask_path)
    side = {"L": "R", "R": "L"}[row.laterality]
    other_id = image_id.rsplit("/", 1)[0] + f"/{side}-{row.view}"
    other = read_pixels(images.loc[other_id].abs_path) if other_id in images.index else None
    healthy = healthy_region(tumour, pixels, view=row.view, other_image=other)
    depth = int(max(row.bit_depth, images.loc[other_id].bit_depth if other is not None else 0))
    return filter_aucs(pixels, tumour, healthy, other_pixels=other, bit_depth=depth)


# --- batch equals direct calls ----------------------------------------------------------------


def test_batch_equals_direct_filter_aucs(computed_path):
    store = open_store(computed_path, read_only=True)
    stored = frep.stored_results(store, test_set="demo")
    assert sorted(stored["image_id"].unique()) == [
        "demo/E00003/R-CC", "demo/E00003/R-MLO", "demo/E00005/R-CC", RING_IMAGE]
    assert len(stored) == 4 * len(METHODS)
    for image_id, got in stored.groupby("image_id"):
        want = direct(store, image_id)
        merged = got.merge(want, on="method", suffixes=("", "_want"))
        assert len(merged) == len(METHODS)
        np.testing.assert_allclose(merged["auc"], merged["auc_want"], rtol=0, atol=1e-12)
        for col in ("n_tumour", "n_healthy", "healthy_region", "params_hash"):
            assert (merged[col] == merged[f"{col}_want"]).all(), (image_id, col)
        assert set(got["annotation_version"]) == {1}
    kinds = stored.drop_duplicates("image_id").set_index("image_id")["healthy_region"]
    assert kinds[RING_IMAGE] == "ring" and (kinds.drop(RING_IMAGE) == "mirrored").all()


def test_original_auc_matches_sklearn_on_raw_pixels(computed_path):
    store = open_store(computed_path, read_only=True)
    detail = frep.image_detail(store, RING_IMAGE, test_set="demo", methods=["original"])
    t, h = detail.pixels[detail.tumour], detail.pixels[detail.healthy.mask]
    y = np.r_[np.ones(t.size), np.zeros(h.size)]
    stored = frep.stored_results(store, test_set="demo", methods=["original"])
    auc = stored.set_index("image_id").loc[RING_IMAGE, "auc"]
    assert auc == pytest.approx(roc_auc_score(y, np.r_[t, h]), abs=1e-12)


# --- the cache key ----------------------------------------------------------------------------


def test_second_run_computes_nothing_and_new_annotation_recomputes_one_image(fresh):
    first = fr.run_filters(fresh, test_set="demo", methods=["original", "M2", "M6"], workers=1)
    assert (first.n_images, first.n_computed, first.n_cached, first.n_rows) == (4, 4, 0, 12)
    again = fr.run_filters(fresh, test_set="demo", methods=["original", "M2", "M6"], workers=1)
    assert (again.n_computed, again.n_cached, again.n_rows) == (0, 4, 0)

    image_id = "demo/E00003/R-CC"
    mask = fresh.load_mask(fresh.annotations(image_id).iloc[-1]["mask_path"])
    grown = np.zeros_like(mask)
    grown[1:, :] = mask[:-1, :]            # shifted one row: a new outline, version 2
    assert fresh.add_annotation(image_id, grown | mask, source="drawn") == 2
    third = fr.run_filters(fresh, test_set="demo", methods=["original", "M2", "M6"], workers=1)
    assert (third.n_computed, third.n_cached, third.n_rows) == (1, 3, 3)
    results = frep.stored_results(fresh, test_set="demo", methods=["original", "M2", "M6"])
    versions = results.drop_duplicates("image_id").set_index("image_id")["annotation_version"]
    assert versions[image_id] == 2 and (versions.drop(image_id) == 1).all()
    assert results.set_index(KEY).loc[(image_id, "original"), "n_tumour"] == (grown | mask).sum()


def test_changed_params_or_ring_recompute_only_that(fresh):
    fr.run_filters(fresh, test_set="demo", methods=["M6"], workers=1)
    changed = fr.run_filters(fresh, test_set="demo", methods=["M6"],
                             params={"M6": {"radius": 3}}, workers=1)
    assert (changed.n_computed, changed.n_rows) == (4, 4)
    explicit = fr.run_filters(fresh, test_set="demo", methods=["M6"],  # default, spelt out
                              params={"M6": {"radius": 5, "amount": 1}}, workers=1)
    assert explicit.n_computed == 0
    ring = fr.run_filters(fresh, test_set="demo", methods=["M6"], ring_px=10, workers=1)
    assert ring.n_computed == 4
    wide = frep.stored_results(fresh, test_set="demo", methods=["M6"], ring_px=10)
    narrow = frep.stored_results(fresh, test_set="demo", methods=["M6"])
    both = wide.merge(narrow, on=KEY, suffixes=("_10", "_20")).set_index("image_id")
    assert both.loc[RING_IMAGE, "n_healthy_10"] < both.loc[RING_IMAGE, "n_healthy_20"]
    mirrored = both.drop(RING_IMAGE)
    assert (mirrored["auc_10"] == mirrored["auc_20"]).all()   # no ring: same numbers


def test_result_key():
    assert fr.result_key("M6") == params_hash("M6")
    assert fr.result_key("M6", {"radius": 5}) == params_hash("M6")
    assert fr.result_key("M6", ring_px=20) == params_hash("M6")
    keys = {fr.result_key("M6"), fr.result_key("M6", ring_px=10), fr.result_key("M6", ring_mm=4),
            fr.result_key("M6", ring_mm=2), fr.result_key("M6", {"radius": 3}),
            fr.result_key("M1")}
    assert len(keys) == 6 and all(len(k) == 12 for k in keys)
    assert fr.result_key("M6", ring_mm=4) == fr.result_key("M6", ring_mm=4.0, ring_px=7)


# --- the pool ---------------------------------------------------------------------------------


def test_process_pool_equals_serial(base_path, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    serial = open_store(copy_store(base_path, tmp_path / "a"))
    pooled = open_store(copy_store(base_path, tmp_path / "b"))
    calls = []
    a = fr.run_filters(serial, test_set="demo", workers=1)
    b = fr.run_filters(pooled, test_set="demo", workers=2, chunk_images=3,
                       progress=lambda d, t, m="": calls.append((d, t)))
    assert (a.n_computed, a.n_rows) == (b.n_computed, b.n_rows) == (4, 4 * len(METHODS))
    assert calls[0] == (0, 4) and calls[-1] == (4, 4) and len(calls) == 5
    left = frep.stored_results(serial, test_set="demo").sort_values(KEY, ignore_index=True)
    right = frep.stored_results(pooled, test_set="demo").sort_values(KEY, ignore_index=True)
    pd.testing.assert_frame_equal(left, right)
    assert not list((pooled.files_dir / "runs").iterdir())    # result folders cleaned up


def test_failed_image_is_reported_and_the_rest_stored(fresh):
    mask_path = fresh.files_dir / fresh.annotations("demo/E00005/R-CC").iloc[-1]["mask_path"]
    mask_path.unlink()
    run = fr.run_filters(fresh, test_set="demo", methods=["original"], workers=1)
    assert (run.n_computed, run.n_failed, run.n_rows) == (3, 1, 3)
    assert run.failures[0][0] == "demo/E00005/R-CC"
    stored = frep.stored_results(fresh, test_set="demo", methods=["original"])
    assert "demo/E00005/R-CC" not in set(stored["image_id"]) and len(stored) == 3


def test_bad_input(base_path, fresh):
    with pytest.raises(InputError, match="read-only"):
        fr.run_filters(open_store(base_path, read_only=True), test_set="demo")
    with pytest.raises(InputError, match="M9"):
        fr.plan_filter_run(fresh, test_set="demo", methods=["M9"])
    with pytest.raises(InputError, match="no parameter sigma"):
        fr.plan_filter_run(fresh, test_set="demo", methods=["M6"], params={"M6": {"sigma": 2}})
    with pytest.raises(InputError, match="M8"):
        fr.plan_filter_run(fresh, test_set="demo", methods=["M6"], params={"M8": {}})
    with pytest.raises(InputError, match="workers"):
        fr.run_filters(fresh, test_set="demo", workers=0)
    with pytest.raises(InputError, match="does not exist"):
        fr.run_filters(fresh, test_set="nope")
    with pytest.raises(InputError, match="ring_mm"):
        fr.plan_filter_run(fresh, test_set="demo", ring_mm=-1)


# --- summaries and the viewer -----------------------------------------------------------------


def test_summarize_by_hand():
    results = pd.DataFrame({
        "method": ["M2", "original", "M2", "original", "M2", "M7"],
        "histology": ["ILC", "ILC", "IDC", "IDC", "ILC", "ILC"],
        "auc": [0.9, 0.4, 0.6, np.nan, 0.3, 0.5]})
    table = frep.summarize(results)
    assert table["method"].tolist() == ["original", "M2", "M7"]       # METHODS order
    row = table.set_index("method").loc["M2"]
    assert (row.n_images, row.mean_auc, row.median_auc) == (3, pytest.approx(0.6), 0.6)
    assert table.set_index("method").loc["original", "n_images"] == 1  # NaN not counted
    by = frep.summarize(results, by=["histology"]).set_index(["histology", "method"])
    assert by.loc[("ILC", "M2"), "mean_auc"] == pytest.approx(0.6)
    assert by.loc[("IDC", "M2"), "n_images"] == 1
    assert frep.summarize(results.iloc[:0]).empty


def test_viewer_regions_agree_with_the_stored_aucs(computed_path):
    store = open_store(computed_path, read_only=True)
    stored = frep.stored_results(store, test_set="demo").set_index(KEY)
    for image_id, label in ((RING_IMAGE, "20-px ring"),
                            ("demo/E00003/R-CC", "mirrored from the contralateral image")):
        detail = frep.image_detail(store, image_id, test_set="demo")
        assert detail.healthy_label == label
        assert (detail.other_pixels is None) == (image_id == RING_IMAGE)
        for code, (t, h) in frep.region_values(detail).items():
            assert pixel_auc(t, h).auc == pytest.approx(stored.loc[(image_id, code), "auc"],
                                                        abs=1e-9)
            assert (t.size, h.size) == tuple(stored.loc[(image_id, code),
                                                        ["n_tumour", "n_healthy"]])
        hist = frep.region_histograms(detail, bins=16)
        sums = hist.groupby(["method", "region"])["share"].sum()
        np.testing.assert_allclose(sums, 1.0)
        roc = frep.region_roc(detail, max_pixels=50, seed=3)
        for code, curve in roc.groupby("method"):
            assert curve["auc"].iloc[0] == pytest.approx(stored.loc[(image_id, code), "auc"])
            assert (curve["fpr"].iloc[[0, -1]].tolist(), curve["tpr"].iloc[[0, -1]].tolist()) \
                == ([0, 1], [0, 1])
            assert np.all(np.diff(curve["fpr"]) >= 0)
    ring = frep.image_detail(store, RING_IMAGE, test_set="demo", methods=["M2"], ring_mm=4)
    assert ring.healthy_label.startswith("4-mm ring")
    with pytest.raises(InputError, match="no annotation"):
        frep.image_detail(store, "demo/E00001/L-CC", test_set="demo")


# --- CLI --------------------------------------------------------------------------------------


def run_cli(argv, capsys):
    code = main(["filters", "run", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_runs_missing_then_reports(fresh, capsys):
    db = ["--db", str(fresh.path), "--test-set", "demo"]
    code, out, err = run_cli([*db, "--methods", "M2,M6", "--workers", "1", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert [m["method"] for m in doc["methods"]] == ["original", "M2", "M6"]
    assert doc["run"]["n_computed"] == 4 and doc["run"]["n_rows"] == 12
    table = frep.filter_summary(open_store(fresh.path, read_only=True), test_set="demo",
                              methods=["original", "M2", "M6"])
    for got, (_, want) in zip(doc["methods"], table.iterrows()):
        assert got["n_images"] == want.n_images == 4
        assert got["mean_auc"] == pytest.approx(want.mean_auc, abs=1e-12)
        assert got["median_auc"] == pytest.approx(want.median_auc, abs=1e-12)
    code, out, _ = run_cli([*db, "--methods", "M2,M6", "--json"], capsys)
    assert code == 0 and json.loads(out)["run"]["n_computed"] == 0
    code, out, _ = run_cli([*db, "--methods", "M6", "--param", "M6.radius=3", "--ring-mm", "4",
                            "--workers", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["run"]["n_computed"] == 4


def test_cli_errors_and_help(fresh, capsys):
    db = ["--db", str(fresh.path)]
    for argv, match in (([*db, "--test-set", "demo", "--methods", "M9"], "M9"),
                        ([*db, "--test-set", "nope"], "does not exist"),
                        ([*db, "--test-set", "demo", "--param", "M6radius"], "CODE.NAME=VALUE"),
                        ([*db, "--test-set", "demo", "--param", "M6.sigma=2"], "sigma"),
                        ([*db, "--test-set", "demo", "--ring-mm", "0"], "ring_mm")):
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and out == "" and err.startswith("error:") and match in err
        assert len(err.strip().splitlines()) == 1
    for argv in (["--ring-px", "5", "--ring-mm", "2"], ["--workers", "0"]):
        with pytest.raises(SystemExit) as usage:
            run_cli([*db, "--test-set", "demo", *argv], capsys)
        assert usage.value.code == 2
    with pytest.raises(SystemExit):
        main(["filters", "run", "--help"])
    help_text = capsys.readouterr().out
    assert help_text.rstrip().splitlines()[-2].strip().startswith("python -m core filters run")


def test_cli_failed_image_exits_1_after_the_report(fresh, capsys):
    (fresh.files_dir / fresh.annotations(RING_IMAGE).iloc[-1]["mask_path"]).unlink()
    code, out, err = run_cli(["--db", str(fresh.path), "--test-set", "demo", "--methods", "M2",
                              "--workers", "1", "--json"], capsys)
    assert code == 1
    assert json.loads(out)["run"]["failures"][0]["image_id"] == RING_IMAGE
    assert f"failed: {RING_IMAGE}" in err and "error: 1 of 4 image(s) failed" in err


# --- the page ---------------------------------------------------------------------------------


def open_page(test_set: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    if test_set:
        at.sidebar.selectbox(key="test_set").select(test_set)
    at.switch_page("pages/filters.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_on_the_demo_store(demo_env):
    at = open_page()
    assert at.title[0].value == "Filters"
    assert any("No stored results" in i.value for i in at.info)  # the shared store: nothing run
    assert not at.button(key="filters_run").disabled
    assert len(at.image) >= len(METHODS)          # the viewer still works, computed on the fly
    assert any("Regions compared" in m.value for m in at.markdown)    # the regions panel


def test_page_numbers_equal_the_cli_and_run_button_stores(base_path, tmp_path, monkeypatch,
                                                          capsys):
    path = copy_store(base_path, tmp_path)
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = open_page("demo")
    assert any("0 of 4" in m.value for m in at.markdown)
    at.button(key="filters_run").click().run()   # the batch, from the page, in its own process
    assert not at.exception, [e.value for e in at.exception]
    run = latest_job(open_store(path), "filters", test_set="demo")
    assert run is not None and run.status in ("queued", "running", "done")
    at.run()                                      # a rerun of the page does not stop it
    del at                                        # nor does the session's end
    assert wait_for_job(path, run.run_id).status == "done"
    at = open_page("demo")                        # a new session sees it finished
    assert any("4 of 4" in m.value for m in at.markdown)
    assert any(run.run_id in c.value and "done" in c.value for c in at.caption)
    shown = at.dataframe[0].value
    code, out, _ = run_cli(["--db", str(path), "--test-set", "demo", "--json"], capsys)
    assert code == 0 and json.loads(out)["run"]["n_computed"] == 0  # the page stored them all
    cli = pd.DataFrame(json.loads(out)["methods"])
    # the page splits by histology as its chart does; pooled back, it is the CLI's table
    pooled = shown.assign(total=shown["mean_auc"] * shown["n_images"]).groupby(
        "method", sort=False)[["total", "n_images"]].sum()
    assert pooled.index.tolist() == cli["method"].tolist()
    assert pooled["n_images"].tolist() == cli["n_images"].tolist()
    np.testing.assert_allclose(pooled["total"] / pooled["n_images"], cli["mean_auc"], atol=1e-12)
    at.segmented_control(key="filters_layout").set_value("facet").run()
    at.segmented_control(key="filters_histology").set_value("ILC").run()
    assert not at.exception
    assert at.dataframe[0].value["n_images"].tolist() == [2] * len(METHODS)


def test_page_in_demo_mode_disables_run_but_shows_results(base_path, tmp_path, monkeypatch):
    path = copy_store(base_path, tmp_path)
    fr.run_filters(open_store(path), test_set="demo", methods=["original", "M2"], workers=1)
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    monkeypatch.setenv("ILCSCOPE_MODE", "demo")
    at = open_page("demo")
    at.pills(key="filters_methods").set_value(["M2"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.button(key="filters_run").disabled
    assert any("disabled in the hosted demo" in i.value for i in at.info)
    table = at.dataframe[0].value                     # per histology, as the chart splits it
    assert table.groupby("method", sort=False)["n_images"].sum().to_dict() == {"original": 4,
                                                                              "M2": 4}
