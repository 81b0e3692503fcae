"""Launchers: a real detached local worker (own session, log file, alive, stopped), the torchrun
commands, and the Slurm job: its sbatch text and its task run for real by submitit's LocalExecutor."""
from __future__ import annotations

import json
import os
import sys
import time

import pytest

from core.errors import InputError
from core.jobs.launchers import (SlurmOptions, SlurmTask, is_alive, launch_local, launch_slurm,
                                 process_identity, slurm_script, stop, torchrun_command)
from tests.conftest import REPO


def _wait_for(path, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and path.stat().st_size:
            return json.loads(path.read_text())
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


def test_local_worker_is_detached_alive_and_stoppable(tmp_path):
    probe = tmp_path / "probe.json"
    started = launch_local("tests._launch_probe", [probe, 60], tmp_path / "run")
    seen = _wait_for(probe)
    assert seen["pid"] == started.pid and seen["sid"] == started.pid != os.getsid(0)  # its own session
    assert seen["argv"] == [str(probe), "60"]
    assert started.log_path == tmp_path / "run" / "worker.log" and started.log_path.is_file()
    assert is_alive(started.pid) and process_identity(started.pid) != process_identity(os.getpid())
    assert stop(started.pid, grace_s=5)
    assert not is_alive(started.pid) and process_identity(started.pid) is None
    assert stop(started.pid)  # stopping a stopped worker is fine


def test_local_worker_that_ends_is_not_alive(tmp_path):
    probe = tmp_path / "probe.json"
    started = launch_local("tests._launch_probe", [probe, 0], tmp_path)
    _wait_for(probe)
    deadline = time.monotonic() + 30
    while is_alive(started.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_alive(started.pid)


def test_torchrun_commands():
    one = torchrun_command("models.training.sweep", ["--epochs", 2], nproc_per_node=4, python="python")
    assert one == ["python", "-m", "torch.distributed.run", "--nproc-per-node", "4", "--standalone",
                   "-m", "models.training.sweep", "--epochs", "2"]
    multi = torchrun_command("models.training.sweep", ["--epochs", "2"], nproc_per_node=8, nnodes=2, node_rank=1,
                             rdzv_endpoint="node0:29500", python="python")
    assert " ".join(multi) == ("python -m torch.distributed.run --nproc-per-node 8 --nnodes 2 --node-rank 1 "
                               "--rdzv-backend c10d --rdzv-endpoint node0:29500 -m models.training.sweep --epochs 2")
    with pytest.raises(InputError, match="rdzv_endpoint"):
        torchrun_command("models.training.sweep", [], nproc_per_node=2, nnodes=2)
    with pytest.raises(InputError, match="node_rank"):
        torchrun_command("models.training.sweep", [], nproc_per_node=2, nnodes=2, node_rank=2, rdzv_endpoint="h:1")
    with pytest.raises(InputError, match="module"):
        launch_local("os; rm -rf /", [], "/tmp/never")


def test_slurm_script_is_submitit_s_for_our_options(tmp_path):
    """The whole script, line for line: `slurm_script` calls submitit's private
    ``_make_sbatch_string``, so a submitit whose output changes shape must fail here (and the
    pin in requirements.txt be revisited), not show users a script that is not submitted."""
    text = slurm_script(tmp_path, SlurmOptions(partition="gpu", time_min=90, nodes=2, gpus_per_node=4,
                                               cpus_per_task=6, account="ilc"), python="python3")
    folder = tmp_path / "slurm"
    assert text.splitlines() == [
        "#!/bin/bash", "", "# Parameters",
        "#SBATCH --account=ilc", "#SBATCH --cpus-per-task=6", f"#SBATCH --error={folder}/%j_0_log.err",
        "#SBATCH --gpus-per-node=4", "#SBATCH --job-name=ilcscope-train", "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4", "#SBATCH --open-mode=append", f"#SBATCH --output={folder}/%j_0_log.out",
        "#SBATCH --partition=gpu", "#SBATCH --signal=USR2@90", "#SBATCH --time=90", "#SBATCH --wckey=submitit",
        "", "# command", "export SUBMITIT_EXECUTOR=slurm",
        f"srun --unbuffered --output {folder}/%j_%t_log.out --error {folder}/%j_%t_log.err "
        f"python3 -u -m submitit.core._submit {folder}"]
    cpu = slurm_script(tmp_path, SlurmOptions(gpus_per_node=0), python="python3").splitlines()
    assert "#SBATCH --ntasks-per-node=1" in cpu and not any("gpus" in line for line in cpu)
    assert not any(line.startswith(("#SBATCH --partition", "#SBATCH --account")) for line in cpu)
    with pytest.raises(InputError, match="slurm options"):
        slurm_script(tmp_path, SlurmOptions(time_min=0))
    with pytest.raises(InputError, match="slurm options"):   # no tasks is no job
        slurm_script(tmp_path, SlurmOptions(tasks_per_node=0))


def test_submitit_is_the_pinned_version():
    """The script above was read from this submitit; requirements.txt pins it."""
    from importlib.metadata import version

    pins = [line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.startswith("submitit")]
    assert pins == [["submitit", version("submitit")]], pins


def test_slurm_task_runs_the_worker_with_rendezvous_variables(tmp_path):
    submitit = pytest.importorskip("submitit")
    probe = tmp_path / "probe.json"
    executor = submitit.LocalExecutor(folder=tmp_path / "slurm")
    executor.update_parameters(timeout_min=2, tasks_per_node=1, nodes=1)
    job = executor.submit(SlurmTask([sys.executable, "-m", "tests._launch_probe", str(probe), "0"]))
    assert job.result() == 0
    seen = json.loads(probe.read_text())
    assert seen["argv"] == [str(probe), "0"]
    assert seen["env"]["RANK"] == "0" and seen["env"]["WORLD_SIZE"] == "1" and seen["env"]["LOCAL_RANK"] == "0"
    assert seen["env"]["MASTER_ADDR"] and int(seen["env"]["MASTER_PORT"]) > 0


def test_slurm_without_a_cluster_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no sbatch, even on a machine that has one
    with pytest.raises(InputError, match="Slurm cluster"):
        launch_slurm("tests._launch_probe", [], tmp_path, SlurmOptions())
