"""The store: the only SQL in ILCscope. Open it with `open_store`; everything else is a `Store` method.

Modules: `facade` (the `Store` and its verbs), `connections` (one in-process DuckDB engine,
busy handling), `schema` (tables, versions, migrations, the derived `cases` table),
`testsets` (the rule language of named test sets).
"""
from core.store.facade import (FILES_ROOT, SCORE_CASE_COLUMNS, Store, annotation_mask_path,
                               dataset_delete_plan, default_db_path, open_store, write_result)

__all__ = ["FILES_ROOT", "SCORE_CASE_COLUMNS", "Store", "annotation_mask_path",
           "dataset_delete_plan", "default_db_path", "open_store", "write_result"]
