"""The benchmark scripts are not run by the suite (they take minutes to hours); each must at least compile
on the supported Python, so that a syntax error (e.g. a nested f-string quote Python 3.11 refuses) is
caught here rather than an hour into a run."""
from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 10


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
def test_benchmark_script_compiles(script):
    compile(script.read_text(encoding="utf-8"), str(script), "exec")
