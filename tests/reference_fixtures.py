"""The official-network fixtures in ``shared/fixtures/<name>_reference``: their folder, their
recorded outputs and their numpy-only rule modules (weights, inputs), for the port tests."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch


def reference_dir(shared_dir: Path, name: str) -> Path:
    """``shared/fixtures/<name>``, or skip when its outputs are absent."""
    d = shared_dir / "fixtures" / name
    if not (d / "outputs.npz").is_file():
        pytest.skip(f"{d} has no outputs.npz")
    return d


def load_outputs(folder: Path) -> dict[str, np.ndarray]:
    """Every array the official code recorded (``outputs.npz``), loaded eagerly."""
    with np.load(folder / "outputs.npz") as z:
        return {k: z[k] for k in z.files}


def import_rule(path: Path, name: str):
    """A fixture's rule file (``weight_rule.py``, ``input_rule.py``) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rule_state(rule, entries) -> dict[str, torch.Tensor]:
    """The state dict the fixture's weight rule gives for ``entries`` (keys.json rows)."""
    return {e["key"]: torch.from_numpy(rule.rule_array(e["key"], e["shape"])) for e in entries}
