"""Import: upload files, name a server folder or pull from a PACS; each file's outcome; test sets.

Every option is in the URL (shareable), but not the uploaded files (a browser cannot put them
there) nor the PACS credentials and patient identifiers (`ui.pacs`)."""
import streamlit as st

from core.importers import KINDS
from core.importers.templates import FOLDER_KINDS, template
from core.importers.uploads import route_upload
from core.reports.holdings import store_gaps
from core.store import Store
from ui import cached, download_popover, input_errors, read_only_notice, settings, store
from ui.importing import FIELDS, import_and_rerun, keep_and_rerun, show_last_import, testset_form
from ui.pacs import pacs_tab
from ui.published import container_models_note
from ui.sidebar import ALL
from ui.text import md_code, md_escape

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
QP = "query-params"

st.title("Import data")
if read_only_notice("Importing"):
    st.stop()
dataset = st.session_state.get("dataset", ALL)
if gaps := cached(store_gaps, dataset=None if dataset == ALL else dataset):
    st.info("What this store lacks so far:\n" + "\n".join(f"- {md_escape(g)}" for g in gaps),
            icon=":material/info:")

kind = st.selectbox("What are you importing?", list(KINDS), format_func=LABELS.get,
                    key="import_kind", bind=QP)
example = template(kind)
if example is None:
    st.caption(f":material/folder: Expects {FOLDER_KINDS[kind]}; no table to fill in.")
else:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(f"Expected columns: {', '.join(f'`{c}`' for c in example.columns)} "
                   "(other names the importer recognises work too).")
        download_popover(f"template_{kind}", "import_template", frame=example,
                         label="Template CSV")
if kind == "predictions":   # end2end and Faster R-CNN come only this way
    container_models_note()
with st.expander("Options", expanded=kind in ("predictions", "readers", "png")):
    options = {"dataset": st.text_input("Dataset name (blank: from the folder or file name)",
                                        key="import_dataset", bind=QP).strip() or None}
    if kind == "png":
        options["manifest"] = st.text_input("Manifest CSV (file name in the upload or a path)",
                                            key="import_manifest", bind=QP)
    if kind == "csaw":
        options["images"] = st.text_input("Images folder (optional)", key="import_images",
                                          bind=QP) or None
    if kind == "mias":
        options["laterality_rule"] = st.radio(
            "Laterality", ["film-marker", "readme"], horizontal=True, key="import_mias_rule",
            bind=QP,
            help="The films' markers say odd = left; the README says even = left.")
    if kind in ("predictions", "readers"):
        c1, c2, c3 = st.columns(3)
        options["format"] = c1.selectbox("Format", ["auto", "long", "wide"], key="import_fmt",
                                         bind=QP)
        options["level"] = c2.selectbox("Level", ["auto", "image", "breast", "exam"],
                                        key="import_level", bind=QP)
        options["id_column"] = c3.text_input(
            "Id column", key="import_id", bind=QP,
            help="The column naming each row's case: an exam, image or breast id as stored "
                 "(blank: found by name, e.g. id, case_id, exam_id, image_id)") or None
        options["side_column"] = c1.text_input(
            "Side column", key="import_side", bind=QP,
            help="For breast-level rows: the column saying which breast, L or R (also "
                 "left/right). Blank: a column named side or laterality, else exam level") or None
        options["label_column"] = c2.text_input("Label column (creates cases)",
                                                key="import_label", bind=QP) or None
        columns = "model_columns" if kind == "predictions" else "reader_columns"
        names = c3.text_input("Score columns (comma-separated)", key="import_cols", bind=QP)
        options[columns] = [c.strip() for c in names.split(",") if c.strip()] or None
        options = {k: v for k, v in options.items() if v not in (None, "auto")}

source_upload, source_server, source_pacs = st.tabs(
    ["Upload files", "Folder or file on the server", "From a PACS"])
with source_upload:   # files cannot ride in a URL: the uploader alone is not bound
    uploads = st.file_uploader("Files (a ZIP keeps a folder's structure)",
                               type=UPLOAD_TYPES[kind], accept_multiple_files=True,
                               key=f"import_upload_{kind}")
    go_upload = st.button("Import the uploaded files", type="primary", disabled=not uploads)
with source_server:
    server_path = st.text_input("Path on the server", key="import_path", bind=QP,
                                placeholder="/data/mias or /data/preds.csv")
    go_server = st.button("Import from the server path", type="primary",
                          disabled=not server_path)

with source_pacs:
    keep_and_rerun(pacs_tab())

with input_errors(FIELDS, stop=False):   # the last import and the test sets still show
    if go_upload:
        upload = route_upload([(f.name, f.getvalue()) for f in uploads],
                              store().files_dir / "uploads", kind, options)
        import_and_rerun(kind, upload.path, upload.options)
    elif go_server:
        import_and_rerun(kind, server_path, options)
show_last_import()

st.divider()
st.subheader("Test sets")
st.dataframe(cached(Store.testsets), hide_index=True)
testset_form()
st.caption(f"Store: {md_code(settings().db_path)}")
