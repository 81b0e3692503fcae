"""Statistics on numpy arrays: AUC, DeLong, bootstrap, operating points, kappa (no store, no I/O)."""
