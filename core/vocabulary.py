"""The words ILCscope uses everywhere, defined once.

Levels, views, histologies and their priority, density categories, the mini-MIAS tissue
codes and the file suffixes we recognise. The store's schema, the importers, the statistics
and the pages all read them from here, so a new category is added in one place.
"""
from __future__ import annotations

# --- cases ------------------------------------------------------------------------------------
LEVELS = ("image", "breast", "exam")
AGGREGATIONS = ("max", "mean")   # image scores -> breast or exam scores
LATERALITIES = ("L", "R")
VIEWS = ("CC", "MLO", "other")
HISTOLOGIES = ("ILC", "IDC", "other", "none", "unknown")
PRESENTATIONS = (
    "mass", "spiculated mass", "architectural distortion", "asymmetry", "calcification",
    "ill-defined", "none",
)
PATHOLOGIES = ("malignant", "benign", "none")
ANNOTATION_SOURCES = ("radiologist", "drawn", "imported", "derived")
DENSITY_SOURCES = ("label", "classical", "nyu-histogram", "imported")

# When a breast or exam holds several findings, the one highest here names it:
# ILC > IDC > other > unknown > none (an exam with any ILC is an ILC exam, the study's cohort rule).
HISTOLOGY_PRIORITY = ("none", "unknown", "other", "IDC", "ILC")          # lowest first
PATHOLOGY_PRIORITY = ("none", "benign", "malignant")                     # lowest first
HISTOLOGY_RANK = {name: rank for rank, name in enumerate(HISTOLOGY_PRIORITY)}
PATHOLOGY_RANK = {name: rank for rank, name in enumerate(PATHOLOGY_PRIORITY)}

# Ages above this are a typo or a filler value (older than anyone recorded): never stored.
MAX_AGE_YEARS = 130

# --- reader studies -------------------------------------------------------------------------
# The reference condition of a reader study (first, so differences read aided - unaided) and the
# name of the condition in which readers saw a model's output.
UNAIDED = "unaided"


def aided_modality(model: str) -> str:
    """The reader-study condition 'aided by <model>'."""
    return f"aided-by-{model}"


# --- density ----------------------------------------------------------------------------------
# BI-RADS 5th edition a-d as the categories 0-3 of the NYU density model and the study.
DENSITY_CATEGORY_NAMES = ("almost entirely fatty", "scattered fibroglandular",
                          "heterogeneously dense", "extremely dense")
# mini-MIAS Info.txt's background tissue: F (fatty), G (fatty-glandular), D (dense-glandular).
# Three classes only, so category 3 is never used for MIAS.
MIAS_DENSITY = {"F": 0, "G": 1, "D": 2}

# --- files ------------------------------------------------------------------------------------
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")   # a DICOM without the DICM marker still needs one
RASTER_SUFFIXES = (".png", ".pgm")
IMAGE_SUFFIXES = (*RASTER_SUFFIXES, *DICOM_SUFFIXES)
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
