"""Start a training worker (``python -m MODULE ARGS``) here, under torchrun, or on a Slurm cluster.

- ``local``: one detached process (its own session, stdout and stderr to ``RUN/worker.log``): it
  survives the page or CLI that started it, a page reload and a closed tab.
- ``torchrun``: the same, detached, but ``python -m torch.distributed.run`` starts one worker per
  GPU (``models.training.distributed`` reads its environment). :func:`torchrun_command` also gives the
  command to type on each node of a multi-node run.
- ``slurm``: submitit writes an sbatch script (one task per GPU, ``srun``) whose tasks export
  torch's rendezvous variables and run the worker; :func:`slurm_script` shows that script
  without a cluster.

No shell is involved: commands are argument lists, so nothing in a path or argument is executed.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError

__all__ = ["LAUNCHERS", "Launched", "SlurmOptions", "check_slurm", "is_alive",
           "launch_local", "launch_slurm", "launch_torchrun", "process_identity", "slurm_job",
           "slurm_script", "stop", "torchrun_command"]

LAUNCHERS = ("local", "torchrun", "slurm")
LOG_NAME = "worker.log"


@dataclass(frozen=True)
class Launched:
    """What was started: ``pid`` (local/torchrun) or ``job_id`` (slurm), the command, the log."""

    launcher: str
    command: list[str]
    log_path: Path
    pid: int | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class SlurmOptions:
    """sbatch settings; ``time_min`` is the wall-clock limit in minutes; ``tasks_per_node``
    None starts one task per GPU (one task without GPUs)."""

    partition: str | None = None
    time_min: int = 60
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    account: str | None = None
    tasks_per_node: int | None = None


def _worker(module: str, args) -> list[str]:
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise InputError(f"worker module {module!r} is not a dotted Python module name")
    return [module, *(str(a) for a in args)]


def _start_detached(command: list[str], run_dir: Path, env: dict | None) -> tuple[int, Path]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOG_NAME
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env={**os.environ, **(env or {})},
                                cwd=Path(__file__).resolve().parents[2])
    return proc.pid, log_path


def launch_local(module: str, args, run_dir: str | Path, *, env: dict | None = None) -> Launched:
    """``python -m module args`` detached in its own session; returns at once with its pid."""
    command = [sys.executable, "-m", *_worker(module, args)]
    pid, log = _start_detached(command, Path(run_dir), env)
    return Launched("local", command, log, pid=pid)


def torchrun_command(module: str, args, *, nproc_per_node: int, nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None, python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run ...`` for one node (run it on each node with its rank)."""
    if nproc_per_node < 1 or nnodes < 1 or not (0 <= node_rank < nnodes):
        raise InputError(f"torchrun needs nproc_per_node >= 1, nnodes >= 1 and 0 <= node_rank < nnodes; "
                         f"got {nproc_per_node}, {nnodes}, {node_rank}")
    command = [python or sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc_per_node)]
    if nnodes == 1:
        command.append("--standalone")
    else:
        if not rdzv_endpoint or ":" not in rdzv_endpoint:
            raise InputError("a multi-node torchrun needs rdzv_endpoint HOST:PORT (the first node's address)")
        command += ["--nnodes", str(nnodes), "--node-rank", str(node_rank),
                    "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint]
    return command + ["-m", *_worker(module, args)]


def launch_torchrun(module: str, args, run_dir: str | Path, *, nproc_per_node: int, nnodes: int = 1,
                    node_rank: int = 0, rdzv_endpoint: str | None = None, env: dict | None = None) -> Launched:
    """Start this node's torchrun detached (as :func:`launch_local`); returns its pid and command."""
    command = torchrun_command(module, args, nproc_per_node=nproc_per_node, nnodes=nnodes,
                               node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    pid, log = _start_detached(command, Path(run_dir), env)
    return Launched("torchrun", command, log, pid=pid)


class SlurmTask:
    """What each Slurm task runs: export torch's rendezvous variables, then the worker."""

    def __init__(self, command: list[str]) -> None:
        self.command = list(command)

    def __call__(self) -> int:
        import submitit

        # keep every GPU visible: models.training.distributed picks cuda:LOCAL_RANK itself
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return subprocess.run(self.command, check=True).returncode


def _slurm_parameters(options: SlurmOptions) -> dict:
    tasks = max(options.gpus_per_node, 1) if options.tasks_per_node is None \
        else options.tasks_per_node
    if options.time_min < 1 or options.nodes < 1 or options.gpus_per_node < 0 or options.cpus_per_task < 1 \
            or tasks < 1:
        raise InputError(f"slurm options must be positive (time, nodes, cpus, tasks; gpus >= 0); got {options}")
    params = {"time": options.time_min, "nodes": options.nodes, "cpus_per_task": options.cpus_per_task,
              "ntasks_per_node": tasks, "job_name": "ilcscope-train"}
    if options.gpus_per_node:
        params["gpus_per_node"] = options.gpus_per_node
    if options.partition:
        params["partition"] = options.partition
    if options.account:
        params["account"] = options.account
    return params


def slurm_script(run_dir: str | Path, options: SlurmOptions, *, python: str | None = None) -> str:
    """The sbatch script :func:`launch_slurm` would submit (no cluster needed)."""
    from submitit.slurm import slurm

    folder = Path(run_dir) / "slurm"
    command = f"{python or sys.executable} -u -m submitit.core._submit {folder}"
    return slurm._make_sbatch_string(command=command, folder=folder, **_slurm_parameters(options))


def check_slurm() -> None:
    """A clear error before any work where this machine cannot submit to Slurm."""
    if shutil.which("sbatch") is None:
        raise InputError("launcher 'slurm' needs a Slurm cluster here: no sbatch on PATH "
                         "(run from a cluster's login node, or use local or torchrun)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise InputError("launcher 'slurm' needs submitit: pip install submitit") from None


def launch_slurm(module: str, args, run_dir: str | Path, options: SlurmOptions) -> Launched:
    """Submit the worker through submitit: one task per GPU on each of ``options.nodes`` nodes."""
    check_slurm()
    import submitit

    task, parameters = slurm_job(module, args, options)
    folder = Path(run_dir) / "slurm"
    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(**parameters)
    job = executor.submit(task)
    return Launched("slurm", task.command, folder / f"{job.job_id}_0_log.out", job_id=str(job.job_id))


def slurm_job(module: str, args, options: SlurmOptions) -> tuple[SlurmTask, dict]:
    """What `launch_slurm` submits: the task every Slurm task runs, and the sbatch parameters."""
    return SlurmTask([sys.executable, "-m", *_worker(module, args)]), _slurm_parameters(options)


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a finished child not yet reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # our own child that exited is a zombie until reaped: reap it
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def process_identity(pid: int) -> str | None:
    """The machine's boot id and the start time of process ``pid`` (Linux), which a later process
    given the same pid does not share; None where the process or ``/proc`` is missing."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"   # field 22, starttime


def stop(pid: int, *, grace_s: float = 10.0) -> bool:
    """SIGTERM the worker's whole session (torchrun and its workers), SIGKILL after ``grace_s``.

    The fallback of cancel when a worker does not honour the run folder's cancel file. Returns
    whether the process is gone.
    """
    import time

    if not is_alive(pid):
        return True
    try:
        os.killpg(pid, signal.SIGTERM)  # launched with start_new_session: its pgid is its pid
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    time.sleep(0.2)
    return not is_alive(pid)
