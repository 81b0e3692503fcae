"""Reading what users bring: pixels (`images`, `pixels`, `dicom`), tables (`tables`: CSV,
Parquet, pickles) and mini-MIAS's Info.txt (`mias`)."""
