"""Training runs as the Fine-tuning page and ``python -m core runs`` show them.

Three tables, each a pure function of the store (and, for a running run, its live
``progress.json``):

- `run_table`: one row per run with status, the state a person reads (queued, running,
  evaluating, done, failed, cancelled), progress, ETA and the parameters that tell runs apart
  (mode, learning rate, preprocessing, parent and child model);
- `loss_curves`: training and validation loss per epoch, one line per learning rate (the
  study's figure 6.7), from the ``train_epochs`` rows each epoch writes as it ends;
- `finished_runs`: per finished run and test set, the child model's AUC with its DeLong CI beside
  its parent's and the paired DeLong p-value against the parent (the study's table 6.2). The
  AUCs and tests are the Benchmark's own (`core.reports.benchmark`), so both pages agree.

A run's parameters are its `models.training.sweep.TrainRequest` fields plus ``parent_model`` and, once
registered, ``child_model``, ``best_epoch`` and ``best_val_loss``; one run trains one learning
rate (``lr``; a request's ``lrs`` becomes one run per rate).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from core.errors import InputError
from core.jobs.run_folder import read_progress
from core.jobs.workers import TRAIN_KIND, gone_workers
from core.reports.benchmark import (auc_summary, default_test_sets, load_scores, pairwise_tests,
                                    usable_models)
from core.store import Store
from core.store.runs import RUN_STATUSES, get_run, list_runs
from core.validation import check_choice, check_level

__all__ = ["FINISHED_COLUMNS", "RUN_COLUMNS", "RUN_STATES", "TRAIN_KIND", "evaluation_test_sets",
           "finetune_gaps", "finished_runs", "finished_wide", "loss_curves", "lr_label",
           "run_report", "run_table"]

RUN_COLUMNS = ("run_id", "kind", "status", "state", "mode", "lr", "parent", "child", "preprocess",
               "epochs", "epochs_done", "progress", "eta_s", "elapsed_s", "best_epoch",
               "best_val_loss", "train_set", "val_set", "device", "evaluate", "started_at",
               "ended_at", "message", "error")
CURVE_COLUMNS = ("run_id", "run", "mode", "lr", "epoch", "split", "loss", "val_auc", "best")
FINISHED_COLUMNS = ("run_id", "mode", "lr", "preprocess", "parent", "child", "test_set", "n_pos",
                    "n_neg", "auc", "ci_low", "ci_high", "parent_auc", "parent_ci_low",
                    "parent_ci_high", "diff", "p", "n_excluded", "note")
SPLITS = ("training", "validation")
# What a person reads for a run: the store's status, with 'running' told apart into a training
# run still waiting for its worker (a sweep trains its rates one after another), one training,
# one scoring its test sets after its last epoch, and one whose worker is gone (killed, a
# restart: seen on read, never written by a read; resume it, or cancel records it failed).
RUN_STATES = ("queued", "running", "evaluating", "worker gone", "done", "failed", "cancelled")


def lr_label(lr: float | None) -> str:
    """A learning rate as every place writes it (child names, descriptions, legends, the page):
    scientific, up to three significant digits, trailing zeros dropped: ``1e-04``, ``1e-05``,
    ``1.29e-06``, ``5e-06``; "lr ?" when unknown.

    Why one rule: ``:.2g`` wrote 1e-4 as ``0.0001`` beside ``1e-05``, and the legends wrote
    ``1.0e-05``: the same sweep read three ways."""
    if lr is None or not math.isfinite(float(lr)):
        return "lr ?"
    mantissa, exponent = f"{float(lr):.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


def _lr(params: dict) -> float:
    """The run's learning rate: ``lr``, else the only one of ``lrs``, else NaN."""
    if params.get("lr") is not None:
        return float(params["lr"])
    lrs = params.get("lrs") or []
    return float(lrs[0]) if len(lrs) == 1 else math.nan


def _train_runs(store: Store, kind: str | None = TRAIN_KIND, *, status: str | None = None,
                run_ids: Sequence[str] | None = None) -> list[dict]:
    match = {"kind": kind} if kind is not None else {}
    if status is not None:
        match["status"] = check_choice(status, RUN_STATUSES, name="status")
    if run_ids is not None:
        match["run_id"] = list(run_ids)
    return list_runs(store, **match)


def _decoded(store: Store, run_id: str) -> dict:
    run = get_run(store, run_id)
    if run is None:
        raise InputError(f"run_id {run_id!r} is not in this store; list the runs with "
                         "`python -m core runs list`")
    return run


# ---------------------------------------------------------------------------- runs

def run_table(store: Store, *, kind: str | None = TRAIN_KIND, status: str | None = None,
              now: datetime | None = None) -> pd.DataFrame:
    """One row per run of ``kind`` (None: every kind), newest first.

    Parameters
    ----------
    store : Store
    kind : str or None, default 'train'
    status : {'running', 'done', 'failed', 'cancelled'} or None
    now : datetime, optional
        The clock for elapsed time and ETA (tests pass one); default `datetime.now()`, the
        clock ``runs.started_at`` was written with.

    Returns
    -------
    DataFrame
        Columns `RUN_COLUMNS`. ``state`` is one of `RUN_STATES`: ``status``, except that a
        running training run is 'queued' before its first progress (no progress.json, no
        epoch, no total) and 'evaluating' once its last epoch is written or its child model
        named (training over; the child is registered and its test sets scored); any
        running run is 'worker gone' when its worker's records name dead processes
        (`core.jobs.workers.gone_workers`), ``error`` then saying which. ``progress`` is
        done / total in [0, 1] (a running run's from its live progress.json, written several
        times an epoch); ``elapsed_s`` runs from the start to the end (or ``now``); ``eta_s`` =
        elapsed_s (1 - progress) / progress for a running run with some progress (0 when done,
        NaN otherwise, and for a run whose worker is gone): a resumed run's elapsed time
        includes the pause, so its ETA errs long. ``epochs_done`` counts its ``train_epochs``
        rows. Training columns are NaN for other kinds.

    Reads only: two store queries whatever the number of runs, plus a few small files per
    running run (progress, worker records). Why: the list used to query the runs table again
    for each record of each run, and fail orphans as it went (229 runs: 73 s); `bench/jobs.py`.
    """
    now = datetime.now() if now is None else now
    with store.connection():
        runs = _train_runs(store, kind, status=status)
        ids = [r["run_id"] for r in runs]
        epochs = store.select("train_epochs", run_id=ids) if ids else None
    running = [r for r in runs if r["status"] == "running"]
    live = {r["run_id"]: _live_progress(store, r) for r in running}
    gone = gone_workers(store, running)
    done_epochs = {} if epochs is None else epochs.groupby("run_id")["epoch"].max().to_dict()
    rows = [_run_row(r, done_epochs.get(r["run_id"], 0), live.get(r["run_id"]), now,
                     gone=gone.get(r["run_id"])) for r in runs]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def _live_progress(store: Store, run: dict) -> dict | None:
    """`read_progress` from the row in hand: its folder's progress.json (no store read)."""
    try:
        return json.loads((store.files_dir / run["folder"] / "progress.json").read_text())
    except FileNotFoundError:
        return None


def _run_row(run: dict, epochs_done: int, live: dict | None, now: datetime, *,
             gone: str | None = None) -> dict:
    params = run["params"]
    done, total = ((live["done"], live["total"]) if live else
                   (run["progress_done"], run["progress_total"]))
    if run["status"] == "done":
        progress = 1.0
    elif done is not None and total:
        progress = min(float(done) / float(total), 1.0)
    else:
        progress = 0.0 if run["status"] == "running" else math.nan
    state = "worker gone" if gone else _state(run, epochs_done, live, total)
    started = pd.Timestamp(run["started_at"])
    ended = pd.Timestamp(run["ended_at"]) if run["ended_at"] is not None else pd.Timestamp(now)
    elapsed = max((ended - started).total_seconds(), 0.0)
    if run["status"] == "done":
        eta = 0.0
    elif run["status"] == "running" and 0 < progress < 1 and not gone:
        eta = elapsed * (1 - progress) / progress
    else:
        eta = math.nan
    message = (live or {}).get("message") or run["message"] or ""
    return {
        "run_id": run["run_id"], "kind": run["kind"], "status": run["status"], "state": state,
        "mode": params.get("mode"), "lr": _lr(params), "parent": params.get("parent_model"),
        "child": params.get("child_model"), "preprocess": params.get("preprocess"),
        "epochs": params.get("epochs"), "epochs_done": int(epochs_done), "progress": progress,
        "eta_s": eta, "elapsed_s": elapsed, "best_epoch": params.get("best_epoch"),
        "best_val_loss": params.get("best_val_loss"), "train_set": params.get("train_set"),
        "val_set": params.get("val_set"), "device": params.get("device"),
        "evaluate": list(params.get("evaluate") or []),
        "started_at": started, "ended_at": run["ended_at"], "message": message,
        "error": gone or run["error"]}


def _state(run: dict, epochs_done: int, live: dict | None, total) -> str:
    if run["status"] != "running" or run["kind"] != TRAIN_KIND:
        return run["status"]
    epochs = run["params"].get("epochs")
    if run["params"].get("child_model") or (epochs and epochs_done >= epochs):
        return "evaluating"
    if live is None and not total and not epochs_done:
        return "queued"
    return "running"


def finetune_gaps(store: Store, *, dataset: str | None = None) -> list[str]:
    """What fine-tuning lacks in this store (or in ``dataset``), one sentence each: no GMIC
    model to start from, no images, no cancers, no ILC cases (the study's subject), no
    training/validation split. Empty when nothing is missing.

    Why: a store of mini-MIAS alone opened the page with a parent it does not hold and the
    same set for training and validation, and said nothing until a launch failed.
    """
    notes = []
    models = store.models()
    if not (models["kind"] == "gmic").any():
        notes.append("No GMIC model in this store: the parent offered is the shipped gmic-demo "
                     "(trained on synthetic images); type a checkpoint path to start from "
                     "another.")
    cases = store.cases(level="breast")
    if dataset is not None:
        cases = cases[cases["dataset"] == dataset]
    where = dataset or "This store"
    cancers = cases[cases["label"] == 1]
    if cases.empty:
        notes.append(f"{where} has no images to train on: import some on the Import page.")
    elif cancers.empty:
        notes.append(f"{where} has no cancers: training needs malignant and healthy images.")
    elif not (cancers["histology"] == "ILC").any():
        kinds = ", ".join(sorted(cancers["histology"].astype(str).unique()))
        notes.append(f"{where} has no ILC cases ({len(cancers)} cancerous breasts, histology "
                     f"{kinds}): runs here learn every cancer type, not the study's ILC.")
    sets = store.testsets()
    if dataset is not None:
        sets = sets[sets["datasets"].str.split(",").map(lambda d: dataset in
                                                       [x.strip() for x in d])]
    names = sets["name"].tolist()
    if not cases.empty and not (any("train" in n for n in names)
                                and any("val" in n for n in names)):
        base = dataset if dataset in names else (names[0] if names else "SET")
        notes.append(f"No training and validation sets{f' of {dataset}' if dataset else ''}: "
                     f"split one by exam with `python -m core split --test-set {base} "
                     f"--prefix {base}` (then pick {base}-train and {base}-val).")
    return notes


# ---------------------------------------------------------------------------- curves

def loss_curves(store: Store, *, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Training and validation loss per epoch of training runs (all, or ``run_ids``).

    Returns
    -------
    DataFrame
        Columns `CURVE_COLUMNS`, one row per (run, epoch, split): ``run`` is the legend's label
        (the learning rate, with the run id's tail when two runs share a rate), ``split``
        'training' or 'validation', ``loss`` the epoch's mean loss, ``val_auc`` the epoch's
        validation AUC (on both splits' rows), ``best`` whether the epoch is the run's best by
        validation loss (the checkpoint kept). Ordered by run (oldest first), epoch, split;
        empty (same columns) before any epoch ended.
    """
    with store.connection():
        runs = _train_runs(store, run_ids=run_ids)[::-1]       # oldest first: stable colours
        ids = [r["run_id"] for r in runs]
        epochs = store.select("train_epochs", run_id=ids) if ids else pd.DataFrame()
    if epochs.empty:
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    info = pd.DataFrame({"run_id": ids, "mode": [r["params"].get("mode") for r in runs],
                         "lr": [_lr(r["params"]) for r in runs]})
    labels = info["lr"].map(lr_label)
    shared = labels.duplicated(keep=False)
    info["run"] = np.where(shared, labels + " · " + info["run_id"].str[-4:], labels)
    best = epochs.groupby("run_id")["val_loss"].transform(
        lambda v: v == v.min() if v.notna().any() else False)
    epochs = epochs.assign(best=best.astype(bool))
    order = {r: i for i, r in enumerate(info["run_id"])}
    long = epochs.melt(id_vars=["run_id", "epoch", "val_auc", "best"],
                       value_vars=["train_loss", "val_loss"], var_name="split", value_name="loss")
    long["split"] = long["split"].map({"train_loss": "training", "val_loss": "validation"})
    long = long.merge(info[["run_id", "run", "mode", "lr"]], on="run_id")
    long = long.assign(order=long["run_id"].map(order)).sort_values(
        ["order", "epoch", "split"], ignore_index=True)
    return long[list(CURVE_COLUMNS)].astype({"epoch": np.int64, "loss": np.float64})


# ---------------------------------------------------------------------------- finished runs

def finished_runs(store: Store, *, test_sets: Sequence[str] | None = None,
                  run_ids: Sequence[str] | None = None, level: str = "image",
                  how: str = "max") -> pd.DataFrame:
    """The study's table 6.2: each finished run's child against its parent on each test set.

    Parameters
    ----------
    test_sets : sequence of str, optional
        Default: the test sets the runs evaluated on (their ``evaluate``), else test-ILC and
        test-all where the store has them.
    run_ids : sequence of str, optional
        Default: every done training run that registered a child model.
    level, how :
        As in `core.reports.benchmark.load_scores` (image level by default: what GMIC scores).

    Returns
    -------
    DataFrame
        Columns `FINISHED_COLUMNS`, one row per (run, test set), newest run first: the child's
        n_pos, n_neg, auc and DeLong CI, the parent's, and the paired DeLong test of child
        against parent on the cases both scored (``diff`` = child - parent, two-sided ``p``,
        ``n_excluded`` cases left out). ``note`` says why a number is missing ("child not
        evaluated", "parent has no scores", "n/a: no positives").
    """
    check_level(level)
    known = store.testset_names()
    runs = run_table(store, status="done")
    runs = runs[runs["child"].notna()]
    if run_ids is not None:
        unknown = sorted(set(run_ids) - set(runs["run_id"]))
        if unknown:
            raise InputError(f"run_ids {', '.join(unknown)} are not finished training runs with "
                             "a child model; see `python -m core runs list`")
        runs = runs[runs["run_id"].isin(list(run_ids))]
    test_sets = list(dict.fromkeys(evaluation_test_sets(runs, known) if test_sets is None
                                   else test_sets))
    if missing := [t for t in test_sets if t not in known]:
        raise InputError(f"test set {missing[0]!r} does not exist; "
                         f"known: {', '.join(known) or 'none yet'}")
    if runs.empty or not test_sets:
        return pd.DataFrame(columns=list(FINISHED_COLUMNS))
    scored = set(usable_models(store.prediction_levels(), level))
    models = [m for m in dict.fromkeys([*runs["child"], *runs["parent"].dropna()]) if m in scored]
    scores = (load_scores(store, models=models, test_sets=test_sets, level=level, how=how)
              if models else None)
    aucs = (auc_summary(scores).set_index(["test_set", "model"]) if scores is not None else None)
    rows = []
    for run in runs.itertuples(index=False):
        for test_set in test_sets:
            rows.append(_finished_row(run, test_set, scores, aucs, scored))
    return pd.DataFrame(rows, columns=list(FINISHED_COLUMNS))


def evaluation_test_sets(runs: pd.DataFrame, known: Sequence[str]) -> list[str]:
    """The test sets ``runs`` (a `run_table`) evaluated on, among ``known``; else test-ILC and
    test-all where the store has them (the study's two)."""
    evaluated = [t for chosen in runs["evaluate"] for t in chosen]
    return [t for t in dict.fromkeys(evaluated) if t in known] or default_test_sets(None, known)


def _finished_row(run, test_set: str, scores: pd.DataFrame | None, aucs: pd.DataFrame | None,
                  scored: set) -> dict:
    row = dict.fromkeys(FINISHED_COLUMNS, math.nan) | {
        "run_id": run.run_id, "mode": run.mode, "lr": run.lr, "preprocess": run.preprocess,
        "parent": run.parent, "child": run.child, "test_set": test_set, "note": ""}
    notes = []
    for who, prefix in ((run.child, ""), (run.parent, "parent_")):
        if who not in scored:
            notes.append("child not evaluated" if not prefix else "parent has no scores")
            continue
        r = aucs.loc[(test_set, who)]
        row |= {f"{prefix}auc": r["auc"], f"{prefix}ci_low": r["ci_low"],
                f"{prefix}ci_high": r["ci_high"]}
        if not prefix:
            row |= {"n_pos": int(r["n_pos"]), "n_neg": int(r["n_neg"])}
        if r["note"]:
            notes.append(f"{'parent ' if prefix else ''}{r['note']}")
    if not (math.isnan(row["auc"]) or math.isnan(row["parent_auc"])):
        pair = scores[(scores["test_set"] == test_set) & scores["model"].isin([run.child,
                                                                            run.parent])]
        pair = pair.sort_values("model", key=lambda m: m != run.child, kind="stable")
        test = pairwise_tests(pair)           # child first: diff = child - parent
        if len(test):
            t = test.iloc[0]
            row |= {"diff": t["diff"], "p": t["p"], "n_excluded": int(t["n_excluded"])}
        else:
            notes.append("no cases scored by both with both classes")
    row["note"] = "; ".join(dict.fromkeys(notes))
    return row


def finished_wide(table: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """Table 6.2's layout of `finished_runs`: one row per run; per test set the child's
    "AUC [95% CI]", the parent's and the paired DeLong p-value."""
    def cell(auc, low, high):
        if math.isnan(auc):
            return "n/a"
        if math.isnan(low):
            return f"{auc:.{digits}f} [CI n/a]"
        return f"{auc:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    rows: dict[str, dict] = {}
    for r in table.itertuples(index=False):
        row = rows.setdefault(r.run_id, {"run_id": r.run_id, "mode": r.mode, "lr": r.lr,
                                         "preprocess": r.preprocess, "child": r.child,
                                         "parent": r.parent})
        row[f"{r.test_set} child AUC [95% CI]"] = cell(r.auc, r.ci_low, r.ci_high)
        row[f"{r.test_set} parent AUC [95% CI]"] = cell(r.parent_auc, r.parent_ci_low,
                                                        r.parent_ci_high)
        row[f"{r.test_set} p (DeLong)"] = (f"{r.p:.{digits}g}" if not math.isnan(r.p)
                                           else r.note or "n/a")
    return pd.DataFrame(list(rows.values()))


# ---------------------------------------------------------------------------- one run

def run_report(store: Store, run_id: str, *, test_sets: Sequence[str] | None = None,
               now: datetime | None = None) -> dict:
    """Everything about one run (``runs show``): its row (progress, ETA), parameters, live
    progress, per-epoch metrics and, when it finished with a child model, its table 6.2 rows."""
    run = _decoded(store, run_id)
    row = run_table(store, kind=run["kind"], now=now)
    row = row[row["run_id"] == run_id].iloc[0].to_dict()
    epochs = store.select("train_epochs", run_id=run_id).sort_values("epoch", ignore_index=True)
    out = {"run": row, "params": run["params"], "code_version": run["code_version"],
           "folder": run["folder"], "progress": read_progress(store, run_id), "epochs": epochs}
    if run["kind"] == TRAIN_KIND and run["status"] == "done" and row["child"] is not None:
        out["evaluation"] = finished_runs(store, test_sets=test_sets, run_ids=[run_id])
    return out
