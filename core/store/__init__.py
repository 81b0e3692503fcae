"""The store: the only SQL in ILCscope. Open it with `open_store`; everything else is a `Store` method.

Modules: `facade` (the `Store`, its verbs, schema versions on opening), `keys` (the pseudonym
key, kept outside the store), `connections` (one in-process DuckDB engine, busy handling),
`schema` (tables, versions, migrations, the derived `cases` table), `match` (structured
selections: names checked, values as parameters), `writes` (bulk upserts, job result folders),
`catalogue` (read queries), `truth` (case truth and scores at scale), `annotations` (mask
files), `testsets` (the rule language of named test sets), `studies` (reader studies).
"""
from core.store.annotations import annotation_mask_path
from core.store.catalogue import FILES_ROOT
from core.store.studies import READER_KINDS, study_delete_plan
from core.store.facade import (Store, StoreNotice, create_store, default_db_path, demo_mode,
                               open_store)
from core.store.truth import SCORE_CASE_COLUMNS
from core.store.writes import dataset_delete_plan, write_result

__all__ = ["FILES_ROOT", "READER_KINDS", "SCORE_CASE_COLUMNS", "Store", "StoreNotice",
           "annotation_mask_path", "create_store", "dataset_delete_plan", "default_db_path", "demo_mode", "open_store",
           "study_delete_plan", "write_result"]
