"""Markdown run reports, with a training-curve plot when matplotlib is installed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from distill.artifacts import atomic_write

# (key, header, format) for the model comparison tables
COLUMNS: list[tuple[str, str, str]] = [
    ("accuracy", "accuracy", "{:.2%}"),
    ("agreement", "agreement w/ teacher", "{:.2%}"),
    ("kl_to_teacher", "KL to teacher", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("cosine_to_teacher", "cosine to teacher", "{:.4f}"),
    ("perplexity", "perplexity", "{:.3f}"),
    ("parameters", "parameters", "{:,}"),
    ("file_bytes", "size on disk", "{}"),
    ("quantized_bytes", "quantized size", "{}"),
    ("latency_b1_ms", "latency b=1 (ms/sample)", "{:.4f}"),
    ("latency_b64_ms", "latency b=64 (ms/sample)", "{:.5f}"),
]


# what the held-out curve shows, first found: classification, then embedding and token tasks
HELD_OUT_KEYS = ("accuracy", "cosine_to_teacher", "agreement", "kl_to_teacher")


def human_bytes(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num < 1024 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return str(num)


def format_value(key: str, value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if key.endswith("bytes"):
        return human_bytes(value)
    return fmt.format(value)


def metrics_rows(rows: Sequence[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells for named metric dicts (columns present in any row)."""
    columns = [c for c in COLUMNS if any(c[0] in m for _, m in rows)]
    headers = ["model"] + [header for _, header, _ in columns]
    cells = [[name] + [format_value(key, metrics.get(key), fmt) for key, _, fmt in columns] for name, metrics in rows]
    return headers, cells


def markdown_table(headers: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def plot_curves(metrics_files: dict[str, Path], out: Path) -> Path | None:
    """Training loss and test accuracy per run, as one PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    shown = "accuracy"  # the held-out number plotted: accuracy, else the task's closeness to the teacher
    for name, path in metrics_files.items():
        if not Path(path).is_file():
            continue
        records = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
        train = [r for r in records if r.get("split") == "train"]
        test = [r for r in records if r.get("split") == "test"]
        if train:
            ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label=name)
        keys = [key for key in HELD_OUT_KEYS if test and all(key in r for r in test)]
        if keys:
            shown = keys[0]
            ax_acc.plot([r["step"] for r in test], [r[shown] for r in test], marker="o", label=name)
    ax_loss.set(xlabel="optimiser step", ylabel="training objective", title="training loss", yscale="log")
    ax_acc.set(xlabel="optimiser step", ylabel=f"held-out {shown.replace('_', ' ')}", title=f"held-out {shown.replace('_', ' ')}")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def read_generations(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``generations.json`` (see :func:`distill.runner.write_generations`) when it is there and
    well formed: prompts, references and per-model lists of the same length; None otherwise."""
    path = Path(run_dir) / "generations.json"
    if not path.is_file():
        return None
    try:
        samples = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(samples, dict) or not isinstance(samples.get("generations"), dict):
        return None
    prompts, references = samples.get("prompts"), samples.get("references")
    if not isinstance(prompts, list) or not isinstance(references, list) or len(prompts) != len(references):
        return None
    if not all(isinstance(texts, list) and len(texts) == len(prompts) for texts in samples["generations"].values()):
        return None
    return samples


def _md_cell(text: Any) -> str:
    """Text for a markdown table cell: one line, pipes escaped, backquoted so that markup stays text."""
    flat = " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")
    return f"`{flat}`" if flat else "(empty)"


def write_run_report(run_dir: Path, recipe, metrics: dict[str, Any]) -> Path:
    """``report.md`` of one run: what ran, the numbers, the curve."""
    run_dir = Path(run_dir)
    plot = plot_curves({recipe.name: run_dir / "metrics.jsonl"}, run_dir / "curves.png")
    rows = [(recipe.name, metrics)]
    if isinstance(metrics.get("teacher_metrics"), dict):  # the teacher, scored on the same held-out data
        teacher_row = metrics["teacher_metrics"]
        rows.insert(0, (f"teacher ({teacher_row.get('description', 'teacher')})", teacher_row))
    headers, cells = metrics_rows(rows)
    losses = ", ".join(f"{t.weight} x {t.name}" + (f" (T={t.temperature})" if t.temperature != 1 else "") for t in recipe.losses)
    teacher = "none" if recipe.teacher is None else recipe.teacher.describe()
    student = recipe.student.model or recipe.student.checkpoint
    text = [
        f"# Run `{recipe.name}`",
        "",
        f"- data: {recipe.data.name} (batch {recipe.data.batch_size})",
        f"- teacher: {teacher}",
        f"- student: {student} {recipe.student.params or ''}",
        f"- objective: {losses}",
        f"- trained {metrics.get('train_steps')} steps in {metrics.get('train_seconds', 0):.1f} s on "
        f"{metrics.get('threads')} thread(s)"
        + (f", {'fp32' if metrics['mixed_precision'] == 'no' else metrics['mixed_precision'] + ' autocast'}"
           f"{' (auto)' if getattr(recipe.train, 'mixed_precision', None) == 'auto' else ''}"
           f"{', channels_last' if metrics.get('channels_last') else ''}"
           if metrics.get("mixed_precision") else "") + f"; seed {recipe.seed}",
    ]
    quantize = getattr(recipe, "quantize", None)
    if quantize is not None and "quantized_bytes" in metrics:
        text.append(
            f"- quantized ({quantize.method}): weights {', '.join(f'{p} {b}-bit' for p, b in metrics['quantized_layers'].items())}; "
            f"packed {human_bytes(metrics['quantized_bytes'])} vs fp32 {human_bytes(metrics['fp32_bytes'])} "
            f"({metrics['compression']:.1f}x), packed-model accuracy {metrics['packed_accuracy']:.2%} "
            "(`model.packed.safetensors`)")
    self_distill = getattr(recipe, "self_distill", None)
    if self_distill is not None:
        text.append(f"- self-distillation: exits on {len(metrics.get('exit_accuracy', {})) - 1} layer(s), "
                    f"{self_distill.weight} x KL (T={self_distill.temperature}) + {self_distill.label_weight} x CE")
    text += [
        "",
        "## Test split",
        "",
        markdown_table(headers, cells),
        "",
    ]
    if "exit_accuracy" in metrics:  # early exits of a self-distilled student (stripped from model.safetensors)
        text += ["Accuracy of each exit (the exits are not part of the exported student):", "",
                 markdown_table(["layer", "accuracy"], [[f"`{path}`", f"{acc:.2%}"] for path, acc in metrics["exit_accuracy"].items()]),
                 ""]
    samples = read_generations(run_dir)
    if samples is not None:
        names = list(samples["generations"])
        text += [f"## Sample generations (greedy, at most {samples.get('max_new_tokens', '?')} new tokens)", "",
                 markdown_table(["prompt", "held-out text"] + names,
                                [[_md_cell(prompt), _md_cell(reference)] + [_md_cell(samples["generations"][name][i])
                                                                          for name in names]
                                 for i, (prompt, reference) in enumerate(zip(samples["prompts"], samples["references"]))]),
                 ""]
    if plot is not None:
        text += [f"![training curves]({plot.name})", ""]
    text += ["Resolved recipe: `recipe.yaml`; per-step metrics: `metrics.jsonl`; weights: `model.safetensors`.", ""]
    path = run_dir / "report.md"
    atomic_write(path, lambda p: Path(p).write_text("\n".join(text)))
    return path
