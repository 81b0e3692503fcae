"""The Import page's "From a PACS" tab: connect, search, pick studies, pull.

Widgets only; the search and the pull are `core.importers.dicomweb`'s. The password (or
token) lives in its password field for the session and is passed to core for each request:
it is never written to the store, a file or the URL. In the URL (shareable): the server's
address, the date range, the study limit and the dataset name; never the user, the password
or token, nor the patient ID and accession number (identifiers stay out of links and browser
history; the store keeps only pseudonyms). The search's `Plan` (which holds UIDs,
in memory) is kept in the session so the pull takes exactly the studies shown; the table
shows only the store's pseudonyms.
"""
from __future__ import annotations

import streamlit as st

from core.errors import PseudonymKeyError
from core.importers.dicomweb import Filters, pull, search
from core.io.dicomweb import Server
from ui.progress import ProgressBar
from ui.errors import input_errors, show_input_error
from ui.session import store
from ui.text import md_escape


def pacs_tab() -> dict | None:
    """Draw the tab; returns a finished pull's report (`ImportReport.as_dict`) or None."""
    url = st.text_input("DICOMweb URL", key="pacs_url", bind="query-params",
                        placeholder="http://pacs.example.org:8042/dicom-web")
    c1, c2, c3 = st.columns(3)
    # credentials and identifiers below are never bound to the URL (see the module docstring)
    user = c1.text_input("User", key="pacs_user")
    password = c2.text_input("Password", type="password", key="pacs_password",
                             help="Used for this session's requests only; never stored.")
    token = c3.text_input("Or a bearer token", type="password", key="pacs_token")
    with st.expander("Search filters", expanded=False):
        f1, f2, f3 = st.columns(3)
        patient = f1.text_input("Patient ID", key="pacs_patient")
        dates = f2.text_input("Study dates", key="pacs_dates", bind="query-params",
                              placeholder="20230101-20231231")
        accession = f3.text_input("Accession number", key="pacs_accession")
        limit = f1.number_input("At most N studies (0: all)", min_value=0, value=0, step=10,
                                key="pacs_limit", bind="query-params")
        dataset = f2.text_input("Dataset name", value="pacs", key="pacs_dataset",
                                bind="query-params")
    with input_errors(stop=False):
        try:
            return _search_and_pull(url, user, password, token, dataset,
                                    Filters(patient=patient or None, study_date=dates or None,
                                            accession=accession or None,
                                            limit=int(limit) or None))
        except PseudonymKeyError as exc:   # a wrong key stops the pull in one line
            show_input_error(exc)
    return None


def _search_and_pull(url: str, user: str, password: str, token: str, dataset: str,
                     filters: Filters) -> dict | None:
    def server() -> Server:
        return Server(url, user=user or None, password=password or None, token=token or None)

    if st.button("Search the PACS", disabled=not url, key="pacs_search"):
        with st.spinner("Searching the PACS"):
            st.session_state["pacs_plan"] = search(store(), server(), filters)
    plan = st.session_state.get("pacs_plan")
    if plan is None:
        return None
    table = plan.table()
    st.caption(f"{len(table)} studies, {plan.n_instances} instances at {md_escape(plan.url)} "
               "(patients and studies shown as the store's pseudonyms)")
    st.dataframe(table, hide_index=True)
    # not in the URL: the studies are this search's, kept in the session only
    chosen = st.multiselect("Studies to pull", list(table["exam_key"]),
                            default=list(table["exam_key"]), key="pacs_chosen")
    if st.button(f"Pull {len(chosen)} studies", type="primary", disabled=not chosen,
                 key="pacs_pull"):
        progress = ProgressBar("retrieving")
        report = pull(store(), server(), plan, dataset=dataset.strip() or "pacs",
                      exam_keys=chosen, progress=progress)
        progress.finish()
        return report.as_dict()
    return None
