"""Long work outside the UI: each job writes a result folder that the store ingests whole."""
