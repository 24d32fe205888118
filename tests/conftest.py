"""Shared test fixtures: deterministic single-threaded torch, and the shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = Path(os.environ.get("DISTILL_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data; skip the test when absent (fail under CI=true)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: the shared data sets live in ../shared/data (see its README)"
        if IN_CI:
            pytest.fail(message + " and CI=true requires them")
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data() -> Path:
    return require_shared()
