"""Shared pytest fixtures. Keep this small and general; family-specific fixtures live in their test files."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    candidate = Path(__file__).resolve().parents[2] / "shared" / "data"
    if candidate.is_dir():
        return candidate
    env = os.environ.get("LMLAB_SHARED_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared datasets (``../shared/data`` from the repo root, or ``$LMLAB_SHARED_DATA``)."""
    path = _shared_data_dir()
    if path is None:
        pytest.fail(
            "shared datasets not found: expected ../shared/data next to the repository, "
            "or set LMLAB_SHARED_DATA to their path"
        )
    return path


@pytest.fixture
def tmp_run(tmp_path: Path) -> Path:
    """A not-yet-existing run directory path inside ``tmp_path``."""
    return tmp_path / "run"


@pytest.fixture
def seeded() -> int:
    """Seed Python, NumPy and (if imported) torch RNGs with 0; returns the seed."""
    seed = 0
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    return seed
