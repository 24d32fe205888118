"""The demo's report: one comparison table and the training curves of all runs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.artifacts import atomic_write
from distill.report.markdown import markdown_table, metrics_rows, plot_curves


def write_demo_report(out_dir: Path, results: dict[str, dict[str, Any]]) -> Path:
    """``out_dir/report.md``: teacher vs student from scratch vs distilled student."""
    out_dir = Path(out_dir)
    headers, cells = metrics_rows(list(results.items()))
    plot = plot_curves({name: out_dir / name / "metrics.jsonl" for name in results}, out_dir / "curves.png")
    teacher, scratch, distilled = (results[k] for k in ("teacher", "student-from-scratch", "student-distilled"))
    ratio = teacher["parameters"] / distilled["parameters"]
    gained = distilled["accuracy"] - scratch["accuracy"]
    text = [
        "# distill demo: scikit-learn digits",
        "",
        "Made by `distill demo`. Test split of scikit-learn's 8x8 digits (360 images); latency is the",
        f"median over repeated runs on the CPU with {teacher.get('threads', '?')} thread(s).",
        "",
        markdown_table(headers, cells),
        "",
        f"The student has {ratio:.0f}x fewer parameters than the teacher. Distillation changed its test "
        f"accuracy by {gained * 100:+.1f} points, its agreement with the teacher from "
        f"{scratch['agreement']:.1%} to {distilled['agreement']:.1%}, and its KL to the teacher from "
        f"{scratch['kl_to_teacher']:.3f} to {distilled['kl_to_teacher']:.3f}.",
        "",
    ]
    if plot is not None:
        text += [f"![training curves]({plot.name})", ""]
    text += ["Each run folder holds its resolved `recipe.yaml`, `metrics.jsonl`, `model.safetensors`, "
             "checkpoints and `report.md`.", ""]
    path = out_dir / "report.md"
    atomic_write(path, lambda p: Path(p).write_text("\n".join(text)))
    return path
