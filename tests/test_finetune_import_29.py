"""Issue 29 on the Fine-tuning and Import pages: one learning-rate format (hand-written
expectations), each run state read honestly (a queued run is 'queued', never 'running ·
starting · nan'), every control in the URL, a store of mini-MIAS alone (no readers, no models,
no ILC) said in words, and the sidebar's datasets fresh right after an import."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.importers.mias import import_mias
from core.reports import training
from core.reports.holdings import store_gaps
from core.splits import create_splits
from core.store import open_store
from models.training.sweep import _child_name
from tests.conftest import copy_store
from tests.test_training_report import NOW, _params, _run, training_store
from ui.text import md_escape
from ui.training import progress_text

REPO = Path(__file__).resolve().parents[1]
FINETUNE, IMPORT = "pages/finetune.py", "pages/import_data.py"


def _page(db: Path, page: str, monkeypatch, *, dataset: str | None = None, **query) -> AppTest:
    """``page`` of the app over store ``db``, opened from a URL holding ``query``, with the
    sidebar's ``dataset`` picked (set in the session: AppTest runs a switched-to page without
    ``app.py`` once it has reset Streamlit's pages flag, so the sidebar may not be drawn)."""
    monkeypatch.setenv("ILCSCOPE_DB", str(db))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.switch_page(page)
    at.query_params.update(query)
    if dataset is not None:
        at.session_state["dataset"] = dataset
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at) -> list[str]:
    return [e.value for kind in ("info", "warning", "error", "caption", "markdown", "success")
            for e in at.get(kind)] + [p.proto.text for p in at.get("progress")]


@pytest.fixture(scope="module")
def mias_store(mias_dir, tmp_path_factory) -> Path:
    """A store holding mini-MIAS alone (322 images; no readers, models or ILC). Copy to write."""
    path = tmp_path_factory.mktemp("mias_only") / "ilcscope.duckdb"
    import_mias(open_store(path), mias_dir)
    return path


# ---------------------------------------------------------------------------- item 13

@pytest.mark.parametrize("lr, label", [
    (1e-4, "1e-04"), (1e-5, "1e-05"), (1e-6, "1e-06"), (5e-6, "5e-06"), (2.5e-3, "2.5e-03"),
    (1.29155e-6, "1.29e-06"), (3.1623e-6, "3.16e-06"), (0.1, "1e-01"), (10.0, "1e+01"),
    (float("nan"), "lr ?"), (None, "lr ?")])
def test_one_learning_rate_format(lr, label):
    assert training.lr_label(lr) == label


def test_child_names_write_the_rate_as_everywhere_else(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    run = "train-20261205T030000000000-ab12"
    assert _child_name(store, "gmic-demo", "full", 1e-4, run) == "gmic-demo-full-lr1e-04-ab12"
    assert _child_name(store, "gmic-demo", "full", 1e-5, run) == "gmic-demo-full-lr1e-05-ab12"
    assert _child_name(store, "gmic-demo", "scratch", 1.29155e-6, run) == \
        "gmic-demo-scratch-lr1.29e-06-ab12"


def _states_store(tmp_path: Path) -> Path:
    """An empty store with one training run in each state, written by hand."""
    path = tmp_path / "states.duckdb"
    store = open_store(path)
    start = NOW - timedelta(minutes=5)
    _run(store, "train-queued", "running", _params(1e-4), started=start, done=0)
    _run(store, "train-live", "running", _params(1e-5), started=start, done=0)
    (store.files_dir / "runs" / "train-live" / "progress.json").write_text(json.dumps(
        {"done": 1, "total": 4, "message": "epoch 1 of 4", "updated_at": NOW.isoformat()}))
    _run(store, "train-eval", "running", _params(3e-6, child_model="gmic-x", best_epoch=2),
         started=start, done=4, total=4)
    _run(store, "train-last", "running", _params(2e-6, evaluate=[]), started=start, done=4,
         total=4)                       # its 4 epochs written, its child not yet registered
    store.write_tables({"train_epochs": pd.DataFrame(
        [{"run_id": "train-last", "epoch": e, "train_loss": 1.0, "val_loss": 1.0}
         for e in range(1, 5)])})
    for status in ("done", "failed", "cancelled"):
        _run(store, f"train-{status}", status, _params(1e-6), started=start, ended=NOW,
             done=4, total=4)
    store.checkpoint()
    return path


def test_each_state_reads_as_it_is(tmp_path):
    store = open_store(_states_store(tmp_path), read_only=True)
    table = training.run_table(store, now=NOW).set_index("run_id")
    assert table["state"].to_dict() == {
        "train-queued": "queued", "train-live": "running", "train-eval": "evaluating",
        "train-last": "evaluating", "train-done": "done", "train-failed": "failed", "train-cancelled": "cancelled"}
    assert (table["status"] == "running").sum() == 4          # the store's own word is kept
    lines = {r.run_id: progress_text(r) for r in table.reset_index().itertuples()}
    assert lines["train-queued"] == ("**1e-04 · full · queued · eued** · waiting for its worker "
                                     "(a sweep trains its rates one after another)")
    assert lines["train-live"] == ("**1e-05 · full · running · live** · 0 of 4 epochs done · "
                                   "ETA 15 min · epoch 1 of 4")     # 5 min for 25 %
    assert lines["train-eval"] == ("**3e-06 · full · evaluating · eval** · training done (best "
                                   "epoch 2) · scoring test-ILC, test-all")
    assert lines["train-last"] == "**2e-06 · full · evaluating · last** · training done · " \
        "scoring no test set"
    assert not any("nan" in line or "None" in line for line in lines.values())


def test_the_page_shows_a_queued_run_as_queued(mias_store, tmp_path, monkeypatch):
    db = copy_store(mias_store, tmp_path)
    _run(open_store(db), "train-queued", "running", _params(1e-4), started=datetime.now(),
         done=0)
    at = _page(db, FINETUNE, monkeypatch)
    (bar,) = at.get("progress")
    assert bar.proto.text.startswith("**1e-04 · full · queued · eued** · waiting for its worker")
    runs = next(d.value for d in at.dataframe if "eta" in d.value.columns)
    row = runs.set_index("run_id").loc["train-queued"]
    assert (row["state"], row["lr"], row["progress"], row["eta"]) == ("queued", "1e-04", 0.0, "")
    assert not any("nan" in t or "starting" in t for t in _texts(at))


# ---------------------------------------------------------------------------- item 4

def test_finetune_controls_open_from_the_url(demo_store_path, tmp_path, monkeypatch):
    db = training_store(demo_store_path, tmp_path)
    # bound widgets with a format_func keep their labels in the URL (Streamlit's choice)
    query = {"ft_parent": "gmic-ft-a", "ft_mode": "Feature extraction", "ft_train_set": "demo",
             "ft_val_set": "test-IDC", "ft_lrs": "1e-5,3e-5", "ft_runs": "3", "ft_epochs": "7",
             "ft_batch": "4", "ft_preprocess": "Histogram equalisation", "ft_device": "cpu",
             "ft_evaluate": ["test-IDC"], "ft_curve_runs": ["1e-05 · full · in-a"],
             "ft_test_sets": ["test-IDC"]}
    values = {"ft_mode": "feature-extraction", "ft_preprocess": "histeq",
              "ft_curve_runs": ["train-a"]}
    at = _page(db, FINETUNE, monkeypatch, **query)
    shown = {w.key: w.value for kind in ("selectbox", "multiselect", "text_input",
                                         "number_input", "button_group")
             for w in at.get(kind) if w.key in query}
    assert shown == {k: values.get(k, v if isinstance(v, list) else
                                   int(v) if v.isdigit() else v) for k, v in query.items()}
    assert any(c.value == "One run per rate: 1e-05, 3e-05" for c in at.caption)
    finished = next(d.value for d in at.dataframe if "benchmark" in d.value.columns)
    assert any(c.startswith("test-IDC") for c in finished.columns)         # the URL's test set
    assert not any(c.startswith("test-ILC") for c in finished.columns)


def test_import_controls_open_from_the_url(mias_store, tmp_path, monkeypatch):
    db = copy_store(mias_store, tmp_path)
    tables = {"import_kind": "Model predictions table", "import_dataset": "site-b", "import_fmt": "wide",
              "import_level": "exam", "import_id": "case", "import_side": "side",
              "import_label": "cancer", "import_cols": "gmic,nyu", "import_path": "/data/p.csv",
              "pacs_url": "http://pacs:8042/dicom-web", "pacs_dates": "20230101-20231231",
              "pacs_limit": "20", "pacs_dataset": "site-c",
              "import_testset_name": "test-b", "import_testset_rule": "dataset=site-b"}
    folders = {"import_kind": "mini-MIAS", "import_mias_rule": "readme"}
    kinds = {"Model predictions table": "predictions", "mini-MIAS": "mias",
             "PNG folder + label manifest": "png", "CSAW-CC metadata table": "csaw"}
    for query in (tables, folders,
                  {"import_kind": "PNG folder + label manifest", "import_manifest": "labels.csv"},
                  {"import_kind": "CSAW-CC metadata table", "import_images": "/data/csaw"}):
        at = _page(db, IMPORT, monkeypatch, **query)
        shown = {w.key: w.value for kind in ("selectbox", "text_input", "number_input", "radio")
                 for w in at.get(kind) if w.key in query}
        assert shown == {k: kinds.get(v, int(v) if v.isdigit() else v) for k, v in query.items()}


# ---------------------------------------------------------------------------- item 5

def test_finetune_on_mini_mias_alone_says_what_is_missing(mias_store, monkeypatch):
    at = _page(mias_store, FINETUNE, monkeypatch, dataset="mias")
    (gaps,) = [i.value for i in at.info if "GMIC" in i.value]
    assert "No GMIC model in this store" in gaps
    assert md_escape("mias has no ILC cases (52 cancerous breasts, histology unknown)") in gaps
    assert "python -m core split --test-set mias --prefix mias" in gaps
    assert any(i.value == "No training runs in this store yet." for i in at.info)


def test_import_on_mini_mias_alone_says_what_is_missing(mias_store, monkeypatch):
    at = _page(mias_store, IMPORT, monkeypatch, dataset="mias")
    (gaps,) = [i.value for i in at.info if i.value.startswith("What this store lacks")]
    assert "No reader reads" in gaps and "No model predictions" in gaps
    assert md_escape("No ILC cases in mias: its 52 cancerous breasts") in gaps   # plain text
    assert "density" not in gaps and "masks" not in gaps       # mini-MIAS brings both


def test_gaps_follow_the_store_and_the_dataset(mias_store, demo_store_path, tmp_path):
    mias = open_store(mias_store, read_only=True)
    assert [g.split(":")[0] for g in store_gaps(mias)] == [
        "No reader reads", "No model predictions", "No ILC cases in this store"]
    assert store_gaps(open_store(tmp_path / "empty.duckdb"))[0].startswith("Nothing imported")
    demo = open_store(demo_store_path, read_only=True)     # readers, models, ILC, density, masks
    assert store_gaps(demo) == [] and training.finetune_gaps(demo) == []
    split = copy_store(mias_store, tmp_path / "split")
    create_splits(open_store(split), test_set="mias", prefix="mias", seed=0)
    notes = training.finetune_gaps(open_store(split, read_only=True), dataset="mias")
    assert not any("split" in n for n in notes) and len(notes) == 2   # no GMIC model, no ILC


# ---------------------------------------------------------------------------- item 6

def test_an_import_reruns_the_page_so_what_was_drawn_before_it_is_current(mias_dir, tmp_path,
                                                                           monkeypatch):
    """The sidebar is drawn before the page: after an import the page reruns, so it and the
    page's own top (the store's gaps) show the new dataset at once."""
    folder = tmp_path / "mini"
    folder.mkdir()
    lines = (mias_dir / "Info.txt").read_text().splitlines()
    (folder / "Info.txt").write_text("\n".join(
        ln for ln in lines if not ln.startswith("mdb") or ln[:6] in ("mdb001", "mdb002")) + "\n")
    for name in ("mdb001.png", "mdb002.png"):
        shutil.copy(mias_dir / name, folder)
    db = tmp_path / "fresh.duckdb"
    open_store(db)
    at = _page(db, IMPORT, monkeypatch, import_kind="mini-MIAS", import_path=str(folder))
    assert "Nothing imported yet" in at.info[0].value
    next(b for b in at.button if b.label == "Import from the server path").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Imported"] == "3"        # 2 images + Info.txt
    assert "Nothing imported yet" not in at.info[0].value                  # drawn again after it
    assert "No reader reads" in at.info[0].value
    sidebar = [w for w in at.sidebar.children.values() if getattr(w, "key", None) == "dataset"]
    for picker in sidebar:                                  # drawn when app.py ran (see _page)
        assert "mias" in picker.options
