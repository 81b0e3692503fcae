"""The synthetic demo: a cohort with exact lesion masks, simulated readers, the demo store."""
