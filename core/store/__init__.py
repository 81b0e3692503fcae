"""The store: the only SQL in ILCscope. Open it with `open_store`; everything else is a `Store` method.

Modules: `facade` (the `Store`, a thin face over the verb modules, and `open_store`), its verbs
by subject: `opening` (checks, schema versions, migrations), `reading`, `writes` (bulk upserts,
job result folders), `annotations` (mask files), `testsets` (the rule language of named test
sets and their members), `keys` (the pseudonym key, kept outside the store); and below them:
`connections` (one in-process DuckDB engine, busy handling), `schema` (tables, versions,
migrations), `derived` (the ``cases`` table, updated for the exams a write touched), `match`
(structured selections: names checked, values as parameters), `catalogue` (read queries),
`truth` (case truth and scores at scale), `studies` (reader studies), `runs` (job records).
"""
from core.store.annotations import annotation_mask_path
from core.store.catalogue import FILES_ROOT
from core.store.facade import Store, create_store, open_store
from core.store.opening import StoreNotice, default_db_path, demo_mode
from core.store.studies import READER_KINDS, study_delete_plan
from core.store.truth import SCORE_CASE_COLUMNS
from core.store.writes import dataset_delete_plan, write_result

__all__ = ["FILES_ROOT", "READER_KINDS", "SCORE_CASE_COLUMNS", "Store", "StoreNotice",
           "annotation_mask_path", "create_store", "dataset_delete_plan", "default_db_path", "demo_mode", "open_store",
           "study_delete_plan", "write_result"]
