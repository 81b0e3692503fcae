"""GMIC fine-tuning (models.training.sweep, models.training.recipe, models.training.data) and splits (core.splits).

References: splits against hand-counted strata; modes tensor by tensor against the parent;
checkpoints against the weights captured after each epoch; a resumed run against an
uninterrupted one; summaries against scikit-learn's AUC on the stored predictions.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from core.errors import InputError
from core.jobs.run_folder import RunCancelled, request_cancel
from core.splits import create_splits, split_exams, split_rules
from core.store import open_store
from core.store.runs import get_run
from models.networks.gmic import load_gmic_checkpoint
from models.inference.predict import DEMO_CHECKPOINT
from models.training.sweep import TrainRequest, launch_runs, parse_lrs, validate_request
from models.training.data import LabelledImages, augment, build_cache, epoch_sample, labelled_images
from models.training.recipe import FineTuneRecipe, LoopSettings, best_path, final_path, reset_to_default_init
from tests.conftest import copy_store

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- splits

def _exams(n_per_stratum: dict) -> pd.DataFrame:
    rows = []
    for (label, histology), n in n_per_stratum.items():
        rows += [{"exam_id": f"{histology}-{label}-{i:03d}", "label": label,
                  "histology": histology} for i in range(n)]
    return pd.DataFrame(rows)


def test_split_by_exam_stratified_and_reproducible():
    exams = _exams({(0, "none"): 10, (1, "ILC"): 3, (1, "IDC"): 5})
    out = split_exams(exams, fractions=(0.6, 0.2, 0.2), seed=4)
    assert sorted(out["exam_id"]) == sorted(exams["exam_id"])          # each exam once
    counts = out.groupby(["histology", "split"]).size().unstack(fill_value=0)
    # by hand: 10 -> 6/2/2; 3 -> 1.8/.6/.6 -> 1/0/0 + leftovers by remainder -> 2/1/0;
    # 5 -> 3/1/1
    assert counts.loc["none"].to_dict() == {"train": 6, "val": 2, "test": 2}
    assert counts.loc["ILC"].to_dict() == {"train": 2, "val": 1, "test": 0}
    assert counts.loc["IDC"].to_dict() == {"train": 3, "val": 1, "test": 1}
    shuffled = split_exams(exams.sample(frac=1, random_state=1), fractions=(0.6, 0.2, 0.2),
                           seed=4)
    pd.testing.assert_frame_equal(out, shuffled)                        # input order irrelevant
    other = split_exams(exams, fractions=(0.6, 0.2, 0.2), seed=5)
    assert not out["split"].equals(other["split"])
    rules = split_rules("x", out)
    assert set(rules) == {"x-train", "x-val", "x-test"}
    with pytest.raises(InputError, match="fractions"):
        split_exams(exams, fractions=(0.5, 0.2, 0.2))


def test_create_splits_stores_disjoint_test_sets(demo_store_path, tmp_path):
    store = open_store(copy_store(demo_store_path, tmp_path))
    table = create_splits(store, test_set="demo", prefix="sp", seed=0)
    sets = {n: set(store.exams(test_set=n)["exam_id"]) for n in ("sp-train", "sp-val", "sp-test")}
    assert not (sets["sp-train"] & sets["sp-val"]) and not (sets["sp-train"] & sets["sp-test"])
    assert set.union(*sets.values()) == set(store.exams(test_set="demo")["exam_id"])
    assert table.set_index("name")["exams"].to_dict() == {k: len(v) for k, v in sets.items()}


# --------------------------------------------------------------------------- pieces

def test_parse_lrs():
    assert parse_lrs("1e-6:1e-5", 10) == tuple(float(f"{v:.6g}")
                                               for v in np.geomspace(1e-6, 1e-5, 10))
    assert parse_lrs("1e-5,3e-5") == (1e-5, 3e-5)
    for bad in ("-1", "0", "x", "1e-6:1e-5"):
        with pytest.raises(InputError):
            parse_lrs(bad, None)


def test_epoch_sample_balances_and_redraws():
    malignant = np.array([1] * 5 + [0] * 40)
    a, b = epoch_sample(malignant, epoch=1, seed=0), epoch_sample(malignant, epoch=2, seed=0)
    for idx in (a, b):
        assert len(idx) == 10 and len(set(idx)) == 10 and malignant[idx].sum() == 5
    assert set(a) != set(b)                                     # negatives drawn afresh
    assert np.array_equal(a, epoch_sample(malignant, epoch=1, seed=0))


def test_augment_keeps_shape_and_is_seeded():
    x = torch.randn(1, 64, 40)
    y1 = augment(x, torch.Generator().manual_seed(3))
    y2 = augment(x, torch.Generator().manual_seed(3))
    assert y1.shape == x.shape and torch.equal(y1, y2) and not torch.equal(y1, x)


# --------------------------------------------------------------------------- the loop

@pytest.fixture(scope="module")
def small(demo_store_path, tmp_path_factory):
    """A copied demo store split by exam, and a few cached training/validation images."""
    store = open_store(copy_store(demo_store_path, tmp_path_factory.mktemp("train")))
    create_splits(store, test_set="demo", prefix="sp", seed=0)
    shape = load_gmic_checkpoint(DEMO_CHECKPOINT, "demo").config.input_shape
    out = {"store": store}
    for role, name, n in (("train", "sp-train", 12), ("val", "sp-val", 8)):
        images = labelled_images(store, name)
        f = images.frame
        keep = pd.concat([f[f["malignant"] == 1].head(n // 2), f[f["malignant"] == 0].head(n // 2)])
        sub = LabelledImages(keep.reset_index(drop=True), images.labels[torch.as_tensor(keep.index.to_numpy().copy())])
        out[role] = build_cache(store, sub, input_shape=shape, preprocess="none")
    return out


def _run(small, folder, mode, epochs=2, lr=1e-3, model=None, freeze_bn=False, **hooks):
    model = model or load_gmic_checkpoint(DEMO_CHECKPOINT, "demo")
    settings = LoopSettings(mode=mode, lr=lr, epochs=epochs, batch_size=4, seed=0, beta=1e-3,
                            device=torch.device("cpu"), freeze_bn=freeze_bn)
    recipe = FineTuneRecipe(settings, folder=folder, meta={"config": "demo"}, **hooks)
    recipe.setup(model, small["train"], small["val"])
    return model, recipe.train()


def test_feature_extraction_changes_only_the_heads(small, tmp_path):
    parent = load_gmic_checkpoint(DEMO_CHECKPOINT, "demo").state_dict()
    model, _ = _run(small, tmp_path, "feature-extraction", epochs=1)
    heads = ("mil_attn_V.", "mil_attn_U.", "mil_attn_w.", "classifier_linear.", "fusion_dnn.")
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, parent[k])}
    assert changed and all(k.startswith(heads) for k in changed)      # buffers included
    assert any(k.startswith("fusion_dnn.") for k in changed)


def test_full_changes_backbones_and_scratch_starts_from_default_init(small, tmp_path):
    parent = load_gmic_checkpoint(DEMO_CHECKPOINT, "demo")
    full, _ = _run(small, tmp_path / "full", "full", epochs=1)
    assert any(not torch.equal(a, b) for a, b in zip(full.ds_net.parameters(),
                                                     parent.ds_net.parameters(), strict=True))
    fresh = reset_to_default_init(load_gmic_checkpoint(DEMO_CHECKPOINT, "demo"))
    for name, module in fresh.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in = module.weight[0].numel()
            # PyTorch's default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            assert module.weight.abs().max() <= 1 / math.sqrt(fan_in) + 1e-7, name
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.running_var, torch.ones_like(module.running_var))


def test_freeze_bn_keeps_running_statistics_and_trains_every_weight(small, tmp_path):
    """Full mode with freeze_bn: every BatchNorm buffer equals the parent's, tensor by tensor,
    while weights (BatchNorm's affine ones included) move; without it the statistics move."""
    parent = load_gmic_checkpoint(DEMO_CHECKPOINT, "demo").state_dict()
    stats = ("running_mean", "running_var", "num_batches_tracked")
    frozen, _ = _run(small, tmp_path / "frozen", "full", epochs=1, freeze_bn=True)
    moved = {k for k, v in frozen.state_dict().items() if not torch.equal(v, parent[k])}
    assert not {k for k in moved if k.endswith(stats)}
    assert any(k.startswith("ds_net.") and k.endswith(".weight") for k in moved)
    assert any(k.endswith("bn1.bias") for k in moved)
    free, _ = _run(small, tmp_path / "free", "full", epochs=1)
    assert any(not torch.equal(v, parent[k]) for k, v in free.state_dict().items()
               if k.endswith("running_mean"))


def test_checkpoints_are_final_and_best_and_a_resume_equals_a_full_run(small, tmp_path):
    seen = {}
    model = load_gmic_checkpoint(DEMO_CHECKPOINT, "demo")

    def keep(row, state):
        seen[row["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    _, state = _run(small, tmp_path / "a", "full", epochs=3, model=model, on_epoch=keep)
    assert len(state["history"]) == 3
    losses = [r["val_loss"] for r in state["history"]]
    assert state["best_epoch"] == int(np.argmin(losses)) + 1
    best = torch.load(best_path(tmp_path / "a"), weights_only=True)["state_dict"]
    final = torch.load(final_path(tmp_path / "a"), weights_only=True)["state_dict"]
    for k, v in model.state_dict().items():
        assert torch.equal(final[k], v)
        assert torch.equal(best[k], seen[state["best_epoch"]][k])

    calls = {"n": 0}
    per_epoch = -(-len(epoch_sample(small["train"].labels[:, 1].numpy(), epoch=1, seed=0)) // 4)

    def cancel_in_epoch_2():
        calls["n"] += 1
        if calls["n"] > per_epoch:   # the first check of epoch 2
            raise RunCancelled("stop")

    with pytest.raises(RunCancelled):
        _run(small, tmp_path / "b", "full", epochs=3, check_cancel=cancel_in_epoch_2)
    assert torch.load(final_path(tmp_path / "b"), weights_only=True)["epoch"] == 1
    resumed, state_b = _run(small, tmp_path / "b", "full", epochs=3)
    assert [r["epoch"] for r in state_b["history"]] == [1, 2, 3]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- requests

def _request(**kw):
    base = dict(model_init="gmic-demo", mode="full", train_set="sp-train", val_set="sp-val",
                lrs=(1e-4,), epochs=1, batch_size=4)
    return TrainRequest(**(base | kw))


def test_bad_requests_fail_before_any_work(small, tmp_path, monkeypatch):
    store = small["store"]
    monkeypatch.setenv("PATH", str(tmp_path))   # no sbatch, even on a machine that has one
    before = len(store.select("runs"))
    store.create_testset("healthy", "cancer=0")
    bad = [(dict(model_init="nope"), "neither a checkpoint"),
           (dict(train_set="missing"), "not in the store"),
           (dict(train_set="healthy"), "one class only"),
           (dict(lrs=(-1e-5,)), "rate <= 0"),
           (dict(val_set="sp-train"), "share"),
           (dict(mode="half"), "mode"),
           (dict(launcher="local", nproc_per_node=2), "one process"),
           (dict(launcher="torchrun", nproc_per_node=2, device="cpu"), "need freeze_bn"),
           (dict(launcher="torchrun", nproc_per_node=8, device="cpu", freeze_bn=True), "smaller than the 8"),
           (dict(launcher="torchrun", nodes=2, device="cpu", freeze_bn=True), "rdzv_endpoint"),
           (dict(launcher="slurm"), "Slurm cluster"),
           (dict(launcher="kubernetes"), "pass one of local, torchrun, slurm"),
           (dict(nproc_per_node=0), "nproc_per_node")]
    if not torch.cuda.is_available():
        bad.append((dict(device="cuda"), "no CUDA device"))
    for change, message in bad:
        with pytest.raises(InputError, match=message):
            launch_runs(store, _request(**change), detach=False)
    assert len(store.select("runs")) == before


def test_cli_train_registers_child_and_reports_auc_beside_parent(small, tmp_path, monkeypatch):
    """... and logs the run to MLflow (a real local file store) when --mlflow-uri is given."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # mlflow-skinny has no sqlite store
    db = copy_store(small["store"].path, tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    out = subprocess.run(
        [sys.executable, "-m", "core", "train", "--db", str(db), "--model-init", "gmic-demo",
         "--mode", "feature-extraction", "--train-set", "sp-train", "--val-set", "sp-val",
         "--lr", "1e-4", "--epochs", "1", "--batch-size", "16", "--evaluate", "test-all",
         "--mlflow-uri", uri, "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)["runs"][0]
    assert run["status"] == "done" and run["best_epoch"] == 1
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("ilcscope").experiment_id])
    assert logged.info.status == "FINISHED" and logged.info.run_name == run["run_id"]
    assert [m.value for m in client.get_metric_history(logged.info.run_id, "val_loss")] == \
        pytest.approx([run["best_val_loss"]])
    store = open_store(db)
    child = store.select("models", model=run["child_model"]).iloc[0]
    assert child["parent"] == "gmic-demo" and child["preprocess"] == "none"
    assert child["checkpoint"].endswith("best.pt")
    # lr 1e-4 as everywhere (was lr0.0001 here beside lr1e-05 for 1e-5): one format, issue 29
    assert run["child_model"] == f"gmic-demo-feature-extraction-lr1e-04-{run['run_id'][-4:]}"
    assert child["description"].startswith("GMIC fine-tuned (feature-extraction, lr 1e-04, best "
                                            "epoch 1) from gmic-demo on sp-train")
    epochs = store.select("train_epochs", run_id=run["run_id"])
    assert len(epochs) == 1 and math.isclose(epochs["val_loss"].iat[0], run["best_val_loss"])
    ev = run["evaluations"][0]
    for name, key in ((run["child_model"], "auc"), ("gmic-demo", "parent_auc")):
        s = store.scores(models=[name], level="image", test_set="test-all")
        assert math.isclose(ev[key], roc_auc_score(s["label"], s["score"]), abs_tol=1e-12)
    assert 0 <= ev["p_delong"] <= 1 and ev["ci_low"] <= ev["auc"] <= ev["ci_high"]


def test_cancel_stops_a_detached_run_and_leaves_a_consistent_store(small, tmp_path):
    store = open_store(copy_store(small["store"].path, tmp_path))
    (run_id,) = launch_runs(store, _request(epochs=50), detach=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and store.select("train_epochs", run_id=run_id).empty:
        time.sleep(0.5)
    request_cancel(store, run_id)
    while time.monotonic() < deadline and get_run(store, run_id)["status"] == "running":
        time.sleep(0.5)
    row = get_run(store, run_id)
    assert row["status"] == "cancelled"
    folder = store.files_dir / row["folder"]
    saved = torch.load(final_path(folder), weights_only=True)["epoch"]
    epochs = store.select("train_epochs", run_id=run_id)
    assert sorted(epochs["epoch"]) == list(range(1, saved + 1)) and saved < 50
    assert row["params"].get("child_model") is None
    assert not any(m.startswith("gmic-demo-full") for m in store.model_names())
    validate_request(store, _request())          # the store still takes work


def test_a_killed_worker_s_run_is_failed_by_runs_list_and_resumes_its_mlflow_run(
        small, tmp_path, monkeypatch):
    """A detached worker killed whole (SIGKILL: no handler runs) leaves its run 'running';
    `runs list` records it as failed (not in demo mode, which never writes), and a resume goes
    on from the last epoch, logging into the same MLflow run (a real local file store)."""
    mlflow = pytest.importorskip("mlflow")
    from cli import main
    from core.jobs.launchers import is_alive, stop
    from models.training.sweep import resume_run
    from core.jobs.workers import fail_orphaned_runs, launch_record, worker_alive

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)   # the detached workers inherit it
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = open_store(copy_store(small["store"].path, tmp_path))
    (run_id,) = launch_runs(store, _request(epochs=30), detach=True)
    pid = launch_record(store, run_id)["pid"]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and store.select("train_epochs", run_id=run_id).empty:
            time.sleep(0.2)
        assert worker_alive(store, run_id) is True and fail_orphaned_runs(store) == []
        with pytest.raises(InputError, match="still training"):
            resume_run(store, run_id, detach=True)
        os.killpg(pid, signal.SIGKILL)
        while time.monotonic() < deadline and is_alive(pid):
            time.sleep(0.1)
        assert get_run(store, run_id)["status"] == "running"      # the kill left it so
        assert worker_alive(store, run_id) is False
        monkeypatch.setenv("ILCSCOPE_MODE", "demo")
        assert main(["runs", "list", "--db", str(store.path), "--json"]) == 0
        assert get_run(store, run_id)["status"] == "running"      # demo mode writes nothing
        monkeypatch.delenv("ILCSCOPE_MODE")
        assert main(["runs", "list", "--db", str(store.path), "--json"]) == 0
        assert get_run(store, run_id)["status"] == "running"      # a listing never writes
        assert main(["runs", "cancel", run_id, "--db", str(store.path), "--json"]) == 0
        row = get_run(store, run_id)
        assert row["status"] == "failed" and f"pid {pid}) is gone" in row["error"]
        assert fail_orphaned_runs(store) == []                    # once
        kept = int(store.select("train_epochs", run_id=run_id)["epoch"].max())
        resume_run(store, run_id, detach=True)                   # goes on from epoch kept + 1
        pid = launch_record(store, run_id)["pid"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and \
                store.select("train_epochs", run_id=run_id)["epoch"].max() <= kept:
            time.sleep(0.2)
        request_cancel(store, run_id)
        while time.monotonic() < deadline and get_run(store, run_id)["status"] != "cancelled":
            time.sleep(0.2)
    finally:
        stop(pid)
    row = get_run(store, run_id)
    epochs = sorted(store.select("train_epochs", run_id=run_id)["epoch"])
    assert row["status"] == "cancelled"
    assert epochs == list(range(1, len(epochs) + 1)) and kept < len(epochs) < 30
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("ilcscope").experiment_id])
    assert logged.info.run_id == row["params"]["mlflow_run_id"] and logged.info.run_name == run_id
    assert logged.info.status == "KILLED" and logged.data.params["lr"] == "0.0001"
    steps = [m.step for m in client.get_metric_history(logged.info.run_id, "val_loss")]
    assert sorted(steps) == epochs                             # before and after the kill


def test_worker_alive_knows_its_process_and_no_other(small, tmp_path):
    """The record of an in-process run names this process: alive; the same pid with another
    start time (a reused pid) is gone; another host, or no record, cannot be told."""
    import socket

    from models.training.sweep import create_runs
    from core.jobs.workers import WORKER_FILE, record_worker, worker_alive

    store = open_store(copy_store(small["store"].path, tmp_path))
    (run_id,) = create_runs(store, _request())
    assert worker_alive(store, run_id) is None
    record_worker(store, [run_id])
    assert worker_alive(store, run_id) is True
    path = store.files_dir / get_run(store, run_id)["folder"] / WORKER_FILE
    record = json.loads(path.read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    path.write_text(json.dumps(record | {"identity": record["identity"] + "0"}))
    assert worker_alive(store, run_id) is False
    path.write_text(json.dumps(record | {"host": record["host"] + "-elsewhere"}))
    assert worker_alive(store, run_id) is None


def test_a_failed_run_keeps_one_line_in_its_row_and_its_traceback_in_its_log(small, tmp_path):
    """The row's error is one line; the run folder's worker.log holds the traceback behind it
    (where it failed), so a failure inside a detached worker can be traced."""
    from core.jobs.launchers import LOG_NAME
    from models.training.sweep import create_runs, execute_run

    store = open_store(copy_store(small["store"].path, tmp_path))
    parent = tmp_path / "parent.pt"
    parent.write_bytes(DEMO_CHECKPOINT.read_bytes())
    (run_id,) = create_runs(store, _request(model_init=str(parent)))
    parent.write_bytes(b"not a checkpoint")   # broken after the run was created
    row = execute_run(store, run_id)
    assert row["status"] == "failed" and "\n" not in row["error"]
    log = (store.files_dir / row["folder"] / LOG_NAME).read_text()
    assert log.startswith(f"run {run_id} failed:\nTraceback (most recent call last):\n")
    assert "in _initial_model" in log and "in _train" in log      # the frames, ours included
    message = row["error"].split(": ", 1)[1]   # torch's reason spans several lines in the log
    assert message in " ".join(log.split()) and len(message) > 100
