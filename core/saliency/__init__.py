"""Saliency maps against segmentations, numpy only (reading a file never imports torch).

``maps``: saliency files and the mapping back to original pixels; ``metrics``: per-image Dice
sweep, pointing game, relevance mass and rank, patch overlap; ``summary``: aggregates and
paired model comparisons. `core.reports.saliency` runs them over a test set from the store.
"""
from core.saliency.maps import (SALIENCY_FORMAT, SaliencyFile, SaliencyGeometry, read_saliency,
                                saliency_to_original)
from core.saliency.metrics import DEFAULT_THRESHOLDS, dice_at_thresholds, saliency_metrics
from core.saliency.summary import SUMMARY_COLUMNS, compare_saliency, summarise_saliency

__all__ = ["DEFAULT_THRESHOLDS", "SALIENCY_FORMAT", "SUMMARY_COLUMNS", "SaliencyFile",
           "SaliencyGeometry", "compare_saliency", "dice_at_thresholds", "read_saliency",
           "saliency_metrics", "saliency_to_original", "summarise_saliency"]
