"""Shared by the benchmark scripts: machine facts, JSON out, RESULTS.md regenerated.

Each benchmark writes ``benchmarks/results/<name>.json`` holding the command, the date, the
machine, its numbers and a Markdown section; ``benchmarks/RESULTS.md`` is rebuilt from all
of those files, so it only ever shows what was run.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
SHARED_DATA = Path(os.environ.get("DISTILL_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def flow(value: Any) -> str:
    """A Python value as a YAML flow literal, for a ``key=value`` recipe override."""
    return json.dumps(value)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_mean_std(values: list[float], fmt: str = "{:.1f}") -> str:
    mean, std = mean_std(values)
    return f"{fmt.format(mean)} ± {fmt.format(std)}"


def write_result(name: str, numbers: dict[str, Any], markdown: str, started: float) -> Path:
    """Write ``results/<name>.json`` and rebuild ``RESULTS.md``."""
    import time

    record = {
        "benchmark": name,
        "command": "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute() else sys.argv[0]] + sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": round(time.time() - started, 1),
        "machine": machine(),
        "numbers": numbers,
        "markdown": markdown,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)
    rebuild_results_md()
    return path


def rebuild_results_md() -> Path:
    parts = [
        "# Benchmark results",
        "",
        "Regenerated from `benchmarks/results/*.json` by each benchmark script; every section names",
        "the command that produced it, when, and on what machine. Times on these shared 2-core",
        "machines are noisy: speeds are medians of repeated runs, ratios are measured side by side.",
        "",
    ]
    for path in sorted(RESULTS_DIR.glob("*.json")):
        record = json.loads(path.read_text())
        m = record["machine"]
        parts += [
            f"## {record['benchmark']}",
            "",
            f"- command: `{record['command']}`",
            f"- date: {record['date']}; wall time {record['wall_seconds'] / 60:.1f} min",
            f"- machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), Python {m['python']}",
            "",
            record["markdown"].strip(),
            "",
        ]
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(parts))
    return out


def hinton_teacher_file(path: Path) -> Path:
    """A randomly initialised Hinton MNIST teacher (784-1200-1200-10) as a distill model file.

    Speed benchmarks only: its cost per sample is that of a trained one."""
    from distill.artifacts import save_model
    from distill.models import build_model

    params = {"hidden": [1200, 1200], "dropout": 0.5, "input_dropout": 0.2}
    model = build_model("mlp", input_shape=(1, 28, 28), num_classes=10, **params)
    return save_model(model, path, {"model": "mlp", "params": params, "input_shape": [1, 28, 28], "num_classes": 10})


def require_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        sys.exit(f"benchmark needs {path} (the shared data sets; see ../shared/data/README.md)")
    return path
