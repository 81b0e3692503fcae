"""The app shell: every page opens on the demo store; demo mode refuses writes; layering."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.errors import InputError
from core.store import open_store

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted(re.findall(r'(?:st\.Page|page)\("(pages/[a-z_]+\.py)"', (REPO / "app.py").read_text()))


def test_every_page_file_is_in_the_navigation():
    on_disk = {f"pages/{p.name}" for p in (REPO / "pages").glob("*.py")
               if not p.name.startswith("_")}
    assert on_disk == set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_page_opens_without_exception(demo_env, page):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title or at.header or at.subheader or at.info


def test_overview_counts_match_the_store(demo_env):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    store = open_store(demo_env, read_only=True)
    assert metrics["Exams"] == f"{len(store.exams()):,}"
    assert metrics["Images"] == f"{len(store.images()):,}"
    cancers = int(store.cases(level="breast")["label"].sum())
    assert metrics["Cancers (breasts)"] == f"{cancers:,}"


def test_demo_mode_opens_read_only_and_refuses_writes(demo_env, monkeypatch):
    monkeypatch.setenv("ILCSCOPE_MODE", "demo")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert any("read-only" in i.value for i in at.sidebar.info)
    at.switch_page("pages/import_data.py")
    at.run()
    assert not at.exception
    assert any("disabled in the hosted demo" in i.value for i in at.info)
    store = open_store(demo_env, read_only=True)
    with pytest.raises(InputError, match="read-only"):
        store.write_tables({"datasets": pd.DataFrame([{"dataset": "x", "kind": "imported"}])})


def import_page_on_an_empty_store(tmp_path, monkeypatch, *, timeout: int = 120):
    """The Import page (AppTest) over a new, empty store (so no first-run demo); (app, path)."""
    db = tmp_path / "fresh.duckdb"
    open_store(db)
    monkeypatch.setenv("ILCSCOPE_DB", str(db))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout)
    at.run()
    at.switch_page("pages/import_data.py")
    at.run()
    return at, db


def test_import_page_imports_a_server_folder(mias_dir, tmp_path, monkeypatch):
    at, db = import_page_on_an_empty_store(tmp_path, monkeypatch, timeout=300)
    at.selectbox(key="import_kind").set_value("mias").run()
    at.text_input(key="import_path").set_value(str(mias_dir)).run()
    next(b for b in at.button if b.label == "Import from the server path").click().run()
    assert not at.exception, [e.value for e in at.exception]
    files = at.dataframe[0].value.set_index("file")["status"]
    images = files[files.index.str.startswith("mdb")]
    assert len(images) == 322 and set(images) == {"imported"}
    assert files["Info.txt"] == "imported"  # its line summarises the findings
    assert {m.label: m.value for m in at.metric}["Failed"] == "0"
    store = open_store(db, read_only=True)
    assert len(store.images()) == 322 and "mias" in store.testset_names()
    # a second import of the same folder skips every file and changes nothing
    before = store.counts()
    next(b for b in at.button if b.label == "Import from the server path").click().run()
    files = at.dataframe[0].value.set_index("file")["status"]
    assert set(files[files.index.str.startswith("mdb")]) == {"skipped"}
    assert open_store(db, read_only=True).counts() == before


def test_import_page_reports_a_bad_path_in_one_line(tmp_path, monkeypatch):
    at, db = import_page_on_an_empty_store(tmp_path, monkeypatch)
    at.selectbox(key="import_kind").set_value("mias").run()
    at.text_input(key="import_path").set_value(str(tmp_path / "missing")).run()
    next(b for b in at.button if b.label == "Import from the server path").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "missing" in at.error[0].value
    assert set(open_store(db, read_only=True).counts().values()) == {0}
