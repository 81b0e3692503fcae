"""Import: upload files, name a server folder or pull from a PACS; each file's outcome; test sets."""
import pandas as pd
import streamlit as st

from core.errors import InputError, PseudonymKeyError
from core.importers import KINDS, run_import
from core.importers.templates import FOLDER_KINDS, template
from core.importers.uploads import route_upload
from core.store import Store
from ui import (ProgressBar, cached, download_popover, read_only_notice, settings,
                show_input_error, store)
from ui.pacs import pacs_tab

LABELS = {
    "dicom": "DICOM folder", "png": "PNG folder + label manifest", "mias": "mini-MIAS",
    "csaw": "CSAW-CC metadata table", "predictions": "Model predictions table",
    "readers": "Reader reads table",
}
UPLOAD_TYPES = {
    "dicom": ["dcm", "zip"], "png": ["png", "csv", "zip"], "mias": ["pgm", "png", "txt", "zip"],
    "csaw": ["csv", "zip"], "predictions": ["csv", "parquet"],
    "readers": ["csv", "parquet"],
}

# core's errors name parameters; here they name the form's fields (the CLI names flags)
FIELDS = {"dataset": "Dataset name (blank: from the folder or file name)",
          "manifest": "Manifest CSV", "images": "Images folder (optional)",
          "laterality_rule": "Laterality", "format": "Format", "level": "Level",
          "id_column": "Id column", "side_column": "Side column",
          "label_column": "Label column (creates cases)",
          "model_columns": "Score columns (comma-separated)",
          "reader_columns": "Score columns (comma-separated)",
          "score_column": "Score columns (comma-separated)"}

st.title("Import data")
if read_only_notice("Importing"):
    st.stop()

kind = st.selectbox("What are you importing?", list(KINDS), format_func=LABELS.get,
                    key="import_kind")
example = template(kind)
if example is None:
    st.caption(f":material/folder: Expects {FOLDER_KINDS[kind]}; no table to fill in.")
else:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(f"Expected columns: {', '.join(f'`{c}`' for c in example.columns)} "
                   "(other names the importer recognises work too).")
        download_popover(f"template_{kind}", "import_template", frame=example,
                         label="Template CSV")
with st.expander("Options", expanded=kind in ("predictions", "readers", "png")):
    options = {"dataset": st.text_input("Dataset name (blank: from the folder or file name)",
                                        key="import_dataset").strip() or None}
    if kind == "png":
        options["manifest"] = st.text_input("Manifest CSV (file name in the upload or a path)",
                                            key="import_manifest")
    if kind == "csaw":
        options["images"] = st.text_input("Images folder (optional)", key="import_images") or None
    if kind == "mias":
        options["laterality_rule"] = st.radio(
            "Laterality", ["film-marker", "readme"], horizontal=True, key="import_mias_rule",
            help="The films' markers say odd = left; the README says even = left.")
    if kind in ("predictions", "readers"):
        c1, c2, c3 = st.columns(3)
        options["format"] = c1.selectbox("Format", ["auto", "long", "wide"], key="import_fmt")
        options["level"] = c2.selectbox("Level", ["auto", "image", "breast", "exam"],
                                        key="import_level")
        options["id_column"] = c3.text_input(
            "Id column", key="import_id",
            help="The column naming each row's case: an exam, image or breast id as stored "
                 "(blank: found by name, e.g. id, case_id, exam_id, image_id)") or None
        options["side_column"] = c1.text_input(
            "Side column", key="import_side",
            help="For breast-level rows: the column saying which breast, L or R (also "
                 "left/right). Blank: a column named side or laterality, else exam level") or None
        options["label_column"] = c2.text_input("Label column (creates cases)",
                                                key="import_label") or None
        columns = "model_columns" if kind == "predictions" else "reader_columns"
        names = c3.text_input("Score columns (comma-separated)", key="import_cols")
        options[columns] = [c.strip() for c in names.split(",") if c.strip()] or None
        options = {k: v for k, v in options.items() if v not in (None, "auto")}

source_upload, source_server, source_pacs = st.tabs(
    ["Upload files", "Folder or file on the server", "From a PACS"])
with source_upload:
    uploads = st.file_uploader("Files (a ZIP keeps a folder's structure)",
                               type=UPLOAD_TYPES[kind], accept_multiple_files=True,
                               key=f"import_upload_{kind}")
    go_upload = st.button("Import the uploaded files", type="primary", disabled=not uploads)
with source_server:
    server_path = st.text_input("Path on the server", key="import_path",
                                placeholder="/data/mias or /data/preds.csv")
    go_server = st.button("Import from the server path", type="primary",
                          disabled=not server_path)

with source_pacs:
    pulled = pacs_tab()
    if pulled is not None:
        st.session_state["import_last"] = pulled


def run(path, options: dict) -> None:
    progress = ProgressBar("starting")
    try:
        report = run_import(store(), kind, path, progress=progress, **options)
    except (InputError, PseudonymKeyError) as exc:   # a wrong key stops the import in one line
        progress.empty()
        show_input_error(exc, FIELDS)
        return
    progress.finish()
    st.session_state["import_last"] = report.as_dict()


try:
    if go_upload:
        upload = route_upload([(f.name, f.getvalue()) for f in uploads],
                              store().files_dir / "uploads", kind, options)
        run(upload.path, upload.options)
    elif go_server:
        run(server_path, options)
except InputError as exc:
    show_input_error(exc, FIELDS)

last = st.session_state.get("import_last")
if last:
    st.subheader(f"Last import: {last['kind']} → {last['dataset']}")
    c = st.columns(4)
    for col, (status, n) in zip(c, last["counts"].items()):
        col.metric(status.capitalize(), n)
    c[3].metric("Unmatched rows", last["n_unmatched"])
    st.dataframe(pd.DataFrame(last["files"]), hide_index=True)
    if last["unmatched"]:
        with st.expander("Rows that match no stored case"):
            st.write(", ".join(map(str, last["unmatched"][:200])))

st.divider()
st.subheader("Test sets")
st.dataframe(cached(Store.testsets), hide_index=True)
with st.form("import_testset"):
    c1, c2 = st.columns([1, 3])
    name = c1.text_input("Name", placeholder="test-ILC")
    rule = c2.text_input("Rule", placeholder="dataset=demo split=test histology=ILC,none",
                         help="Fields: dataset split cancer histology density presentation; "
                              "clauses are ANDed, commas mean OR.")
    if st.form_submit_button("Create or replace"):
        try:
            n = store().create_testset(name.strip(), rule.strip())
            st.success(f"Test set {name} holds {n} exams.")
        except InputError as exc:
            show_input_error(exc)
st.caption(f"Store: `{settings().db_path}`")
