"""Kills and readers during imports (issue 17, findings 5 and 6).

A kill is simulated deterministically at each stage of an import (decoding a file, inside the
write transaction, after the write and before the final test-set check, and one real
``os._exit`` in a subprocess): afterwards every table equals the store before the command or
after an uninterrupted one, and a re-run gives exactly the uninterrupted result. A reader in
another process polls the store during a slowed import and must never be locked out for longer
than about one insert.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from core.importers.dicom import import_dicom
from core.importers.mias import import_mias
from core.importers.png import import_png
from core.store import Store, open_store
from tests.conftest import REPO, copy_store
from tests.test_import_dicom import make_dicom
from tests.test_import_png import write_png

# Columns and rows that differ between two identical runs by design: write times, the truth
# token (renewed by every write) and the runs table (a job's id and clock times).
VOLATILE_COLUMNS = ("created_at", "started_at", "ended_at")
VOLATILE_TABLES = ("runs",)


def _cell(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return repr([_cell(v) for v in value])
    if isinstance(value, float):
        return round(value, 6)
    return value


def store_tables(store: Store) -> dict[str, pd.DataFrame]:
    """Every table of the store as a sorted frame of comparable cells (volatile parts dropped)."""
    out = {}
    with store.connection() as con:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() ORDER BY 1").fetchall()]
        for name in names:
            if name in VOLATILE_TABLES:
                continue
            frame = con.execute(f"SELECT * FROM {name}").df()
            if name == "meta":
                frame = frame[frame["key"] != "truth_token"]
            frame = frame.drop(columns=[c for c in VOLATILE_COLUMNS if c in frame])
            frame = frame.astype(object).map(_cell).astype(str)
            out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> bool:
    return a.keys() == b.keys() and all(a[t].equals(b[t]) for t in a)


class Killed(KeyboardInterrupt):
    """The simulated kill (a KeyboardInterrupt: nothing in an importer may swallow it)."""


def kill_on_call(monkeypatch, target: str, *, after: int = 0):
    """Make ``target`` (module.attribute) raise `Killed` on call number ``after + 1``."""
    module, name = target.rsplit(".", 1)
    import importlib

    owner = importlib.import_module(module)
    real = getattr(owner, name)
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise Killed(target)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, fake)


def kill_method(monkeypatch, cls, name: str):
    def fake(*args, **kwargs):
        raise Killed(name)

    monkeypatch.setattr(cls, name, fake)


# The stages of an import, each as (what to break, how): the file-reading function of the
# importer (at its third file), the test-set write inside the transaction, the final check.
def _stages(read_target: str):
    return {
        "decoding": lambda mp: kill_on_call(mp, read_target, after=2),
        "in-transaction": lambda mp: kill_on_call(mp, "core.store.testsets.write_testsets"),
        "after-write": lambda mp: kill_method(mp, Store, "refresh_testsets"),
    }


def check_kills(tmp_path, run, read_target: str, *, prepare=None) -> None:
    """For each stage: kill there, compare with before/after, re-run, compare with after."""
    base = open_store(tmp_path / "base" / "s.duckdb")
    if prepare is not None:
        prepare(base)
    base.checkpoint()
    before = store_tables(base)
    reference = open_store(copy_store(base.path, tmp_path / "reference"))
    run(reference)
    after = store_tables(reference)
    assert not same(before, after)
    assert after["testset_exams"].shape[0] > before["testset_exams"].shape[0]
    for stage, kill in _stages(read_target).items():
        store = open_store(copy_store(base.path, tmp_path / stage))
        with pytest.MonkeyPatch.context() as mp:
            kill(mp)
            with pytest.raises(Killed):
                run(store)
        killed = store_tables(store)
        assert same(killed, before) or same(killed, after), stage
        run(store)
        assert same(store_tables(store), after), stage


def test_mias_kill_at_each_stage_leaves_before_or_after(mias_dir, tmp_path):
    check_kills(tmp_path, lambda s: import_mias(s, mias_dir), "core.importers.mias.raster_record")


@pytest.fixture()
def png_folder(tmp_path):
    root = tmp_path / "pngs"
    for seed, name in enumerate(["0_L_CC", "0_R_CC", "1_L_MLO", "1_R_MLO", "2_L_CC"]):
        write_png(root / f"{name}.png", seed=seed)
    pd.DataFrame({"exam": [0, 0, 1, 1, 2], "laterality": ["L", "R", "L", "R", "L"],
                  "cancer": [0, 1, 0, 0, 1], "histology": ["none", "ILC", "none", "none", "IDC"],
                  "split": ["test", "test", "train", "train", "test"]}
                 ).to_csv(tmp_path / "labels.csv", index=False)
    return root, tmp_path / "labels.csv"


def test_png_kill_at_each_stage_leaves_before_or_after(png_folder, tmp_path):
    root, manifest = png_folder

    def prepare(store):  # a user's test set over the dataset: the import must keep it current
        store.create_testset("pngs-test", "dataset=pngs split=test")

    check_kills(tmp_path, lambda s: import_png(s, root, manifest),
                "core.importers.png.raster_record", prepare=prepare)


@pytest.fixture()
def dicom_folder(tmp_path):
    root = tmp_path / "dicoms"
    root.mkdir()
    for i, (lat, view) in enumerate([("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")]):
        make_dicom(root / f"{i}.dcm", laterality=lat, view=view,
                   study=f"1.2.826.0.1.3680043.8.498.{10 + i // 2}")
    return root


def test_dicom_kill_at_each_stage_leaves_before_or_after(dicom_folder, tmp_path):
    check_kills(tmp_path, lambda s: import_dicom(s, dicom_folder),
                "core.importers.dicom.read_dicom")


@pytest.mark.parametrize("importer", ["png", "dicom"])
def test_unchanged_reimport_repairs_a_stale_test_set(importer, png_folder, dicom_folder,
                                                     tmp_path):
    """A set left stale by an older, interrupted import is rebuilt although no file changed."""
    store = open_store(tmp_path / "s.duckdb")
    run = {"png": lambda: import_png(store, *png_folder),
           "dicom": lambda: import_dicom(store, dicom_folder)}[importer]
    dataset = {"png": "pngs", "dicom": "dicoms"}[importer]
    run()
    complete = store_tables(store)
    store.delete_testset(dataset)  # the state an import killed before its test sets left
    assert dataset not in store.testset_names()
    report = run()
    assert {o.status for o in report.outcomes} <= {"skipped"}  # every file unchanged
    assert same(store_tables(store), complete)


def test_mias_real_kill_after_write_leaves_after(mias_dir, tmp_path):
    """os._exit (no cleanup, no rollback handlers) right after the rows' commit."""
    path = tmp_path / "s.duckdb"
    script = textwrap.dedent(f"""
        import os
        from core.store import Store, open_store
        from core.importers.mias import import_mias
        Store.refresh_testsets = lambda *a, **k: os._exit(9)
        import_mias(open_store({str(path)!r}), {str(mias_dir)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 9, done.stderr
    store = open_store(path)
    killed = store_tables(store)
    import_mias(store, mias_dir)  # the reference: an uninterrupted import (a no-op here)
    assert same(killed, store_tables(store))
    assert killed["testset_exams"]["name"].eq("mias").sum() == 161


# ---------------------------------------------------------------------------- demo
def _childs_set(name: str) -> bool:
    from models.demo.finetune import SPLIT_PREFIX, TRAIN_SETS
    return name in TRAIN_SETS or name.startswith(f"{SPLIT_PREFIX}-")


def test_demo_killed_at_each_stage_is_completed_by_a_rerun(tmp_path):
    """`demo` = the cohort (rows and test sets: one transaction), then one per model."""
    from cli import main

    def demo(path) -> int:
        return main(["demo", "--db", str(path), "--n-exams", "8", "--json"])

    base = open_store(tmp_path / "base" / "s.duckdb")
    base.checkpoint()
    empty = store_tables(base)
    reference = copy_store(base.path, tmp_path / "reference")
    assert demo(reference) == 0
    after = store_tables(open_store(reference))
    # demo, train, test-all, test-ILC, test-IDC, and the child's ilc-train and ilc-val
    assert after["predictions"].shape[0] > 0 and after["testsets"].shape[0] == 7
    assert "gmic-demo-ilc" in set(after["models"]["model"])      # the shipped child too
    stages = {
        "rendering": lambda mp: kill_on_call(mp, "core.demo.cohort._render_all"),
        "in-transaction": lambda mp: kill_on_call(mp, "core.store.testsets.write_testsets"),
        "before-models": lambda mp: kill_on_call(mp, "models.demo.models.add_demo_models"),
        "between-models": lambda mp: kill_on_call(
            mp, "models.demo.models.add_gmic_demo_predictions"),
        "before-child": lambda mp: kill_on_call(mp, "models.demo.finetune.add_demo_child"),
    }
    for stage, kill in stages.items():
        path = copy_store(base.path, tmp_path / stage)
        with pytest.MonkeyPatch.context() as mp:
            kill(mp)
            assert demo(path) == 130  # the CLI's "error: interrupted"
        killed = store_tables(open_store(path))
        if stage in ("rendering", "in-transaction"):
            assert same(killed, empty), stage
        else:  # the cohort whole, with its test sets; models (and the sets the child's run
            #    trained on: `models.demo.finetune`) missing until the re-run
            for table in ("exams", "images", "annotations"):
                assert killed[table].equals(after[table]), (stage, table)
            for table in ("testsets", "testset_exams"):
                mine = after[table][~after[table]["name"].map(_childs_set)]
                assert killed[table].equals(mine.reset_index(drop=True)), (stage, table)
        assert demo(path) == 0
        assert same(store_tables(open_store(path)), after), stage


# ---------------------------------------------------------------------------- readers
SLOW_DECODE_S = 0.3   # per file: 12 files make the import last ~4 s, twice READER_BUSY_S
READER_BUSY_S = 2.0   # the reader gives up (StoreBusy) after this long


def test_reader_is_never_locked_out_during_an_import(png_folder, tmp_path, monkeypatch):
    import core.importers.png as png

    root, _ = png_folder
    for seed in range(7):
        write_png(root / f"{3 + seed}_L_CC.png", seed=10 + seed)
    pd.DataFrame({"exam": list(range(10)), "laterality": "L", "cancer": 0, "histology": "none",
                  "split": "test"}).to_csv(tmp_path / "many.csv", index=False)
    store = open_store(tmp_path / "s.duckdb")
    real = png.raster_record
    monkeypatch.setattr(png, "raster_record",
                        lambda *a, **k: (time.sleep(SLOW_DECODE_S), real(*a, **k))[1])
    writes = []
    real_write = Store.write_tables

    def timed_write(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real_write(self, *args, **kwargs)
        finally:
            writes.append(time.perf_counter() - t0)

    monkeypatch.setattr(Store, "write_tables", timed_write)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-m", "bench._reader", str(store.path),
                               str(stop), str(READER_BUSY_S)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert reader.stdout.readline().strip() == "ready"
        t0 = time.perf_counter()
        report = import_png(store, root, tmp_path / "many.csv")
        elapsed = time.perf_counter() - t0
    finally:
        stop.touch()
        result = json.loads(reader.communicate(timeout=60)[0].strip().splitlines()[-1])
    assert sum(o.status == "imported" for o in report.outcomes) == 12
    assert elapsed > 12 * SLOW_DECODE_S
    assert result["failures"] == []
    assert len(result["waits"]) >= 10  # the reader kept reading during the import
    # A read waits at most about one insert (plus its own attach and query).
    assert max(result["waits"]) < max(writes) + 0.5, (max(result["waits"]), writes)
