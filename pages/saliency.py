"""Saliency viewer (a later issue)."""
from ui import planned

planned("Saliency maps versus the tumour",
        "This page will overlay a model's saliency map and its patch boxes on each image beside "
        "the radiologist's segmentation, and report Dice over thresholds and the arg-max hit "
        "rate per model and histology.")
