"""The findings as one self-contained HTML file: a researcher sends it, a co-author opens it.

Why a file and not a link: the co-author has no app and maybe no network. Charts are
Vega-Lite specifications (plain dicts: core never imports altair) drawn by Vega-Embed, whose
bundle `vl_convert.javascript_bundle` provides; it is inlined in the page, so nothing is
fetched when it opens.
"""
from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from datetime import datetime, timezone

import pandas as pd

import core
from core.reports.findings import Finding, findings
from core.store import Store

__all__ = ["chart_spec", "findings_html"]

_STYLE = ("body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
          "table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}"
          "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
          ".chart{margin:.5rem 0}")


def _bars(frame: pd.DataFrame, x: str, y: str, title: str, *, low: str | None = None,
          high: str | None = None) -> dict:
    data = frame[[c for c in (x, y, low, high) if c]].dropna(subset=[y])
    layers = [{"mark": {"type": "bar"}, "encoding": {
        "x": {"field": x, "type": "nominal", "title": x.replace("_", " ")},
        "y": {"field": y, "type": "quantitative", "title": y.replace("_", " ")},
        "tooltip": [{"field": c} for c in data.columns]}}]
    if low and high:
        layers.append({"mark": {"type": "rule"}, "encoding": {
            "x": {"field": x, "type": "nominal"}, "y": {"field": low, "type": "quantitative"},
            "y2": {"field": high}}})
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "title": title,
            "width": 360, "height": 220, "data": {"values": json.loads(data.to_json(
                orient="records"))}, "layer": layers}


def chart_spec(finding: Finding) -> dict | None:
    """A Vega-Lite bar chart of the finding's table (None when it has nothing to draw)."""
    t = finding.table
    if t.empty:
        return None
    if finding.question == "filters":
        return _bars(t, "method", "mean_auc", "Mean pixel AUC per filter")
    if finding.question == "models" and "ci_low" in t:
        return _bars(t, "test_set", "auc", "AUC [95 % CI] per test set", low="ci_low",
                     high="ci_high")
    if finding.question == "density" and "auc_dense" in t:
        long = pd.DataFrame({"stratum": ["dense (2-3)", "non-dense (0-1)"],
                             "auc": [t["auc_dense"].iloc[0], t["auc_nondense"].iloc[0]]})
        return _bars(long, "stratum", "auc", "AUC by density")
    if finding.question == "saliency" and "hit_rate" in t:
        return _bars(t, "model", "hit_rate", "Pointing-game hit rate [95 % CI]",
                     low="hit_ci_low", high="hit_ci_high")
    if finding.question == "radiologists" and "caught" in t:
        return _bars(t, "operating_point", "caught",
                     "Reader-missed cancers the model catches, per operating point")
    return None


@lru_cache(maxsize=1)
def _vega_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script (~900 kB). Cached per process: bundling
    takes ~10 s and never changes for an installed vl-convert."""
    from vl_convert import javascript_bundle

    return _script_safe(javascript_bundle())


def _script_safe(js: str) -> str:
    """A "</script" inside an inlined script would end it early; in JS strings "<\\/" is "</"."""
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)


def findings_html(store: Store, *, items: list[Finding] | None = None,
                  model: str | None = None) -> str:
    """The whole report as one HTML string (``items``: precomputed `findings`, e.g. cached;
    else `findings` for the headline ``model``, None: by `HEADLINE_RULE`)."""
    items = findings(store, model=model) if items is None else items

    datasets = store.datasets()
    parts = [f"<h1>ILCscope findings</h1><p>ILCscope {html.escape(core.__version__)}, "
             f"store <code>{html.escape(store.path.name)}</code>, written "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.</p><h2>Data</h2>",
             datasets[[c for c in ("dataset", "kind", "notes") if c in datasets]].to_html(
                 index=False, escape=True), "<h2>The six questions</h2>"]
    specs = {}
    for i, f in enumerate(items):
        parts.append(f"<h3>{html.escape(f.question.capitalize())}</h3>"
                     f"<p class='finding'>{html.escape(f.sentence)}</p>")
        spec = chart_spec(f)
        if spec is not None:
            specs[f"chart{i}"] = spec
            parts.append(f"<div class='chart' id='chart{i}'></div>")
        if not f.table.empty:
            parts.append(f.table.round(4).to_html(index=False, escape=True, na_rep=""))
    draw = _script_safe("".join(f"vegaEmbed('#{k}',{json.dumps(s)},{{actions:false}});"
                                for k, s in specs.items()))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>ILCscope findings"
            f"</title><style>{_STYLE}</style><script>{_vega_bundle()}</script></head><body>"
            f"{''.join(parts)}<script>{draw}</script></body></html>")
