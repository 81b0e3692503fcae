"""Detached jobs (`core.jobs.detached`): a filters or density run in its own process equals the
same run in this process; cancel, a killed worker and resume; bad input queues nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from core.errors import InputError
from core.jobs import detached
from core.jobs import filters as fr
from core.jobs.density import estimate_classical
from core.jobs.run_folder import RunFolder, request_cancel
from core.reports import filters as frep
from core.store import open_store
from core.store.runs import get_run
from tests.conftest import copy_store, wait_for_job

METHODS = ["original", "M2"]
FILTERS = {"test_set": "demo", "methods": METHODS, "params": {}, "ring_px": 20, "ring_mm": None,
           "malignant_only": True}


@pytest.fixture(scope="module")
def base_path(small_demo_path):
    """An 8-exam demo store: 4 annotated cancer images for the filters (copied, never written)."""
    return small_demo_path


@pytest.fixture(scope="module")
def reference(base_path, tmp_path_factory):
    """The filter results of the same run in this process (the reference)."""
    store = open_store(copy_store(base_path, tmp_path_factory.mktemp("reference")))
    fr.run_filters(store, **FILTERS, workers=1)
    return _stored(store)


def _stored(store) -> pd.DataFrame:
    return frep.stored_results(store, test_set="demo", methods=METHODS).sort_values(
        ["image_id", "method"], ignore_index=True)


def _running(db, run_id, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = detached.job_status(open_store(db), run_id)
        if state.status != "queued":
            return state
        time.sleep(0.05)
    raise AssertionError(f"{run_id} never started")


def test_a_detached_filters_job_equals_the_same_run_here(base_path, reference, tmp_path):
    db = copy_store(base_path, tmp_path)
    run_id = detached.start_job(open_store(db), "filters", FILTERS)
    row = get_run(open_store(db), run_id)
    assert row["kind"] == "filters" and row["params"] == FILTERS
    state = wait_for_job(db, run_id)
    assert (state.status, state.done, state.total) == ("done", 4, 4), state
    pd.testing.assert_frame_equal(_stored(open_store(db)), reference)
    assert detached.latest_job(open_store(db), "filters", test_set="demo").run_id == run_id


def test_a_detached_density_job_equals_the_same_run_here(base_path, tmp_path):
    here = open_store(copy_store(base_path, tmp_path / "here"))
    estimate_classical(here, test_set="demo", calibrate_on="label")
    db = copy_store(base_path, tmp_path / "there")
    params = {"source": "classical", "test_set": "demo", "method": "classical", "calibrate_on": "label"}
    run_id = detached.start_job(open_store(db), "density", params)
    assert wait_for_job(db, run_id).status == "done"
    cols = ["level", "case_id", "score", "category"]
    theirs = open_store(db).select("density", source="classical").sort_values(cols[:2], ignore_index=True)
    ours = here.select("density", source="classical").sort_values(cols[:2], ignore_index=True)
    pd.testing.assert_frame_equal(theirs[cols], ours[cols])
    assert get_run(open_store(db), run_id)["params"]["calibration"]["kind"] == "calibrated"


def test_cancel_then_resume_finishes_with_the_same_results(base_path, reference, tmp_path):
    db = copy_store(base_path, tmp_path)
    run_id = detached.start_job(open_store(db), "filters", FILTERS)
    assert _running(db, run_id).status == "running"
    request_cancel(open_store(db), run_id)
    state = wait_for_job(db, run_id)
    assert state.status == "cancelled", state
    assert detached.start_job(open_store(db), "filters", {}, resume=run_id) == run_id
    assert wait_for_job(db, run_id).status == "done"
    pd.testing.assert_frame_equal(_stored(open_store(db)), reference)


def test_a_killed_worker_shows_as_gone_without_a_write_and_resumes(base_path, reference, tmp_path):
    db = copy_store(base_path, tmp_path)
    run_id = detached.start_job(open_store(db), "filters", FILTERS)
    _running(db, run_id)
    folder = open_store(db).files_dir / get_run(open_store(db), run_id)["folder"]
    pid = json.loads((folder / detached.LAUNCH_RECORD).read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)                      # the worker's whole session
    deadline = time.monotonic() + 30
    while detached.job_status(open_store(db), run_id).status != "worker gone" and time.monotonic() < deadline:
        time.sleep(0.1)
    before = open_store(db).select("runs")
    assert detached.job_status(open_store(db), run_id).status == "worker gone"
    pd.testing.assert_frame_equal(open_store(db).select("runs"), before)   # the read wrote nothing
    assert get_run(open_store(db), run_id)["status"] == "running"
    detached.start_job(open_store(db), "filters", {}, resume=run_id)
    assert wait_for_job(db, run_id).status == "done"
    pd.testing.assert_frame_equal(_stored(open_store(db)), reference)


def test_bad_input_queues_nothing(base_path, tmp_path):
    store = open_store(copy_store(base_path, tmp_path))
    for kind, params, match in (("filters", FILTERS | {"methods": ["M9"]}, "M9"),
                                ("filters", FILTERS | {"test_set": "nope"}, "nope"),
                                ("density", {"source": "classical", "test_set": "demo",
                                             "method": "classical", "calibrate_on": "nope"}, "nope"),
                                ("train", {}, "does not run detached")):
        with pytest.raises(InputError, match=match):
            detached.start_job(store, kind, params)
    assert store.select("runs").empty
    with pytest.raises(InputError, match="not in this store"):
        detached.start_job(store, "filters", {}, resume="filters-nothing")


def test_the_worker_records_a_failure_in_the_row_and_its_log(base_path, tmp_path):
    """A queued run the checks never saw (an unknown method): the worker exits 2, the row says
    why on one line, the log holds the worker's output."""
    db = copy_store(base_path, tmp_path)
    run = RunFolder.queue(open_store(db), "filters", FILTERS | {"methods": ["original", "M9"]})
    out = subprocess.run([sys.executable, "-m", "core", "jobs", "work", run.run_id, "--db", str(db)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "M9" in out.stderr
    row = get_run(open_store(db), run.run_id)
    assert row["status"] == "failed" and "M9" in row["error"] and "\n" not in row["error"]
