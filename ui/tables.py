"""Tables as the clinic pages show them: rates as percentages, counts plain, scores to four
decimals, a missing value as the word the caption uses ("NA"), and a CSV of the whole frame
beside each table (`ui.downloads.download_popover`)."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pandas as pd
import streamlit as st

from ui.downloads import download_popover

# a column's display by a part of its name: the first match wins
FORMATS = {"sensitivity": "percent", "specificity": "percent", "threshold": "%.4f",
           "per_1000": "%.0f", "reads_per_case": "%.2f", "mean_score": "%.4f"}


def column(name: str, label: str):
    """A column's display: rates as percentages, counts plain, scores to 4 decimals."""
    fmt = next((f for key, f in FORMATS.items() if key in name), None)
    if fmt is None:   # long descriptions stay one line wide; their full text shows on hover
        return st.column_config.Column(label, width="medium" if name == "description" else None)
    help_ = "Infinity: no score reaches it, so nothing is flagged" if name == "threshold" else None
    return st.column_config.NumberColumn(label, format=fmt, help=help_)


def rate_table(frame: pd.DataFrame, columns: Sequence[str], stem: str, *,
               context: Mapping | None = None, **labels: str) -> None:
    """Show ``columns`` of ``frame`` (rates as percentages) and offer all of it as CSV."""
    config = {c: column(c, labels.get(c, c.replace("_", " "))) for c in columns}
    st.dataframe(frame, hide_index=True, column_order=list(columns), column_config=config)
    download_popover(stem, stem, frame=frame, context=context)


def na_as_text(frame: pd.DataFrame, columns: Sequence[str], missing: str = "NA") -> pd.DataFrame:
    """``frame`` with the missing values of ``columns`` shown as ``missing`` (numbers as text).

    Why: Streamlit writes a missing integer as "None", where a caption promises "NA" (the
    sample-size table: no case count reaches the power with that many readers).
    """
    out = frame.copy()
    for c in columns:
        out[c] = out[c].astype(object).map(lambda v: missing if pd.isna(v) else f"{v}")
    return out


# a core frame's column names (the CLI's JSON keys) as the pages label them; names not listed
# lose their underscores (`label`)
LABELS = {
    "n_pos": "n+", "n_neg": "n-", "n_excluded": "unscored (excluded)", "n_shared": "shared cases",
    "auc": "AUC", "ci_low": "CI low", "ci_high": "CI high", "se": "SE", "diff": "difference",
    "p_holm": "p (Holm)", "model_a": "model A", "model_b": "model B", "auc_a": "AUC A",
    "auc_b": "AUC B", "test_set": "test set", "test_set_a": "test set A",
    "test_set_b": "test set B", "n_exams": "exams", "n_images": "images",
    "n_predictions": "predictions", "created_at": "created", "run_id": "run",
    "best_epoch": "best epoch", "var_R": "reader variance", "var_TR": "test×reader variance",
    "var_E": "error variance", "cov1": "cov (same reader, other modality)",
    "cov2": "cov (other reader, same modality)", "cov3": "cov (other reader and modality)",
    "hit_ci_low": "hit rate CI low", "hit_ci_high": "hit rate CI high", "n_cases": "cases",
    "df1": "df (numerator)", "df2": "df (denominator)", "lr": "learning rate",
}
P_COLUMNS = ("p", "p_holm", "p_value")   # shown as "< 0.001" below a thousandth, as findings


def label(name) -> str:
    """A column's display label: `LABELS`, else the name without underscores."""
    name = str(name)
    return LABELS.get(name, re.sub(r"\bauc\b", "AUC", name.replace("_", " ")))


def p_text(p) -> str | None:
    return None if pd.isna(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def readable(frame: pd.DataFrame, *, missing: str = "—", key: str | None = None,
             column_order: Sequence[str] | None = None,
             column_config: Mapping | None = None, exact: bool = False, **options) -> None:
    """``st.dataframe(frame)`` of a core frame as users read it: readable column labels
    (`label`), p-values as "< 0.001" or three decimals, missing cells as ``missing`` (not
    "None"). ``column_config`` entries keep their settings and get a label when they have none.

    ``exact``: numbers stay numbers, to the last digit (the "full precision" tables a reader
    checks against the CLI); only the labels change.

    Why here: core frames keep their names (the CLI's JSON keys); only the display changes.
    """
    shown = frame.copy()
    config: dict = {}
    for c in shown.columns:
        given = (column_config or {}).get(c, ...)
        if given is None:          # hidden, as st.dataframe's column_config says
            config[c] = None
            continue
        entry = {"label": given} if isinstance(given, str) else dict(
            given if given is not ... else {})
        entry["label"] = entry.get("label") or label(c)
        if exact and pd.api.types.is_numeric_dtype(shown[c]):
            config[c] = entry
            continue
        if str(c) in P_COLUMNS and pd.api.types.is_numeric_dtype(shown[c]):
            shown[c] = shown[c].map(p_text)
            entry.pop("type_config", None)
            entry["alignment"] = "right"
        if shown[c].isna().any():  # a number column with a gap: as text, the gap as `missing`
            fmt = (entry.get("type_config") or {}).get("format")
            if pd.api.types.is_numeric_dtype(shown[c]):
                shown[c] = shown[c].map(lambda v, f=fmt: missing if pd.isna(v) else (
                    f % v if isinstance(f, str) and f.startswith("%") else f"{v:.1%}"
                    if f == "percent" else f"{v:.4g}"))
                entry.pop("type_config", None)
                entry["alignment"] = "right"
            else:
                shown[c] = shown[c].astype(object).where(shown[c].notna(), missing)
        config[c] = entry
    st.dataframe(shown, hide_index=True, key=key, column_order=column_order,
                 column_config=config, **options)
