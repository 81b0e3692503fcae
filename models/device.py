"""The device setting (auto, cpu or cuda) in one place."""
from __future__ import annotations

import torch

from core.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """auto = CUDA when present, else CPU; asking for cuda without one is an InputError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device is 'cuda' but no CUDA device is visible; use 'cpu' or 'auto'")
        return torch.device("cuda")
    raise InputError(f"device must be one of auto, cpu, cuda; got {name!r}")
