"""The Benchmark page's cached pieces: scores per test set, each `core.reports.benchmark`
table, and chart specifications, each computed once per store state and view.

Why `st.cache_data` throughout: a cached result is a copy per session, so no session can
change another's frame (`st.cache_resource` shared one object across sessions). Scores are
loaded only inside a piece's cache miss, so the copy costs nothing on a plain rerun; a chart's
specification (validated by altair, ~100 ms) is cached, the chart object itself is rebuilt
(cheap, unvalidated) for the PNG/SVG downloads, rendered only when clicked.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.reports import benchmark
from ui.caching import qualified_name
from ui.downloads import download_popover
from ui.layout import chart_grid
from ui.session import data_token, settings, store
from ui.tables import readable
from ui.text import md_escape

__all__ = ["piece", "show_chart", "show_panels", "table_formats"]


def _scores(models: tuple, test_set: str, level: str, how: str) -> pd.DataFrame:
    return benchmark.load_scores(store(), models=models, test_sets=[test_set], level=level,
                                 how=how)


@st.cache_data(show_spinner="Computing…", max_entries=128)
def _computed(name: str, db: str, token: tuple, models: tuple, test_sets: tuple, level: str,
              how: str, options: tuple, _fn):
    frame = pd.concat([_scores(models, t, level, how) for t in test_sets], ignore_index=True)
    return _fn(frame, **dict(options))


def piece(fn, *, models: tuple, test_sets: tuple, level: str, how: str, options: tuple = ()):
    """``fn`` (a `core.reports.benchmark` function of a scores frame) on the test sets' scores,
    cached until the store changes (a copy per call)."""
    return _computed(qualified_name(fn), str(settings().db_path), data_token(), models,
                     test_sets, level, how, options, _fn=fn)


@st.cache_data(show_spinner=False, max_entries=64)
def _spec(name: str, _builder, *frames, **options) -> dict:
    return _builder(*frames, **options).to_dict()


def show_chart(builder, stem: str, *frames, width: str = "content", frame=None, context=None,
               **options) -> None:
    """The chart ``builder(*frames, **options)`` with its Download popover (PNG, SVG, CSV)."""
    st.vega_lite_chart(_spec(qualified_name(builder), builder, *frames, **options), width=width)
    download_popover(stem, f"bench_{builder.__name__}", chart=builder(*frames, **options),
                     frame=frame, context=context)


@st.cache_data(show_spinner=False, max_entries=64)
def _panel_specs(name: str, _builder, *frames, **options) -> list[dict]:
    return [panel.to_dict() for panel in _builder(*frames, **options)]


def show_panels(panels, builder, stem: str, *frames, per_row: int = 3, frame=None,
                context=None, **options) -> None:
    """``panels(*frames, **options)`` (fitted charts) ``per_row`` side by side, stacked on a
    narrow screen, and the Download popover of the one figure ``builder(*frames, **options)``."""
    chart_grid(_panel_specs(qualified_name(panels), panels, *frames, **options), per_row=per_row)
    download_popover(stem, f"bench_{builder.__name__}", chart=builder(*frames, **options),
                     frame=frame, context=context)


def table_formats(columns, *, digits: int = 4, percent=(), **labels) -> dict:
    """``st.dataframe`` column_config: ``digits`` decimals for ``columns``, percent for
    ``percent`` (a column's label from ``labels``, when given)."""
    config = {c: st.column_config.NumberColumn(labels.get(c), format=f"%.{digits}f")
              for c in columns}
    config.update({c: st.column_config.NumberColumn(labels.get(c), format="percent")
                   for c in percent})
    return config


def show_unpaired(test_sets, scope: dict) -> None:
    """Each model's AUC on the first test set against the second (unpaired DeLong), as the
    Overview's Models finding quotes it."""
    a, b = test_sets
    st.markdown(f"**{md_escape(a)} against {md_escape(b)}, per model** (unpaired DeLong test)")
    unpaired = piece(benchmark.unpaired_tests, test_sets=(a, b), **scope,
                     options=(("test_sets", (a, b)),))
    readable(unpaired, key="bench_unpaired",
             column_order=["model", "auc_a", "auc_b", "diff", "p", "n_shared", "note"],
             column_config=table_formats(("auc_a", "auc_b", "diff"), digits=3,
                                         auc_a=f"AUC {a}", auc_b=f"AUC {b}"))
    st.caption("The first two test sets picked, each model's AUC on one against the other as "
               "independent samples; shared cases (e.g. healthy ones in both) are counted, not "
               "modelled.")
