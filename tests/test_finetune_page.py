"""The Fine-tuning page (AppTest): a tiny run launched from the page trains in the background and
shows its loss curve and its AUC beside the parent's; a run is cancelled from the page; the
hosted demo shows the runs but not the launcher; Benchmark and Saliency open on a linked model."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.reports import training
from core.splits import create_splits
from core.store import open_store
from core.store.runs import get_run
from tests.conftest import copy_store
from models.demo.finetune import DEMO_RUN
from tests.test_training_report import training_store

REPO = Path(__file__).resolve().parents[1]
PAGE = "pages/finetune.py"


def _open(page: str = PAGE, **query) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.switch_page(page)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _charts_with(at, text: str) -> int:
    """How many Vega-Lite charts hold ``text`` in their spec or their (Arrow) datasets."""
    return sum(text in c.proto.spec or any(text.encode() in d.data.data for d in c.proto.datasets)
               for c in at.get("vega_lite_chart"))


def _table(at, column: str):
    """The first table on the page with ``column`` (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _wait(store, run_id: str, done, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done(get_run(store, run_id)):
            return
        time.sleep(0.5)
    pytest.fail(f"run {run_id} did not get there in {timeout_s} s: {get_run(store, run_id)}")


@pytest.fixture
def split_env(demo_store_path, tmp_path, monkeypatch) -> Path:
    path = copy_store(demo_store_path, tmp_path)
    # a quarter in test: the small demo's 6 cancers leave sp-test with 2 (a fifth leaves none)
    create_splits(open_store(path), test_set="demo", prefix="sp", seed=0,
                  fractions=(0.5, 0.25, 0.25))
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    return path


def _launched(store) -> str:
    """The one run the page launched (the demo store ships its own finished run)."""
    (run_id,) = [r for r in training.run_table(store)["run_id"] if r != DEMO_RUN]
    return run_id


def _fill(at, *, lrs: str, epochs: int, evaluate: list[str]) -> None:
    at.selectbox(key="ft_train_set").select("sp-train")
    at.selectbox(key="ft_val_set").select("sp-val")
    at.text_input(key="ft_lrs").input(lrs)
    at.number_input(key="ft_epochs").set_value(epochs)
    at.number_input(key="ft_batch").set_value(4)
    at.multiselect(key="ft_evaluate").set_value(evaluate)
    at.run()


def test_launch_a_tiny_run_see_its_curve_and_its_auc_beside_the_parent(split_env):
    at = _open()
    _fill(at, lrs="1e-4", epochs=1, evaluate=["sp-test"])
    assert at.button(key="ft_launch").label == "Launch 1 runs"
    at.button(key="ft_launch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Started 1 runs in the background" in s.value for s in at.success)
    store = open_store(split_env, read_only=True)
    run_id = _launched(store)
    _wait(store, run_id, lambda r: r["status"] != "running")
    assert get_run(store, run_id)["status"] == "done", get_run(store, run_id)["error"]
    at.run()
    assert not at.exception
    curves = training.loss_curves(store, run_ids=[run_id])
    assert len(curves) == 2                                  # 1 epoch x training, validation
    assert _charts_with(at, run_id) == 2, "no loss charts (training, validation) with the run"
    finished = _table(at, "benchmark")
    child = get_run(store, run_id)["params"]["child_model"]
    assert finished["run_id"].tolist() == [run_id, DEMO_RUN]               # newest first
    assert finished["child"].iat[0] == child and finished["parent"].iat[0] == "gmic-demo"
    report = training.finished_runs(store, test_sets=["sp-test"], run_ids=[run_id])
    assert finished["sp-test p (DeLong)"].iat[0] == f"{report['p'].iat[0]:.3g}"
    active = at.session_state["test_set"] if "test_set" in at.session_state else None
    assert finished["benchmark"].iat[0] == (f"benchmark?model={child}"     # the sidebar's set
                                            + (f"&test_set={active}" if active else ""))
    at = _open("pages/saliency.py", model=child)                      # where the link goes
    at.session_state["test_set"] = "sp-test"                          # the set it was scored on
    at.run()
    assert at.selectbox(key="saliency_model").value == child
    assert at.selectbox(key="saliency_compare").value == "gmic-demo"


def test_cancel_a_run_from_the_page(split_env):
    at = _open()
    _fill(at, lrs="1e-4", epochs=50, evaluate=[])
    at.button(key="ft_launch").click().run()
    store = open_store(split_env, read_only=True)
    run_id = _launched(store)
    at.run()                                                  # the fragment shows it running
    assert any(p.proto.text.startswith(("**1e-04 · full · running", "**1e-04 · full · queued"))
               for p in at.get("progress"))      # queued until its worker's first progress
    at.button(key=f"ft_cancel_{run_id}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    _wait(store, run_id, lambda r: r["status"] != "running")
    row = get_run(store, run_id)
    assert row["status"] == "cancelled" and row["params"].get("child_model") is None
    at.run()
    assert at.selectbox(key="ft_resume_pick").value == run_id   # offered for a resume


def test_a_run_whose_worker_is_gone_is_failed_and_offered_for_a_resume(split_env):
    """A 'running' run whose recorded worker process has exited (killed whole, or a restart)."""
    import json
    import socket
    import subprocess

    from core.jobs.launchers import process_identity
    from models.training.sweep import TrainRequest, create_runs
    from core.jobs.workers import LAUNCH_FILE

    store = open_store(split_env)
    (run_id,) = create_runs(store, TrainRequest(model_init="gmic-demo", mode="full",
                                                train_set="sp-train", val_set="sp-val",
                                                lrs=(1e-4,), epochs=2, batch_size=4))
    worker = subprocess.Popen(["sleep", "60"])
    record = {"launcher": "local", "pid": worker.pid, "host": socket.gethostname(),
              "identity": process_identity(worker.pid), "other_nodes": []}
    worker.kill()
    worker.wait()
    (store.files_dir / get_run(store, run_id)["folder"] / LAUNCH_FILE).write_text(json.dumps(record))
    assert get_run(store, run_id)["status"] == "running"
    at = _open()
    assert not at.toast and get_run(store, run_id)["status"] == "running"   # the page only reads
    table = next(d.value for d in at.dataframe if "state" in d.value.columns)
    assert table.set_index("run_id").at[run_id, "state"] == "worker gone"
    assert at.selectbox(key="ft_resume_pick").value == run_id
    assert not at.get("progress")                             # nothing shown as running


def test_demo_mode_shows_runs_but_no_launcher(demo_store_path, tmp_path, monkeypatch):
    path = training_store(demo_store_path, tmp_path)
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    monkeypatch.setenv("ILCSCOPE_MODE", "demo")
    at = _open()
    assert any("Launching fine-tuning runs is disabled in the hosted demo" in i.value
               for i in at.info)
    assert not [b for b in at.button if b.key == "ft_launch"]
    runs = _table(at, "eta")
    assert runs["run_id"].tolist() == ["train-b", "train-a", "train-c", "train-d"]
    assert at.button(key="ft_cancel_train-b").disabled          # read-only: nothing to cancel
    finished = _table(at, "benchmark")
    assert finished["run_id"].tolist() == ["train-a", "train-d"]
    link = finished["saliency"].iat[0]           # the sidebar's test set rides along when set
    active = at.session_state["test_set"] if "test_set" in at.session_state else None
    assert link == "saliency?model=gmic-ft-a" + (f"&test_set={active}" if active else "")


def test_benchmark_opens_on_a_linked_model_and_its_parent(demo_store_path, tmp_path, monkeypatch):
    path = training_store(demo_store_path, tmp_path)
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = _open("pages/benchmark.py", model="gmic-ft-a")
    at.session_state["test_set"] = "test-all"
    at.run()
    assert at.multiselect(key="bench_models").value == ["gmic-ft-a", "gmic-demo"]  # + parent
