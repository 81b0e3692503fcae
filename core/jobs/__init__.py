"""Long work outside the UI, one `run_folder.RunFolder` per run: parameters, code version and
progress in its folder, results ingested chunk by chunk, a row in the store's ``runs`` table.

Modules: `run_folder` (the folder, the row, cancel and resume), `filters` (filter AUC batches),
`density` (classical density estimates); `models.inference.predict` and `models.inference.density` run the
PyTorch jobs through the same `RunFolder`.
"""
