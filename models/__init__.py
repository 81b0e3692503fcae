"""ILCscope models: PyTorch networks, preprocessing, inference and training."""
