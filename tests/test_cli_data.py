"""`python -m core` store commands, run in-process on temporary stores (as sqlite-utils tests)."""
from __future__ import annotations

import json
import shutil

import pytest

from cli import main
from core.store.schema import SCHEMA_VERSION
from core.store import open_store


def run(capsys, *argv) -> tuple[int, dict | list | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in argv and out.strip() else None), err


def test_init_creates_an_empty_store(tmp_path, capsys):
    db = str(tmp_path / "s.duckdb")
    code, doc, _ = run(capsys, "init", "--db", db, "--json")
    assert code == 0 and doc["schema_version"] == SCHEMA_VERSION
    assert set(doc["counts"].values()) == {0}


def test_demo_metadata_only_builds_the_study_test_sets(tmp_path, capsys):
    db = str(tmp_path / "s.duckdb")
    code, doc, err = run(capsys, "demo", "--db", db, "--n-exams", "200", "--metadata-only",
                         "--json")
    assert code == 0, err
    assert doc["n_exams"] == 200 and doc["n_images"] == 800 and doc["root"] is None
    store = open_store(db, read_only=True)
    sets = store.testsets().set_index("name")
    assert {"demo", "test-all", "test-ILC", "test-IDC", "train"} <= set(sets.index)
    test_ilc = store.cases(level="exam", test_set="test-ILC")
    assert set(test_ilc["histology"]) <= {"ILC", "none"} and (test_ilc["histology"] == "ILC").any()
    assert set(test_ilc["split"]) == {"test"}
    assert sets.loc["demo", "n_exams"] == 200
    assert store.datasets().set_index("dataset").loc["demo", "kind"] == "synthetic"


def test_info_reports_counts_per_dataset_and_test_set(demo_store_path, tmp_path, capsys):
    code, doc, _ = run(capsys, "info", "--db", str(demo_store_path), "--json")
    assert code == 0
    assert doc["counts"]["exams"] == 32 and doc["counts"]["images"] == 128
    assert {d["dataset"]: d["n_exams"] for d in doc["datasets"]} == {"demo": 32}
    assert any(t["name"] == "test-ILC" for t in doc["testsets"])
    assert {r["reader"] for r in doc["readers"]} == {"R1", "R2", "consensus"}


def test_info_on_a_missing_store_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "info", "--db", str(tmp_path / "none.duckdb"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error:") and "does not exist" in err
    assert not (tmp_path / "none.duckdb").exists()


def test_testsets_create_list_delete(tmp_path, capsys):
    db = str(tmp_path / "s.duckdb")
    assert run(capsys, "demo", "--db", db, "--n-exams", "60", "--metadata-only")[0] == 0
    code, doc, _ = run(capsys, "testsets", "create", "dense-ilc", "--db", db,
                       "--rule", "histology=ILC density=2,3", "--json")
    assert code == 0
    store = open_store(db, read_only=True)
    exams = store.cases(level="exam", test_set="dense-ilc")
    assert doc["n_exams"] == len(exams) > 0
    assert set(exams["histology"]) == {"ILC"} and set(exams["density"]) <= {2, 3}
    code, listing, _ = run(capsys, "testsets", "list", "--db", db, "--json")
    assert "dense-ilc" in {t["name"] for t in listing}
    code, _, err = run(capsys, "testsets", "create", "bad", "--db", db, "--rule", "colour=red")
    assert code == 2 and "unknown" in err
    assert run(capsys, "testsets", "delete", "dense-ilc", "--db", db)[0] == 0
    assert "dense-ilc" not in open_store(db, read_only=True).testset_names()


def test_images_set_laterality_is_recorded_as_corrected(demo_store_path, tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    shutil.copy(demo_store_path, db)
    image = "demo/E00001/L-CC"
    code, doc, _ = run(capsys, "images", "set-laterality", image, "R", "--db", str(db), "--json")
    assert code == 0 and doc["from"] == "L" and doc["to"] == "R"
    row = open_store(db, read_only=True).image(image)
    assert (row["laterality"], row["laterality_source"]) == ("R", "corrected")
    code, _, err = run(capsys, "images", "set-laterality", "demo/nope", "R", "--db", str(db))
    assert code == 2 and "not in the store" in err


@pytest.mark.parametrize("command", ["init", "demo", "info", "testsets", "images"])
def test_every_command_help_ends_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out.lower()
