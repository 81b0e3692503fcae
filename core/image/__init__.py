"""Image processing: breast segmentation, the study's filters M1-M7, tumour and healthy regions,
the classical baseline scorer."""
