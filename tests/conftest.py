"""Shared test fixtures: deterministic single-threaded torch, and the shared data folder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared_data import require_shared

torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    return require_shared()
