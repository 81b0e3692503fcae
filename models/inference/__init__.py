"""Inference steps around the networks: preprocessing, prediction, sliding-window heatmaps."""
