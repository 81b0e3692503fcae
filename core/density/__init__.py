"""Breast density: the classical estimator, its calibration and the NYU histogram features."""
