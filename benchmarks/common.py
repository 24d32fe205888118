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


def precision_words(precision: str) -> str:
    """How a benchmark's ``--precision`` (a ``train.mixed_precision`` value) reads in its results."""
    from distill.training.precision import describe_precision

    return "fp32 (pinned)" if precision == "no" else describe_precision(precision, "cpu")


# -- text students: ONNX export and parity --------------------------------------------------------------
TEXT_EXPORTS = (("cpu", "fp32"), ("cpu", "int8-dynamic"))


def export_text_student(model, name: str, out: Path, *, inputs: dict, max_length: int, tokenizer_json: Path,
                        targets=None, classes=None, threads: int = 1) -> list[dict[str, Any]]:
    """Export ``model`` (token ids in) with :class:`distill.export.Exporter` for every :data:`TEXT_EXPORTS`
    variant, checked against eager PyTorch on ``inputs`` (``{"input_ids", "attention_mask"}`` (N, L), real
    held-out texts); ``classes`` None: an embedding model (parity by cosine). One row per variant: ONNX bytes,
    max |diff|, agreement (top-1, or rows with cosine >= 0.99), mean / min cosine, accuracy, batch-1 latency, status."""
    from distill.data import TensorData
    from distill.export import ExportOptions, Exporter
    from distill.export.text import text_student

    data = TensorData({k: inputs[k] for k in ("input_ids", "attention_mask")}, targets, name="held-out texts",
                      classes=classes, split="test")
    student = text_student(model.eval(), max_length=max_length, tokenizer=tokenizer_json, classes=classes,
                           name=name, data=data)
    exporter = Exporter(student, out, ExportOptions(threads=threads, latency_repeats=20))
    rows = []
    for target, precision in TEXT_EXPORTS:
        card = exporter.export(target, precision)
        parity = card["parity"]
        rows.append({"student": name, "variant": f"{target}-{precision}", "status": card["status"],
                     "onnx_bytes": card["size"]["artifact_bytes"], "samples": parity["samples"],
                     "max_abs_diff": parity["max_abs_diff"], "agreement": parity["agreement"],
                     "mean_cosine": parity.get("mean_cosine"), "min_cosine": parity.get("min_cosine"),
                     "accuracy": card["accuracy"]["accuracy"], "eager_accuracy": card["accuracy"]["eager_accuracy"],
                     "latency_b1_ms": card["latency"].get("b1_ms"), "eager_latency_b1_ms": card["eager_latency"].get("b1_ms"),
                     "failures": parity["failures"]})
    return rows


def text_export_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`export_text_student` rows."""
    lines = ["| student | variant | ONNX size | max abs diff | agreement | mean / min cosine | accuracy % (eager) "
             "| batch 1 ms (eager) | status |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cosine = (f"{row['mean_cosine']:.4f} / {row['min_cosine']:.4f}" if row["mean_cosine"] is not None else "-")
        accuracy = (f"{100 * row['accuracy']:.2f} ({100 * row['eager_accuracy']:.2f})"
                    if row["accuracy"] is not None else "-")
        lines.append(f"| {row['student']} | {row['variant']} | {row['onnx_bytes'] / 1e6:.2f} MB | {row['max_abs_diff']:.2g} "
                     f"| {100 * row['agreement']:.2f}% | {cosine} | {accuracy} | {row['latency_b1_ms']:.2f} "
                     f"({row['eager_latency_b1_ms']:.2f}) | {row['status']} |")
    return "\n".join(lines)
