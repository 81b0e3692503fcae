"""Derived tables updated per touched exam equal a full rebuild, whatever the writes (issue 33).

Hypothesis draws sequences of imports, deletes, corrections (laterality through
`correct_laterality`, labels, splits, an image moved to another exam), density writes and
test-set changes on a small store. After every step, the ``cases`` table and every test set's
members must equal what `rebuild_derived` derives from scratch (run in a transaction that is
rolled back), and `Store.cases` must list each level in case_id order although updates append
rows. The full-rebuild shortcut for large writes is switched off, so every update takes the
per-exam way under test.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.importers.common import correct_laterality
from core.store import dataset_delete_plan, derived, open_store
from core.store.testsets import rebuild_derived

DATASETS = ("a", "b")
EXAMS = [f"{d}/{i}" for d in DATASETS for i in range(2)]  # few ids: steps meet often
IMAGES = [f"{d}/i{k}" for d in DATASETS for k in range(2)]  # ids that do not name their exam
SETS = ("s1", "s2", "a")  # 'a' also is dataset a's own set
HISTOLOGY = ("ILC", "IDC", "other", "none", "unknown")

sides = st.sampled_from("LR")
exam_ids = st.sampled_from(EXAMS)


def _dataset(exam_id: str) -> str:
    return exam_id.split("/")[0]


@st.composite
def breast_rows(draw, exam_id: str | None = None, side: str | None = None) -> dict:
    return {"exam_id": exam_id or draw(exam_ids), "laterality": side or draw(sides),
            "cancer": draw(st.sampled_from([0, 1, None])),
            "histology": draw(st.sampled_from(HISTOLOGY)),
            "presentation": draw(st.sampled_from([None, "mass", "calcification",
                                                  "architectural distortion,mass"]))}


@st.composite
def image_rows(draw, image_id: str | None = None) -> dict:
    image_id = image_id or draw(st.sampled_from(IMAGES))
    exam = draw(st.sampled_from([e for e in EXAMS if _dataset(e) == _dataset(image_id)]))
    return {"image_id": image_id, "exam_id": exam, "dataset": _dataset(image_id),
            "image_key": image_id, "laterality": draw(sides), "laterality_source": "synthetic",
            "view": draw(st.sampled_from(["CC", "MLO"]))}


def density_rows(source=st.sampled_from(["label", "classical"]),
                 level=st.sampled_from(["exam", "exam", "breast"])):
    return st.builds(lambda e, s, lv, c: {
        "source": s, "level": lv, "case_id": e if lv == "exam" else f"{e}/L", "exam_id": e,
        "category": c}, exam_ids, source, level, st.sampled_from([0, 1, 2, 3, None]))


@st.composite
def rules(draw) -> str:
    clauses = {
        "dataset": st.sampled_from(["a", "b", "a,b"]),
        "split": st.sampled_from(["test", "train", "test,val"]),
        "cancer": st.sampled_from(["0", "1"]),
        "histology": st.sampled_from(["ILC,none", "IDC", "unknown"]),
        "density": st.sampled_from(["0", "1,2", "3"]),
        "presentation": st.sampled_from(["mass", "architectural-distortion"]),
        "exam": st.lists(exam_ids, min_size=1, max_size=3).map(",".join),
    }
    fields = draw(st.lists(st.sampled_from(sorted(clauses)), max_size=2, unique=True))
    return " ".join(f"{f}={draw(clauses[f])}" for f in fields)


@st.composite
def imports(draw):
    """An importer's batch: exams, their breasts, images and label density, sets refreshed."""
    exams = draw(st.lists(exam_ids, min_size=1, max_size=3, unique=True))
    datasets = sorted({_dataset(e) for e in exams})
    frames = {
        "datasets": pd.DataFrame({"dataset": datasets, "kind": "synthetic"}),
        "exams": pd.DataFrame([{"exam_id": e, "dataset": _dataset(e), "exam_key": e,
                                "split": draw(st.sampled_from(["test", "train", "val", None]))}
                               for e in exams]),
        "breasts": pd.DataFrame([draw(breast_rows(e, side)) for e in exams
                                 for side in draw(st.sampled_from(["LR", "LR", "L", "R"]))]),
        "images": pd.DataFrame([draw(image_rows(i)) for i in IMAGES
                                if _dataset(i) in datasets and draw(st.booleans())]),
        "density": pd.DataFrame([{"source": "label", "level": "exam", "case_id": e,
                                  "exam_id": e, "category": draw(st.sampled_from([0, 1, 2, 3]))}
                                 for e in exams if draw(st.booleans())]),
    }
    frames = {t: f for t, f in frames.items() if not f.empty}
    return lambda s: s.write_tables(frames, refresh_testsets=True)


def _write(frames: dict) -> callable:
    return lambda s: s.write_tables({t: pd.DataFrame(rows) for t, rows in frames.items()})


def _correct_laterality(image_id: str, side: str):
    def run(s):
        if not s.images(image_ids=[image_id]).empty:  # it needs its dataset row too
            correct_laterality(s, image_id, side)
    return run


def _delete(entries: list[dict]):
    return lambda s: s.write_tables({}, delete=entries)


# One branch per kind of step, so that each is drawn about as often as the others.
steps = st.one_of(
    imports(),
    # corrections: a breast's labels, an image's side or exam, an exam's split or dataset
    breast_rows().map(lambda r: _write({"breasts": [r]})),
    image_rows().map(lambda r: _write({"images": [r]})),
    st.builds(lambda e, split, d: _write({"exams": [{"exam_id": e, "dataset": d,
                                                     "exam_key": e, "split": split}]}),
              exam_ids, st.sampled_from(["test", "train", None]), st.sampled_from(DATASETS)),
    st.builds(_correct_laterality, st.sampled_from(IMAGES), sides),
    # deletes
    st.builds(lambda e: _delete([{"table": "exams", "match": {"exam_id": e}}]), exam_ids),
    st.builds(lambda i: _delete([{"table": "images", "match": {"image_id": i}}]),
              st.sampled_from(IMAGES)),
    st.builds(lambda e, side: _delete([{"table": "breasts",
                                        "match": {"exam_id": e, "laterality": side}}]),
              exam_ids, sides),
    st.builds(lambda e: _delete([{"table": "density", "match": {"exam_id": e}}]), exam_ids),
    st.builds(lambda n: _delete([{"table": "testsets", "match": {"name": n}}]),
              st.sampled_from(SETS)),
    st.sampled_from(DATASETS).map(lambda d: _delete(dataset_delete_plan(d))),
    # density of any source and level
    st.lists(density_rows(), min_size=1, max_size=3).map(
        lambda rows: _write({"density": pd.DataFrame(rows).drop_duplicates(
            ["source", "level", "case_id"], keep="last")})),
    # test sets
    st.builds(lambda n, r: lambda s: s.create_testset(n, r), st.sampled_from(SETS), rules()),
    st.builds(lambda n, r: lambda s: s.write_tables({}, testsets={n: r}),
              st.sampled_from(SETS), rules()),
    st.sampled_from(SETS).map(lambda n: lambda s: s.delete_testset(n)),
    st.just(lambda s: s.refresh_testsets()))


def derived_rows(con) -> dict[str, pd.DataFrame]:
    """The derived tables as sorted frames (test-set id lists as tuples, to compare)."""
    cases = con.execute("SELECT * FROM cases").df()
    cases["testset_ids"] = cases["testset_ids"].map(tuple)
    members = con.execute("SELECT * FROM testset_exams").df()
    return {name: frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)
            for name, frame in (("cases", cases), ("testset_exams", members))}


def assert_equals_full_rebuild(store, *, reads: bool = True) -> None:
    """The derived tables equal a full rebuild's; with ``reads``, `Store.cases` is in order."""
    with store.connection() as con:
        incremental = derived_rows(con)
        con.execute("BEGIN TRANSACTION")
        try:
            rebuild_derived(con)
            reference = derived_rows(con)
        finally:
            con.execute("ROLLBACK")
        for name, frame in reference.items():
            pd.testing.assert_frame_equal(incremental[name], frame, obj=name)
        cases = reference["cases"]
        for level in ("image", "breast", "exam") if reads else ():
            expected = sorted(cases.loc[cases["level"] == level, "case_id"])
            assert store.cases(level=level)["case_id"].tolist() == expected, level


def _base_frames() -> dict[str, pd.DataFrame]:
    """Every exam, breast, image and label density, so that each drawn step meets rows."""
    return {
        "datasets": pd.DataFrame({"dataset": DATASETS, "kind": "synthetic"}),
        "exams": pd.DataFrame({"exam_id": EXAMS, "dataset": [_dataset(e) for e in EXAMS],
                               "exam_key": EXAMS, "split": ["test", "train"] * 2}),
        "breasts": pd.DataFrame([  # b/1 has no left breast: an image there is no case
            ("a/0", "L", 1, "ILC", "mass"), ("a/0", "R", 0, "none", None),
            ("a/1", "L", 1, "IDC", None), ("a/1", "R", 0, "none", None),
            ("b/0", "L", None, "unknown", None), ("b/0", "R", 0, "none", None),
            ("b/1", "R", 0, "other", None)],
            columns=["exam_id", "laterality", "cancer", "histology", "presentation"]),
        "images": pd.DataFrame([{"image_id": i, "exam_id": e, "dataset": _dataset(i),
                                 "image_key": i, "laterality": side,
                                 "laterality_source": "synthetic", "view": "CC"}
                                for i, e, side in zip(IMAGES, EXAMS, "LRLR")]),
        "density": pd.DataFrame({"source": "label", "level": "exam", "case_id": EXAMS,
                                 "exam_id": EXAMS, "category": [0, 1, 2, 3]}),
    }


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    """A store holding `_base_frames`, each dataset's set and two rules (copied per example)."""
    store = open_store(tmp_path_factory.mktemp("base") / "s.duckdb")
    store.write_tables(_base_frames(), refresh_testsets=True)
    store.create_testsets({"s1": "split=test", "s2": "histology=ILC,none density=0,3"})
    assert_equals_full_rebuild(store)
    store.checkpoint()
    return store.path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(steps, min_size=1, max_size=5))
def test_per_exam_updates_equal_a_full_rebuild(base_store, sequence):
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(derived, "REBUILD_SHARE", float("inf"))  # always the per-exam way
        path = Path(tmp) / "s.duckdb"
        shutil.copy(base_store, path)
        store = open_store(path)
        for step in sequence:
            step(store)
            assert_equals_full_rebuild(store, reads=False)
        assert_equals_full_rebuild(store)


def test_a_large_write_rebuilds_the_table_in_case_order(tmp_path):
    """Past `REBUILD_SHARE` of the exams, the update is the full rebuild: rows in case order."""
    store = open_store(tmp_path / "s.duckdb")
    exams = [f"z/{i}" for i in range(8)] + [f"a/{i}" for i in range(2)]
    frames = {"exams": pd.DataFrame({"exam_id": exams, "dataset": [e[0] for e in exams],
                                     "exam_key": exams}),
              "breasts": pd.DataFrame({"exam_id": exams, "laterality": "L", "cancer": 0,
                                       "histology": "none"})}
    store.write_tables({t: f.iloc[:8] for t, f in frames.items()})
    store.write_tables({t: f.iloc[8:] for t, f in frames.items()})  # 2 of 10: per exam
    with store.connection() as con:
        appended = [r for (r,) in con.execute(
            "SELECT case_id FROM cases WHERE level = 'exam'").fetchall()]
    assert appended == exams  # 'a/..' after 'z/..': the readers sort
    assert store.cases(level="exam")["case_id"].tolist() == sorted(exams)
    store.write_tables({"exams": frames["exams"].iloc[:3].assign(split="test")})  # 3 of 10
    with store.connection() as con:
        rebuilt = [r for (r,) in con.execute(
            "SELECT case_id FROM cases WHERE level = 'exam'").fetchall()]
    assert rebuilt == sorted(exams)
    assert_equals_full_rebuild(store)
