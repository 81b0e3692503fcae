"""``--device auto|cpu|cuda`` in one place."""
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
            raise InputError("--device cuda: no CUDA device is visible; use --device cpu or auto")
        return torch.device("cuda")
    raise InputError(f"--device {name!r}: expected auto, cpu or cuda")
