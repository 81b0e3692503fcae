"""Shared fixtures: where ../shared lives, and small temporary stores."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared data folder sits beside the repository in CI")
    return SHARED


@pytest.fixture(scope="session")
def mias_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "mias"
