"""The pages' helpers: cached calls keyed on the function itself, one progress bar, pure charts."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.store import Store
from ui import caching

REPO = Path(__file__).resolve().parents[1]


def test_qualified_name_names_module_and_class():
    assert caching.qualified_name(Store.datasets) == "core.store.reading.StoreReads.datasets"
    assert caching.qualified_name(test_qualified_name_names_module_and_class) == \
        f"{__name__}.test_qualified_name_names_module_and_class"


def test_cached_calls_once_per_store_state_function_and_arguments(monkeypatch, tmp_path):
    class FakeStore:
        path = tmp_path / "fake.duckdb"

    fake, token, calls = FakeStore(), [(1, 1)], []
    monkeypatch.setattr(caching, "store", lambda: fake)
    monkeypatch.setattr(caching, "data_token", lambda: token[0])

    def plus(store, n, *, k=0):
        calls.append(("plus", store, n, k))
        return n + k

    def times(store, n, *, k=0):
        calls.append(("times", store, n, k))
        return n * k

    caching._call.clear()
    assert caching.cached(plus, 2, k=3) == 5
    assert caching.cached(plus, 2, k=3) == 5                 # cached
    assert calls == [("plus", fake, 2, 3)]                    # the store is passed, unhashed
    assert caching.cached(times, 2, k=3) == 6                 # another function, same arguments
    assert caching.cached(plus, 2, k=4) == 6                  # other arguments
    assert len(calls) == 3
    token[0] = (1, 2)                                         # the store changed
    assert caching.cached(plus, 2, k=3) == 5
    assert len(calls) == 4
    caching._call.clear()


def test_cached_returns_a_copy(monkeypatch, tmp_path):
    import pandas as pd

    class FakeStore:
        path = tmp_path / "fake.duckdb"

    monkeypatch.setattr(caching, "store", lambda: FakeStore())
    monkeypatch.setattr(caching, "data_token", lambda: (0,))

    def frame(store):
        return pd.DataFrame({"a": [1, 2]})

    caching._call.clear()
    first = caching.cached(frame)
    first["a"] = 0
    assert caching.cached(frame)["a"].tolist() == [1, 2]
    caching._call.clear()


def _progress_script():
    from ui.progress import ProgressBar

    counting = ProgressBar("start", unit="images")
    counting(3, 4, "mdb001")
    plain = ProgressBar("start")
    plain(1, 4, "reading")
    empty = ProgressBar("start")
    empty(5, 0)


def test_progress_bar_drives_st_progress():
    at = AppTest.from_function(_progress_script).run()
    assert not at.exception
    bars = [(e.proto.value, e.proto.text) for e in at.get("progress")]
    assert bars == [(75, "3 / 4 images · mdb001"), (25, "reading"), (100, "5 of 0")]


@pytest.mark.parametrize("path", sorted((REPO / "ui" / "charts").glob("*.py")),
                         ids=lambda p: p.name)
def test_chart_modules_hold_no_widgets(path):
    """Chart builders are pure (data in, altair chart out): no Streamlit in ui/charts."""
    tree = ast.parse(path.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.split(".")[0] == "streamlit"}
    assert not {m for m in imported if m in ("ui", "ui.session", "ui.downloads", "ui.caching")}
