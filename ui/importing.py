"""The Import page's actions: run an import with a progress bar, show its outcome, make a test
set. Widgets and calls only; the importers are `core.importers`'.

Why a rerun after each import (and each new test set): the sidebar is drawn before the page, so
its dataset and test-set pickers were one import behind; the rerun draws them again from the
store as it now is (`ui.cached` keys on the store file's change token).
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import PseudonymKeyError
from core.importers import run_import
from ui.errors import input_errors, show_input_error
from ui.progress import ProgressBar
from ui.session import store
from ui.text import md_escape

__all__ = ["FIELDS", "import_and_rerun", "show_last_import", "testset_form"]

# core's errors name parameters; here they name the form's fields (the CLI names flags)
FIELDS = {"dataset": "Dataset name (blank: from the folder or file name)",
          "manifest": "Manifest CSV", "images": "Images folder (optional)",
          "laterality_rule": "Laterality", "format": "Format", "level": "Level",
          "id_column": "Id column", "side_column": "Side column",
          "label_column": "Label column (creates cases)",
          "model_columns": "Score columns (comma-separated)",
          "reader_columns": "Score columns (comma-separated)",
          "score_column": "Score columns (comma-separated)"}
LAST = "import_last"   # the last import's report (`ImportReport.as_dict`), kept for the session


def import_and_rerun(kind: str, path, options: dict) -> None:
    """Import ``path`` with a progress bar; keep the report and rerun the page (the sidebar
    then lists a new dataset). Bad input: one line in the form's words, nothing changed."""
    progress = ProgressBar("starting")
    with input_errors(FIELDS, stop=False):
        try:
            report = run_import(store(), kind, path, progress=progress, **options)
        except PseudonymKeyError as exc:   # a wrong key stops the import in one line
            progress.empty()
            show_input_error(exc)
            return
        keep_and_rerun(report.as_dict())
    progress.empty()


def keep_and_rerun(report: dict | None) -> None:
    """Keep a finished import's report (an import, a PACS pull) and rerun the page."""
    if report is not None:
        st.session_state[LAST] = report
        st.rerun()


def show_last_import() -> None:
    """The last import's counts, each file's outcome and the rows that matched no case."""
    last = st.session_state.get(LAST)
    if not last:
        return
    st.subheader(f"Last import: {md_escape(last['kind'])} → {md_escape(last['dataset'])}")
    c = st.columns(4)
    for col, (status, n) in zip(c, last["counts"].items()):
        col.metric(status.capitalize(), n)
    c[3].metric("Unmatched rows", last["n_unmatched"])
    st.dataframe(pd.DataFrame(last["files"]), hide_index=True)
    if last["unmatched"]:
        with st.expander("Rows that match no stored case"):
            st.write(md_escape(", ".join(map(str, last["unmatched"][:200]))))


def testset_form() -> None:
    """Create or replace a named test set from a rule; the new set shows in the sidebar."""
    if made := st.session_state.pop("import_testset_made", None):
        st.success(made)
    with st.form("import_testset"):
        c1, c2 = st.columns([1, 3])
        name = c1.text_input("Name", placeholder="test-ILC", key="import_testset_name",
                             bind="query-params")
        rule = c2.text_input("Rule", placeholder="dataset=demo split=test histology=ILC,none",
                             key="import_testset_rule", bind="query-params",
                             help="Fields: dataset split cancer histology density "
                                  "presentation; clauses are ANDed, commas mean OR.")
        if st.form_submit_button("Create or replace"):
            with input_errors(stop=False):
                n = store().create_testset(name.strip(), rule.strip())
                st.session_state["import_testset_made"] = (f"Test set {md_escape(name)} holds "
                                                           f"{n} exams.")
                st.rerun()
