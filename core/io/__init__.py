"""Reading what users bring: pixels (`images`, `pixels`, `dicom`) and mini-MIAS's Info.txt (`mias`)."""
