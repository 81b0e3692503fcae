"""DDP: two gloo processes on CPU run the fine-tuning recipe's epoch (`tests._ddp_step`: its real
mode setter, step and validation) exactly as one process on the same global batch (tensor by
tensor, within 1e-5), in full fine-tuning and in feature extraction; sharding helpers.

Gradients are compared too (rtol 1e-3, atol 1e-5: float32 sums in another order): Adam's first step
is about lr * sign(grad), so the parameters alone would only check signs. lr is 1e-5 (the top of the
study's range), so a gradient within rounding of zero cannot move a weight by more than 1e-5."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from core.errors import InputError
from models.networks.gmic import build_gmic
from models.training.distributed import DistContext, init_distributed, rank_batches, rank_slice, wrap_model
from tests._ddp_step import GLOBAL_BATCH, MODES, one_epoch
from tests.conftest import REPO


def test_two_gloo_processes_equal_one(tmp_path):
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tests._ddp_step", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(out)
    assert ddp["world_size"] == 2
    for mode in MODES:
        single = one_epoch(DistContext(), mode=mode)
        assert ddp[mode]["grads"].keys() == single["grads"].keys()
        for name, g in single["grads"].items():
            torch.testing.assert_close(ddp[mode]["grads"][name], g, rtol=1e-3, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        assert ddp[mode]["params"].keys() == single["params"].keys()
        for name, p in single["params"].items():
            torch.testing.assert_close(ddp[mode]["params"][name], p, rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        # (mean loss, images) over both ranks; validation (loss, AUC) from gathered scores
        torch.testing.assert_close(ddp[mode]["train"], single["train"], rtol=1e-5, atol=0)
        assert ddp[mode]["train"][1].item() == GLOBAL_BATCH
        torch.testing.assert_close(ddp[mode]["val"], single["val"], rtol=1e-5, atol=0)
    # the step really moved the weights, feature extraction only the heads, and frozen BatchNorm
    # kept its statistics
    torch.manual_seed(0)
    init = build_gmic("demo")
    heads = {id(p) for p in init.head_parameters()}
    fx_names = {n for n, p in init.named_parameters() if id(p) in heads}
    moved = {n for n, p in init.named_parameters()
             if (ddp["feature-extraction"]["params"][n] - p.detach()).abs().max() > 5e-6}
    assert moved == fx_names
    assert all((ddp["full"]["params"][n] - p.detach()).abs().max() > 5e-6
               for n, p in init.named_parameters() if n.endswith("weight") and "fusion" in n)
    for name, buffer in init.named_buffers():
        assert torch.equal(ddp["full"]["params"][name], buffer), name


def test_rank_batches_rebuild_the_single_process_batches():
    idx = np.arange(11)
    single = rank_batches(idx, 4, DistContext())
    assert [b.tolist() for b, _ in single] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    parts = [rank_batches(idx, 4, DistContext(rank=r, world_size=3)) for r in range(3)]
    for b, (batch, size) in enumerate(single):
        assert np.concatenate([p[b][0] for p in parts]).tolist() == batch.tolist()
        assert all(p[b][1] == size for p in parts)
    # a 2-image tail cannot feed 3 ranks: dropped on every rank alike
    assert [len(p) for p in (rank_batches(np.arange(6), 4, DistContext(rank=r, world_size=3))
                             for r in range(3))] == [1, 1, 1]
    with pytest.raises(InputError, match="smaller than"):
        rank_batches(idx, 2, DistContext(rank=0, world_size=3))
    slices = [rank_slice(10, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert [list(range(10))[s] for s in slices] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_single_process_and_bad_settings(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.device.type) == (0, 1, True, "cpu")
    model = build_gmic("demo")
    assert wrap_model(model, ctx) is model
    with pytest.raises(InputError, match="batchnorm"):
        wrap_model(model, ctx, batchnorm="local")
    with pytest.raises(InputError, match="GPU-only"):
        wrap_model(model, DistContext(rank=0, world_size=2), batchnorm="sync")


# --------------------------------------------------------------------------- a whole run

def _tiny_sets(store) -> dict[str, str]:
    """Two small training and validation sets of whole exams (cancer and healthy), disjoint."""
    exams = store.cases(level="exam")[["exam_id", "label"]].drop_duplicates("exam_id")
    exams = exams.sort_values("exam_id")
    pos = exams.loc[exams["label"] == 1, "exam_id"].tolist()
    neg = exams.loc[exams["label"] == 0, "exam_id"].tolist()
    rules = {"tiny-train": pos[:2] + neg[:2], "tiny-val": pos[2:4] + neg[2:4]}
    return {name: "exam=" + ",".join(str(e) for e in ids) for name, ids in rules.items()}


def test_a_torchrun_run_equals_the_same_run_in_one_process(demo_store_path, tmp_path, monkeypatch):
    """`train --launcher torchrun` with two gloo processes on CPU: the same epochs (losses,
    validation AUC, images seen) and, within Adam's rounding, the same weights as one process;
    only rank 0 writes (one set of checkpoints, one child model)."""
    from core.store import open_store
    from core.store.runs import get_run
    from models.networks.gmic import load_gmic_checkpoint
    from models.inference.predict import DEMO_CHECKPOINT
    from models.training.sweep import TrainRequest, launch_runs
    from models.training.recipe import best_path, final_path
    from core.jobs.workers import launch_record
    from tests.conftest import copy_store

    store = open_store(copy_store(demo_store_path, tmp_path))
    store.create_testsets(_tiny_sets(store))
    base = dict(model_init="gmic-demo", mode="full", train_set="tiny-train", val_set="tiny-val",
                lrs=(1e-5,), epochs=2, batch_size=4, device="cpu", freeze_bn=True, seed=3)
    (single,) = launch_runs(store, TrainRequest(**base), detach=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # two processes on two cores
    (ddp,) = launch_runs(store, TrainRequest(**base, launcher="torchrun", nproc_per_node=2),
                         detach=False)
    rows = {k: get_run(store, r) for k, r in (("single", single), ("ddp", ddp))}
    folder = {k: store.files_dir / row["folder"] for k, row in rows.items()}
    log = (folder["ddp"] / "worker.log").read_text()
    assert rows["ddp"]["status"] == "done", (rows["ddp"].get("error"), log[-3000:])
    assert launch_record(store, ddp)["command"][2:4] == ["torch.distributed.run", "--nproc-per-node"]

    epochs = {k: store.select("train_epochs", run_id=r).sort_values("epoch")
              for k, r in (("single", single), ("ddp", ddp))}
    assert epochs["ddp"]["images"].tolist() == epochs["single"]["images"].tolist()
    assert epochs["single"]["images"].iat[0] > 4   # several steps per epoch
    for column in ("train_loss", "val_loss", "val_auc"):
        np.testing.assert_allclose(epochs["ddp"][column], epochs["single"][column], rtol=1e-4,
                                   err_msg=column)
    weights = {k: torch.load(final_path(f), weights_only=True)["state_dict"] for k, f in folder.items()}
    assert weights["ddp"].keys() == weights["single"].keys() == build_gmic("demo").state_dict().keys()
    assert "worker rank 1 of 2 on cpu" in log and "worker rank 0 of 2 on cpu" in log
    # a few Adam steps of ~lr (1e-5) each moved the weights; one rank's step more or less would
    # show as 1e-5, float32 sums in another order as ~1e-7
    parent = load_gmic_checkpoint(DEMO_CHECKPOINT, "demo").state_dict()
    moved = [n for n, w in weights["single"].items() if (w - parent[n]).abs().max() > 2e-5]
    assert len(moved) > 50, len(moved)
    for name, w in weights["single"].items():
        torch.testing.assert_close(weights["ddp"][name], w, rtol=0, atol=2e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert best_path(folder["ddp"]).is_file()
    assert sorted(p.name for p in folder["ddp"].glob("*.pt")) == ["best.pt", "final.pt"]
    children = [rows[k]["params"]["child_model"] for k in rows]
    assert all(c in store.model_names() for c in children) and children[0] != children[1]


def _long_torchrun_run(demo_store_path, tmp_path, monkeypatch):
    """A copied demo store and a detached 200-epoch torchrun run on it (two gloo ranks); the
    caller stops it."""
    from core.store import open_store
    from models.training.sweep import TrainRequest, launch_runs
    from tests.conftest import copy_store

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = open_store(copy_store(demo_store_path, tmp_path))
    store.create_testsets(_tiny_sets(store))
    request = TrainRequest(model_init="gmic-demo", mode="feature-extraction", train_set="tiny-train",
                           val_set="tiny-val", lrs=(1e-5,), epochs=200, batch_size=4, device="cpu",
                           launcher="torchrun", nproc_per_node=2)
    (run_id,) = launch_runs(store, request, detach=True)
    return store, run_id


def _after_first_epoch(store, run_id: str) -> float:
    """Wait (at most 180 s) until the run has finished an epoch; returns that deadline."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and store.select("train_epochs", run_id=run_id).empty:
        time.sleep(0.5)
    return deadline


def test_a_cancelled_torchrun_run_stops_every_rank_and_leaves_a_consistent_store(demo_store_path, tmp_path,
                                                                                 monkeypatch):
    from core.jobs.run_folder import request_cancel
    from core.store.runs import get_run
    from core.jobs.launchers import is_alive, stop
    from models.training.recipe import final_path
    from core.jobs.workers import launch_record

    store, run_id = _long_torchrun_run(demo_store_path, tmp_path, monkeypatch)
    pid = launch_record(store, run_id)["pid"]
    try:
        _after_first_epoch(store, run_id)
        request_cancel(store, run_id)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and is_alive(pid):
            time.sleep(0.5)
        assert not is_alive(pid), "torchrun (and its ranks) still running after the cancel"
    finally:
        stop(pid)   # never leave a 200-epoch job on the CI's cores
    row = get_run(store, run_id)
    log = (store.files_dir / row["folder"] / "worker.log").read_text()
    assert row["status"] == "cancelled", (row.get("error"), log[-3000:])
    saved = torch.load(final_path(store.files_dir / row["folder"]), weights_only=True)["epoch"]
    assert sorted(store.select("train_epochs", run_id=run_id)["epoch"]) == list(range(1, saved + 1))
    assert saved < 200 and row["params"].get("child_model") is None
    assert "Traceback" not in log   # every rank stopped at the same batch, none in a collective


def test_torchrun_killed_alone_leaves_its_ranks_training_and_the_run_not_orphaned(
        demo_store_path, tmp_path, monkeypatch):
    """torchrun's ranks lead their own sessions: killing torchrun alone (SIGKILL) leaves them
    training, so the run is still alive (rank 0's worker.json), not failed; a cancel stops them."""
    import signal

    from core.jobs.run_folder import request_cancel
    from core.store.runs import get_run
    from core.jobs.launchers import is_alive, stop
    from core.jobs.workers import WORKER_FILE, fail_orphaned_runs, launch_record, worker_alive

    store, run_id = _long_torchrun_run(demo_store_path, tmp_path, monkeypatch)
    torchrun = launch_record(store, run_id)["pid"]
    folder = store.files_dir / get_run(store, run_id)["folder"]
    rank0 = None
    try:
        deadline = _after_first_epoch(store, run_id)
        rank0 = json.loads((folder / WORKER_FILE).read_text())["pid"]
        assert rank0 != torchrun and os.getsid(rank0) == rank0   # a session of its own
        os.kill(torchrun, signal.SIGKILL)
        while time.monotonic() < deadline and is_alive(torchrun):
            time.sleep(0.1)
        assert not is_alive(torchrun) and is_alive(rank0)
        assert worker_alive(store, run_id) is True and fail_orphaned_runs(store) == []
        request_cancel(store, run_id)                 # the ranks still answer it, together
        while time.monotonic() < deadline and get_run(store, run_id)["status"] == "running":
            time.sleep(0.5)
    finally:
        for pid in (torchrun, rank0):
            if pid:
                stop(pid, grace_s=5)
    assert get_run(store, run_id)["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and is_alive(rank0):
        time.sleep(0.1)
    assert worker_alive(store, run_id) is False


def test_a_torchrun_worker_that_dies_before_its_run_leaves_it_failed(demo_store_path, tmp_path,
                                                                      monkeypatch):
    """A worker that exits before ending its runs (here: a device torch does not know, refused
    in every rank before training) must not leave them 'running': the waiting CLI fails them
    and `train` exits 1."""
    import core.jobs.workers as train_launch
    from cli import main
    from core.store import open_store
    from core.store.runs import list_runs
    from models.demo.finetune import DEMO_RUN
    from tests.conftest import copy_store

    path = copy_store(demo_store_path, tmp_path)
    store = open_store(path)
    store.create_testsets(_tiny_sets(store))
    real = train_launch.worker_args
    monkeypatch.setattr(train_launch, "worker_args", lambda store, run_ids, device: [
        *real(store, run_ids, device)[:2], "--device", "no-such-device", *run_ids])
    code = main(["train", "--db", str(path), "--model-init", "gmic-demo", "--mode",
                 "feature-extraction", "--train-set", "tiny-train", "--val-set", "tiny-val",
                 "--lr", "1e-5,2e-5", "--epochs", "1", "--device", "cpu", "--launcher",
                 "torchrun", "--nproc-per-node", "1"])
    assert code == 1
    runs = [r for r in list_runs(open_store(path, read_only=True), kind="train")
            if r["run_id"] != DEMO_RUN]      # the demo's own, done
    assert [r["status"] for r in runs] == ["failed", "failed"]
    assert all("the worker exited before the run ended" in r["error"] for r in runs)


def test_the_slurm_job_trains_a_run_with_two_tasks(demo_store_path, tmp_path, monkeypatch):
    """The job `--launcher slurm` submits (its task and its parameters, `slurm_job`), run by
    submitit's LocalExecutor with two tasks as srun would: both join one gloo group and train."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from core.store import open_store
    from core.store.runs import get_run
    from core.jobs.launchers import slurm_job
    from models.training.sweep import TrainRequest, create_runs
    from core.jobs.workers import WORKER, slurm_options, worker_args
    from tests.conftest import copy_store

    store = open_store(copy_store(demo_store_path, tmp_path))
    store.create_testsets(_tiny_sets(store))
    request = TrainRequest(model_init="gmic-demo", mode="feature-extraction", train_set="tiny-train",
                           val_set="tiny-val", lrs=(1e-4,), epochs=1, batch_size=4, device="cpu",
                           launcher="slurm", nproc_per_node=2, partition="gpu", time_min=30)
    (run_id,) = create_runs(store, request)
    task, params = slurm_job(WORKER, worker_args(store, [run_id], "cpu"), slurm_options(request))
    assert params | {"ntasks_per_node": 2, "nodes": 1, "time": 30, "partition": "gpu"} == params
    assert "gpus_per_node" not in params   # a CPU job asks for no GPUs
    executor = submitit.LocalExecutor(folder=tmp_path / "slurm")
    executor.update_parameters(timeout_min=30, tasks_per_node=params["ntasks_per_node"], nodes=1)
    job = executor.submit(task)
    try:
        results = job.results()
    except submitit.core.utils.FailedJobError as exc:   # show both tasks' logs (a native abort)
        logs = "\n".join(f"--- task {k} {kind}:\n{(path.read_text() if path.is_file() else '')[-3000:]}"
                         for k, sub in enumerate(job._sub_jobs) for kind, path in
                         (("stdout", sub.paths.stdout), ("stderr", sub.paths.stderr)))
        pytest.fail(f"{exc}\n{logs}")
    assert results == [0, 0]
    row = get_run(store, run_id)
    assert row["status"] == "done", row.get("error")
    out = "".join(job.stdout() or "")
    assert "worker rank 0 of 2 on cpu" in out and "worker rank 1 of 2 on cpu" in out, out[-2000:]
    assert row["params"]["child_model"] in store.model_names()
