"""Tumour annotation on a canvas (a later issue)."""
from ui import planned

planned("Annotate tumours",
        "This page will let a radiologist draw a tumour outline on a canvas over the image; "
        "the drawing becomes a filled mask saved as a new annotation version (old versions are "
        "kept) that the Filters and Saliency pages use.")
