"""Reading what users bring: pixels (`images`, `pixels`, `dicom`), tables (`tables`: CSV,
Parquet; the metarepository's data.pkl as plain data) and mini-MIAS's Info.txt (`mias`)."""
