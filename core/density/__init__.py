"""Breast density: the classical estimator and its calibration, density runs and reports."""
