"""Hostile training options and checkpoints (issue 31, items 6 and 7).

Absurd sizes are one line and exit 2 before any run row or folder exists; a checkpoint torch
refuses is one line and no row; `runs resume` of a run that fails again exits 1.
"""
from __future__ import annotations

import json
import pickle
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from cli import main
from core.errors import InputError
from core.saliency import read_saliency
from core.splits import create_splits
from core.jobs.workers import fail_run
from core.store import open_store
from models.inference.predict import DEMO_CHECKPOINT
from models.training.sweep import MAX_RUNS, TrainRequest, create_runs
from tests.conftest import copy_store


@pytest.fixture(scope="module")
def split_store(demo_store_path, tmp_path_factory):
    path = copy_store(demo_store_path, tmp_path_factory.mktemp("runs"))
    create_splits(open_store(path), test_set="demo", prefix="sp", seed=0)
    return path


@pytest.fixture
def db(split_store, tmp_path):
    return copy_store(split_store, tmp_path)


def train(db, *extra) -> int:
    return main(["train", "--db", str(db), "--model-init", "gmic-demo", "--mode", "full",
                 "--train-set", "sp-train", "--val-set", "sp-val", "--device", "cpu", *extra])


def runs_rows(db) -> int:
    return len(open_store(db, read_only=True).select("runs"))


@pytest.mark.parametrize("flags, message", [
    (["--lr", "1e-6:1e-5", "--runs", "100000"], f"runs is 100000: at most {MAX_RUNS}"),
    (["--lr", ",".join(f"{k}e-6" for k in range(1, 10)) + "," +
      ",".join(f"1.{k:03d}e-5" for k in range(MAX_RUNS))], f"at most {MAX_RUNS}"),
    (["--workers", "100000"], "workers must be an integer from 0 to 64; got 100000"),
    (["--epochs", "1000000000"], "epochs must be an integer from 1 to 10000; got 1000000000"),
    (["--batch-size", "100000000"], "--batch-size must be an integer from 2 to 4096"),
    (["--seed", str(2**40)], "seed must be an integer from 0 to 4294967295"),
])
def test_absurd_sizes_are_one_line_before_any_run(db, capsys, flags, message):
    before = runs_rows(db)
    folders = sorted((open_store(db, read_only=True).files_dir).rglob("*"))
    assert train(db, *flags) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert runs_rows(db) == before
    assert sorted((open_store(db, read_only=True).files_dir).rglob("*")) == folders


def test_the_bounds_themselves_are_accepted(db):
    """The highest accepted values pass validation (checked without training)."""
    from models.training.sweep import validate_request

    store = open_store(db)
    validate_request(store, TrainRequest(model_init="gmic-demo", mode="full",
                                         train_set="sp-train", val_set="sp-val",
                                         lrs=tuple(1e-6 * (k + 1) for k in range(MAX_RUNS)),
                                         epochs=10_000, batch_size=4096, workers=64,
                                         device="cpu"))


class _Payload:  # a pickled object: torch's weights_only loader refuses it
    def __reduce__(self):
        return (print, ("never run",))


def test_a_refused_checkpoint_is_one_line_and_no_run(db, tmp_path, capsys):
    bad = tmp_path / "evil.pt"
    state = torch.load(DEMO_CHECKPOINT, weights_only=True)
    with open(bad, "wb") as f:
        torch.save({**state, "extra": _Payload()}, f, pickle_module=pickle)
    before = runs_rows(db)
    assert main(["train", "--db", str(db), "--model-init", str(bad), "--mode", "full",
                 "--train-set", "sp-train", "--val-set", "sp-val", "--device", "cpu",
                 "--epochs", "1", "--batch-size", "4"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"checkpoint {bad} was refused (UnpicklingError)" in lines[0]
    assert "never run" not in captured.out + captured.err
    assert runs_rows(db) == before


def test_resume_that_fails_again_exits_1(db, tmp_path, capsys):
    checkpoint = tmp_path / "parent.pt"
    shutil.copy(DEMO_CHECKPOINT, checkpoint)
    store = open_store(db)
    (run_id,) = create_runs(store, TrainRequest(
        model_init=str(checkpoint), mode="full", train_set="sp-train", val_set="sp-val",
        lrs=(1e-4,), epochs=1, batch_size=4, device="cpu", config="demo"))
    fail_run(store, run_id, "its worker was killed")   # else this test is its live creator
    checkpoint.write_bytes(b"not a checkpoint any more")
    del store
    assert main(["runs", "resume", run_id, "--db", str(db)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: run {run_id} failed again: ")
    assert open_store(db, read_only=True).select("runs", run_id=run_id)["status"].tolist() == \
        ["failed"]


_CREATE_THEN_DIE = """
import os, signal, sys
from core.store import open_store
from models.training.sweep import TrainRequest, create_runs
ids = create_runs(open_store(sys.argv[1]), TrainRequest(
    model_init="gmic-demo", mode="full", train_set="sp-train", val_set="sp-val",
    lrs=(1e-5, 2e-5, 3e-5), epochs=1, batch_size=4, device="cpu"))
print(os.getpid(), " ".join(ids), flush=True)
os.kill(os.getpid(), signal.SIGKILL)   # killed before any worker starts (Ctrl-C, OOM, a reboot)
"""


def test_runs_whose_creator_was_killed_before_the_worker_are_failed_by_runs_list(db, capsys):
    """Item 6's leftover: a process killed after creating its runs and before starting their
    worker left them 'running' forever; now `runs list` fails them, once, naming its pid."""
    import subprocess
    import sys

    from core.store.runs import get_run
    from core.jobs.workers import CREATOR_FILE, fail_orphaned_runs, orphaned_runs

    child = subprocess.run([sys.executable, "-c", _CREATE_THEN_DIE, str(db)],
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == -9, child.stderr
    pid, *run_ids = child.stdout.split()
    store = open_store(db, read_only=True)
    assert len(run_ids) == 3 and all(get_run(store, r)["status"] == "running" for r in run_ids)
    folder = store.files_dir / get_run(store, run_ids[0])["folder"]
    assert [p.name for p in folder.glob("*.json") if p.name != "params.json"] == [CREATOR_FILE]
    assert sorted(orphaned_runs(store)) == sorted(run_ids)
    before = store.select("runs")
    del store
    assert main(["runs", "list", "--db", str(db), "--json"]) == 0
    listed = {r["run_id"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert all(listed[r] == "worker gone" for r in run_ids)      # said on read ...
    store = open_store(db)
    pd.testing.assert_frame_equal(store.select("runs"), before)   # ... and nothing written
    assert sorted(fail_orphaned_runs(store)) == sorted(run_ids)   # the liveness check writes
    for run_id in run_ids:
        row = get_run(store, run_id)
        assert row["status"] == "failed", run_id
        assert row["error"] == (f"the process that created it (pid {pid}) ended before starting "
                                "its worker: killed, or the machine restarted; resume the run "
                                "from its last epoch")
    assert fail_orphaned_runs(store) == []                      # once


def test_runs_created_by_a_live_process_are_no_orphans(db):
    """The creator still runs (this test; a page's server between create and launch): the
    runs wait for their worker, and a reused pid with another start time counts as gone."""
    import json

    from core.store.runs import get_run
    from core.jobs.workers import CREATOR_FILE, orphaned_runs, worker_alive

    store = open_store(db)
    (run_id,) = create_runs(store, TrainRequest(
        model_init="gmic-demo", mode="full", train_set="sp-train", val_set="sp-val",
        lrs=(1e-4,), epochs=1, batch_size=4, device="cpu"))
    assert orphaned_runs(store) == {} and worker_alive(store, run_id) is None
    path = store.files_dir / get_run(store, run_id)["folder"] / CREATOR_FILE
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"identity": record["identity"] + "0"}))
    assert list(orphaned_runs(store)) == [run_id]
    path.write_text(json.dumps(record | {"host": record["host"] + "-elsewhere"}))
    assert orphaned_runs(store) == {}                             # another machine: cannot tell


# ---------------------------------------------------------------------------- 8. saliency
from tests.test_saliency import oracle_store  # noqa: E402,F401 - the report's store, reused

_GEOMETRY = dict(model=np.str_("m"), image_id=np.str_("i"), malignant=np.ones((2, 2), np.float16),
                 benign=np.zeros((2, 2), np.float16), input_shape=np.array([4, 4]),
                 flipped=np.bool_(False), scale=np.array([0.5, 0.5]), format=np.int64(1))


@pytest.mark.parametrize("original, crop, message", [
    ([200_000, 200_000], [0, 0, 8, 8], "original_shape (200000, 200000) is not two sides"),
    ([-8, 8], [0, 0, 8, 8], "original_shape (-8, 8) is not two sides"),
    ([8], [0, 0, 8, 8], "original_shape (8,) is not two sides"),
    ([8, 8], [0, 0, 10**9, 8], "crop_box (0, 0, 1000000000, 8) is not a box"),
    ([8, 8], [0, 0, -4, 8], "crop_box (0, 0, -4, 8) is not a box"),
])
def test_saliency_geometry_is_checked_before_allocating(tmp_path, original, crop, message):
    path = tmp_path / "s.npz"
    np.savez_compressed(path, original_shape=np.array(original), crop_box=np.array(crop),
                        **_GEOMETRY)
    with pytest.raises(InputError, match=re.escape(message)):
        read_saliency(path)


def test_a_crop_box_past_the_edges_still_reads_and_maps(tmp_path):
    """The NYU windows reach past the image on purpose: kept, only the inside is mapped."""
    path = tmp_path / "s.npz"
    np.savez_compressed(path, original_shape=np.array([8, 8]),
                        crop_box=np.array([-2, 4, 8, 8]), **_GEOMETRY)
    values = read_saliency(path, image_shape=(8, 8)).to_original()
    expected = np.zeros((8, 8), np.float32)
    expected[:6, 4:] = 1  # rows -2..5 and columns 4..11 of the box, clipped to the image
    assert values.tolist() == expected.tolist()
    with pytest.raises(InputError, match="maps to 8 x 8 pixels but the image is stored as "
                                         "9 x 8"):
        read_saliency(path, image_shape=(9, 8))


def test_report_saliency_refuses_a_huge_geometry_in_one_line(oracle_store, tmp_path, capsys):
    db = copy_store(oracle_store, tmp_path)
    store = open_store(db)
    rel = store.select("predictions", model="oracle")["saliency_path"].iat[0]
    with np.load(store.files_dir / rel) as z:
        fields = dict(z)
    fields["original_shape"] = np.array([200_000, 200_000])
    np.savez_compressed(store.files_dir / rel, **fields)
    del store
    code = main(["report", "saliency", "--db", str(db), "--test-set", "test-all",
                 "--model", "oracle"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "original_shape (200000, 200000) is not two sides" in err


# ---------------------------------------------------------------------------- 12. ratings, MRMC
IMRMC = """Hostile ratings
BEGIN DATA:
-1, c1, 0, 1
-1, c2, 0, 0
r1, c1, A, {rating}
r1, c2, A, 2
"""


@pytest.mark.parametrize("rating", ["1_000", "١٢", "inf", "nan", "0x10", "1e", ". 5", "1,5"])
def test_a_rating_that_is_not_a_plain_decimal_is_refused(rating):
    from core.importers.reader_study import parse_imrmc

    text = IMRMC.format(rating=rating)
    if rating == "1,5":  # a comma is a field separator: five fields, also refused
        with pytest.raises(InputError, match="line 5 has 5 field"):
            parse_imrmc(text, "s.imrmc")
        return
    with pytest.raises(InputError, match="line 5 has the score .*plain decimal numbers"):
        parse_imrmc(text, "s.imrmc")


@pytest.mark.parametrize("rating, value", [("87", 87.0), ("+0.5", 0.5), (".25", 0.25),
                                           ("-3.", -3.0), ("1e3", 1000.0), ("2E-2", 0.02)])
def test_plain_decimal_ratings_read_as_written(rating, value):
    from core.importers.reader_study import parse_imrmc

    reads = parse_imrmc(IMRMC.format(rating=rating), "s.imrmc").reads
    assert reads["rating"].tolist() == [value, 2.0]


def test_equal_ratings_say_the_study_cannot_be_tested():
    """Every rating 50: every AUC is 0.5 by hand (all pairs tied), no variance, no test."""
    from core.stats import mrmc_test

    truth = np.array([0, 1] * 6)
    for method in ("or", "dbm"):
        result = mrmc_test(np.full((3, 2, 12), 50.0), truth, method=method)
        assert (result.auc.to_numpy() == 0.5).all()
        sentence = result.summary()
        assert sentence.startswith("The study cannot be tested: every reader's AUC is 0.500 "
                                   "in every modality"), sentence
        assert "nan" not in sentence and "from 0.500 to 0.500" not in sentence
    varied = mrmc_test(np.random.default_rng(0).normal(size=(3, 2, 12)), truth)
    assert varied.summary().startswith("With modality 2 instead of modality 1")
